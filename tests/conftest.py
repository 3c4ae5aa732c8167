"""Shared test set-up: the serving emulator's fixtures."""

pytest_plugins = ["dbstruct.testing.pytest_plugin"]

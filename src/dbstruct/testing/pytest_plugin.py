"""pytest fixtures for the serving emulator.

Enable with ``pytest_plugins = ["dbstruct.testing.pytest_plugin"]`` in a conftest.py.

- ``dbstruct_emulator_server`` (session): one in-process :class:`Emulator` for the run;
- ``dbstruct_emulator``: that emulator, reset before and after each test (settings, counters,
  scripts); a module that needs other settings takes it in a fixture of its own that calls
  ``dbstruct_emulator.start_from(token=..., retry_after=0.05)``, undone after the test;
- ``dbstruct_emulator_env``: the same, with ``DATABRICKS_HOST``/``DATABRICKS_TOKEN`` set for
  the test (and other ``DATABRICKS_*`` auth variables removed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbstruct.testing._emulator import Emulator

__all__ = ["dbstruct_emulator", "dbstruct_emulator_env", "dbstruct_emulator_server"]

_AUTH_VARIABLES = (
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_CONFIG_PROFILE",
    "DATABRICKS_AUTH_TYPE",
)


@pytest.fixture(scope="session")
def dbstruct_emulator_server() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def dbstruct_emulator(dbstruct_emulator_server: Emulator) -> Iterator[Emulator]:
    dbstruct_emulator_server.start_from()
    yield dbstruct_emulator_server
    dbstruct_emulator_server.start_from()


@pytest.fixture
def dbstruct_emulator_env(dbstruct_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    for name in _AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in dbstruct_emulator.env().items():
        monkeypatch.setenv(name, value)
    return dbstruct_emulator

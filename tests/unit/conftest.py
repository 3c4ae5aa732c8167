"""Fixtures the emulator's unit tests share, built on the plugin's ``dbstruct_emulator``."""

from __future__ import annotations

import openai
import pytest

from dbstruct.testing import Emulator


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    """The session's emulator, reset for this test (a module may define its own ``emu``)."""
    return dbstruct_emulator


@pytest.fixture
def client(emu: Emulator) -> openai.OpenAI:
    """An openai client pointed at ``emu``."""
    return emu.openai_client()

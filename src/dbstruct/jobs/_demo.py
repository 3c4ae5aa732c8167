"""The demo's wiring: a job file with ``emulator:`` talks to an in-process serving emulator,
one with ``local_model:`` to a real small model served on this machine.

The only module of the jobs layer that starts :class:`dbstruct.testing.Emulator` or
:class:`dbstruct.testing.LocalModel` (see tests/unit/test_layers.py); the emulator's answers
are made up (``dbstruct run`` says so), the local model's are real but weak.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dbstruct.auth import Credentials

if TYPE_CHECKING:
    from dbstruct.jobs.conf import EmulatorSettings, LocalModelSettings

__all__ = ["emulator_credentials", "local_model_credentials"]

logger = logging.getLogger("dbstruct.jobs")


@contextlib.contextmanager
def emulator_credentials(settings: EmulatorSettings) -> Iterator[Credentials]:
    """Credentials for an emulator started in this process; stopped on exit.

    >>> with emulator_credentials(conf.emulator) as creds: ...
    """
    from dbstruct.testing import Emulator

    s = settings
    with Emulator(latency=s.latency, faults=dict(s.faults), seed=s.seed, qps=s.qps) as emu:
        logger.info("serving emulator (in this process) at %s", emu.host)
        yield Credentials.from_token(emu.base_url, emu.token, source="dbstruct emulator")


@contextlib.contextmanager
def local_model_credentials(settings: LocalModelSettings) -> Iterator[Credentials]:
    """Credentials for the local model, started in a subprocess; stopped on exit."""
    from dbstruct.testing import LocalModel

    with LocalModel(threads=settings.threads, ctx=settings.ctx) as model:
        logger.info("local model %s (llama.cpp) at %s", model.model, model.host)
        yield Credentials.from_token(model.base_url, model.token, source="dbstruct local model")

"""The demo's wiring: a job file with ``emulator:`` talks to an in-process serving emulator.

The only module of the jobs layer that starts :class:`dbstruct.testing.Emulator` (see
tests/unit/test_layers.py); the answers it gives are made up (``dbstruct run`` says so).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dbstruct.auth import Credentials

if TYPE_CHECKING:
    from dbstruct.jobs.conf import EmulatorSettings

__all__ = ["emulator_credentials"]

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

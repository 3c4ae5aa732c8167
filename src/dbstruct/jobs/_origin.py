"""Where a job's answers come from (its origin), and the guard that keeps one target's
answers from one origin.

    origin = job_origin(conf, creds, emulated=True)   # "emulator"
    claim_target(target, origin, conf)                 # before anything is written

The origin is ``emulator`` when the job file's in-process emulator answers, else the
endpoint's URL (``https://<host>/serving-endpoints/<endpoint>``): the workspace and the
endpoint. A target records the origin of its rows (a table property, or a file in a
Parquet directory, see :mod:`dbstruct.jobs._targets`). Appending answers of another origin
to a target that holds rows is refused: the emulator's made-up values must never sit beside
a model's answers, nor one endpoint's beside another's, in a table that looks like one
result.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbstruct.errors import ConfigurationError
from dbstruct.providers import parse_model

if TYPE_CHECKING:
    from dbstruct.auth import Credentials
    from dbstruct.jobs._targets import Target
    from dbstruct.jobs.conf import JobConfig

__all__ = [
    "EMULATOR",
    "LOCAL_MODEL",
    "claim_target",
    "describe_origin",
    "job_origin",
    "record_origin",
]

logger = logging.getLogger("dbstruct.jobs")

#: the origin of answers from the job file's in-process emulator
EMULATOR = "emulator"
#: the origin of answers from the job file's local model (its URL changes with its port)
LOCAL_MODEL = "local-model"


def job_origin(conf: JobConfig, creds: Credentials, *, emulated: bool, local: bool = False) -> str:
    """``emulator``, ``local-model``, or the URL of the endpoint ``creds`` and ``conf.model``
    name."""
    if emulated:
        return EMULATOR
    if local:
        return LOCAL_MODEL
    return f"{creds.base_url.rstrip('/')}/{parse_model(conf.model)}"


def describe_origin(origin: str) -> str:
    if origin == EMULATOR:
        return "the local serving emulator (made-up values)"
    if origin == LOCAL_MODEL:
        return "the local model (SmolLM2-135M on this machine)"
    return f"the endpoint {origin}"


def claim_target(target: Target, origin: str, conf: JobConfig) -> None:
    """Refuse to append answers of ``origin`` to a target holding rows of another origin.

    With ``target.mode: overwrite`` the rows are replaced, so any target may be claimed. A
    target without a recorded origin (written before origins were) or without rows is
    claimed as it is.
    """
    if conf.target.mode == "overwrite" or not target.exists():
        return
    recorded = target.origin()
    if recorded is None or recorded == origin or target.read().limit(1).count() == 0:
        return
    key = "target.table" if conf.target.table else "target.path"
    raise ConfigurationError(
        f"target: {target.where} holds answers from {describe_origin(recorded)}; this run's "
        f"would come from {describe_origin(origin)}, and the two must not mix. Write them to "
        f"another target ({key}; with {{origin}} in it, each origin gets its own), or replace "
        "what is there with --set target.mode=overwrite"
    )


def record_origin(target: Target, origin: str) -> None:
    """Record ``origin`` on the (existing) target, unless it is recorded already."""
    try:
        if target.origin() != origin:
            target.record_origin(origin)
    except Exception as e:  # e.g. no permission to alter the table: the job can still run
        logger.warning(
            "%s: could not record where its answers come from (%s: %s); answers from "
            "another origin will not be refused",
            target.where,
            type(e).__name__,
            str(e)[:200],
        )

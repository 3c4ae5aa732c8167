"""Where a job's answers come from (its origin), how they were asked (the fingerprint of a
run's configuration), and the guard that keeps one target's answers from one origin.

    origin = job_origin(conf, creds, emulated=True)   # "emulator"
    claim_target(target, origin, conf)                 # before anything is written
    record_provenance(target, origin, run, answers_fingerprint(conf, origin))

The origin is ``emulator`` when the job file's in-process emulator answers, else the
endpoint's URL (``https://<host>/serving-endpoints/<endpoint>``): the workspace and the
endpoint. A target records the origin of its rows (a table property, or a file in a
Parquet directory, see :mod:`dbstruct.jobs._targets`). Appending answers of another origin
to a target that holds rows is refused: the emulator's made-up values must never sit beside
a model's answers, nor one endpoint's beside another's, in a table that looks like one
result.

Each run also records the fingerprint of its configuration (:func:`answers_fingerprint`:
what decides a row's answer), so that ``dbstruct evaluate`` can tell which of a target's rows
were answered exactly as the job file it evaluates would answer them
(:mod:`dbstruct.jobs.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

from dbstruct.errors import ConfigurationError
from dbstruct.jobs._placeholders import EMULATOR, LOCAL_MODEL
from dbstruct.providers import parse_model

if TYPE_CHECKING:
    from dbstruct.auth import Credentials
    from dbstruct.jobs._targets import Target
    from dbstruct.jobs.conf import JobConfig

__all__ = [
    "EMULATOR",
    "LOCAL_MODEL",
    "answers_fingerprint",
    "claim_target",
    "describe_origin",
    "job_origin",
    "record_provenance",
]

logger = logging.getLogger("dbstruct.jobs")


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


def answers_fingerprint(conf: JobConfig, origin: str) -> str:
    """A hash of what decides a row's answer: ``origin``, the endpoint, the response model
    (its path and JSON schema), the prompt, mode, ``rows_per_request``, ``evidence``,
    ``max_retries``, the options, and the emulator's faults and seed. Which rows are read and
    how fast (source, concurrency, partitions, chunks, budget, cache) are left out."""
    decides = {
        "origin": origin,
        "model": conf.model,
        "response_model": conf.response_model,
        "schema": conf.response_model_class.model_json_schema(),
        "prompt": conf.prompt_spec,
        "mode": conf.mode_enum.name,
        "rows_per_request": conf.rows_per_request,
        "evidence": conf.evidence,
        "max_retries": conf.max_retries,
        "options": conf.options,
        "emulator": None
        if conf.emulator is None
        else {"faults": conf.emulator.faults, "seed": conf.emulator.seed},
        "local_model": None if conf.local_model is None else {"ctx": conf.local_model.ctx},
    }
    text = json.dumps(decides, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def record_provenance(target: Target, origin: str, run: int, fingerprint: str) -> None:
    """Record ``origin`` on the (existing) target, unless it is recorded already, and the
    ``fingerprint`` of run ``run``'s configuration, before the run writes a row."""
    try:
        if target.origin() != origin:
            target.record_origin(origin)
        target.record_run_config(run, fingerprint)
    except Exception as e:  # e.g. no permission to alter the table: the job can still run
        logger.warning(
            "%s: could not record where its answers come from and how they were asked "
            "(%s: %s); answers from another origin will not be refused, and this run's "
            "configuration is not recorded for dbstruct evaluate",
            target.where,
            type(e).__name__,
            str(e)[:200],
        )

"""MLflow traces of ``create()`` calls: a span per call, a child span per attempt.

    import dbstruct, mlflow

    mlflow.set_experiment("tickets")
    dbstruct.autolog()  # like mlflow.openai.autolog(); dbstruct.autolog(disable=True) stops
    client.create(Ticket, messages)  # one trace: "dbstruct.create" > "attempt 1", ...

The call's span has the endpoint, mode, response model, attempts, tokens, latency, every wait
(as a ``wait`` event with its seconds and the error it follows: a 429, a 503) and the final
error; each attempt's span has the request it sent (never its headers: the token is added
to the HTTP call only, :func:`dbstruct._client_base.with_headers`), the completion it got,
and its error (for a re-ask, the validation error the next attempt answers). Text that
reaches a trace passes :func:`dbstruct.redaction.redact`.

MLflow is imported only when :func:`autolog` is called or a trace is written, never by
``import dbstruct``; the ``[mlflow]`` extra installs ``mlflow-skinny`` (see docs/MLFLOW.md
for why not ``mlflow-tracing``). A call is recorded in memory (cheap Python objects) and
written to MLflow when it ends, if its :class:`Tracer` keeps it: every failed call, and a
deterministic share of the others (:func:`sampled`). Writing never fails the call: an MLflow
error is logged as a warning.

Spark (:func:`dbstruct.spark.structured_udf`'s ``trace_sample_rate``): the driver's tracking
URI and experiment go to the executors in a :class:`Tracer`, and each executor writes its
sampled and failed rows' traces there (:func:`udf_tracer`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbstruct._call_trace import CallTrace, TraceTarget, warn_once
from dbstruct._retry import Outcome
from dbstruct.errors import ConfigurationError

__all__ = ["CallTrace", "TraceTarget", "Tracer", "autolog", "begin", "end", "sampled"]

_INSTALL_HINT = "pip install 'dbstruct[mlflow]'"


@dataclass(frozen=True)
class Tracer:
    """Which calls a client traces and where to: failed calls always, the others when
    :func:`sampled` at ``sample_rate``. ``target`` None: MLflow's current tracking URI and
    experiment in this process."""

    sample_rate: float = 1.0
    target: TraceTarget | None = None

    def keeps(self, messages: Sequence[Any], outcome: Outcome) -> bool:
        return outcome.error is not None or sampled(messages, self.sample_rate)


_AUTOLOG: Tracer | None = None


def autolog(disable: bool = False, *, sample_rate: float = 1.0) -> None:
    """Trace every ``create()``/``extract()`` of every dbstruct client in this process.

    >>> dbstruct.autolog()  # then each call is a trace in MLflow's active experiment
    >>> dbstruct.autolog(disable=True)

    ``sample_rate`` (0 to 1): the share of successful calls traced, chosen by a hash of the
    messages (the same messages are always in or out); failed calls are always traced. A
    structured UDF built while autolog is on traces its failed rows from the executors (see
    :func:`udf_tracer`). Needs MLflow: ``pip install 'dbstruct[mlflow]'``.
    """
    global _AUTOLOG
    if disable:
        _AUTOLOG = None
        return
    _check_rate("sample_rate", sample_rate)
    import_mlflow("dbstruct.autolog()")
    _AUTOLOG = Tracer(sample_rate)


def active() -> Tracer | None:
    """The tracer :func:`autolog` set, or None."""
    return _AUTOLOG


def begin(
    client: Any, response_model: Any, messages: Sequence[Any], kwargs: dict[str, Any]
) -> CallTrace | None:
    """The record of one call when its client traces (its own ``tracer``, else autolog's);
    None, at the cost of two lookups, when it does not."""
    tracer: Tracer | None = getattr(client, "tracer", None) or _AUTOLOG
    if tracer is None:
        return None
    endpoint = kwargs.get("model") or client.endpoint
    return CallTrace(tracer.keeps, tracer.target, endpoint, client.mode, response_model, messages)


def end(trace: CallTrace | None, outcome: Outcome) -> Outcome:
    """``outcome``, after writing its trace when ``trace`` is one its tracer keeps."""
    if trace is not None:
        trace.end(outcome)
    return outcome


def sampled(messages: Sequence[Any], rate: float) -> bool:
    """Whether a call with these messages is in a sample of ``rate`` (0 to 1): a hash of the
    messages, so a rerun of the same rows samples the same rows.

    >>> sampled([{"role": "user", "content": "jason is 25"}], 1.0)
    True
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    text = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def udf_tracer(sample_rate: float) -> Tracer | None:
    """A structured UDF's tracer, built on the driver: None when ``sample_rate`` is 0 and
    autolog is off; else the driver's MLflow tracking URI and experiment, for executors."""
    _check_rate("trace_sample_rate", sample_rate)
    if sample_rate == 0 and _AUTOLOG is None:
        return None
    mlflow = import_mlflow("trace_sample_rate")
    target = TraceTarget(
        tracking_uri=str(mlflow.get_tracking_uri()),
        experiment_id=_experiment_id(mlflow),
        allow_file_store=_truthy(os.environ.get("MLFLOW_ALLOW_FILE_STORE")),
    )
    return Tracer(sample_rate, target)


#: seconds the end of a task waits for its traces to be written, at most
FLUSH_TIMEOUT_S = 30.0


def flush(tracer: Tracer | None, timeout: float = FLUSH_TIMEOUT_S) -> bool:
    """Wait up to ``timeout`` seconds for the traces MLflow still holds in its background
    queue (an executor's, at the end of a task); True when the queue emptied in time (or
    this process wrote none), False when traces were still being written."""
    if tracer is None or "mlflow" not in sys.modules:
        return True
    import mlflow

    def wait() -> None:
        try:
            mlflow.flush_trace_async_logging()
        except Exception as e:  # tracing must not fail the task
            warn_once(e)

    waiter = threading.Thread(target=wait, name="dbstruct-trace-flush", daemon=True)
    waiter.start()
    waiter.join(timeout)
    return not waiter.is_alive()


def import_mlflow(what: str) -> Any:
    """The ``mlflow`` module, or a ConfigurationError naming ``what`` needs it."""
    try:
        import mlflow
    except ImportError as e:
        raise ConfigurationError(f"{what} needs MLflow: {_INSTALL_HINT}") from e
    return mlflow


def _experiment_id(mlflow: Any) -> str | None:
    # the experiment mlflow.set_experiment() chose, or MLFLOW_EXPERIMENT_ID/_NAME's
    from mlflow.tracking.fluent import _get_experiment_id

    found = _get_experiment_id()
    return None if found is None else str(found)


def _check_rate(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigurationError(f"{name} must be a number from 0 to 1, got {value!r}")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes")

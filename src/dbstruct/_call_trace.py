"""One call's record for MLflow, kept in memory while it runs and written when it ends.

The clients feed a :class:`CallTrace` each step of :func:`dbstruct._retry.attempts` (an
attempt and its answer, a wait) and its outcome; :meth:`CallTrace.end` writes it as MLflow
spans with their real times, if its tracer keeps it (:mod:`dbstruct.tracing`). Recording
first and writing after is what lets a sampled Spark job trace every failed row without
tracing the rows that went fine. MLflow is imported only to write.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from dbstruct._packing import PackAnswer
from dbstruct._retry import Outcome, Send, Sleep
from dbstruct.errors import DbstructError, EndpointError, RateLimitError, RetriesExhaustedError
from dbstruct.redaction import redact

__all__ = ["CallTrace", "TraceTarget", "warn_once"]

logger = logging.getLogger("dbstruct.tracing")

#: the name of a call's span; its attempts' spans are "attempt 1", "attempt 2", ...
CALL_SPAN = "dbstruct.create"
#: request fields never recorded: the caller's extra headers may hold credentials
_UNRECORDED = frozenset({"extra_headers"})


@dataclass(frozen=True)
class TraceTarget:
    """Where an executor writes traces: the driver's tracking URI and experiment."""

    tracking_uri: str
    experiment_id: str | None = None
    #: the driver allowed MLflow's file store (``MLFLOW_ALLOW_FILE_STORE``): so may executors
    allow_file_store: bool = False


@dataclass
class _Attempt:
    started_ns: int
    request: dict[str, Any]
    ended_ns: int | None = None
    completion: Any = None
    error: DbstructError | None = None
    #: the completion's own tokens (prompt, completion, total), read when it came: the loop
    #: later makes the last completion report the whole call's
    tokens: tuple[int, int, int] | None = None


@dataclass
class _Wait:
    at_ns: int
    seconds: float
    after: DbstructError | None


@dataclass
class CallTrace:
    """What one ``create()`` did, step by step (see the module docstring)."""

    keeps: Callable[[Sequence[Any], Outcome], bool]
    target: TraceTarget | None
    endpoint: str
    mode: Any
    response_model: Any
    messages: Sequence[Any]
    started_ns: int = field(default_factory=time.time_ns)
    attempts: list[_Attempt] = field(default_factory=list)
    waits: list[_Wait] = field(default_factory=list)

    def step(self, step: Send | Sleep) -> None:
        """The loop's next step: an attempt about to be sent, or a wait about to start."""
        last = self.attempts[-1] if self.attempts else None
        if step.after is not None and last is not None and last.error is None:
            last.error = step.after  # a completion the loop refused: the re-ask's reason
        if isinstance(step, Sleep):
            self.waits.append(_Wait(time.time_ns(), step.seconds, step.after))
        else:
            self.attempts.append(_Attempt(time.time_ns(), step.request))

    def answered(self, answer: Any) -> None:
        """What the attempt just sent got: a completion, or the error it was translated to."""
        attempt = self.attempts[-1]
        attempt.ended_ns = time.time_ns()
        if isinstance(answer, DbstructError):
            attempt.error = answer
        else:
            attempt.completion = answer
            usage = getattr(answer, "usage", None)
            if usage is not None:
                attempt.tokens = (
                    usage.prompt_tokens or 0,
                    usage.completion_tokens or 0,
                    usage.total_tokens or 0,
                )

    def end(self, outcome: Outcome) -> None:
        """Write the call's trace, if its tracer keeps it; never raises."""
        last = self.attempts[-1] if self.attempts else None
        if last is not None and last.error is None and outcome.error is not None:
            last.error = _cause(outcome.error)  # the last completion did not validate
        try:
            if self.keeps(self.messages, outcome):
                _write(self, outcome)
        except Exception as e:  # a trace is never worth a failed call
            warn_once(e)


def _cause(error: DbstructError) -> DbstructError:
    if isinstance(error, RetriesExhaustedError) and isinstance(error.last_error, DbstructError):
        return error.last_error
    return error


_WARNED: set[str] = set()


def warn_once(error: Exception) -> None:
    """Log an MLflow failure once per kind and process (a 10-million-row job must not log
    each of its rows)."""
    kind = type(error).__name__
    if kind in _WARNED:
        return
    _WARNED.add(kind)
    logger.warning("dbstruct: a trace was not written (%s: %s)", kind, redact(str(error)))


# ---------------------------------------------------------------- writing


_CONFIGURED: set[TraceTarget] = set()
_CONFIGURE_LOCK = threading.Lock()


def _write(trace: CallTrace, outcome: Outcome) -> None:
    import mlflow
    from mlflow.entities import SpanType

    _configure(mlflow, trace.target)
    if not _reachable(str(mlflow.get_tracking_uri())):
        return
    parent = mlflow.get_current_active_span()
    experiment = trace.target.experiment_id if trace.target is not None else None
    root = mlflow.start_span_no_context(
        name=CALL_SPAN,
        span_type=SpanType.CHAT_MODEL,
        parent_span=parent,
        inputs=_clean({"messages": list(trace.messages)}),
        attributes=_call_attributes(trace),
        experiment_id=None if parent is not None else experiment,
        start_time_ns=trace.started_ns,
    )
    for number, attempt in enumerate(trace.attempts, start=1):
        _write_attempt(mlflow, root, number, attempt)
    for wait in trace.waits:
        root.add_event(_wait_event(wait))
    root.end(
        outputs=_clean(_value(outcome.value)),
        attributes=_outcome_attributes(outcome),
        status=_status(outcome.error),
        end_time_ns=time.time_ns(),
    )


def _configure(mlflow: Any, target: TraceTarget | None) -> None:
    """Point this process's MLflow at ``target`` once (an executor's; the driver's own
    settings stay as its user set them when ``target`` is None)."""
    if target is None or target in _CONFIGURED:
        return
    with _CONFIGURE_LOCK:
        if target.allow_file_store:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(target.tracking_uri)
        _CONFIGURED.add(target)


#: seconds to wait for an HTTP tracking server's first answer in a process
PROBE_TIMEOUT_S = 5.0
_REACHABLE: dict[str, bool] = {}


def _reachable(uri: str) -> bool:
    """Whether an ``http(s)://`` tracking server answers (any HTTP status), asked once per
    process; False drops this process's traces with one warning. Unasked for other URIs.

    Without this, MLflow queues each trace and retries it for minutes in the background,
    and waiting for the queue (the end of a Spark task, the end of the process) waits for
    every retry: measured 495 s for 20 traces to a refused port (docs/MLFLOW.md).
    """
    if not uri.startswith(("http://", "https://")):
        return True
    found = _REACHABLE.get(uri)
    if found is None:
        import httpx

        try:
            httpx.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S)
            found = True
        except httpx.HTTPError as e:
            found = False
            logger.warning(
                "dbstruct: the MLflow tracking server %s cannot be reached from this process "
                "(%s); its traces are dropped",
                redact(uri),
                redact(f"{type(e).__name__}: {e}"),
            )
        _REACHABLE[uri] = found
    return found


def _write_attempt(mlflow: Any, root: Any, number: int, attempt: _Attempt) -> None:
    from mlflow.entities import SpanType

    span = mlflow.start_span_no_context(
        name=f"attempt {number}",
        span_type=SpanType.LLM,
        parent_span=root,
        inputs=_clean(_request(attempt.request)),
        attributes={"dbstruct.attempt": number},
        start_time_ns=attempt.started_ns,
    )
    attributes: dict[str, Any] = {}
    usage: dict[str, int] | None = None
    if attempt.tokens is not None:
        prompt, completion_tokens, total = attempt.tokens
        usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens}
        usage["total_tokens"] = total
        attributes["mlflow.chat.tokenUsage"] = {
            "input_tokens": prompt,
            "output_tokens": completion_tokens,
            "total_tokens": total,
        }
    error = attempt.error
    if error is not None:
        attributes["dbstruct.error"] = _describe(error)
        status = getattr(error, "status", None)
        if status is not None:
            attributes["dbstruct.http_status"] = status
        if attempt.completion is not None:  # the endpoint answered; the answer was refused
            attributes["dbstruct.reask_error"] = _describe(error)
    completion = attempt.completion
    dumped = completion.model_dump(mode="json") if hasattr(completion, "model_dump") else None
    if dumped is not None and usage is not None:
        dumped["usage"] = {**(dumped.get("usage") or {}), **usage}
    span.end(
        outputs=_clean(dumped),
        attributes=attributes,
        status=_status(error),
        end_time_ns=attempt.ended_ns or time.time_ns(),
    )


def _wait_event(wait: _Wait) -> Any:
    from mlflow.entities import SpanEvent

    attributes: dict[str, Any] = {"seconds": round(wait.seconds, 3)}
    if wait.after is not None:
        attributes["reason"] = _describe(wait.after)
        if isinstance(wait.after, EndpointError) and wait.after.status is not None:
            attributes["http_status"] = wait.after.status
        if isinstance(wait.after, RateLimitError) and wait.after.retry_after is not None:
            attributes["retry_after"] = wait.after.retry_after
    event: Any = SpanEvent  # mypy takes the dataclass for abstract (mlflow 3.17's typing)
    return event("wait", timestamp=wait.at_ns, attributes=attributes)


def _call_attributes(trace: CallTrace) -> dict[str, Any]:
    model = trace.response_model
    return {
        "dbstruct.endpoint": trace.endpoint,
        "dbstruct.mode": str(getattr(trace.mode, "value", trace.mode)),
        "dbstruct.response_model": getattr(model, "__name__", None) or repr(model),
        "mlflow.llm.model": trace.endpoint,
    }


def _outcome_attributes(outcome: Outcome) -> dict[str, Any]:
    usage = outcome.usage
    attributes: dict[str, Any] = {
        "dbstruct.attempts": outcome.attempts,
        "dbstruct.retries": max(outcome.attempts - 1, 0),
        "dbstruct.latency_s": round(outcome.latency_s, 6),
        "dbstruct.cache_hit": outcome.attempts == 0 and outcome.ok,
        "mlflow.chat.tokenUsage": {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    }
    if outcome.error is not None:
        attributes["dbstruct.error"] = _describe(outcome.error)
    return attributes


def _status(error: DbstructError | None) -> Any:
    from mlflow.entities import SpanStatus, SpanStatusCode

    if error is None:
        return SpanStatus(SpanStatusCode.OK)
    return SpanStatus(SpanStatusCode.ERROR, description=_describe(error))


def _describe(error: BaseException) -> str:
    return redact(f"{type(error).__name__}: {error}")


def _request(request: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k not in _UNRECORDED}


def _value(value: Any) -> Any:
    if isinstance(value, PackAnswer):  # several rows' answer: each row's value or error
        return [_value(v) if isinstance(v, BaseModel) else _describe(v) for v in value.results]
    if isinstance(value, list):
        return [_value(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _clean(payload: Any) -> Any:
    """``payload`` as JSON data, every secret-shaped text in it redacted."""
    if payload is None:
        return None
    return json.loads(redact(json.dumps(payload, default=str, ensure_ascii=False)))

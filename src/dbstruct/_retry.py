"""One attempt loop for the sync and async clients, written once, free of I/O.

:func:`attempts` is a generator: it yields :class:`Send` (make this request) or
:class:`Sleep` (wait this long) and is sent back the completion or the translated exception.
The sync client drives it with ``time.sleep`` and a blocking call, the async client with
``asyncio.sleep`` and ``await``; so both retry, back off and re-ask identically.

What is retried, and how:

| failure                                    | retried | wait                                     |
|--------------------------------------------|---------|------------------------------------------|
| invalid answer (JSON, schema, tool call)   | re-ask  | none: the next request carries the error |
| 429                                        | yes     | Retry-After (or body), else backoff      |
| 5xx, timeout, dropped connection           | yes     | exponential backoff with full jitter     |
| 400, 401, 403, 404                         | no      | raised at once                           |
| refusal, finish_reason=length              | no      | the same request would end the same way  |
| answer over max_answer_bytes               | no      | the same request would end the same way  |
| 401/403/404 known for this token (unsent)  | no      | not counted as an attempt                |
| 400 to a tool's ``strict`` (TOOLS_STRICT)  | resent  | none: resent at once without the flag,   |
|                                            |         | not counted as an attempt                |

The ``strict`` resend (:mod:`dbstruct._strict`) happens only for endpoints the client could
not classify by name, at most once per call. It is not counted: the endpoint refused the
request's shape before any model ran (no tokens, no answer), and a row must not fail, nor
lose a retry, because its client was still learning what the endpoint takes.

Attempts are at most ``1 + max_retries``; no wait runs past the total deadline, and an
attempt gets at most what is left of it as its timeout, so a call that hangs ends on time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from dbstruct._strict import is_strict_refusal, sends_strict, without_strict
from dbstruct.answers import DEFAULT_MAX_ANSWER_BYTES, parse_completion, reask_messages
from dbstruct.errors import (
    DbstructError,
    EndpointError,
    IncompleteOutputError,
    InvalidOutputError,
    OutputError,
    OversizedOutputError,
    RateLimitError,
    RefusalError,
    RetriesExhaustedError,
)
from dbstruct.modes import Mode, ResponseTarget
from dbstruct.usage import Usage
from dbstruct.worker_settings import DEFAULT_MAX_RETRIES, DEFAULT_TOTAL_TIMEOUT

__all__ = ["Outcome", "RetryPolicy", "Send", "Sleep", "attempts"]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = DEFAULT_MAX_RETRIES
    #: seconds for the whole call, waits included
    deadline: float = DEFAULT_TOTAL_TIMEOUT
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: seconds one HTTP attempt may take (the client's ``timeout``); None: the SDK's own
    attempt_timeout: float | None = None

    def backoff(self, retry: int) -> float:
        """Full-jitter exponential backoff (AWS architecture blog's recommendation)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (retry - 1)))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Send:
    request: dict[str, Any]
    #: a shorter timeout for this attempt: what is left of the deadline, or None
    timeout: float | None = None
    #: the error of the attempt before, that this one answers (a re-ask's validation error)
    after: DbstructError | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float
    #: the error this wait follows (a 429's, a 503's), for observers such as traces
    after: DbstructError | None = None


@dataclass
class Outcome:
    """What one create() produced: the value or the error, with its cost."""

    value: Any = None
    error: DbstructError | None = None
    completion: Any = None
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def attempts(
    mode: Mode,
    target: ResponseTarget,
    request: dict[str, Any],
    policy: RetryPolicy,
    *,
    endpoint: str,
    context: Any = None,
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    strict_refused: Callable[[str], None] | None = None,
    read: Callable[[Any], Any] | None = None,
    stop: Callable[[DbstructError], bool] | None = None,
) -> Generator[Send | Sleep, Any, Outcome]:
    """Drive one structured call; see the module docstring for the rules.

    ``strict_refused``: given when ``request`` tries a tool's ``strict`` on an endpoint not
    known to take it; a 400 about ``strict`` then calls it with the endpoint and resends the
    request without the flag.

    ``read``: reads a completion instead of :func:`parse_completion` (a packed request's
    list, :mod:`dbstruct._packing`). An :class:`OutputError` it raises ends the call at once,
    not re-asked: its caller decides what to send again. ``stop``: an error for which it
    returns True ends the call at once too, retryable or not.
    """
    started = time.monotonic()
    usage = Usage()
    first_messages = request["messages"]
    last_error: DbstructError | None = None
    last_raw: str | None = None
    last_completion: Any = None
    after: DbstructError | None = None
    attempt = 0
    while True:
        attempt += 1
        answer = yield Send(request, _attempt_timeout(request, policy, started), after)
        after = None
        if isinstance(answer, DbstructError):
            error = answer
            if strict_refused is not None and sends_strict(request) and is_strict_refusal(error):
                strict_refused(endpoint)
                request = without_strict(request)
                attempt -= 1  # see the module docstring: this resend is not counted
                after = error
                continue
            if not error.retryable or (stop is not None and stop(error)):
                unsent = isinstance(error, EndpointError) and not error.sent
                sent = attempt - 1 if unsent else attempt
                return _failed(error, sent, usage, started, last_completion)
        else:
            last_completion = answer
            usage.add(getattr(answer, "usage", None))
            try:
                if read is not None:
                    value = read(answer)
                else:
                    value = parse_completion(
                        mode, target, answer, context, max_answer_bytes=max_answer_bytes
                    )
            except OutputError as e:
                error = e
                last_raw = e.raw
                if read is not None or isinstance(e, _TERMINAL_OUTPUT):
                    return _failed(e, attempt, usage, started, answer)
                request = {**request, "messages": reask_messages(mode, first_messages, answer, e)}
            else:
                _set_usage(answer, usage)
                return Outcome(value, None, answer, attempt, usage, time.monotonic() - started)
        last_error = error
        elapsed = time.monotonic() - started
        wait = _wait(error, attempt, policy)
        if attempt > policy.max_retries or elapsed + wait >= policy.deadline:
            why = "retries" if attempt > policy.max_retries else "deadline"
            exhausted = RetriesExhaustedError(
                f"{endpoint}: gave up after {attempt} attempt(s) ({why} exhausted); "
                f"last error: {type(last_error).__name__}: {last_error}",
                attempts=attempt,
                last_error=last_error,
                last_raw=last_raw,
                usage=usage,
                endpoint=endpoint,
            )
            return _failed(exhausted, attempt, usage, started, last_completion)
        after = error
        if wait > 0:
            yield Sleep(wait, error)


#: unusable answers that a re-ask would likely get again: not retried
_TERMINAL_OUTPUT = (RefusalError, IncompleteOutputError, OversizedOutputError)


def _attempt_timeout(request: dict[str, Any], policy: RetryPolicy, started: float) -> float | None:
    """What is left of the deadline, when it is shorter than the attempt's own timeout."""
    left = max(policy.deadline - (time.monotonic() - started), 0.001)
    own = request.get("timeout", policy.attempt_timeout)
    if isinstance(own, (int, float)) and own <= left:
        return None
    return left


def _wait(error: DbstructError, attempt: int, policy: RetryPolicy) -> float:
    if isinstance(error, InvalidOutputError):
        return 0.0  # the re-ask itself is the remedy
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        return max(0.0, error.retry_after)
    return policy.backoff(attempt)


def _failed(
    error: DbstructError, attempt: int, usage: Usage, started: float, completion: Any
) -> Outcome:
    if isinstance(error, RetriesExhaustedError):
        error.usage = usage
    return Outcome(None, error, completion, attempt, usage, time.monotonic() - started)


def _set_usage(completion: Any, usage: Usage) -> None:
    """Make the completion report the tokens of every attempt, not just the last."""
    current = getattr(completion, "usage", None)
    if current is None:
        return
    try:
        current.prompt_tokens = usage.prompt_tokens
        current.completion_tokens = usage.completion_tokens
        current.total_tokens = usage.total_tokens
    except (AttributeError, TypeError, ValueError):  # a frozen or foreign usage object
        pass

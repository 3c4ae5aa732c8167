"""Structured-output clients for Databricks model serving endpoints, sync and async.

Both clients run the same attempt loop (:mod:`dbstruct._retry`); they differ only in how
they wait and send. The ``openai`` SDK does the HTTP (its own retries off, ours on), and the
bearer token is applied to every request, so a refreshing credential stays fresh. With a
:mod:`dbstruct.cache` (opt-in), a stored answer is returned before the loop starts and a
success is stored after it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, Protocol, TypeVar

import openai

from dbstruct._params import check_keywords
from dbstruct._request_checks import check_context, check_text, context_window
from dbstruct._retry import Outcome, RetryPolicy, Send, Sleep, attempts
from dbstruct._strict import StrictSupport, without_strict
from dbstruct.auth import Credentials, redact
from dbstruct.cache import ResponseCache, cache_key, cached_answer, chat_request, to_cached
from dbstruct.errors import (
    AuthenticationError,
    BadRequestError,
    DbstructError,
    EndpointError,
    EndpointNotFoundError,
    InputError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
)
from dbstruct.modes import DEFAULT_MAX_ANSWER_BYTES, Message, Mode, ResponseTarget

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "AsyncLimiter",
    "AsyncStructuredClient",
    "Outcome",
    "StructuredClient",
    "translate",
]

# https://docs.databricks.com/aws/en/machine-learning/model-serving/model-serving-limits
# (Foundation Model APIs: request payload up to 4 MB); checked before sending, per row.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
_CHEAP_SIZE_LIMIT = MAX_PAYLOAD_BYTES // 8  # below this many characters no exact check
#: seconds a 401/403/404 for a token is remembered, so requests with it fail unsent
REFUSAL_MEMORY_S = 30.0

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)


class AsyncLimiter(Protocol):
    """Gates every HTTP attempt of an async client (first tries and retries alike).

    ``acquire`` waits for a slot; ``release`` gets what the attempt produced: the completion,
    or the :class:`DbstructError` it was translated to (a ``RateLimitError`` carries
    ``retry_after``), so a limiter can adapt its rate to the endpoint's answers.
    """

    async def acquire(self) -> None: ...

    def release(self, answer: object) -> None: ...


class _Base(Generic[C]):
    def __init__(
        self,
        openai_client: C,
        *,
        endpoint: str,
        mode: Mode,
        credentials: Credentials,
        policy: RetryPolicy,
        defaults: dict[str, Any],
        cache: ResponseCache | None = None,
        max_context_tokens: int | Literal["auto"] | None = "auto",
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self._openai: C = openai_client
        self.endpoint = endpoint
        self.mode = mode
        self.credentials = credentials
        self.policy = policy
        self.defaults = dict(defaults)
        self.cache = cache
        #: prompt tokens (estimated) above which a row fails unsent; "auto": the endpoint's
        #: documented window (dbstruct._request_checks.CONTEXT_WINDOWS), None: no check
        self.max_context_tokens = max_context_tokens
        #: answers larger than this (UTF-8 bytes) fail unparsed; None: no limit
        self.max_answer_bytes = max_answer_bytes
        # (endpoint, token fingerprint) -> the refusal it got, and when; see _refusal()
        self._refused: dict[tuple[str, str], tuple[EndpointError, float]] = {}
        # which endpoints take a tool's "strict" field (Mode.TOOLS_STRICT): by name or learned
        self._strict = StrictSupport()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, mode={self.mode}, "
            f"base_url={self.credentials.base_url!r}, auth={self.credentials.source!r})"
        )

    @property
    def chat(self) -> _Chat:
        """``client.chat.completions.create(...)``, as with instructor."""
        return _Chat(self)

    def _plan(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None,
        validation_context: Any,
        kwargs: dict[str, Any],
    ) -> _Call:
        check_keywords(kwargs, "create()", own=_CREATE_PARAMETERS)
        target = ResponseTarget.of(response_model)
        endpoint = kwargs.pop("model", None) or self.endpoint
        check_text(messages)
        # the same recipe as dbstruct.cache.request_key, so a table cache's keys match ours
        request = chat_request(self.mode, target, messages, {**self.defaults, **kwargs}, endpoint)
        _check_size(request, endpoint)
        window = self.max_context_tokens
        check_context(request, endpoint, context_window(endpoint) if window == "auto" else window)
        policy = self.policy
        if max_retries is not None:
            policy = replace(policy, max_retries=max_retries)
        # keyed as built: whether "strict" is sent depends on what the client has learned
        key = cache_key(self.mode, request) if self.cache is not None else None
        request, strict_refused = self._strict_plan(request, endpoint)
        steps = attempts(
            self.mode,
            target,
            request,
            policy,
            endpoint=endpoint,
            context=validation_context,
            max_answer_bytes=self.max_answer_bytes,
            strict_refused=strict_refused,
        )
        return _Call(steps, target, endpoint, key, validation_context)

    def _strict_plan(
        self, request: dict[str, Any], endpoint: str
    ) -> tuple[dict[str, Any], Callable[[str], None] | None]:
        """The request to send, with or without a tool's ``strict`` (see
        :mod:`dbstruct._strict`), and what to call when ``endpoint`` refuses it."""
        if self.mode is not Mode.TOOLS_STRICT:
            return request, None
        takes = self._strict.get(endpoint)
        if takes is None:
            return request, self._strict.refused
        return (request if takes else without_strict(request)), None

    def _begin(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None,
        validation_context: Any,
        kwargs: dict[str, Any],
    ) -> _Call | Outcome:
        """The call to run, or its outcome already: a cache hit or a row that cannot be sent."""
        try:
            call = self._plan(response_model, messages, max_retries, validation_context, kwargs)
        except InputError as e:
            return Outcome(error=e)
        return self._cached(call) or call

    def _cached(self, call: _Call) -> Outcome | None:
        """The outcome of a cache hit (no request, ``attempts == 0``, no usage), or None."""
        if self.cache is None or call.key is None:
            return None
        answer = self.cache.get(call.key)
        if answer is None:
            return None
        hit = cached_answer(
            answer,
            self.mode,
            call.target,
            key=call.key,
            endpoint=call.endpoint,
            context=call.context,
        )
        if hit is None:
            return None
        return Outcome(value=hit[0], completion=hit[1], attempts=0)

    # An expired or invalid token, a missing permission or a missing endpoint is refused the
    # same way on every request: once the endpoint has said so for a token, later requests
    # with that token fail at once, unsent, rather than hammer the endpoint (a long job whose
    # notebook token expires would otherwise send every remaining row to get a 401 each).
    # A refreshed token (OAuth) has another fingerprint, so it is tried again; so is the same
    # token once REFUSAL_MEMORY_S has passed (a permission granted meanwhile), one request.

    def _refusal(self, endpoint: str, headers: dict[str, str]) -> EndpointError | None:
        """The error to return unsent, if this endpoint has refused this token lately."""
        key = (endpoint, _fingerprint(headers))
        known, when = self._refused.get(key, (None, 0.0))
        if known is None:
            return None
        if time.monotonic() - when > REFUSAL_MEMORY_S:
            del self._refused[key]
            return None
        return type(known)(
            f"not sent: {known}",
            endpoint=endpoint,
            status=known.status,
            error_code=known.error_code,
            sent=False,
        )

    def _translate(
        self, error: openai.APIError, endpoint: str, headers: dict[str, str]
    ) -> DbstructError:
        """:func:`translate`, remembering a refusal of this token (see :meth:`_refusal`)."""
        translated = translate(error, endpoint, self.credentials)
        if isinstance(translated, _REFUSALS):
            self._refused[(endpoint, _fingerprint(headers))] = (translated, time.monotonic())
        return translated

    def _remember(self, call: _Call, outcome: Outcome) -> Outcome:
        if self.cache is not None and call.key is not None and outcome.ok:
            self.cache.put(call.key, to_cached(outcome.value, outcome.usage))
        return outcome


@dataclass(frozen=True)
class _Call:
    """One create(): its attempt plan and what the cache needs to know about it."""

    steps: Generator[Send | Sleep, Any, Outcome]
    target: ResponseTarget
    endpoint: str
    key: str | None
    context: Any


_REFUSALS = (AuthenticationError, PermissionDeniedError, EndpointNotFoundError)
#: create()'s own parameters, suggested with the request fields for a misspelt keyword
_CREATE_PARAMETERS = ("response_model", "messages", "max_retries", "validation_context")


def _fingerprint(headers: dict[str, str]) -> str:
    """A digest of the Authorization header: the latch never keeps the token itself."""
    return hashlib.sha256(headers.get("Authorization", "").encode()).hexdigest()


def _timed(step: Send) -> dict[str, Any]:
    """The request of an attempt, with its shorter timeout when the deadline is near."""
    return step.request if step.timeout is None else {**step.request, "timeout": step.timeout}


def _with_headers(request: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """The SDK call's arguments: the request, its caller's ``extra_headers`` and the auth
    headers (which win)."""
    extra = request.get("extra_headers")
    return {**request, "extra_headers": {**extra, **headers} if extra else headers}


def _raise(outcome: Outcome) -> Any:
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


class StructuredClient(_Base[openai.OpenAI]):
    """Blocking client; build it with :func:`dbstruct.from_provider`.

    >>> messages = [{"role": "user", "content": "jason is 25"}]
    >>> user = client.create(response_model=UserExtract, messages=messages)
    """

    def create(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> Any:
        """A validated ``response_model`` instance (a list of them for PARALLEL_TOOLS)."""
        return _raise(
            self.extract(response_model, messages, max_retries, validation_context, **kwargs)
        )

    def create_with_completion(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """The validated answer and the raw completion (usage summed over attempts)."""
        outcome = self.extract(response_model, messages, max_retries, validation_context, **kwargs)
        return _raise(outcome), outcome.completion

    def extract(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> Outcome:
        """Like :meth:`create`, but returns an :class:`Outcome` rather than raising."""
        call = self._begin(response_model, messages, max_retries, validation_context, kwargs)
        if isinstance(call, Outcome):
            return call
        step = next(call.steps)
        while True:
            answer: Any = None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                answer = self._attempt(_timed(step))
            try:
                step = call.steps.send(answer)
            except StopIteration as done:
                return self._remember(call, done.value)

    def _attempt(self, request: dict[str, Any]) -> Any:
        try:
            headers = self.credentials.headers()
        except DbstructError as e:  # a token refresh that failed
            return e
        known = self._refusal(request["model"], headers)
        if known is not None:
            return known
        try:
            return self._openai.chat.completions.create(**_with_headers(request, headers))
        except openai.APIError as e:
            return self._translate(e, request["model"], headers)

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> StructuredClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStructuredClient(_Base[openai.AsyncOpenAI]):
    """Asynchronous client; build it with ``dbstruct.from_provider(..., async_client=True)``."""

    #: optional gate around every HTTP attempt (see :class:`AsyncLimiter`)
    limiter: AsyncLimiter | None = None

    async def create(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> Any:
        """A validated ``response_model`` instance (a list of them for PARALLEL_TOOLS)."""
        outcome = await self.extract(
            response_model, messages, max_retries, validation_context, **kwargs
        )
        return _raise(outcome)

    async def create_with_completion(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """The validated answer and the raw completion (usage summed over attempts)."""
        outcome = await self.extract(
            response_model, messages, max_retries, validation_context, **kwargs
        )
        return _raise(outcome), outcome.completion

    async def extract(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> Outcome:
        """Like :meth:`create`, but returns an :class:`Outcome` rather than raising."""
        # the cache lookup stays on the loop: sqlite answers in microseconds
        call = self._begin(response_model, messages, max_retries, validation_context, kwargs)
        if isinstance(call, Outcome):
            return call
        step = next(call.steps)
        while True:
            answer: Any = None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                answer = await self._attempt(_timed(step))
            try:
                step = call.steps.send(answer)
            except StopIteration as done:
                return self._remember(call, done.value)

    async def _attempt(self, request: dict[str, Any]) -> Any:
        limiter = self.limiter
        if limiter is not None:
            await limiter.acquire()
        answer: Any = None
        try:
            headers = await self.credentials.aheaders()
            answer = self._refusal(request["model"], headers)
            if answer is None:
                answer = await self._openai.chat.completions.create(
                    **_with_headers(request, headers)
                )
        except openai.APIError as e:
            answer = self._translate(e, request["model"], headers)
        except DbstructError as e:  # a token refresh that failed
            answer = e
        finally:
            if limiter is not None:
                limiter.release(answer)
        return answer

    async def close(self) -> None:
        await self._openai.close()

    async def __aenter__(self) -> AsyncStructuredClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Completions:
    def __init__(self, client: _Base[Any]) -> None:
        self.create = client.create  # type: ignore[attr-defined]
        self.create_with_completion = client.create_with_completion  # type: ignore[attr-defined]


class _Chat:
    def __init__(self, client: _Base[Any]) -> None:
        self.completions = _Completions(client)


# ---------------------------------------------------------------- request checks


def _check_size(request: dict[str, Any], endpoint: str) -> None:
    """Refuse a request over the payload limit before it is sent (a per-row error)."""
    rough = sum(len(str(m.get("content") or "")) for m in request["messages"])
    if rough < _CHEAP_SIZE_LIMIT:
        return
    import json

    size = len(json.dumps(request, default=str).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InputError(
            f"{endpoint}: the request is {size / 1e6:.1f} MB, "
            f"over the {MAX_PAYLOAD_BYTES >> 20} MB "
            "payload limit of Databricks model serving; shorten the text"
        )


# ---------------------------------------------------------------- errors


def translate(error: openai.APIError, endpoint: str, credentials: Credentials) -> DbstructError:
    """An openai SDK error as a dbstruct error, with the endpoint named and secrets scrubbed."""
    if isinstance(error, openai.APITimeoutError):
        return _chain(
            TransportError(f"{endpoint}: request timed out", endpoint=endpoint, timeout=True), error
        )
    if isinstance(error, openai.APIConnectionError):
        why = redact(str(error.__cause__ or error))
        return _chain(
            TransportError(f"{endpoint}: connection failed: {why}", endpoint=endpoint), error
        )
    if not isinstance(error, openai.APIStatusError):
        return _chain(EndpointError(f"{endpoint}: {redact(str(error))}", endpoint=endpoint), error)
    status = error.status_code
    code, message = _error_body(error.body)
    message = redact(message or error.message or "")
    kw: dict[str, Any] = {"endpoint": endpoint, "status": status, "error_code": code}
    if status == 401 or (status == 403 and _is_token_error(code, message)):
        hint = (
            f"{endpoint}: 401 Unauthorized: the token is invalid or expired "
            f"(credentials from {credentials.source}). Tokens from a notebook expire; "
            "for long jobs use a service principal (DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET)."
        )
        return _chain(AuthenticationError(hint, **kw), error)
    if status == 403:
        text = (
            f"{endpoint}: 403 Forbidden: no permission to query this serving endpoint ({message})"
        )
        return _chain(PermissionDeniedError(text, **kw), error)
    if status == 404:
        text = f"{endpoint}: 404: no serving endpoint named {endpoint!r} at {credentials.base_url}"
        return _chain(EndpointNotFoundError(text, **kw), error)
    if status == 429:
        retry_after = _retry_after(error)
        text = f"{endpoint}: 429 rate limited ({message})"
        return _chain(RateLimitError(text, retry_after=retry_after, **kw), error)
    if status >= 500 or status in (408, 425):
        return _chain(ServerError(f"{endpoint}: {status} {message}", **kw), error)
    return _chain(
        BadRequestError(f"{endpoint}: {status} rejected the request: {message}", **kw), error
    )


def _is_token_error(code: str | None, message: str) -> bool:
    """Databricks answers an invalid or expired token with 403 ``{"error_code": 403,
    "message": "Invalid access token."}`` (databricks-sdk-go issues 873 and 1046), and a
    missing permission with 403 ``PERMISSION_DENIED``."""
    return code == "403" or "access token" in message.lower()


def _chain(new: DbstructError, cause: BaseException) -> DbstructError:
    new.__cause__ = cause
    return new


def _error_body(body: object) -> tuple[str | None, str | None]:
    """Databricks: ``{"error_code": "...", "message": "..."}``; OpenAI nests an ``error``."""
    if not isinstance(body, dict):
        return None, None
    nested = body.get("error")
    inner: dict[str, Any] = nested if isinstance(nested, dict) else body
    code = inner.get("error_code") or inner.get("code") or inner.get("type")
    message = inner.get("message")
    return (str(code) if code else None), (str(message) if message else None)


def _retry_after(error: openai.APIStatusError) -> float | None:
    header = error.response.headers.get("retry-after")
    if header:
        try:
            return float(header)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(header)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    body = error.body
    if not isinstance(body, dict):
        return None
    nested = body.get("error")
    inner: dict[str, Any] = nested if isinstance(nested, dict) else body
    value = inner.get("retry_after")
    if isinstance(value, (int, float)):
        return float(value)
    # Databricks error details: {"@type": ".../google.rpc.RetryInfo", "retry_delay": "2s"}
    for detail in inner.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retry_delay")
            if isinstance(delay, dict):  # protobuf JSON of a Duration, {"seconds": 2}
                return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return float(delay[:-1])
                except ValueError:
                    return None
    return None

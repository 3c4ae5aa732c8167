"""``"databricks/<endpoint>"`` to a configured client."""

from __future__ import annotations

import inspect
import os
from typing import Any, Literal, overload

import openai

from dbstruct._params import check_keywords
from dbstruct._retry import RetryPolicy
from dbstruct.answers import DEFAULT_MAX_ANSWER_BYTES
from dbstruct.auth import Credentials, resolve_credentials
from dbstruct.cache import ResponseCache, open_cache
from dbstruct.client import AsyncStructuredClient, StructuredClient
from dbstruct.errors import ConfigurationError
from dbstruct.modes import Mode
from dbstruct.worker_settings import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT

__all__ = [
    "check_answer_limits",
    "from_provider",
    "parse_mode",
    "parse_model",
    "provider_parameters",
]

SUPPORTED = "databricks/<endpoint-name>, e.g. 'databricks/databricks-meta-llama-3-3-70b-instruct'"
# The token is set per request (Credentials.headers); the SDK insists on an api_key of its own.
_PLACEHOLDER_KEY = "dbstruct-token-set-per-request"


def parse_model(model: str) -> str:
    """The endpoint name in ``"databricks/<endpoint>"``."""
    if not isinstance(model, str) or "/" not in model:
        raise ConfigurationError(f"model must look like {SUPPORTED}; got {model!r}")
    provider, _, endpoint = model.partition("/")
    if provider.strip().lower() != "databricks":
        raise ConfigurationError(
            f"provider {provider!r} is not supported: dbstruct serves Databricks model serving "
            f"endpoints only ({SUPPORTED})"
        )
    endpoint = endpoint.strip()
    if not endpoint or "/" in endpoint:
        raise ConfigurationError(f"no endpoint name in {model!r}; expected {SUPPORTED}")
    return endpoint


def check_answer_limits(max_context_tokens: object, max_answer_bytes: object) -> None:
    def positive(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not (max_context_tokens in (None, "auto") or positive(max_context_tokens)):
        raise ConfigurationError(
            f"max_context_tokens must be a positive int, 'auto' or None; got {max_context_tokens!r}"
        )
    if not (max_answer_bytes is None or positive(max_answer_bytes)):
        raise ConfigurationError(
            f"max_answer_bytes must be a positive int or None; got {max_answer_bytes!r}"
        )


def parse_mode(mode: Mode | str) -> Mode:
    if isinstance(mode, Mode):
        return mode
    for candidate in Mode:
        if mode in (candidate.value, candidate.name, f"Mode.{candidate.name}"):
            return candidate
    names = ", ".join(m.name for m in Mode)
    raise ConfigurationError(f"unknown mode {mode!r}; use one of {names}")


@overload
def from_provider(
    model: str,
    *,
    mode: Mode | str = Mode.TOOLS,
    async_client: Literal[False] = False,
    base_url: str | None = None,
    api_key: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    max_connections: int = 64,
    credentials: Credentials | None = None,
    cache: ResponseCache | str | os.PathLike[str] | None = None,
    max_context_tokens: int | Literal["auto"] | None = "auto",
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    **defaults: Any,
) -> StructuredClient: ...


@overload
def from_provider(
    model: str,
    *,
    mode: Mode | str = Mode.TOOLS,
    async_client: Literal[True],
    base_url: str | None = None,
    api_key: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    max_connections: int = 64,
    credentials: Credentials | None = None,
    cache: ResponseCache | str | os.PathLike[str] | None = None,
    max_context_tokens: int | Literal["auto"] | None = "auto",
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    **defaults: Any,
) -> AsyncStructuredClient: ...


@overload
def from_provider(
    model: str,
    *,
    mode: Mode | str = Mode.TOOLS,
    async_client: bool = False,
    base_url: str | None = None,
    api_key: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    max_connections: int = 64,
    credentials: Credentials | None = None,
    cache: ResponseCache | str | os.PathLike[str] | None = None,
    max_context_tokens: int | Literal["auto"] | None = "auto",
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    **defaults: Any,
) -> StructuredClient | AsyncStructuredClient: ...


def from_provider(
    model: str,
    *,
    mode: Mode | str = Mode.TOOLS,
    async_client: bool = False,
    base_url: str | None = None,
    api_key: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    max_connections: int = 64,
    credentials: Credentials | None = None,
    cache: ResponseCache | str | os.PathLike[str] | None = None,
    max_context_tokens: int | Literal["auto"] | None = "auto",
    max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    **defaults: Any,
) -> StructuredClient | AsyncStructuredClient:
    """A structured client for a Databricks serving endpoint: a :class:`StructuredClient`, or
    with ``async_client=True`` an :class:`AsyncStructuredClient`.

    >>> endpoint = "databricks/databricks-meta-llama-3-3-70b-instruct"
    >>> client = dbstruct.from_provider(endpoint, mode=Mode.TOOLS)
    >>> user = client.create(response_model=UserExtract, messages=[...])  # a UserExtract

    ``timeout`` bounds one request, ``total_timeout`` one ``create()`` with its retries and
    waits; ``max_retries`` counts attempts after the first. Other keyword arguments
    (temperature, max_tokens, ...) are defaults of every ``create()``; a per-call value wins.
    They must be chat request fields Databricks endpoints take (:data:`dbstruct._params.
    REQUEST_FIELDS`) or openai per-request options (timeout, extra_headers, extra_body...);
    anything else is a ``ConfigurationError`` naming the closest valid parameter.
    ``cache`` (a path or a :class:`dbstruct.cache.DiskCache`) answers a request seen before
    from disk, without sending it; see :mod:`dbstruct.cache`.

    Per-row limits, checked without failing the batch: a prompt over ``max_context_tokens``
    (estimated; ``"auto"``: the endpoint's documented context window when dbstruct knows it,
    :data:`dbstruct._request_checks.CONTEXT_WINDOWS`; None: no check) is an ``InputError`` before
    sending. The estimate is approximate (about four characters a token), so near the limit
    the endpoint's own 400 may still come, as a per-row ``BadRequestError``. An answer over
    ``max_answer_bytes`` (default 1 MiB; None: no limit) is an ``OversizedOutputError``,
    not parsed and not retried.
    """
    check_keywords(defaults, "from_provider", own=provider_parameters())
    endpoint = parse_model(model)
    chosen = parse_mode(mode)
    if max_retries < 0:
        raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
    check_answer_limits(max_context_tokens, max_answer_bytes)
    creds = credentials or resolve_credentials(base_url=base_url, api_key=api_key)
    # The Limits class comes from the HTTP library this openai version uses (httpx or httpx2).
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    common: dict[str, Any] = {
        "base_url": creds.base_url,
        "api_key": _PLACEHOLDER_KEY,
        "max_retries": 0,  # dbstruct retries, with Databricks' rules
        "timeout": timeout,
    }
    policy = RetryPolicy(max_retries=max_retries, deadline=total_timeout, attempt_timeout=timeout)
    options: dict[str, Any] = {
        "endpoint": endpoint,
        "mode": chosen,
        "credentials": creds,
        "policy": policy,
        "defaults": defaults,
        "cache": open_cache(cache),
        "max_context_tokens": max_context_tokens,
        "max_answer_bytes": max_answer_bytes,
    }
    if async_client:
        http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
        return AsyncStructuredClient(openai.AsyncOpenAI(http_client=http, **common), **options)
    http_sync = openai.DefaultHttpxClient(limits=limits, timeout=timeout)
    return StructuredClient(openai.OpenAI(http_client=http_sync, **common), **options)


def provider_parameters() -> tuple[str, ...]:
    """The keyword parameters of :func:`from_provider` (``model`` and ``**defaults`` aside)."""
    return _PARAMETERS


_PARAMETERS = tuple(
    name
    for name, p in inspect.signature(from_provider).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)

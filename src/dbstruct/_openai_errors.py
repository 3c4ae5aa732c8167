"""The openai SDK's exceptions as dbstruct errors, at the boundary where the client calls it.

What a status means is data in :mod:`dbstruct.errors` (``STATUS_ERRORS``); this module reads
the SDK's exception into it: the status, the Databricks error body (code, message) and how
long a 429 asks to wait. Every text from outside is redacted before it is kept.

    >>> translate(e, "databricks-llama", credentials)   # e: openai.APIError
    RateLimitError('databricks-llama: 429 rate limited (...)')
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import openai

from dbstruct.auth import Credentials
from dbstruct.errors import DbstructError, EndpointError, TransportError, endpoint_error
from dbstruct.redaction import redact

__all__ = ["translate"]


def translate(error: openai.APIError, endpoint: str, credentials: Credentials) -> DbstructError:
    """An openai SDK error as a dbstruct error, with the endpoint named and secrets scrubbed."""
    new: DbstructError
    if isinstance(error, openai.APITimeoutError):
        new = TransportError(f"{endpoint}: request timed out", endpoint=endpoint, timeout=True)
    elif isinstance(error, openai.APIConnectionError):
        why = redact(str(error.__cause__ or error))
        new = TransportError(f"{endpoint}: connection failed: {why}", endpoint=endpoint)
    elif not isinstance(error, openai.APIStatusError):
        new = EndpointError(f"{endpoint}: {redact(str(error))}", endpoint=endpoint)
    else:
        code, message = _error_body(error.body)
        new = endpoint_error(
            error.status_code,
            endpoint=endpoint,
            error_code=code,
            message=redact(message or error.message or ""),
            source=credentials.source,
            base_url=credentials.base_url,
            retry_after=_retry_after(error) if error.status_code == 429 else None,
        )
    new.__cause__ = error
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
    """Seconds a 429 asks to wait: the Retry-After header (seconds or a date), else the body."""
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

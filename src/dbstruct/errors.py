"""dbstruct's exceptions: one root, subclasses that carry their context, and what an HTTP
error status means.

    DbstructError                   retryable: may a later attempt succeed? (False here)
    ├── ConfigurationError          bad arguments, missing credentials, bad conf files
    │   └── WrongTypeError          an argument of the wrong type (also a TypeError)
    ├── JobStoppedError             a job stopped early: the endpoint refused its rows
    │   └── BudgetReachedError      a job stopped early: the rest would not fit its budget
    ├── SchemaError                 a model dbstruct cannot turn into an accepted schema, or
    │   │                           cannot ask for in the client's mode (also a TypeError)
    │   └── SchemaMappingError      a model field with no Spark type (dbstruct.spark)
    ├── EndpointError               the endpoint answered with an HTTP error (status, code)
    │   ├── BadRequestError         400 and other 4xx: the endpoint rejected the request
    │   ├── AuthenticationError     401 (or 403 naming the token): invalid or expired token
    │   ├── PermissionDeniedError   403: no permission to query the endpoint
    │   ├── EndpointNotFoundError   404: no such endpoint
    │   ├── RateLimitError          429: over the endpoint's QPS or token limits (retry_after)
    │   │                           retryable
    │   └── ServerError             5xx, 408, 425; retryable
    ├── TransportError              timeouts and dropped connections (no HTTP answer);
    │                               retryable
    ├── OutputError                 the endpoint answered, but the answer is unusable
    │   ├── InvalidOutputError      unparsable JSON, missing tool call, schema-invalid values;
    │   │                           retryable: re-asked with the errors
    │   ├── IncompleteOutputError   finish_reason=length: the answer was cut off
    │   ├── OversizedOutputError    an answer over max_answer_bytes, rejected before parsing
    │   └── RefusalError            the model refused
    ├── InputError                  a row that cannot be sent (too large, over the context
    │                               window, unencodable text), raised before sending (also
    │                               a ValueError)
    ├── RetriesExhaustedError       every attempt failed (attempts, last error, last answer, usage)
    └── RowsFailedError             rows of a create_many() failed (outcomes: every row's)

:data:`STATUS_ERRORS` is the HTTP side as data: a status to the error class and its message;
:func:`endpoint_error` applies it (``dbstruct._openai_errors`` reads the openai SDK's
exceptions into its arguments).

Messages never contain credentials: nothing here is given a token, and
:func:`dbstruct.redaction.redact` scrubs text that comes from outside before it is kept.
"""

from __future__ import annotations

from typing import Any

from dbstruct.usage import Usage

__all__ = [
    "STATUS_ERRORS",
    "AuthenticationError",
    "BadRequestError",
    "BudgetReachedError",
    "ConfigurationError",
    "DbstructError",
    "EndpointError",
    "EndpointNotFoundError",
    "IncompleteOutputError",
    "InputError",
    "InvalidOutputError",
    "JobStoppedError",
    "OutputError",
    "OversizedOutputError",
    "PermissionDeniedError",
    "RateLimitError",
    "RefusalError",
    "RetriesExhaustedError",
    "RowsFailedError",
    "SchemaError",
    "SchemaMappingError",
    "ServerError",
    "TransportError",
    "WrongTypeError",
    "endpoint_error",
]


class DbstructError(Exception):
    """Root of every error dbstruct raises."""

    #: whether a later attempt of the same request may succeed (the retry loop reads it)
    retryable = False


class ConfigurationError(DbstructError):
    """Bad arguments, missing credentials or an invalid configuration file."""


class WrongTypeError(ConfigurationError, TypeError):
    """An argument of the wrong type (``Secret(123)``); a ``TypeError`` too, as Python's own
    argument checks are."""


class JobStoppedError(DbstructError):
    """A job stopped before its end because the endpoint refused its requests (credentials,
    permission or endpoint name); ``done`` counts what was committed, ``summary`` is the
    run's summary so far (both set by :func:`dbstruct.jobs.run_job`)."""

    def __init__(self, message: str, *, done: Any = None) -> None:
        super().__init__(message)
        self.done = done
        self.summary: Any = None


class BudgetReachedError(JobStoppedError):
    """A job stopped before its end because the next rows would not fit the job file's
    ``budget:``; what was done is committed, and a rerun continues where it stopped.
    ``summary.budget`` holds what the rest would cost (set by :func:`dbstruct.jobs.run_job`)."""


class SchemaError(DbstructError, TypeError):
    """A response model that cannot be compiled into a schema Databricks accepts."""

    def __init__(self, message: str, *, model: str | None = None, field: str | None = None):
        super().__init__(message)
        self.model = model
        self.field = field


class SchemaMappingError(SchemaError):
    """A response model field that has no Spark type."""


class InputError(DbstructError, ValueError):
    """A request that cannot be sent as it is (over 4 MB, over the endpoint's context window,
    text with no UTF-8 encoding); raised before sending, so ``attempts == 0``."""


class EndpointError(DbstructError):
    """The serving endpoint answered with an HTTP error."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        error_code: str | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.error_code = error_code
        #: False when the client refused to send, knowing the endpoint's answer already
        self.sent = sent


class BadRequestError(EndpointError):
    """400: the endpoint rejected the request (schema, roles, parameters, size)."""


class AuthenticationError(EndpointError):
    """401: the token is invalid or expired."""


class PermissionDeniedError(EndpointError):
    """403: the identity may not query this endpoint."""


class EndpointNotFoundError(EndpointError):
    """404: no serving endpoint with this name."""


class RateLimitError(EndpointError):
    """429: over the endpoint's rate limits; ``retry_after`` in seconds when the endpoint said."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(EndpointError):
    """5xx from the endpoint or the gateway in front of it."""

    retryable = True


class TransportError(DbstructError):
    """No HTTP answer: a timeout or a dropped connection."""

    retryable = True

    def __init__(self, message: str, *, endpoint: str | None = None, timeout: bool = False):
        super().__init__(message)
        self.endpoint = endpoint
        self.timeout = timeout


class OutputError(DbstructError):
    """The endpoint answered, but the answer cannot be turned into the response model."""

    def __init__(self, message: str, *, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw


class InvalidOutputError(OutputError):
    """Unparsable JSON, a missing or wrong tool call, or values the model rejects."""

    retryable = True  # re-asked: the next request shows the model its answer and the errors


class IncompleteOutputError(OutputError):
    """``finish_reason=length``: the answer was cut off at ``max_tokens``."""


class OversizedOutputError(OutputError):
    """An answer larger than the client's ``max_answer_bytes``; rejected before parsing.

    ``raw`` holds only the answer's first KiB, ``size`` its size in bytes (UTF-8).
    """

    def __init__(self, message: str, *, raw: str | None = None, size: int = 0) -> None:
        super().__init__(message, raw=raw)
        self.size = size


class RefusalError(OutputError):
    """The model refused to answer."""


class RowsFailedError(DbstructError):
    """Some rows of a ``create_many()`` failed; ``outcomes`` holds every row's value or error,
    in the order of the texts, so nothing is lost."""

    def __init__(self, message: str, *, outcomes: list[Any]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


class RetriesExhaustedError(DbstructError):
    """Every attempt failed; carries what the attempts produced."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        last_error: BaseException | None,
        last_raw: str | None,
        usage: Usage,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error
        self.last_raw = last_raw
        self.usage = usage
        self.endpoint = endpoint


# ---------------------------------------------------------------- HTTP status -> error

_TOKEN_HINT = (
    "{endpoint}: 401 Unauthorized: the token is invalid or expired (credentials from {source}). "
    "Tokens from a notebook expire; for long jobs use a service principal "
    "(DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET)."
)
_SERVER = (ServerError, "{endpoint}: {status} {message}")
#: an HTTP error status: the class it raises and its message, formatted with ``endpoint``,
#: ``status``, ``message`` (the endpoint's, redacted), ``source`` (where the token came from)
#: and ``base_url``; another 5xx is a ServerError, another status a BadRequestError
STATUS_ERRORS: dict[int, tuple[type[EndpointError], str]] = {
    401: (AuthenticationError, _TOKEN_HINT),
    403: (
        PermissionDeniedError,
        "{endpoint}: 403 Forbidden: no permission to query this serving endpoint ({message})",
    ),
    404: (
        EndpointNotFoundError,
        "{endpoint}: 404: no serving endpoint named {endpoint!r} at {base_url}",
    ),
    408: _SERVER,
    425: _SERVER,
    429: (RateLimitError, "{endpoint}: 429 rate limited ({message})"),
}
_REJECTED = (BadRequestError, "{endpoint}: {status} rejected the request: {message}")


def endpoint_error(
    status: int,
    *,
    endpoint: str,
    error_code: str | None = None,
    message: str = "",
    source: str = "",
    base_url: str = "",
    retry_after: float | None = None,
) -> EndpointError:
    """The error for an HTTP error answer, by :data:`STATUS_ERRORS`.

    >>> endpoint_error(404, endpoint="llm", base_url="https://h/serving-endpoints")
    EndpointNotFoundError("llm: 404: no serving endpoint named 'llm' at https://h/serving-endpoints")

    Databricks answers an invalid or expired token with 403 ``{"error_code": 403, "message":
    "Invalid access token."}`` (databricks-sdk-go issues 873 and 1046) and a missing permission
    with 403 ``PERMISSION_DENIED``: the first is an AuthenticationError, as a 401 is.
    """
    token_error = error_code == "403" or "access token" in message.lower()
    meaning = 401 if status == 403 and token_error else status
    cls, template = STATUS_ERRORS.get(meaning) or (_SERVER if status >= 500 else _REJECTED)
    text = template.format(
        endpoint=endpoint, status=status, message=message, source=source, base_url=base_url
    )
    error = cls(text, endpoint=endpoint, status=status, error_code=error_code)
    if isinstance(error, RateLimitError):
        error.retry_after = retry_after
    return error

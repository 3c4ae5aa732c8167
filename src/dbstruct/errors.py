"""dbstruct's exceptions: one root, and subclasses that carry their context.

    DbstructError
    ├── ConfigurationError          bad arguments, missing credentials, bad conf files
    │   └── JobStoppedError         a job stopped early: the endpoint refused its rows
    ├── SchemaError                 a model dbstruct cannot turn into an accepted schema
    │   └── SchemaMappingError      a model field with no Spark type (dbstruct.spark)
    ├── EndpointError               the endpoint answered with an HTTP error (status, code)
    │   ├── BadRequestError         400: the endpoint rejected the request
    │   ├── AuthenticationError     401: invalid or expired token
    │   ├── PermissionDeniedError   403: no permission to query the endpoint
    │   ├── EndpointNotFoundError   404: no such endpoint
    │   ├── RateLimitError          429: over the endpoint's QPS or token limits (retry_after)
    │   └── ServerError             5xx
    ├── TransportError              timeouts and dropped connections (no HTTP answer)
    ├── OutputError                 the endpoint answered, but the answer is unusable
    │   ├── InvalidOutputError      unparsable JSON, missing tool call, schema-invalid values
    │   ├── IncompleteOutputError   finish_reason=length: the answer was cut off
    │   ├── OversizedOutputError    an answer over max_answer_bytes, rejected before parsing
    │   └── RefusalError            the model refused
    ├── InputError                  a row that cannot be sent (too large, over the context
    │                               window, unencodable text), raised before sending
    └── RetriesExhaustedError       every attempt failed (attempts, last error, last answer, usage)

Messages never contain credentials: nothing here is given a token, and
:func:`dbstruct.auth.redact` scrubs text that comes from outside before it is kept.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
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
    "SchemaError",
    "SchemaMappingError",
    "ServerError",
    "TransportError",
    "Usage",
]


class Usage:
    """Token usage summed over attempts."""

    __slots__ = ("completion_tokens", "prompt_tokens")

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, usage: Any) -> None:
        """Add an OpenAI ``CompletionUsage`` (or anything with the same attributes)."""
        if usage is None:
            return
        self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Usage)
            and self.prompt_tokens == other.prompt_tokens
            and self.completion_tokens == other.completion_tokens
        )

    def __repr__(self) -> str:
        return (
            f"Usage(prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens})"
        )


class DbstructError(Exception):
    """Root of every error dbstruct raises."""


class ConfigurationError(DbstructError):
    """Bad arguments, missing credentials or an invalid configuration file."""


class JobStoppedError(ConfigurationError):
    """A job stopped before its end because the endpoint refused its requests (credentials,
    permission or endpoint name); ``done`` counts what was committed, ``summary`` is the
    run's summary so far (both set by :func:`dbstruct.jobs.run_job`)."""

    def __init__(self, message: str, *, done: Any = None) -> None:
        super().__init__(message)
        self.done = done
        self.summary: Any = None


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

    #: whether a later attempt may succeed
    retryable = False

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

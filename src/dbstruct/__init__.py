"""dbstruct: typed, validated columns from free text, with LLMs served on Databricks.

    import dbstruct
    from dbstruct import Mode

    client = dbstruct.from_provider("databricks/dbrx-instruct", mode=Mode.TOOLS)
    user = client.create(response_model=UserExtract, messages=[{"role": "user", "content": "..."}])

Spark support lives in :mod:`dbstruct.spark` (``pip install 'dbstruct[spark]'``); this module
imports neither pyspark nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbstruct.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DbstructError,
    EndpointError,
    EndpointNotFoundError,
    IncompleteOutputError,
    InputError,
    InvalidOutputError,
    JobStoppedError,
    OutputError,
    OversizedOutputError,
    PermissionDeniedError,
    RateLimitError,
    RefusalError,
    RetriesExhaustedError,
    SchemaError,
    SchemaMappingError,
    ServerError,
    TransportError,
    Usage,
)

if TYPE_CHECKING:
    from dbstruct._retry import Outcome
    from dbstruct.client import AsyncStructuredClient, StructuredClient
    from dbstruct.modes import Mode
    from dbstruct.providers import from_provider

# The client pulls in openai and httpx: loaded on first use, so `import dbstruct.errors`
# or `dbstruct.testing` stays light.
_LAZY = {
    "Outcome": "dbstruct._retry",
    "AsyncStructuredClient": "dbstruct.client",
    "StructuredClient": "dbstruct.client",
    "Mode": "dbstruct.modes",
    "from_provider": "dbstruct.providers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dbstruct' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AsyncStructuredClient",
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
    "Mode",
    "Outcome",
    "OutputError",
    "OversizedOutputError",
    "PermissionDeniedError",
    "RateLimitError",
    "RefusalError",
    "RetriesExhaustedError",
    "SchemaError",
    "SchemaMappingError",
    "ServerError",
    "StructuredClient",
    "TransportError",
    "Usage",
    "__version__",
    "from_provider",
]

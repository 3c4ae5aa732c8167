"""dbstruct: typed, validated columns from free text, with LLMs served on Databricks.

    import dbstruct
    from dbstruct import Mode

    endpoint = "databricks/databricks-meta-llama-3-3-70b-instruct"
    client = dbstruct.from_provider(endpoint, mode=Mode.TOOLS)
    user = client.create(response_model=UserExtract, messages=[{"role": "user", "content": "..."}])

Spark support lives in :mod:`dbstruct.spark` (``pip install 'dbstruct[spark]'``); this module
imports neither pyspark nor pandas.
"""

from __future__ import annotations

from dbstruct._retry import Outcome
from dbstruct.client import AsyncStructuredClient, StructuredClient
from dbstruct.errors import (
    AuthenticationError,
    BadRequestError,
    BudgetReachedError,
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
    RowsFailedError,
    SchemaError,
    SchemaMappingError,
    ServerError,
    TransportError,
    WrongTypeError,
)
from dbstruct.modes import Mode
from dbstruct.providers import from_provider
from dbstruct.tracing import autolog
from dbstruct.usage import Usage

__version__ = "0.1.0"

__all__ = [
    "AsyncStructuredClient",
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
    "Mode",
    "Outcome",
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
    "StructuredClient",
    "TransportError",
    "Usage",
    "WrongTypeError",
    "__version__",
    "autolog",
    "from_provider",
]

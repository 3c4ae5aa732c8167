"""What a structured UDF's executors need: built on the driver, pickled with the UDF.

:func:`dbstruct.spark.structured_udf` builds a :class:`UdfSpec`;
:func:`dbstruct.spark._worker.run_partition` runs it. It holds no live objects (no client,
loop or session), and never shows its credentials or request options in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from dbstruct.auth import Credentials
from dbstruct.modes import Mode
from dbstruct.spark._prompt import Prompt
from dbstruct.tracing import Tracer
from dbstruct.worker_settings import WorkerSettings

__all__ = ["UdfSpec"]


@dataclass(frozen=True)
class UdfSpec:
    """One structured UDF, as its executors run it."""

    id: str
    name: str
    response_model: type[BaseModel]
    model: str
    prompt: Prompt
    mode: Mode
    include_status: bool
    strict: bool
    credentials: Credentials = field(repr=False)
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    #: traces of sampled and failed rows, to the driver's MLflow (:mod:`dbstruct.tracing`)
    tracer: Tracer | None = None
    #: the other keyword arguments of :func:`dbstruct.from_provider`: its options (cache,
    #: max_context_tokens, ...) and the chat request fields sent with every request
    client_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)
    #: ask for a quote per field and locate it in the row's text (:mod:`dbstruct.evidence`)
    evidence: bool = False

    @property
    def request_model(self) -> type[BaseModel]:
        """What rows are asked for and validated as: the response model, with its quotes
        when ``evidence`` is on."""
        if not self.evidence:
            return self.response_model
        from dbstruct.evidence import wire_model

        return wire_model(self.response_model)

    @property
    def output_model(self) -> type[BaseModel]:
        """What a row's value becomes in the result column."""
        if not self.evidence:
            return self.response_model
        from dbstruct.evidence import output_model

        return output_model(self.response_model)

    def open_client(self, *, async_client: bool) -> Any:
        """The client this UDF's rows are sent with (a worker's, async; ``dbstruct plan``
        builds the same requests with a blocking one): its settings' retries, timeouts and
        pool, and the other options."""
        import dbstruct  # the client modules need neither pyspark nor pandas

        settings = self.settings
        return dbstruct.from_provider(
            self.model,
            async_client=async_client,
            mode=self.mode,
            credentials=self.credentials,
            max_retries=settings.max_retries,
            timeout=settings.timeout,
            total_timeout=settings.total_timeout,
            max_connections=settings.pool_size,
            **dict(self.client_options),
        )

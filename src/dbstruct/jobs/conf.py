"""What a job file holds: the sections of a :class:`JobConfig` (``version: 1``) and their rules.

    conf = JobConfig.model_validate(data)  # or dbstruct.jobs.load_config("conf/tickets.yml")

Reading the YAML, ``--set`` overrides and the one-line-per-problem errors are
:mod:`dbstruct.jobs._conf_file`'s; importing ``response_model`` is
:mod:`dbstruct.jobs._model_ref`'s. ``concurrency`` and ``max_retries`` have the defaults and
bounds of :class:`dbstruct.worker_settings.WorkerSettings`. ``target.path`` and
``target.table`` may hold ``{origin}`` (``emulator`` when the job file's emulator answers,
else the endpoint name) and ``{endpoint}`` (the endpoint name), so answers from different
places go to different targets. See ``conf/demo.yml`` and ``conf/tickets.yml`` for every
key with comments. ``pricing``, ``budget`` and ``endpoint_limits`` are what a run may cost
and how fast the endpoint takes requests (docs/JOBS.md, docs/PLAN.md). Secrets are
written as references, ``{{secrets/<scope>/<key>}}`` or ``{{env:VAR}}``, and resolved at
run time in ``credentials`` and ``source.options`` (:mod:`dbstruct.jobs._secrets`); a
token written inline is refused.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dbstruct.errors import ConfigurationError
from dbstruct.jobs._evaluate_conf import EvaluateConfig
from dbstruct.jobs._mlflow_conf import MlflowConfig
from dbstruct.jobs._model_ref import import_model
from dbstruct.jobs._placeholders import fill_target_placeholders
from dbstruct.jobs._secrets import check_reference_syntax, is_reference
from dbstruct.modes import Mode
from dbstruct.pricing import Pricing, price_for
from dbstruct.worker_settings import (
    CONCURRENCY_RANGE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    MAX_RETRIES_RANGE,
    ROWS_PER_REQUEST_RANGE,
)

if TYPE_CHECKING:
    from dbstruct.auth import Credentials
    from dbstruct.spark import StructuredUDF

__all__ = [
    "BudgetConfig",
    "CacheConfig",
    "CredentialsConfig",
    "EmulatorSettings",
    "EndpointLimits",
    "JobConfig",
    "LocalModelSettings",
    "SourceConfig",
    "TargetConfig",
    "build_udf",
    "fill_target_placeholders",
]

# An unquoted Unity Catalog name part, or a backquoted one.
_PART = r"(?:[A-Za-z0-9_]+|`[^`]+`)"
_TABLE = re.compile(rf"{_PART}\.{_PART}\.{_PART}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Status columns every target row carries, beside the id (see dbstruct.spark._result_column).
STATUS_COLUMNS = ("error", "attempts", "prompt_tokens", "completion_tokens", "latency_ms")
#: columns the job adds: the batch that wrote the row, and when
JOB_COLUMNS = ("batch", "processed_at")
# structured_udf arguments the job file sets elsewhere (or never: credentials).
_RESERVED_OPTIONS = {
    "model": "model", "mode": "mode", "max_retries": "max_retries",
    "concurrency": "concurrency", "prompt": "prompt", "response_model": "response_model",
    "rows_per_request": "rows_per_request", "evidence": "evidence",
    "include_status": "-", "strict": "-", "name": "-", "async_client": "-",
    "base_url": "credentials.host", "api_key": "credentials.token", "credentials": "credentials",
}  # fmt: skip


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _table_name(value: str | None) -> str | None:
    if value is not None and not _TABLE.fullmatch(value.strip()):
        raise ValueError(f"expected catalog.schema.table, got {value!r}")
    return None if value is None else value.strip()


class SourceConfig(_Section):
    """Where the rows come from: a table, a path and format, or the bundled sample."""

    table: str | None = None
    path: str | None = None
    format: Literal["delta", "parquet", "json", "csv", "orc"] | None = None
    options: dict[str, str] = Field(default_factory=dict)
    sample: Literal["tickets"] | None = None
    #: with ``table``: create it from this bundled sample when it does not exist
    seed_from_sample: Literal["tickets"] | None = None
    id_column: str
    text_columns: list[str] = Field(min_length=1)
    keep_columns: list[str] = Field(default_factory=list)
    where: str | None = None
    limit: int | None = Field(default=None, ge=1)

    _check_table = field_validator("table")(_table_name)

    @field_validator("options")
    @classmethod
    def _option_references(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            check_reference_syntax(text)
        return value

    @field_validator("text_columns", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("id_column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not _COLUMN.fullmatch(value):
            raise ValueError(f"expected a column name, got {value!r}")
        return value

    @field_validator("text_columns", "keep_columns")
    @classmethod
    def _columns(cls, value: list[str]) -> list[str]:
        for name in value:
            cls._column(name)
        if len(set(value)) != len(value):
            raise ValueError(f"names a column twice: {value}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SourceConfig:
        kinds = [k for k in ("table", "path", "sample") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of table, path or sample, got {kinds or 'none'}")
        if self.format is not None and self.path is None:
            raise ValueError("format goes with path (a table knows its format)")
        if self.seed_from_sample is not None and self.table is None:
            raise ValueError("seed_from_sample goes with table (the table it creates)")
        if self.id_column in self.text_columns + self.keep_columns:
            raise ValueError(f"id_column {self.id_column!r} is also a text or keep column")
        return self

    def describe(self) -> str:
        if self.table:
            return self.table
        if self.path:
            return f"{self.path} ({self.format or 'parquet'})"
        return f"bundled sample '{self.sample}'"


class TargetConfig(_Section):
    """Where the results go, and how they are laid out."""

    table: str | None = None
    path: str | None = None
    format: Literal["auto", "delta", "parquet"] = "auto"
    mode: Literal["append", "overwrite"] = "append"
    output: Literal["struct", "flatten"] = "struct"
    result_column: str = "result"

    _check_table = field_validator("table")(_table_name)

    @model_validator(mode="after")
    def _one_kind(self) -> TargetConfig:
        if (self.table is None) == (self.path is None):
            raise ValueError("give exactly one of table or path")
        if not _COLUMN.fullmatch(self.result_column):
            raise ValueError(f"result_column: expected a column name, got {self.result_column!r}")
        return self

    def describe(self) -> str:
        return self.table or str(self.path)


class CacheConfig(_Section):
    """The response cache table (:class:`dbstruct.spark.TableCache`): rows whose request was
    answered before, by this job or another, are not sent again."""

    table: str | None = None
    path: str | None = None
    format: Literal["auto", "delta", "parquet"] = "auto"

    _check_table = field_validator("table")(_table_name)

    @model_validator(mode="after")
    def _one_kind(self) -> CacheConfig:
        if (self.table is None) == (self.path is None):
            raise ValueError("give exactly one of table or path")
        return self

    def describe(self) -> str:
        return self.table or str(self.path)


class CredentialsConfig(_Section):
    """How to reach the workspace; secrets only as references. Omitted: dbstruct's usual
    order (DATABRICKS_HOST/DATABRICKS_TOKEN, notebook context, databricks-sdk profiles)."""

    host: str | None = None
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @field_validator("host", "client_id")
    @classmethod
    def _references(cls, value: str | None) -> str | None:
        return None if value is None else check_reference_syntax(value)

    @model_validator(mode="after")
    def _one_method(self) -> CredentialsConfig:
        for key in ("token", "client_secret"):
            value = getattr(self, key)
            if value is not None and not is_reference(value):  # also checked before parsing
                raise ValueError(f"{key} must be a secret reference")
        if self.token and self.client_secret:
            raise ValueError("give token or client_id + client_secret, not both")
        if (self.client_id is None) != (self.client_secret is None):
            raise ValueError("client_id and client_secret go together (OAuth M2M)")
        if self.client_secret and not self.host:
            raise ValueError("OAuth M2M (client_id, client_secret) needs host")
        return self


class EmulatorSettings(_Section):
    """The in-process serving emulator (dbstruct.testing.Emulator) the demo talks to."""

    latency: float = Field(default=0.05, ge=0)
    faults: dict[str, float] = Field(default_factory=dict)
    seed: int = 0
    qps: float | None = Field(default=None, gt=0)


class BudgetConfig(_Section):
    """What one run may spend (``dbstruct run`` stops, exit status 3, before going over)."""

    max_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> BudgetConfig:
        if self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError("give max_tokens, max_cost_usd or both")
        return self


class EndpointLimits(_Section):
    """The serving endpoint's limits, for ``dbstruct plan``'s time estimate: its rate limits,
    or the tokens per second of provisioned throughput."""

    qps: float | None = Field(default=None, gt=0)
    input_tokens_per_minute: int | None = Field(default=None, ge=1)
    output_tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_second: int | None = Field(default=None, ge=1)


class LocalModelSettings(_Section):
    """A real small model served on this machine (dbstruct.testing.LocalModel): SmolLM2-135M
    with llama.cpp, installed apart (docs/LOCAL_MODEL.md); its answers are real but weak."""

    threads: int = Field(default=1, ge=1, le=64)
    ctx: int = Field(default=4096, ge=256)


class JobConfig(_Section):
    """A validated job file. ``response_model`` is importable when this exists."""

    version: Literal[1]
    name: str = "dbstruct-job"
    source: SourceConfig
    response_model: str
    model: str
    prompt: str | list[dict[str, str]] | None = None
    mode: str = "TOOLS"
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=CONCURRENCY_RANGE[0], le=CONCURRENCY_RANGE[1])
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=MAX_RETRIES_RANGE[0], le=MAX_RETRIES_RANGE[1])
    #: rows one request carries (structured_udf's rows_per_request)
    rows_per_request: int = Field(
        default=1, ge=ROWS_PER_REQUEST_RANGE[0], le=ROWS_PER_REQUEST_RANGE[1]
    )
    #: a verbatim quote per field, located in the row's text (structured_udf's evidence)
    evidence: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    partitions: int = Field(default=4, ge=1, le=10_000)
    chunk_rows: int = Field(default=5000, ge=1)
    retry_failed: bool = False
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    target: TargetConfig
    cache: CacheConfig | None = None
    emulator: EmulatorSettings | None = None
    local_model: LocalModelSettings | None = None
    credentials: CredentialsConfig | None = None
    #: the price of the endpoint's tokens (dbstruct.pricing.price_for reads it)
    pricing: dict[str, Any] | None = None
    budget: BudgetConfig | None = None
    endpoint_limits: EndpointLimits | None = None
    mlflow: MlflowConfig | None = None  # a run per job run, traces (dbstruct.jobs._mlflow_run)
    evaluate: EvaluateConfig | None = None  # scores printed after each run (jobs/evaluate.py)

    @model_validator(mode="before")
    @classmethod
    def _placeholders(cls, data: Any) -> Any:
        return fill_target_placeholders(data)

    @field_validator("emulator", "local_model", mode="before")
    @classmethod
    def _emulator_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("response_model")
    @classmethod
    def _importable(cls, value: str) -> str:
        import_model(value)
        return value

    @field_validator("model")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        from dbstruct.providers import parse_model

        try:
            parse_model(value)
        except ConfigurationError:
            raise ValueError(f"expected databricks/<endpoint-name>, got {value!r}") from None
        return value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        for mode in Mode:
            if value.strip() in (mode.value, mode.name, mode.name.lower(), f"Mode.{mode.name}"):
                return mode.name
        raise ValueError(f"expected one of {', '.join(m.name for m in Mode)}, got {value!r}")

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _RESERVED_OPTIONS:
                where = _RESERVED_OPTIONS[key]
                hint = f"set {where} instead" if where != "-" else "the job sets it"
                raise ValueError(f"{key!r} is not an option here: {hint}")
        return value

    @model_validator(mode="after")
    def _one_stand_in(self) -> JobConfig:
        if self.emulator is not None and self.local_model is not None:
            raise ValueError("give emulator or local_model, not both: each answers the job")
        return self

    @model_validator(mode="after")
    def _prompt_fits(self) -> JobConfig:
        _check_prompt(self.prompt_spec, self.source.text_columns)
        _check_names(self)
        return self

    @model_validator(mode="after")
    def _priced(self) -> JobConfig:
        try:
            price = self.price
        except ConfigurationError as e:
            raise ValueError(str(e)) from None  # names the pricing.<key>
        if self.budget is not None and self.budget.max_cost_usd is not None and price is None:
            raise ValueError(
                f"budget.max_cost_usd: no price is known for {self.model} (not in the built-in "
                "table); add pricing: {input_usd_per_million: ..., output_usd_per_million: ...} "
                "(see docs/PLAN.md), or give budget.max_tokens instead"
            )
        return self

    @property
    def price(self) -> Pricing | None:
        """The price of the endpoint's tokens: ``pricing:``, else the built-in list price,
        else None (an endpoint outside the built-in table)."""
        return price_for(self.model, self.pricing)

    @property
    def prompt_spec(self) -> str | list[dict[str, str]]:
        """The prompt, ``"{text}"`` when omitted (one text column)."""
        return self.prompt if self.prompt is not None else "{text}"

    @property
    def response_model_class(self) -> type[BaseModel]:
        return import_model(self.response_model)

    @property
    def mode_enum(self) -> Mode:
        return Mode[self.mode]


def build_udf(conf: JobConfig, credentials: Credentials) -> StructuredUDF:
    """The UDF a job sends its rows through: the job file's values as
    :func:`dbstruct.spark.structured_udf`'s arguments (with the status fields).

    >>> udf = build_udf(load_config("conf/demo.yml"), credentials)
    """
    from dbstruct.spark import structured_udf

    return structured_udf(
        conf.response_model_class,
        conf.model,
        conf.prompt_spec,
        mode=conf.mode_enum,
        concurrency=conf.concurrency,
        max_retries=conf.max_retries,
        rows_per_request=conf.rows_per_request,
        evidence=conf.evidence,
        trace_sample_rate=conf.mlflow.trace_sample_rate if conf.mlflow else 0.0,
        include_status=True,
        credentials=credentials,
        name="dbstruct_" + re.sub(r"\W", "_", conf.name),
        **conf.options,
    )


def _check_prompt(prompt: str | list[dict[str, str]], columns: list[str]) -> None:
    from dbstruct.spark._prompt import TemplatePrompt, build_prompt

    try:
        parsed = build_prompt(prompt)
    except ConfigurationError as e:
        raise ValueError("prompt: " + str(e).removeprefix("prompt ")) from None
    assert isinstance(parsed, TemplatePrompt)  # strings and message lists only, here
    if set(parsed.names) != set(columns) and parsed.arity != len(columns):
        raise ValueError(
            f"prompt: its placeholders ({', '.join(parsed.names) or 'none'}) must be the text "
            f"columns' names, or as many as source.text_columns ({', '.join(columns)})"
        )


def _check_names(conf: JobConfig) -> None:
    """Refuse output column names that would collide."""
    taken = [conf.source.id_column, *conf.source.keep_columns, *STATUS_COLUMNS, *JOB_COLUMNS]
    if conf.target.output == "struct":
        fields = [conf.target.result_column]
    else:
        from dbstruct.spark.struct_types import spark_schema_json

        fields = [f["name"] for f in spark_schema_json(conf.response_model_class)["fields"]]
    clash = sorted(set(fields) & set(taken))
    if clash:
        raise ValueError(
            f"target: output column(s) {clash} collide with the id, keep, status or job columns "
            f"({', '.join(taken)}); rename the result column or use output: struct"
        )

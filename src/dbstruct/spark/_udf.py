"""``structured_udf``: a Spark column function that extracts a Pydantic model from text.

Everything that can be wrong is checked on the driver, when the UDF is built, without
building a client: the endpoint name and mode, the worker settings
(:class:`dbstruct.worker_settings.WorkerSettings`), the client options, the response model
(JSON schema for the endpoint, Spark schema for the column), the prompt template and the
credentials. The executors get a :class:`dbstruct.spark._udf_spec.UdfSpec` pickled into the
UDF's closure and run :func:`dbstruct.spark._worker.run_partition`.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, Tuple  # noqa: UP035  (pyspark reads typing.Tuple hints)

from pydantic import BaseModel

from dbstruct._packing import pack_schema
from dbstruct._params import check_keywords
from dbstruct.auth import Credentials, resolve_credentials
from dbstruct.cache import open_cache
from dbstruct.errors import ConfigurationError, SchemaError
from dbstruct.evidence import evidence_model, output_model
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Mode
from dbstruct.providers import (
    check_answer_limits,
    parse_mode,
    parse_model,
    provider_parameters,
)
from dbstruct.spark import _result_column
from dbstruct.spark._prompt import Prompt, PromptSpec, TemplatePrompt, build_prompt
from dbstruct.spark._udf_spec import UdfSpec
from dbstruct.spark.struct_types import spark_schema
from dbstruct.tracing import udf_tracer
from dbstruct.worker_settings import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, WorkerSettings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column
    from pyspark.sql.types import StructType

__all__ = ["StructuredUDF", "structured_udf"]

# PythonEvalType.SQL_SCALAR_PANDAS_ITER_UDF; spark.udf.register reads it from the UDF object.
_SCALAR_PANDAS_ITER = 204
#: options of from_provider that are worker settings (given to structured_udf as **defaults)
_SETTING_OPTIONS = frozenset(f.name for f in fields(WorkerSettings)) & set(provider_parameters())


def structured_udf(
    response_model: type[BaseModel],
    model: str,
    prompt: PromptSpec = "{text}",
    *,
    mode: Mode | str = Mode.TOOLS,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_retries: int = DEFAULT_MAX_RETRIES,
    include_status: bool = False,
    strict: bool = False,
    name: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    credentials: Credentials | None = None,
    buffer_rows: int | None = None,
    adaptive: bool = True,
    max_qps: float | None = None,
    max_tokens_per_minute: float | None = None,
    workers: int | None = None,
    trace_sample_rate: float = 0.0,
    rows_per_request: int = 1,
    evidence: bool = False,
    **defaults: Any,
) -> StructuredUDF:
    """A UDF returning ``spark_schema(response_model)`` for each row of text.

    >>> extract_user = structured_udf(
    ...     UserExtract,
    ...     "databricks/databricks-meta-llama-3-3-70b-instruct",
    ...     prompt="Extract the user from this text: {text}",
    ... )
    >>> df.withColumn("user", extract_user("text")).select("id", "user.*")
    >>> spark.udf.register("extract_user", extract_user)  # SELECT extract_user(text).name

    ``prompt`` is a template (placeholders filled by the input columns in order of first
    appearance), a list of messages, or a function of the row's values; see
    :mod:`dbstruct.spark._prompt`. ``concurrency`` requests (1 to 512) run at once per Python
    worker (one per task slot), across Arrow batch boundaries; ``buffer_rows`` (default
    16 x concurrency, and at least two Arrow batches) bounds the rows read ahead. Null, empty
    or blank input gives null fields and sends nothing; identical prompts in flight at the
    same time are sent once.

    ``rows_per_request=k`` (1 to 64; default 1) sends up to k rows in one request: the
    instructions and schema once, each row's last message as an item with an id, the answer
    a list matched by id, never by position (see :mod:`dbstruct._many`). A row whose item is
    missing, duplicated, misquoted or invalid is sent again alone; ``max_tokens`` counts per
    row. Refused here when the mode cannot pack (PARALLEL_TOOLS), the list would exceed
    Databricks' key limits, or the prompt's placeholders are not all in its last message.

    ``evidence=True`` asks, in the same request, for a verbatim quote per top-level field
    and searches each quote in the row's text on the executor (see :mod:`dbstruct.evidence`):
    the value gains ``evidence: struct<<field>: struct<quote, found, start, end>, ...>``,
    ``found`` false for a quote that is not in the text. It adds 3 keys to the schema (refused
    here when that passes Databricks' limits) and works with ``rows_per_request``.

    A row that still fails after ``max_retries`` (0 to 20) has null fields (Spark cannot
    return a null struct from a pandas UDF: ``user IS NULL`` is false, ``user.name IS NULL``
    is true); the failure is logged on the executor. ``include_status=True`` returns
    ``struct<value, error, attempts, prompt_tokens, completion_tokens, latency_ms>`` with
    ``value`` null on failure; ``strict=True`` fails the task on the first failed row instead.

    Input columns must be strings. A classic session checks a DataFrame's own column
    (``df.text``) when the UDF is applied; for column names, ``F.col`` and on Spark Connect
    the type is only known on the executors, which check each batch before sending anything
    (the task fails with a ``ConfigurationError`` naming the column).

    Rate limits: by default (``adaptive=True``) each worker runs a controller that
    starts at a few requests in flight and raises that limit while answers come back fine,
    cuts it on 503 and on 429s that track its sending rate, pauses for part of such a 429's
    Retry-After, and paces its sends just under the rate that got through; 429s that come
    at a steady share whatever the rate (found by briefly sending at half that rate) slow
    nothing but their own row. ``concurrency`` stays the ceiling; ``adaptive=False`` keeps
    ``concurrency`` requests in flight, each row waiting out its own 429s.
    ``max_qps`` and ``max_tokens_per_minute`` (prompt plus completion tokens, retries
    included) cap the whole job: each of ``workers`` Python workers gets ``cap / workers``
    as a token bucket. ``workers`` defaults to the active session's
    ``spark.default.parallelism`` conf, else (classic sessions) the cluster's task slots
    (``sparkContext.defaultParallelism``); on Spark Connect without that conf, pass it. Fewer
    tasks at once than ``workers`` keep the job under its cap; more (autoscaling) exceed it.

    MLflow traces (:mod:`dbstruct.tracing`): with ``trace_sample_rate`` > 0 (0 to 1), or when
    ``dbstruct.autolog()`` is on here, executors write the traces of every failed row and of
    that share of the others (by a hash of each row's messages, so the same rows every run)
    to the MLflow tracking URI and experiment active here when the UDF is built; see
    docs/MLFLOW.md for what happens when executors cannot reach it.

    These settings, and ``timeout``, ``total_timeout`` and ``max_connections`` (default:
    ``concurrency``), are a :class:`dbstruct.worker_settings.WorkerSettings`, checked here.
    Other keyword arguments (``temperature``, ``max_tokens``, ``cache``, ...) go to
    :func:`dbstruct.from_provider`: its own options, or chat request fields; a misspelt one
    (``concurency=16``) is a ``ConfigurationError`` here, before any Spark job. Credentials
    are resolved here, on the driver, and shipped to the executors with the UDF (never shown
    in plans, reprs or logs).
    """
    _check_defaults(defaults)
    settings = WorkerSettings(
        concurrency=concurrency,
        max_retries=max_retries,
        buffer_rows=buffer_rows,
        adaptive=adaptive,
        max_qps=max_qps,
        max_tokens_per_minute=max_tokens_per_minute,
        workers=workers,
        trace_sample_rate=trace_sample_rate,
        rows_per_request=rows_per_request,
        **{k: v for k, v in defaults.items() if k in _SETTING_OPTIONS},
    )
    settings = _with_workers(settings)
    parsed_prompt = build_prompt(prompt)
    if not isinstance(evidence, bool):
        raise ConfigurationError(f"evidence must be True or False, not {evidence!r}")
    value_type = spark_schema(response_model)  # SchemaMappingError, on the driver
    creds = credentials or resolve_credentials(base_url=base_url, api_key=api_key)
    parse_model(model)
    chosen = parse_mode(mode)
    # the rest of **defaults: from_provider's other options, and chat request fields
    client_options = {k: v for k, v in defaults.items() if k not in _SETTING_OPTIONS}
    _check_client_options(client_options)
    compile_schema(response_model, strict=chosen is Mode.TOOLS_STRICT)
    requested: type[BaseModel] = response_model
    if evidence:
        requested = evidence_model(response_model, chosen)  # the mode's key limits
        value_type = spark_schema(output_model(response_model))
    if settings.rows_per_request > 1:
        try:
            _check_packing(requested, chosen, parsed_prompt)
        except SchemaError as e:
            if not evidence:
                raise
            raise SchemaError(
                f"{e} (with evidence=True, whose quotes take 3 of those keys)",
                model=response_model.__name__,
            ) from e
    spec = UdfSpec(
        id=uuid.uuid4().hex,
        name=name or f"extract_{response_model.__name__.lower()}",
        response_model=response_model,
        model=model,
        prompt=parsed_prompt,
        mode=chosen,
        include_status=include_status,
        strict=strict,
        credentials=creds,
        settings=settings,
        tracer=udf_tracer(settings.trace_sample_rate),
        client_options=tuple(sorted(client_options.items())),
        evidence=evidence,
    )
    return StructuredUDF(spec, _result_column.return_type(value_type, include_status))


def _check_packing(response_model: type[BaseModel], mode: Mode, prompt: Prompt) -> None:
    """What makes rows_per_request > 1 impossible, found on the driver: a mode that cannot
    pack, a list over Databricks' key limits, a prompt whose rows cannot be items."""
    pack_schema(response_model, mode)
    problem = prompt.packing_problem()
    if problem is not None:
        raise ConfigurationError(f"{problem}; or use rows_per_request=1")


def _check_client_options(options: dict[str, Any]) -> None:
    """What :func:`dbstruct.from_provider` would refuse in the other options it takes."""
    check_answer_limits(options.get("max_context_tokens"), options.get("max_answer_bytes"))
    open_cache(options.get("cache"))  # a path that cannot be used fails here, as on executors


def _check_defaults(defaults: dict[str, Any]) -> None:
    """Refuse a keyword that is neither an option of ``from_provider`` nor a request field."""
    own = [n for n in inspect.signature(structured_udf).parameters if n != "defaults"]
    # async_client: the executors' clients are async whatever is asked
    passed = set(provider_parameters()) - {"async_client"}
    check_keywords(
        [k for k in defaults if k not in passed], "structured_udf", own=[*own, *sorted(passed)]
    )


class StructuredUDF:
    """The column function :func:`structured_udf` returns; registrable for SQL.

    It has the attributes ``spark.udf.register`` reads from a UDF (``func``, ``returnType``,
    ``evalType``, ``deterministic``), on classic and Connect sessions alike.
    """

    evalType = _SCALAR_PANDAS_ITER
    # An LLM call is not deterministic: Spark must not assume that evaluating it twice (or
    # merging two evaluations) gives the same answer, so each row is sent once.
    deterministic = False

    def __init__(self, spec: UdfSpec, return_type: StructType) -> None:
        self.spec = spec
        self.returnType = return_type
        self.func = _udf_function(spec, arity=None)
        self.__name__ = spec.name
        self._udfs: dict[tuple[bool, int], Any] = {}

    @property
    def schema(self) -> StructType:
        """The Spark type of the column this UDF returns."""
        return self.returnType

    def asNondeterministic(self) -> StructuredUDF:  # pyspark's UDF protocol
        return self

    def __call__(self, *cols: Column | str, **named: Column | str) -> Column:
        """Apply to one column per placeholder: positionally, or by placeholder name."""
        columns = self._arrange(cols, named)
        for position, column in enumerate(columns, start=1):
            _check_resolved_type(self.spec.name, position, column)
        from pyspark.sql.utils import is_remote

        key = (bool(is_remote()), len(columns))
        udf = self._udfs.get(key)
        if udf is None:
            from pyspark.sql.pandas.functions import pandas_udf

            # pyspark's overloads want a literal hinted function; ours gets its hints at runtime
            func = _udf_function(self.spec, len(columns))
            udf = pandas_udf(func, self.returnType)  # type: ignore[call-overload]
            udf = udf.asNondeterministic()
            self._udfs[key] = udf
        return udf(*columns)  # type: ignore[no-any-return]

    def _arrange(
        self, cols: tuple[Column | str, ...], named: dict[str, Column | str]
    ) -> list[Column | str]:
        prompt = self.spec.prompt
        if named:
            if cols or not isinstance(prompt, TemplatePrompt) or set(named) != set(prompt.names):
                expected = ", ".join(prompt.names) if isinstance(prompt, TemplatePrompt) else "-"
                raise ConfigurationError(
                    f"{self.spec.name}: pass columns either positionally or by placeholder "
                    f"name, all of them ({expected}); got {sorted(named)}"
                )
            return [named[n] for n in prompt.names]
        if not cols:
            raise ConfigurationError(f"{self.spec.name}: give at least one input column")
        if isinstance(prompt, TemplatePrompt) and len(cols) != prompt.arity:
            raise ConfigurationError(
                f"{self.spec.name}: the prompt has {prompt.arity} placeholder(s) "
                f"({', '.join(prompt.names)}), filled in that order, but got {len(cols)} column(s)"
            )
        return list(cols)

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"StructuredUDF(name={s.name!r}, response_model={s.response_model.__name__}, "
            f"model={s.model!r}, mode={s.mode}, concurrency={s.settings.concurrency}, "
            f"include_status={s.include_status}, strict={s.strict})"
        )


def _with_workers(settings: WorkerSettings) -> WorkerSettings:
    """``settings``, with ``workers`` from the active session when a cap must be split and
    no ``workers`` was given."""
    if not settings.capped or settings.workers is not None:
        return settings
    return replace(settings, workers=_session_workers())


def _session_workers() -> int:
    """Python workers that can run at once: one per task slot of the active session."""
    session = _active_session()
    if session is None:
        raise ConfigurationError(
            "max_qps / max_tokens_per_minute are split across workers: pass workers= "
            "(the job's task slots), or build the UDF with an active Spark session"
        )
    found: Any = None
    try:
        found = session.conf.get("spark.default.parallelism", None)
        if found is None and hasattr(session, "sparkContext"):  # classic only
            found = session.sparkContext.defaultParallelism
    except Exception:  # Connect: sparkContext raises; serverless may hide the conf
        found = None
    if found is None or int(found) < 1:
        raise ConfigurationError(
            "max_qps / max_tokens_per_minute are split across workers, and this session does "
            "not say how many there are (no spark.default.parallelism): pass workers="
        )
    return int(found)


def _active_session() -> Any:
    from pyspark.sql.utils import is_remote

    if is_remote():
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        return ConnectSession.getActiveSession()
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def _check_resolved_type(name: str, position: int, column: Any) -> None:
    """Refuse a non-string column now, when Spark already knows its type.

    Only a classic session's columns taken from a DataFrame (``df.text``, ``df["text"]``) carry
    a resolved type before the query runs; for names, ``F.col`` and every Spark Connect column
    the type is known only on the executors, where the first batch is checked before any
    request is sent (:func:`dbstruct.spark._worker._check_strings`).
    """
    type_name = _resolved_type_name(column)
    if type_name is not None and type_name not in ("string", "void"):
        raise ConfigurationError(
            f"{name}: input column {position} is {type_name}, not string; structured UDFs "
            f"read text: cast the column first, e.g. F.col('...').cast('string')"
        )


def _resolved_type_name(column: Any) -> str | None:
    jc: Any = getattr(column, "_jc", None)  # classic columns only
    if jc is None:
        return None
    # Spark 3.5 exposes the Catalyst expression as Column.expr(); 4.x as node().expression().
    for path in (("expr",), ("node", "expression")):
        try:
            expression = jc
            for method in path:
                expression = getattr(expression, method)()
            if not expression.resolved():
                return None
            return str(expression.dataType().simpleString())
        except Exception:  # py4j: no such method on this Spark version; best effort only
            continue
    return None


def _udf_function(spec: UdfSpec, arity: int | None) -> Any:
    """The Python function Spark pickles and runs; type hints make it a SCALAR_ITER UDF."""

    def run(batches: Iterator[Any]) -> Iterator[pd.DataFrame]:
        from dbstruct.spark._worker import run_partition

        return run_partition(spec, batches)

    import pandas as pd

    args: Any = pd.Series if arity in (None, 1) else Tuple[(pd.Series,) * (arity or 1)]  # noqa: UP006
    run.__annotations__ = {"batches": Iterator[args], "return": Iterator[pd.DataFrame]}
    run.__name__ = run.__qualname__ = spec.name
    return run

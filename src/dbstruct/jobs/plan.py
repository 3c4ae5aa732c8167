"""``plan_job``: what a run of a job file would process, take in tokens, cost and take in time.

    from dbstruct.jobs import load_config
    from dbstruct.jobs.plan import plan_job

    plan = plan_job(spark, load_config("conf/demo.yml"))            # sends nothing
    plan = plan_job(spark, load_config("conf/demo.yml"), pilot=30)  # 30 rows really sent
    print(plan.to_text())

The rows are those a run would process now: the source, without the ids the target holds
already (as a rerun leaves them out), read without writing anything. Each row's prompt
tokens are counted from the requests the job's own code builds (:mod:`dbstruct.jobs._estimate`,
packs included); rows whose answer is in the job's cache table cost nothing; completion
tokens are estimated from the response model's schema (:mod:`dbstruct.answer_size`).

A pilot sends ``pilot`` rows sampled by a hash of their id, through :func:`run_job`: they
are committed to the target as an ordinary chunk (and stored in the cache table when the
job has one), so the run does not pay for them again. Their measured tokens, latency,
attempts and errors replace the estimates: the rest's prompt tokens are the counted ones
scaled by the pilot's measured-to-counted ratio (which also carries its retries), its
completion tokens the pilot's mean per row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dbstruct.answer_size import max_tokens_from_answers, suggested_max_tokens
from dbstruct.jobs._estimate import RowEstimator, estimate_column
from dbstruct.jobs._plan_time import Limits, Staffing, run_time, staffing
from dbstruct.jobs._progress import format_duration
from dbstruct.jobs._secrets import resolve_references
from dbstruct.jobs._source import read_source
from dbstruct.jobs._targets import Target, open_target
from dbstruct.jobs.run import pending_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from dbstruct.auth import Credentials
    from dbstruct.jobs.conf import JobConfig

__all__ = ["JobPlan", "PilotResult", "plan_job"]


@dataclass(frozen=True)
class PilotResult:
    """What the pilot's rows measured (committed to the target as run ``run_id``)."""

    rows: int
    sent: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    #: the pilot rows' prompt tokens as counted offline, for the ratio
    counted_prompt_tokens: int
    mean_attempts: float
    mean_latency_s: float
    run_id: str
    cost_usd: float | None
    #: the completion tokens of each row answered
    completions: tuple[int, ...] = ()

    @property
    def prompt_ratio(self) -> float:
        """Measured over counted prompt tokens (1.0 when nothing was counted)."""
        return (
            self.prompt_tokens / self.counted_prompt_tokens if self.counted_prompt_tokens else 1.0
        )

    @property
    def error_rate(self) -> float:
        return self.failed / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class JobPlan:
    """A run's expected size, cost and time (see the module docstring)."""

    name: str
    model: str
    target: str
    source_rows: int
    skipped: int
    rows: int
    no_text: int
    cached: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tokenizer: str
    basis: str
    cost_usd: float | None
    price: str | None
    minutes: float | None
    time_bound: str | None
    suggested_max_tokens: int
    max_tokens: int | None
    in_flight: int
    pilot: PilotResult | None = None
    deadline_minutes: float | None = None
    staffing: Staffing | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.pilot is not None:
            out["pilot"] = {k: v for k, v in asdict(self.pilot).items() if k != "completions"}
        out["staffing"] = None if self.staffing is None else asdict(self.staffing)
        out["notes"] = list(self.notes)
        return out

    def to_text(self) -> str:
        cost = (
            f"${self.cost_usd:,.4f}"
            if self.cost_usd is not None
            else "unknown: no price for this endpoint (add pricing: to the job file)"
        )
        time = (
            f"{format_duration(self.minutes * 60)}   bound by {self.time_bound}"
            if self.minutes is not None
            else "unknown: give endpoint_limits: (qps, tokens per minute) or run a --pilot"
        )
        lines = [
            f"dbstruct plan {self.name!r}: {self.model} -> {self.target}",
            f"  source rows       {self.source_rows:>12,}",
            f"  skipped           {self.skipped:>12,}   already in the target",
            f"  rows to process   {self.rows:>12,}   {self.no_text:,} without text, "
            f"{self.cached:,} in the cache (cost nothing)",
            f"  requests          {self.requests:>12,}",
            f"  prompt tokens     {self.prompt_tokens:>12,}   {self.basis}",
            f"  completion tokens {self.completion_tokens:>12,}",
            f"  cost              {cost}",
            *([f"    price           {self.price}"] if self.price else []),
            f"  time              {time}",
            f"  max_tokens        {self.suggested_max_tokens:>12,}   suggested per row "
            f"(options.max_tokens is {self.max_tokens if self.max_tokens else 'not set'})",
        ]
        if self.pilot is not None:
            p = self.pilot
            spent = f", ${p.cost_usd:,.4f}" if p.cost_usd is not None else ""
            lines.append(
                f"  pilot             {p.rows:>12,}   rows committed as run {p.run_id}: "
                f"{p.prompt_tokens:,} + {p.completion_tokens:,} tokens{spent}, "
                f"{p.mean_latency_s:.2f} s and {p.mean_attempts:.2f} attempts a row, "
                f"{p.error_rate:.1%} failed"
            )
        if self.deadline_minutes is not None and self.staffing is not None:
            s = self.staffing
            need = (
                f"cannot be met: {s.impossible}"
                if s.impossible
                else f"{s.in_flight} requests in flight: concurrency {s.concurrency} with "
                f"partitions {s.partitions}"
            )
            lines.append(
                f"  deadline          {format_duration(self.deadline_minutes * 60):>12}   {need}"
            )
        lines.extend(f"  note              {n}" for n in self.notes)
        return "\n".join(lines)


def plan_job(
    spark: SparkSession,
    conf: JobConfig,
    *,
    pilot: int = 0,
    deadline_minutes: float | None = None,
    tokenizer: str = "auto",
    credentials: Credentials | None = None,
    dbutils: Any = None,
) -> JobPlan:
    """Plan a run of ``conf`` (``pilot`` rows really sent first; see the module docstring)."""
    from pyspark.sql import functions as F

    estimator = RowEstimator(conf, tokenizer)
    target = open_target(spark, conf.target, conf.source.id_column)
    options = {
        key: resolve_references(value, f"source.options.{key}", dbutils=dbutils)
        for key, value in conf.source.options.items()
    }
    source = read_source(spark, conf.source, options)
    source_rows = source.count()
    _check_target(conf, target, source, estimator)
    pending = pending_rows(conf, target, source)  # what a run would process, read only
    id_col = F.col(conf.source.id_column)
    rows = _with_cache_hits(
        spark,
        conf,
        estimator,
        pending,
        pending.select(id_col, estimate_column(conf, tokenizer).alias("_tokens")),
    )

    result: PilotResult | None = None
    if pilot > 0:
        result, pilot_ids = _run_pilot(spark, conf, pending, estimator, pilot, credentials, dbutils)
        if pilot_ids:
            rows = rows.where(~id_col.isin(pilot_ids))

    sent = (F.col("_tokens") > 0) & ~F.col("_hit")
    totals = rows.agg(
        F.count(F.lit(1)),
        F.sum(F.when(F.col("_tokens") == 0, 1).otherwise(0)),
        F.sum(F.when(F.col("_hit"), 1).otherwise(0)),
        F.sum(F.when(sent, 1).otherwise(0)),
        F.sum(F.when(sent, F.col("_tokens")).otherwise(0)),
    ).first()
    todo, no_text, cached, to_send, counted = (int(v or 0) for v in (totals or (0,) * 5))
    k = conf.rows_per_request
    requests = math.ceil(to_send / k)
    if result is not None and result.sent:
        prompt = round(counted * result.prompt_ratio)
        completion = round(to_send * result.completion_tokens / result.sent)
        basis = (
            f"counted with {estimator.counter_name}, x {result.prompt_ratio:.3f} as the pilot "
            "measured"
        )
        requests = math.ceil(requests * result.mean_attempts)
    else:
        prompt = counted
        completion = round(to_send * estimator.completion_tokens_per_row)
        basis = f"counted with {estimator.counter_name}; completion estimated from the schema"
    price = conf.price
    cost = price.cost_usd(prompt, completion) if price is not None else None
    in_flight = conf.partitions * conf.concurrency
    notes: list[str] = []
    latency = result.mean_latency_s if result is not None and result.sent else None
    if latency is None:
        latency, earlier = _earlier_latency(target)
        if latency is not None:
            notes.append(
                f"time from the latency of the target's {earlier:,} earlier sent rows "
                f"({latency:.2f} s a row)"
            )
    limits = _limits(conf)
    timing = run_time(
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        limits=limits,
        in_flight=in_flight,
        latency_s=latency,
    )
    staff = None
    if deadline_minutes is not None:
        if latency is None:
            notes.append("--deadline needs a request's latency: add --pilot N")  # nothing sent yet
        else:
            staff = staffing(
                deadline_minutes=deadline_minutes,
                requests=requests,
                latency_s=latency,
                run=timing,
                partitions=conf.partitions,
            )
    return JobPlan(
        name=conf.name,
        model=conf.model,
        target=target.where,
        source_rows=source_rows,
        skipped=source_rows - todo - (result.rows if result is not None else 0),
        rows=todo,
        no_text=no_text,
        cached=cached,
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokenizer=estimator.counter_name,
        basis=basis,
        cost_usd=None if cost is None else round(cost, 6),
        price=None if price is None else price.describe(),
        minutes=timing.minutes,
        time_bound=timing.bound,
        suggested_max_tokens=_max_tokens(conf, estimator, result),
        max_tokens=conf.options.get("max_tokens"),
        in_flight=in_flight,
        pilot=result,
        deadline_minutes=deadline_minutes,
        staffing=staff,
        notes=tuple(notes),
    )


def _check_target(
    conf: JobConfig, target: Target, source: DataFrame, estimator: RowEstimator
) -> None:
    """Refuse what a run would refuse before sending: a target of other columns, and (for the
    emulator's answers, whose origin needs no credentials) a target holding real ones."""
    from dbstruct.jobs._origin import EMULATOR, claim_target
    from dbstruct.jobs._targets import batch_name
    from dbstruct.jobs.run import _check_schema, shape_output

    if conf.target.mode == "overwrite" or not target.exists():
        return
    if conf.emulator is not None:
        claim_target(target, EMULATOR, conf)
    _check_schema(target, shape_output(source.limit(0), estimator.udf, conf, batch_name(0, 0)))


def _earlier_latency(target: Target) -> tuple[float | None, int]:
    """The mean latency of the rows the target's earlier runs sent, and how many there are."""
    from pyspark.sql import functions as F

    if not target.exists():
        return None, 0
    rows = target.read()
    found = rows.where(rows["attempts"] > 0).agg(F.avg("latency_ms"), F.count(F.lit(1))).first()
    if found is None or not found[1]:
        return None, 0
    return float(found[0]) / 1000, int(found[1])


def _limits(conf: JobConfig) -> Limits:
    given = conf.endpoint_limits
    if given is None:
        return Limits()
    return Limits(
        qps=given.qps,
        input_tokens_per_minute=given.input_tokens_per_minute,
        output_tokens_per_minute=given.output_tokens_per_minute,
        tokens_per_second=given.tokens_per_second,
    )


def _with_cache_hits(
    spark: SparkSession,
    conf: JobConfig,
    estimator: RowEstimator,
    pending: DataFrame,
    rows: DataFrame,
) -> DataFrame:
    """``rows`` with ``_hit``: the row's answer is in the job's cache table, so a run sends
    nothing for it (the table is read, never created, here)."""
    from pyspark.sql import functions as F

    from dbstruct.spark._table_cache import cache_exists

    where = conf.cache
    if where is None or not cache_exists(
        spark, table=where.table, path=where.path, format=where.format
    ):
        return rows.withColumn("_hit", F.lit(False))
    from dbstruct.jobs._cache import udf_inputs
    from dbstruct.spark import TableCache

    table = TableCache(spark, table=where.table, path=where.path, format=where.format)
    id_name = conf.source.id_column
    args, named = udf_inputs(estimator.udf, conf.source.text_columns)
    keyed = pending.select(id_name, table.key(estimator.udf, *args, **named).alias("_key"))
    stored = table.entries().select(F.col("key").alias("_key"), F.lit(True).alias("_hit"))
    hits = keyed.join(stored, "_key").select(id_name, "_hit")
    joined = rows.join(hits, id_name, "left")
    return joined.withColumn("_hit", F.coalesce(F.col("_hit"), F.lit(False)))


def _run_pilot(
    spark: SparkSession,
    conf: JobConfig,
    pending: DataFrame,
    estimator: RowEstimator,
    n: int,
    credentials: Credentials | None,
    dbutils: Any,
) -> tuple[PilotResult | None, list[Any]]:
    """Send ``n`` pending rows (sampled by a hash of the id) as a run; what they measured."""
    from pyspark.sql import functions as F

    from dbstruct.jobs.run import run_job

    id_name = conf.source.id_column
    order = F.xxhash64(F.col(id_name), F.lit("dbstruct-pilot"))
    ids = [r[0] for r in pending.select(id_name).orderBy(order).limit(n).collect()]
    if not ids:
        return None, []
    # the pilot's rows counted together, as one task packs them; and the pilot run in
    # tasks of at least k rows, so that its packs are full like the run's (a pilot of 12
    # rows spread over 2 tasks would send packs of 6, whose shared part costs each row more,
    # and the measured-to-counted ratio would carry that into the plan)
    picked = pending.where(F.col(id_name).isin(ids)).select(id_name, *estimator.arguments())
    texts = picked.collect()
    tokens = estimator.prompt_tokens([tuple(r[1:]) for r in texts])
    counted = {r[0]: t for r, t in zip(texts, tokens, strict=True)}
    tasks = max(1, min(conf.partitions, len(ids) // conf.rows_per_request))
    only = pending.select(id_name).where(F.col(id_name).isin(ids))
    summary = run_job(
        spark,
        conf.model_copy(update={"partitions": tasks}),
        only=only,
        credentials=credentials,
        dbutils=dbutils,
    )
    target = open_target(spark, conf.target, id_name)
    got = (
        target.read()
        .where(F.col("batch").startswith(summary.run_id + "-"))
        .select(id_name, "error", "attempts", "latency_ms", "prompt_tokens", "completion_tokens")
        .collect()
    )
    sent = [r for r in got if (r["attempts"] or 0) > 0]
    n_sent = len(sent)
    return (
        PilotResult(
            rows=len(got),
            sent=n_sent,
            failed=sum(1 for r in sent if r["error"] is not None),
            prompt_tokens=sum(r["prompt_tokens"] or 0 for r in sent),
            completion_tokens=sum(r["completion_tokens"] or 0 for r in sent),
            counted_prompt_tokens=sum(counted.get(r[0], 0) for r in sent),
            mean_attempts=sum(r["attempts"] for r in sent) / n_sent if n_sent else 0.0,
            mean_latency_s=(
                sum((r["latency_ms"] or 0) for r in sent) / n_sent / 1000 if n_sent else 0.0
            ),
            run_id=summary.run_id,
            cost_usd=getattr(summary, "cost_usd", None),
            completions=tuple(int(r["completion_tokens"] or 0) for r in sent if r["error"] is None),
        ),
        ids,
    )


def _max_tokens(conf: JobConfig, estimator: RowEstimator, pilot: PilotResult | None) -> int:
    """``max_tokens`` per row: from the pilot's answers when it has some, else the schema."""
    if pilot is not None and pilot.completions:
        return max_tokens_from_answers(pilot.completions)
    return suggested_max_tokens(
        estimator.udf.spec.request_model,
        conf.mode_enum,
        estimator.counter,
        rows_per_request=conf.rows_per_request,
    )

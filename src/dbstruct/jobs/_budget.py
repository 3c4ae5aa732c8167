"""A run's ``budget:``: what one row is expected to take, and chunks sized to what is left.

    plan = plan_budget(conf, pending, todo)   # estimates a row; refuses a budget below one
    while (buckets := plan.next_chunk(progress.done)) is not None:
        ...                                   # commit the rows whose bucket is in range

Before anything is sent, one row's tokens are estimated offline
(:class:`dbstruct.jobs._estimate.RowEstimator`, on up to 200 pending rows): the mean prompt
tokens of the rows that would be sent plus the completion tokens expected per row, and in
dollars at the job's price. The pending rows are split into up to 10,000 buckets by a hash of
the id; each chunk takes the next buckets while its rows times the tokens kept per row (the
estimate, or the mean per row sent so far in this run when that is higher) stay within 90% of
what is left of the budget, and its rows within ``chunk_rows``. What was spent is read back
from the committed rows after each chunk. When the next bucket does not fit, the run stops
with :class:`~dbstruct.errors.BudgetReachedError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbstruct.errors import BudgetReachedError, ConfigurationError
from dbstruct.jobs._progress import BudgetOutcome, ChunkStats
from dbstruct.jobs.conf import BudgetConfig, JobConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["BudgetPlan", "RowEstimate", "estimate_row", "plan_budget"]

#: pending rows the row estimate is taken from
SAMPLE_ROWS = 200
#: at most this many buckets (so the counts collected to the driver stay small)
MAX_BUCKETS = 10_000
#: the share of what is left of the budget a chunk may be expected to spend
HEADROOM = 0.9


@dataclass(frozen=True)
class RowEstimate:
    """One row's expected tokens (prompt + completion), and dollars when there is a price."""

    prompt_tokens: float
    completion_tokens: float
    cost_usd: float | None
    sampled: int

    @property
    def tokens(self) -> float:
        return self.prompt_tokens + self.completion_tokens


def estimate_row(conf: JobConfig, pending: DataFrame) -> RowEstimate:
    """One row's expected tokens, from up to 200 of ``pending``'s rows; sends nothing."""
    from dbstruct.jobs._estimate import RowEstimator

    estimator = RowEstimator(conf)
    columns = estimator.arguments()
    sample = pending.select(*columns).limit(SAMPLE_ROWS).collect()
    rows = [tuple(None if v is None else str(v) for v in row) for row in sample]
    counts = [n for n in estimator.prompt_tokens(rows) if n > 0]
    prompt = sum(counts) / len(counts) if counts else 0.0
    completion = float(estimator.completion_tokens_per_row)
    price = conf.price
    cost = None
    if price is not None:
        cost = prompt * price.input_usd_per_million + completion * price.output_usd_per_million
        cost /= 1e6
    return RowEstimate(prompt, completion, cost, len(rows))


def plan_budget(conf: JobConfig, pending: DataFrame, todo: int) -> BudgetPlan:
    """The budget of this run over ``pending`` (``todo`` rows); raises ConfigurationError,
    having sent nothing, when the budget is below one row's estimate."""
    from pyspark.sql import functions as F

    assert conf.budget is not None
    estimate = estimate_row(conf, pending) if todo else RowEstimate(0.0, 0.0, None, 0)
    _refuse_below_one_row(conf.budget, estimate)
    buckets = max(1, min(todo, MAX_BUCKETS))
    bucket = F.pmod(F.xxhash64(F.col(conf.source.id_column)), F.lit(buckets))
    counted = pending.groupBy(bucket.alias("_bucket")).count().collect() if todo else []
    counts = [(int(r[0]), int(r[1])) for r in counted]
    return BudgetPlan(conf, todo, estimate, counts, bucket)


def _refuse_below_one_row(budget: BudgetConfig, est: RowEstimate) -> None:
    of = (
        f"({est.prompt_tokens:,.0f} prompt + {est.completion_tokens:,.0f} completion tokens, "
        f"from {est.sampled} pending row(s)); nothing was sent"
    )
    if budget.max_tokens is not None and budget.max_tokens < est.tokens:
        raise ConfigurationError(
            f"budget.max_tokens: {budget.max_tokens:,} is below one row's estimated "
            f"{est.tokens:,.0f} tokens {of}"
        )
    if (
        budget.max_cost_usd is not None
        and est.cost_usd is not None
        and budget.max_cost_usd < est.cost_usd
    ):
        raise ConfigurationError(
            f"budget.max_cost_usd: {budget.max_cost_usd:g} is below one row's estimated "
            f"${est.cost_usd:.6f} {of}"
        )


class BudgetPlan:
    """Chunks of whole buckets, each sized to what is left of the budget."""

    def __init__(
        self,
        conf: JobConfig,
        todo: int,
        estimate: RowEstimate,
        counts: list[tuple[int, int]],
        bucket: Column | None = None,
    ) -> None:
        assert conf.budget is not None
        self.budget = conf.budget
        self.price = conf.price
        self.chunk_rows = conf.chunk_rows
        self.todo = todo
        self.estimate = estimate
        #: (bucket, rows) of the non-empty buckets, in order
        self.counts = sorted(counts)
        self.bucket = bucket  # each pending row's bucket
        self.next = 0  # index into counts of the next bucket to take
        self.chunks = 0  # chunks handed out

    def rows(self, pending: DataFrame, buckets: tuple[int, int]) -> DataFrame:
        """The rows of ``pending`` in the buckets from ``buckets[0]`` to ``buckets[1]``."""
        assert self.bucket is not None
        return pending.where(self.bucket.between(*buckets))

    def reserve(self, done: ChunkStats) -> tuple[float, float | None]:
        """Tokens and dollars kept per row: the estimate, or the mean per row sent so far
        in this run when higher."""
        sent = done.succeeded + done.failed
        tokens, cost = self.estimate.tokens, self.estimate.cost_usd
        if sent:
            tokens = max(tokens, (done.prompt_tokens + done.completion_tokens) / sent)
            spent = done.cost_usd(self.price)
            if cost is not None and spent is not None:
                cost = max(cost, spent / sent)
        return tokens, cost

    def fits(self, rows: int, done: ChunkStats) -> bool:
        """Whether ``rows`` more rows are expected to stay within 90% of what is left."""
        tokens, cost = self.reserve(done)
        if self.budget.max_tokens is not None:
            left = self.budget.max_tokens - done.prompt_tokens - done.completion_tokens
            if rows * tokens > HEADROOM * left:
                return False
        spent = done.cost_usd(self.price)
        if self.budget.max_cost_usd is not None and cost is not None and spent is not None:
            if rows * cost > HEADROOM * (self.budget.max_cost_usd - spent):
                return False
        return True

    def next_chunk(self, done: ChunkStats) -> tuple[int, int] | None:
        """The first and last bucket of the next chunk; None when every bucket is done.

        Raises :class:`~dbstruct.errors.BudgetReachedError` when the next bucket does not fit.
        """
        if self.next >= len(self.counts):
            return None
        first, rows = self.next, 0
        while self.next < len(self.counts):
            more = self.counts[self.next][1]
            if self.next > first and rows + more > self.chunk_rows:
                break
            if not self.fits(rows + more, done):
                break
            rows += more
            self.next += 1
        if self.next == first:
            raise BudgetReachedError(self._stop_message(done), done=done)
        self.chunks += 1
        return self.counts[first][0], self.counts[self.next - 1][0]

    def outcome(self, done: ChunkStats, *, stopped: bool) -> BudgetOutcome:
        """The budget's part of the summary: what the rows left would take."""
        left = sum(rows for _, rows in self.counts[self.next :])
        tokens, cost = self.reserve(done)
        return BudgetOutcome(
            max_tokens=self.budget.max_tokens,
            max_cost_usd=self.budget.max_cost_usd,
            stopped=stopped,
            remaining_rows=left,
            remaining_tokens_estimate=math.ceil(left * tokens),
            remaining_cost_usd_estimate=None if cost is None else round(left * cost, 6),
        )

    def _stop_message(self, done: ChunkStats) -> str:
        rest = self.outcome(done, stopped=True)
        spent_cost = done.cost_usd(self.price)
        tokens = done.prompt_tokens + done.completion_tokens
        caps, sets = [], []
        if self.budget.max_tokens is not None:
            caps.append(f"budget.max_tokens {self.budget.max_tokens:,}")
            sets.append(f"--set budget.max_tokens={_more(rest.remaining_tokens_estimate):.0f}")
        if self.budget.max_cost_usd is not None:
            caps.append(f"budget.max_cost_usd {self.budget.max_cost_usd:g}")
            sets.append(f"--set budget.max_cost_usd={_more(rest.remaining_cost_usd_estimate):g}")
        spent = f"{tokens:,} tokens" + ("" if spent_cost is None else f" (${spent_cost:.4f})")
        would = f"{rest.remaining_tokens_estimate:,} tokens"
        if rest.remaining_cost_usd_estimate is not None:
            would += f" (${rest.remaining_cost_usd_estimate:.4f})"
        return (
            f"budget reached: {done.rows:,} of {self.todo:,} row(s) done in this run, spending "
            f"{spent} of {' and '.join(caps)}; the {rest.remaining_rows:,} row(s) left would "
            f"take about {would} more, so they were not sent. What was done is committed; a "
            f"rerun with a larger budget continues where this one stopped ({' '.join(sets)})"
        )


def _more(amount: float | None) -> float:
    """A budget for ``amount`` more: room for the 90% headroom and 10% to spare, rounded up
    to two significant digits."""
    need = (amount or 0.0) / HEADROOM * 1.1
    if need <= 0:
        return 1.0
    step = 10.0 ** (math.floor(math.log10(need)) - 1)
    return float(f"{math.ceil(need / step) * step:.2g}")

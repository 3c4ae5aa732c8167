"""What a run did: per-chunk counts, the progress line after each chunk, the final summary
(as text, and as a dict for ``dbstruct run --summary-json``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dbstruct.pricing import Pricing

__all__ = ["BudgetOutcome", "ChunkStats", "JobSummary", "Progress", "format_duration"]

logger = logging.getLogger("dbstruct.jobs")


@dataclass(frozen=True)
class ChunkStats:
    """Counts of the rows one chunk committed (read back from the target)."""

    rows: int = 0
    succeeded: int = 0
    failed: int = 0
    empty: int = 0  # null or blank text: nothing was sent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0  # answered from the response cache: nothing was sent

    def __add__(self, other: ChunkStats) -> ChunkStats:
        return ChunkStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def cost_usd(self, price: Pricing | None) -> float | None:
        """What these rows' tokens cost at ``price``; None without a price."""
        return None if price is None else price.cost_usd(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class BudgetOutcome:
    """How a run with a ``budget:`` ended: ``stopped`` when the rest did not fit, and what
    the rows left would take (their count times the tokens, or dollars, kept per row)."""

    max_tokens: int | None
    max_cost_usd: float | None
    stopped: bool
    remaining_rows: int
    remaining_tokens_estimate: int
    remaining_cost_usd_estimate: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def price_source(price: Pricing) -> str:
    """Where a price comes from, in a few words."""
    return "conf pricing" if price.origin == "conf" else "built-in list price"


@dataclass(frozen=True)
class JobSummary:
    """The outcome of :func:`dbstruct.jobs.run_job`.

    ``processed`` rows were written in this run: sent (``succeeded`` or ``failed``), found
    empty, or answered from the response cache (``cached``); ``skipped`` source rows were
    already in the target (resumed or incremental runs). ``error_rate`` is failed/processed.
    ``cost_usd`` is what this run's tokens cost at ``price`` (None without a price);
    ``budget`` is set when the job file has a ``budget:``.
    """

    name: str
    target: str
    target_format: str
    model: str
    source_rows: int
    skipped: int
    chunks: int
    done: ChunkStats
    wall_seconds: float
    max_error_rate: float
    run_id: str
    emulated: bool = False
    notes: tuple[str, ...] = field(default=())
    price: Pricing | None = None
    budget: BudgetOutcome | None = None
    #: where the answers come from (dbstruct.jobs._origin): ``emulator``, an endpoint's URL
    origin: str = ""

    @property
    def processed(self) -> int:
        return self.done.rows

    @property
    def succeeded(self) -> int:
        return self.done.succeeded

    @property
    def failed(self) -> int:
        return self.done.failed

    @property
    def cached(self) -> int:
        return self.done.cached

    @property
    def prompt_tokens(self) -> int:
        return self.done.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.done.completion_tokens

    @property
    def cost_usd(self) -> float | None:
        return self.done.cost_usd(self.price)

    @property
    def error_rate(self) -> float:
        return self.done.failed / self.done.rows if self.done.rows else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.done.rows / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0; 1 when the error rate is over ``max_error_rate``; 3 when the budget stopped
        the run (as ``dbstruct run`` exits)."""
        if self.budget is not None and self.budget.stopped:
            return 3
        return 1 if self.error_rate > self.max_error_rate else 0

    def to_dict(self, *, exit_code: int | None = None) -> dict[str, Any]:
        """The summary as JSON-ready values (``dbstruct run --summary-json``); ``exit_code``
        replaces the summary's own (the command's, when a refusal stopped the run)."""
        return {
            "name": self.name,
            "target": self.target,
            "run_id": self.run_id,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "wall_s": round(self.wall_seconds, 3),
            "rows_per_s": round(self.rows_per_second, 3),
            "exit_code": self.exit_code if exit_code is None else exit_code,
            "budget": None if self.budget is None else self.budget.to_dict(),
        }

    def to_text(self) -> str:
        d = self.done
        verdict = "over" if self.error_rate > self.max_error_rate else "within"
        lines = [
            f"dbstruct job {self.name!r}: {self.model} -> {self.target} ({self.target_format})",
            f"  source rows   {self.source_rows:>10,}",
            f"  skipped       {self.skipped:>10,}   already in the target",
            f"  processed     {d.rows:>10,}   in {self.chunks} chunk(s), run {self.run_id}",
            f"    succeeded   {d.succeeded:>10,}",
            f"    failed      {d.failed:>10,}   error rate {self.error_rate:.2%} "
            f"({verdict} max_error_rate {self.max_error_rate:.2%})",
            f"    no text     {d.empty:>10,}   null or blank: nothing sent",
            f"    cached      {d.cached:>10,}   answered from the response cache: nothing sent",
            f"  tokens in     {d.prompt_tokens:>10,}",
            f"  tokens out    {d.completion_tokens:>10,}",
            f"  wall time     {format_duration(self.wall_seconds):>10}   "
            f"{self.rows_per_second:,.1f} rows/s",
        ]
        if self.price is not None:
            billed = " (the emulator bills nothing)" if self.emulated else ""
            lines.append(
                f"  cost          {_usd(self.cost_usd or 0.0):>10}   "
                f"{price_source(self.price)}{billed}"
            )
        if self.budget is not None:
            lines.append(f"  budget        {_budget_text(self.budget)}")
        if self.emulated:
            lines.append("  answers       from the local serving emulator, not a real model")
        lines.extend(f"  note          {n}" for n in self.notes)
        return "\n".join(lines)


def _usd(amount: float) -> str:
    return f"${amount:,.4f}"


def _budget_text(b: BudgetOutcome) -> str:
    caps = [f"max_tokens {b.max_tokens:,}"] if b.max_tokens is not None else []
    if b.max_cost_usd is not None:
        caps.append(f"max_cost_usd {b.max_cost_usd:g}")
    if not b.stopped:
        return f"{', '.join(caps)}: done within it"
    rest = f"~{b.remaining_tokens_estimate:,} tokens"
    if b.remaining_cost_usd_estimate is not None:
        rest += f", ~{_usd(b.remaining_cost_usd_estimate)}"
    return f"{', '.join(caps)}: stopped, {b.remaining_rows:,} row(s) left ({rest})"


def format_duration(seconds: float) -> str:
    """``"42.0s"``, ``"3m05s"``, ``"2h03m"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Logs rows done of total, rate and ETA after each committed chunk."""

    def __init__(
        self,
        total: int,
        chunks: int | None,
        clock: Callable[[], float] = time.monotonic,
        price: Pricing | None = None,
    ) -> None:
        self.total = total
        #: None when not known ahead (a budget sizes each chunk from what is left)
        self.chunks = chunks
        self.price = price
        self.clock = clock
        self.started = clock()
        self.done = ChunkStats()
        self.committed = 0
        #: called after each committed chunk (an MLflow run logs its metrics)
        self.on_chunk: Callable[[Progress], None] | None = None

    def chunk_done(self, stats: ChunkStats) -> str:
        """Add a committed chunk's counts; log and return the progress line."""
        self.done = self.done + stats
        self.committed += 1
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done.rows / elapsed
        remaining = max(self.total - self.done.rows, 0)
        eta = format_duration(remaining / rate) if rate > 0 and remaining else "-"
        share = self.done.rows / self.total if self.total else 1.0
        of = "" if self.chunks is None else f"/{self.chunks}"
        cost = self.done.cost_usd(self.price)
        line = (
            f"chunk {self.committed}{of} committed: {self.done.rows:,} of "
            f"{self.total:,} rows ({share:.0%}), {rate:,.1f} rows/s, ETA {eta}; "
            f"{self.done.failed:,} failed, {self.done.cached:,} cached, "
            f"tokens {self.done.prompt_tokens:,} in / "
            f"{self.done.completion_tokens:,} out"
            + ("" if cost is None else f", {_usd(cost)} so far")
        )
        logger.info("%s", line)
        if self.on_chunk is not None:
            self.on_chunk(self)
        return line

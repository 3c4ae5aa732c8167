"""The client under every fault the emulator can inject, the way Spark drives it: many rows
at once through the async client, some rows carrying ``[[fault:KINDxK]]`` (their first K
attempts fail). For every kind alone and for all of them mixed:

- one outcome per row, in order;
- a row without a fault has its value, at the first attempt;
- a retryable fault with K <= max_retries recovers at attempt K + 1; with K > max_retries the
  row fails with ``RetriesExhaustedError`` naming the fault, after max_retries + 1 attempts;
- a terminal fault (length, refusal, oversized) fails at the first attempt with its own class;
- no row takes longer than its attempts and waits allow, nor longer than ``total_timeout``;
  the emulator saw exactly the attempts the outcomes report (nothing extra was sent).
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

import dbstruct
from dbstruct.testing import FAULT_KINDS, Emulator
from tests.corpus import UserExtract

MAX_RETRIES = 2
TIMEOUT = 1.0  # one request; the "timeout" kind holds its request longer than this
HOLD = 3.0
TOTAL_TIMEOUT = 20.0
SLACK = 1.5  # scheduling on a shared, loaded machine

#: the error a retryable fault leaves when it outlasts the retries, and what its message says
RETRYABLE: dict[str, tuple[type[Exception], str]] = {
    "429": (dbstruct.RateLimitError, "RateLimitError: m: 429"),
    "429_body": (dbstruct.RateLimitError, "RateLimitError: m: 429"),
    "429_bare": (dbstruct.RateLimitError, "RateLimitError: m: 429"),
    "500": (dbstruct.ServerError, "ServerError: m: 500"),
    "502": (dbstruct.ServerError, "ServerError: m: 502"),
    "503": (dbstruct.ServerError, "ServerError: m: 503"),
    "504": (dbstruct.ServerError, "ServerError: m: 504"),
    "timeout": (dbstruct.TransportError, "TransportError: m: request timed out"),
    "drop": (dbstruct.TransportError, "TransportError: m: connection failed"),
    "malformed": (dbstruct.InvalidOutputError, "InvalidOutputError: - invalid JSON"),
    "invalid": (dbstruct.InvalidOutputError, "InvalidOutputError: - "),
    "empty": (dbstruct.InvalidOutputError, "InvalidOutputError: the endpoint answered with no"),
    "wrong_tool": (dbstruct.InvalidOutputError, "InvalidOutputError: called tool"),
}
#: faults a retry would not cure: the row fails at once
TERMINAL: dict[str, type[Exception]] = {
    "length": dbstruct.IncompleteOutputError,
    "refusal": dbstruct.RefusalError,
    "oversized": dbstruct.OversizedOutputError,
}
#: faults whose answer the client accepts as it is: misquoted evidence, no evidence asked for
ACCEPTED = frozenset({"misquote"})
NAMES = ["Ada", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Alan", "Katherine"]


def test_every_fault_kind_is_in_the_matrix() -> None:
    assert set(RETRYABLE) | set(TERMINAL) | ACCEPTED == set(FAULT_KINDS)
    assert not set(RETRYABLE) & set(TERMINAL) and not ACCEPTED & (set(RETRYABLE) | set(TERMINAL))


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    # retry_after=0.05 is announced as "Retry-After: 1" (whole seconds, at least one)
    dbstruct_emulator.start_from(retry_after=0.05, timeout_hold=HOLD)
    return dbstruct_emulator


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Row:
    text: str
    name: str
    age: int
    kind: str | None = None
    k: int = 0  # failing attempts

    @property
    def recovers(self) -> bool:
        return self.kind in RETRYABLE and self.k <= MAX_RETRIES


def plan(n: int, fraction: float, kinds: list[str], seed: int) -> list[Row]:
    """``n`` rows, ``fraction`` of them faulted: kinds dealt in turn (all of them appear when
    there are enough faulted rows), K drawn in 1..max_retries+1."""
    rng = random.Random(seed)
    faulted = sorted(rng.sample(range(n), max(1, round(n * fraction))))
    dealt = rng.sample(kinds, len(kinds))
    rows = []
    for i in range(n):
        # distinct texts (a marker's attempts are counted per text), ages the emulator keeps
        name, age = NAMES[i % len(NAMES)], 18 + i % 70
        if i not in faulted:
            rows.append(Row(f"{name} is {age}", name, age))
            continue
        j = faulted.index(i)
        kind = dealt[j % len(dealt)]
        # with one kind, the first two faulted rows are sure to cover both sides of the limit
        k = (1, MAX_RETRIES + 1)[j] if len(kinds) == 1 and j < 2 else rng.randint(1, 3)
        rows.append(Row(f"[[fault:{kind}x{k}]] {name} is {age}", name, age, kind, k))
    return rows


def longest(row: Row) -> float:
    """The most time ``row`` may take: its attempts, plus the waits between them."""
    failures = min(row.k, MAX_RETRIES + 1) if row.kind in RETRYABLE else 0
    waits = 0.0
    for retry in range(1, min(failures, MAX_RETRIES) + 1):
        if row.kind in ("429", "429_body"):
            waits += 1.0  # Retry-After: 1
        elif row.kind in RETRYABLE and RETRYABLE[row.kind][0] is not dbstruct.InvalidOutputError:
            waits += 0.5 * 2 ** (retry - 1)  # the backoff ceiling (RetryPolicy's 0.5 s base)
    held = failures * TIMEOUT if row.kind == "timeout" else 0.0
    return min(TOTAL_TIMEOUT, held + waits) + SLACK


def shortest(row: Row) -> float:
    """The least time ``row`` must take: a 429 is waited out, never retried at once."""
    retries = min(row.k, MAX_RETRIES) if row.kind in RETRYABLE else 0
    if row.kind in ("429", "429_body"):
        return 1.0 * retries
    if row.kind == "429_bare":  # no delay announced: full-jitter backoff, at least half
        return sum(0.25 * 2 ** (r - 1) for r in range(1, retries + 1))
    return 0.0


def check(rows: list[Row], outcomes: list[Any], emu: Emulator) -> None:
    assert len(outcomes) == len(rows)
    for row, outcome in zip(rows, outcomes, strict=True):
        where = f"{row.text!r}: {outcome.error!r}"
        assert 1 <= outcome.attempts <= MAX_RETRIES + 1, where
        assert shortest(row) <= outcome.latency_s <= longest(row), (where, outcome.latency_s)
        if row.kind is None or row.kind in ACCEPTED or row.recovers:
            assert outcome.ok, where
            # in order: each outcome is its own row's (the values come from the row's text)
            assert (outcome.value.name, outcome.value.age) == (row.name, row.age), where
            assert outcome.attempts == (1 if row.kind in ACCEPTED else row.k + 1), where
        elif row.kind in TERMINAL:
            assert isinstance(outcome.error, TERMINAL[row.kind]), where
            assert outcome.attempts == 1, where
        else:
            cls, says = RETRYABLE[row.kind]
            error = outcome.error
            assert isinstance(error, dbstruct.RetriesExhaustedError), where
            assert isinstance(error.last_error, cls) and says in str(error), where
            assert outcome.attempts == error.attempts == MAX_RETRIES + 1, where
    # every attempt an outcome counts reached the endpoint, and nothing else did
    assert emu.stats().requests == sum(o.attempts for o in outcomes)


def options(emu: Emulator) -> dict[str, Any]:
    return {
        "base_url": emu.base_url,
        "api_key": emu.token,
        "max_retries": MAX_RETRIES,
        "timeout": TIMEOUT,
        "total_timeout": TOTAL_TIMEOUT,
        "max_connections": 128,  # every row in flight at once: none waits for a connection
    }


async def run_async(emu: Emulator, rows: list[Row]) -> list[Any]:
    async with dbstruct.from_provider("databricks/m", async_client=True, **options(emu)) as c:
        return await asyncio.gather(
            *(c.extract(UserExtract, [{"role": "user", "content": r.text}]) for r in rows)
        )


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_one_kind_in_a_fifth_of_the_rows(emu: Emulator, kind: str) -> None:
    rows = plan(40, 0.2, [kind], seed=FAULT_KINDS.index(kind))
    check(rows, asyncio.run(run_async(emu, rows)), emu)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_every_kind_mixed(emu: Emulator, fraction: float) -> None:
    rows = plan(100, fraction, list(FAULT_KINDS), seed=int(fraction * 100))
    assert sum(r.kind is not None for r in rows) == max(1, round(100 * fraction))
    check(rows, asyncio.run(run_async(emu, rows)), emu)
    if fraction == 0.2:  # 20 faulted rows over 16 kinds: every kind is in the run
        assert {r.kind for r in rows} - {None} == set(FAULT_KINDS)


def test_every_kind_mixed_through_the_sync_client_from_threads(emu: Emulator) -> None:
    rows = plan(40, 0.2, list(FAULT_KINDS), seed=7)
    with (
        dbstruct.from_provider("databricks/m", **options(emu)) as c,
        ThreadPoolExecutor(16) as pool,
    ):
        outcomes = list(
            pool.map(lambda r: c.extract(UserExtract, [{"role": "user", "content": r.text}]), rows)
        )
    check(rows, outcomes, emu)


def test_a_bare_429_backs_off_rather_than_retrying_at_once(emu: Emulator) -> None:
    rows = [Row("[[fault:429_barex2]] Ada is 36", "Ada", 36, "429_bare", 2)]
    started = time.monotonic()
    (outcome,) = asyncio.run(run_async(emu, rows))
    assert outcome.ok and outcome.attempts == 3
    # two backoffs of full jitter over [base/2, base] then [base, 2 base]: 0.75 s at least
    assert time.monotonic() - started >= 0.75


# ---------------------------------------------------------------- the deadline


def test_total_timeout_bounds_a_call_whose_attempts_hang(emu: Emulator) -> None:
    """Each attempt gets at most what is left of total_timeout: hanging attempts of 1.5 s
    each, retried 5 times, still end at the 2 s deadline."""
    settings = {**options(emu), "timeout": 1.5, "total_timeout": 2.0, "max_retries": 5}
    hang = [{"role": "user", "content": "[[fault:timeout]] Ada is 36"}]

    async def run_async_once() -> Any:
        async with dbstruct.from_provider("databricks/m", async_client=True, **settings) as c:
            return await c.extract(UserExtract, hang)

    for run in (
        lambda: dbstruct.from_provider("databricks/m", **settings).extract(UserExtract, hang),
        lambda: asyncio.run(run_async_once()),
    ):
        started = time.monotonic()
        outcome = run()
        elapsed = time.monotonic() - started
        assert isinstance(outcome.error, dbstruct.RetriesExhaustedError), outcome.error
        assert "deadline exhausted" in str(outcome.error) and "timed out" in str(outcome.error)
        assert 1 <= outcome.attempts <= 2 and elapsed < 2.0 + 0.5, (outcome.attempts, elapsed)

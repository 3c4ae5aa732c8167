"""Every emulator fault kind, alone and mixed, through structured_udf on real Spark.

One DataFrame per session holds every case, so Spark runs one job: a segment per fault kind
(20% of its rows faulty) and mixed segments where all kinds together make 1%, 5% and 20% of
the rows (some rows carry two faults in sequence). A faulty row carries ``[[fault:KINDxK]]``
(the first K attempts fail) or ``[[fault:KIND]]`` (every attempt fails); :func:`expect`
replays the emulator's marker rules to know, per row, the attempts, the error and the
time the client must spend.
"""

from __future__ import annotations

import random
import re
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pyspark import cloudpickle
from pyspark.sql import functions as F

from dbstruct.spark import structured_udf
from dbstruct.testing import Emulator
from dbstruct.testing._config import FAULT_KINDS
from tests.spark.rows import PROMPT, User, age_of, frame, name_of, text_of

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]

TOKEN = f"tok-{uuid.uuid4().hex}"
MAX_RETRIES = 2
TIMEOUT = 1.5  # one request (client); the emulator holds a "timeout" request longer
HOLD = 4.0
TOTAL_TIMEOUT = 30.0  # one row, retries and waits included
# The emulator announces Retry-After in whole seconds, at least 1 (as Databricks does),
# whatever its retry_after setting: every 429 costs its row one second.
RETRY_AFTER = 1.0
SLACK = 5.0  # scheduling on a busy 2-core machine, on top of the computed upper bound


# Workers cannot import this test module: ship its models by value, as a notebook's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]

# What each kind's error says. Retried kinds end in RetriesExhaustedError naming the last
# attempt's error; terminal kinds fail at once with their own error.
RETRIED = {
    "429": r"RateLimitError: test-llm: 429 rate limited",
    "429_body": r"RateLimitError: test-llm: 429 rate limited",
    "429_bare": r"RateLimitError: test-llm: 429 rate limited",  # no delay: the client backs off
    "500": r"ServerError: test-llm: 500 ",
    "502": r"ServerError: test-llm: 502 ",
    "503": r"ServerError: test-llm: 503 ",
    "504": r"ServerError: test-llm: 504 ",
    "timeout": r"TransportError: test-llm: request timed out",
    "drop": r"TransportError: test-llm: connection failed",
    "malformed": r"InvalidOutputError: .*invalid JSON",
    "invalid": r"InvalidOutputError: - (name|age): ",
    "empty": r"InvalidOutputError: the endpoint answered with no choices",
    "wrong_tool": r"InvalidOutputError: called tool '[^']+', expected 'User'",
}
TERMINAL = {
    "length": r"IncompleteOutputError: .*finish_reason=length",
    "refusal": r"RefusalError: the model refused",
    "oversized": r"OversizedOutputError: ",  # not retried: the same request, the same answer
}
#: answered 200 with a valid value: misquoted evidence, and these rows ask for none
ACCEPTED = frozenset({"misquote"})
WAITS_BACKOFF = {"429_bare", "500", "502", "503", "504", "timeout", "drop"}


# ------------------------------------------------------------------ the plan and its oracle

Marker = tuple[str, int | None]  # (kind, K: first K attempts fail; None: every attempt)


@dataclass(frozen=True)
class Expect:
    attempts: int
    error: str | None  # the regex the error must match; None: a value
    min_s: float  # time the client must spend (Retry-After waits, timeouts)
    max_s: float  # time it may spend at most (every wait's ceiling), before SLACK
    faults: tuple[str, ...]  # the fault of each failed attempt, in order


def fault_at(markers: Sequence[Marker], attempt: int) -> str | None:
    """The emulator's rule (testing/_server.py _marker_fault): markers apply in sequence."""
    used = 0
    for kind, count in markers:
        if count is None or attempt <= used + count:
            return kind
        used += count
    return None


def expect(markers: Sequence[Marker]) -> Expect:
    faults: list[str] = []
    min_s = max_s = 0.0
    for attempt in range(1, MAX_RETRIES + 2):
        kind = fault_at(markers, attempt)
        if kind is None:
            return Expect(attempt, None, min_s, max_s, tuple(faults))
        faults.append(kind)
        if kind in ACCEPTED:
            return Expect(attempt, None, min_s, max_s, tuple(faults))
        if kind == "timeout":
            min_s += TIMEOUT
            max_s += TIMEOUT
        if kind in TERMINAL:
            return Expect(attempt, "^" + TERMINAL[kind], min_s, max_s, tuple(faults))
        if attempt == MAX_RETRIES + 1:
            break
        if kind in ("429", "429_body"):
            min_s += RETRY_AFTER
            max_s += RETRY_AFTER
        elif kind in WAITS_BACKOFF:
            max_s += 0.5 * 2 ** (attempt - 1)  # the client's backoff ceiling (_retry.py)
    last = RETRIED[faults[-1]]
    gave_up = rf"^RetriesExhaustedError: test-llm: gave up after {MAX_RETRIES + 1} attempt"
    return Expect(MAX_RETRIES + 1, rf"{gave_up}.*last error: {last}", min_s, max_s, tuple(faults))


@dataclass(frozen=True)
class Case:
    id: int
    segment: str
    markers: tuple[Marker, ...]

    @property
    def text(self) -> str:
        tags = "".join(
            f"[[fault:{kind}]]" if n is None else f"[[fault:{kind}x{n}]]"
            for kind, n in self.markers
        )
        return f"{tags} {text_of(self.id)}" if tags else text_of(self.id)


def plan(seed: int = 6) -> list[Case]:
    """A segment of 40 rows per fault kind (8 faulty: each K twice), then mixed segments."""
    rng = random.Random(seed)
    counts: list[int | None] = [*range(1, MAX_RETRIES + 2), None]
    cases: list[Case] = []

    def segment(name: str, size: int, faulty: dict[int, tuple[Marker, ...]]) -> None:
        start = len(cases)
        cases.extend(Case(start + j, name, faulty.get(j, ())) for j in range(size))

    for kind in FAULT_KINDS:
        chosen = counts * 2
        rng.shuffle(chosen)
        rows = rng.sample(range(40), len(chosen))
        segment(kind, 40, {j: ((kind, k),) for j, k in zip(rows, chosen, strict=True)})
    for share in (0.01, 0.05, 0.20):
        size = 300
        faulty: dict[int, tuple[Marker, ...]] = {}
        for j in rng.sample(range(size), round(size * share)):
            markers = [(rng.choice(FAULT_KINDS), rng.choice(counts))]
            if rng.random() < 0.25:  # two faults in sequence on one row
                markers.insert(0, (rng.choice(FAULT_KINDS), rng.randint(1, MAX_RETRIES)))
            faulty[j] = tuple(markers)
        segment(f"mixed {share:.0%}", size, faulty)
    return cases


def test_every_fault_kind_has_an_expected_error() -> None:
    # a kind added to the emulator must be added here, or the matrix would not cover it
    assert set(FAULT_KINDS) <= set(RETRIED) | set(TERMINAL) | ACCEPTED


def test_the_oracle_follows_the_marker_rules() -> None:
    assert expect(()).attempts == 1
    assert expect((("500", 2),)) == Expect(3, None, 0.0, 1.5, ("500", "500"))
    assert expect((("429", 1), ("timeout", 1))) == Expect(
        3, None, RETRY_AFTER + TIMEOUT, RETRY_AFTER + TIMEOUT + 1.0, ("429", "timeout")
    )
    gave_up = expect((("drop", None),))
    assert gave_up.attempts == 3 and gave_up.faults == ("drop",) * 3
    assert gave_up.error is not None and gave_up.error.endswith("connection failed")
    assert expect((("500", 1), ("refusal", 3))).attempts == 2


# ------------------------------------------------------------------ Spark


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, retry_after=0.05, timeout_hold=HOLD)
    return dbstruct_emulator


def make_udf(emu: Emulator, **kw: Any) -> Any:
    # The oracle times each row by its own faults: fixed concurrency. The default adaptive
    # controller would also hold rows back after other rows' 429s and 503s.
    return structured_udf(
        User,
        "databricks/test-llm",
        prompt=PROMPT,
        base_url=emu.base_url,
        api_key=emu.token,
        max_retries=MAX_RETRIES,
        timeout=TIMEOUT,
        total_timeout=TOTAL_TIMEOUT,
        adaptive=False,
        **kw,
    )


def test_every_fault_alone_and_mixed_keeps_rows_and_says_why(spark: Any, emu: Emulator) -> None:
    cases = plan()
    expected = [expect(c.markers) for c in cases]
    # 64 in flight: each task reads its whole partition ahead (buffer_rows 16 x 64), so it
    # lasts about as long as its slowest row (a timeout on every attempt, ~6 s)
    extract = make_udf(emu, include_status=True, concurrency=64)
    df = frame(spark, [c.text for c in cases], partitions=2)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100")  # several batches
    try:
        out = df.select("id", extract("text").alias("s"), F.spark_partition_id().alias("p"))
        rows = out.collect()  # a failed Spark task would raise here
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")

    assert [r.id for r in rows] == [c.id for c in cases]  # rows in == rows out, in order
    assert len({r.p for r in rows}) >= 2
    for r, case, want in zip(rows, cases, expected, strict=True):
        s, where = r.s, (case.segment, case.text, r.s)
        assert s.attempts == want.attempts, where
        assert s.latency_ms <= TOTAL_TIMEOUT * 1000, where
        assert want.min_s * 1000 <= s.latency_ms <= (want.max_s + SLACK) * 1000, where
        if want.error is None:
            assert s.error is None, where
            assert (s.value.name, s.value.age) == (name_of(case.id), age_of(case.id)), where
            assert s.prompt_tokens > 0 and s.completion_tokens > 0, where
        else:
            assert s.value is None and s.error is not None, where
            assert re.search(want.error, s.error), where

    # The endpoint saw exactly the attempts the oracle predicts, fault by fault.
    stats = emu.stats()
    assert stats.requests == sum(w.attempts for w in expected)
    faults = Counter(f for w in expected for f in w.faults)
    assert {k: v for k, v in stats.by_fault.items() if v} == dict(faults)
    kinds = {c.segment for c in cases}
    assert set(FAULT_KINDS) <= kinds  # every kind had its own segment
    assert set(faults) == set(FAULT_KINDS)
    failed = sum(w.error is not None for w in expected)
    assert failed == sum(r.s.error is not None for r in rows) and 0 < failed < len(cases) // 5


def test_total_timeout_bounds_a_row_whose_attempts_hang(spark: Any, emu: Emulator) -> None:
    deadline = 2.0  # room for one attempt of 1.5 s and a backoff, then a second attempt
    extract = structured_udf(
        User,
        "databricks/test-llm",
        prompt=PROMPT,
        base_url=emu.base_url,
        api_key=emu.token,
        max_retries=5,
        timeout=TIMEOUT,
        total_timeout=deadline,
        include_status=True,
    )
    texts = [f"[[fault:timeout]] {text_of(i)}" for i in range(2)]
    rows = frame(spark, texts, partitions=1).select(extract("text").alias("s")).collect()
    assert all(r.s.error.startswith("RetriesExhaustedError") for r in rows)
    assert all(r.s.latency_ms <= (deadline + 0.5) * 1000 for r in rows), rows


def test_strict_fails_the_task_naming_the_fault(spark: Any, emu: Emulator) -> None:
    transient = [f"[[fault:{k}x1]] {text_of(i)}" for i, k in enumerate(("429", "502", "drop"))]
    extract = make_udf(emu, strict=True)
    rows = frame(spark, transient, partitions=1).select("id", extract("text").alias("u")).collect()
    assert [(r.u.name, r.u.age) for r in rows] == [(name_of(i), age_of(i)) for i in range(3)]
    failing = [*transient[:2], f"[[fault:502]] {text_of(7)}"]
    emu.reset()
    with pytest.raises(Exception, match=r"RetriesExhaustedError.*last error: ServerError: .*502"):
        frame(spark, failing, partitions=1).select(extract("text")).collect()

"""The job under faults: seeded fault rates of every kind, and the endpoint going away.

Each row's text is unique, so every row is its own model request; the emulator's counters
and recorded requests tell which rows were sent.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from dbstruct.auth import Credentials
from dbstruct.jobs import parse_config, run_job
from dbstruct.testing import Emulator
from dbstruct.testing._config import FAULT_KINDS
from tests.spark import job_files
from tests.spark.job_files import write_source

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

TIMEOUT = 1.5  # one request; the emulator holds a "timeout" request longer
TOTAL_TIMEOUT = 30.0
# What a failed row's error may say, by the fault that ended it: a terminal answer fails at
# once; anything else is retried and ends in RetriesExhaustedError naming the last error.
TERMINAL = {
    "length": "IncompleteOutputError",
    "refusal": "RefusalError",
    "oversized": "OversizedOutputError",
}
RETRIED = r"RateLimitError|ServerError|TransportError|InvalidOutputError"
GAVE_UP = rf"^RetriesExhaustedError: test-llm: gave up after 3 attempt.*last error: ({RETRIED}): "


@pytest.fixture
def spark(classic_spark: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    return classic_spark


def text(i: int) -> str:
    return f"Ticket {i}: invoice INV-{10000 + i} was charged twice, please refund."


def id_of(body: dict[str, Any]) -> int:
    """The row id a recorded request was sent for."""
    users = [m["content"] for m in body["messages"] if m["role"] == "user"]
    match = re.search(r"Ticket (\d+): invoice", users[0])
    assert match is not None, users[0]
    return int(match.group(1))


def job(source: str, target: Path, **extra: Any) -> Any:
    settings = {
        "name": "faults",
        "concurrency": 16,
        "max_retries": 2,
        "chunk_rows": 100,
        "options": {"timeout": TIMEOUT, "total_timeout": TOTAL_TIMEOUT},
    }
    data = job_files.job(source, target, **{**settings, **extra})
    return parse_config(data, origin="test.yml")


def target_rows(target: Path) -> list[dict[str, Any]]:
    files = sorted(target.glob("batch=*/*.parquet"))
    columns = ["id", "result", "error", "attempts", "latency_ms"]
    return [r for f in files for r in pq.read_table(f, columns=columns).to_pylist()]


def assert_each_id_once(rows: list[dict[str, Any]], n: int) -> None:
    assert sorted(r["id"] for r in rows) == list(range(n))


# ------------------------------------------------------------------ fault rates


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(retry_after=0.05, timeout_hold=4.0)
    return dbstruct_emulator


def test_a_job_under_every_fault_rate_then_a_retry_of_the_failed_ids(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    n = 300
    rates = {kind: 0.2 / len(FAULT_KINDS) for kind in FAULT_KINDS}  # 20% of all attempts
    emu.configure(faults=rates, seed=11, keep_requests=1000)
    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(n)])
    target = tmp_path / "out"
    creds = Credentials.from_token(emu.base_url, emu.token)

    first = run_job(spark, job(source, target, chunk_rows=150), credentials=creds)

    rows = target_rows(target)
    assert_each_id_once(rows, n)
    failed = {r["id"]: r["error"] for r in rows if r["error"] is not None}
    for r in rows:
        assert 1 <= r["attempts"] <= 3 and r["latency_ms"] <= TOTAL_TIMEOUT * 1000, r
        if r["error"] is None:
            assert r["result"] is not None and r["result"]["category"], r
        else:
            assert r["result"] is None, r
            assert re.search(GAVE_UP, r["error"]) or r["error"].startswith(
                tuple(f"{e}: " for e in TERMINAL.values())
            ), r
    stats = emu.stats()
    assert stats.requests == sum(r["attempts"] for r in rows)  # each row sent once, retries
    # Most kinds happened (~5 draws each here; which ones follows the seed and the request
    # bodies, so a change to prompts or schemas may move a rare kind out; the UDF matrix in
    # test_fault_matrix.py covers every kind by marker).
    assert set(stats.by_fault) <= set(FAULT_KINDS)
    assert len(stats.by_fault) >= len(FAULT_KINDS) * 3 // 4, stats.by_fault
    errors = Counter(e.split(":")[0] for e in failed.values())
    for kind, error in TERMINAL.items():  # a terminal fault fails its row, and only that
        assert errors[error] == stats.by_fault.get(kind, 0), (kind, errors)
    assert (first.processed, first.failed) == (n, len(failed)) and 0 < len(failed) < n // 5

    # The endpoint is healthy again: the retry resends the failed ids, and only those.
    emu.reset()
    emu.configure(keep_requests=1000)
    retry_conf = job(source, target, chunk_rows=150, retry_failed=True)
    retry = run_job(spark, retry_conf, credentials=creds)
    sent = sorted(id_of(body) for body in emu.requests)
    assert sent == sorted(failed)
    redone = (retry.processed, retry.succeeded, retry.skipped)
    assert redone == (len(failed), len(failed), n - len(failed))
    rows = target_rows(target)
    assert_each_id_once(rows, n)
    assert all(r["error"] is None and r["result"] is not None for r in rows)


# ------------------------------------------------------------------ the endpoint goes away


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Outage(threading.Thread):
    """Stops the emulator once a chunk is committed and the next one is under way, and
    starts a new one on the same port ``pause`` seconds later."""

    def __init__(self, emu: Emulator, target: Path, pause: float) -> None:
        super().__init__(name="outage", daemon=True)
        self.emu, self.target, self.pause = emu, target, pause
        self.restarted: Emulator | None = None
        self.seconds = 0.0  # from stopping to serving again
        self.error: BaseException | None = None
        self.committed = 0

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = list(self.target.glob("batch=*/_SUCCESS"))
                if done and self.emu.stats().requests >= self._committed() + 20:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError("no chunk was committed in time")
            port, token = self.emu.port, self.emu.token
            stopped = time.monotonic()
            self.emu.stop()
            time.sleep(self.pause)
            self.restarted = Emulator.spawn(token=token, port=port, latency=0.1)
            self.seconds = time.monotonic() - stopped
        except BaseException as e:  # reported by the test
            self.error = e

    def _committed(self) -> int:
        files = list(self.target.glob("batch=*/*.parquet"))
        self.committed = sum(pq.read_metadata(f).num_rows for f in files)
        return self.committed


def test_the_endpoint_stopped_and_restarted_mid_job(spark: Any, tmp_path: Path) -> None:
    n = 400
    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(n)])
    target = tmp_path / "out"
    first_emu = Emulator.spawn(port=_free_port(), latency=0.1)
    outage = Outage(first_emu, target, pause=1.0)
    creds = Credentials.from_token(first_emu.base_url, first_emu.token)
    conf = job(source, target, concurrency=4)
    try:
        outage.start()
        summary = run_job(spark, conf, credentials=creds)
        outage.join(timeout=30)
        assert outage.error is None and outage.restarted is not None
        emu = outage.restarted

        rows = target_rows(target)
        assert_each_id_once(rows, n)
        failed = sorted(r["id"] for r in rows if r["error"] is not None)
        hit = [r for r in rows if r["error"] is not None or r["attempts"] > 1]
        for r in rows:
            if r["error"] is None:
                assert r["result"] is not None and r["result"]["category"], r
            else:  # refused connections, or the answer cut when the server went away
                assert re.search(GAVE_UP.replace(RETRIED, "TransportError"), r["error"]), r
        assert hit, "the outage hit no row: it fell between chunks"
        assert summary.processed == n and summary.failed == len(failed)
        print(
            f"outage {outage.seconds:.2f}s: {len(hit)} row(s) hit, {len(hit) - len(failed)} "
            f"recovered by retries, {len(failed)} left for the rerun"
        )

        before = emu.stats().requests
        retry = run_job(spark, job(source, target, retry_failed=True), credentials=creds)
        assert emu.stats().requests - before == len(failed)
        assert (retry.processed, retry.succeeded) == (len(failed), len(failed))
        rows = target_rows(target)
        assert_each_id_once(rows, n)
        assert all(r["error"] is None for r in rows)
    finally:
        outage.join(timeout=30)
        first_emu.stop()
        if outage.restarted is not None:
            outage.restarted.stop()

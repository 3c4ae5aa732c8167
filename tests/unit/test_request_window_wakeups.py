"""When the request window wakes the thread that consumes it (dbstruct.spark._request_window):
when a slot frees or a batch is done, never for every row, and never too late."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from dbstruct.spark import _request_window
from dbstruct.spark._request_window import LoopThread, Request, stream

pytestmark = pytest.mark.timeout(30)


class CountingEvent(threading.Event):
    sets = 0

    def set(self) -> None:
        CountingEvent.sets += 1
        super().set()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("test-wakeups")
    yield thread
    thread.stop()


def test_the_consumer_is_not_woken_for_every_row(
    loop: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_request_window.threading, "Event", CountingEvent)
    CountingEvent.sets = 0

    async def call(text: str) -> str:
        await asyncio.sleep(0.001)
        return text

    batches = [[Request(f"{b}-{i}", f"{b}-{i}") for i in range(500)] for b in range(2)]
    out = list(stream(batches, call, loop=loop, concurrency=8))
    assert out == [[r.payload for r in batch] for batch in batches]
    # two batches done, and the last few rows of each starting: not one wake-up a row
    assert 2 <= CountingEvent.sets <= 2 * (8 + 1)


def test_a_freed_slot_still_reads_the_next_batch_at_once(loop: LoopThread) -> None:
    """Batch 1 stays unfinished ("slow" waits for batch 2's row) while its other row frees a
    slot: only the slot's wake-up lets batch 2 be read, well before the 1 s re-check."""
    b_started = asyncio.Event()

    async def call(text: str) -> str:
        if text == "b":
            b_started.set()
        if text == "slow":
            await asyncio.wait_for(b_started.wait(), timeout=5)
        return text

    batches = [[Request("slow", "slow"), Request("a", "a")], [Request("b", "b")]]
    started = time.perf_counter()
    assert list(stream(batches, call, loop=loop, concurrency=2)) == [["slow", "a"], ["b"]]
    assert time.perf_counter() - started < 0.5

"""A sliding window of async requests over a stream of batches, for iterator pandas UDFs.

Spark hands an iterator pandas UDF its partition as a stream of Arrow batches (10,000 rows
each by default, ``spark.sql.execution.arrow.maxRecordsPerBatch``:
https://docs.databricks.com/udf/pandas.html) and expects one output row per input row, in
order. :func:`stream` keeps up to ``concurrency`` requests in flight *across* batch
boundaries: rows of the next batch start as soon as a slot frees, while a slow row of the
current batch is still running (no gather-per-batch barrier).

    thread that Spark runs the UDF on          event loop (daemon thread)
    ---------------------------------          ---------------------------
    reads batch k+1 while k is in flight  -->  queue --> `concurrency` workers --> call()
    yields batch k once all its rows are  <--  results written in place, progress event set
    done, in input order

Memory stays bounded: the next batch is read only while fewer than ``concurrency`` rows wait
for a slot, and while fewer than ``max(buffer_rows, 2 * largest batch)`` rows are held
(read but not yet yielded). A slow row can hold its batch back, never more than that.

Identical requests in flight at the same time (same key) are sent once; the later rows get
``share(result)`` of the first. Nothing here knows about Spark or pandas.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from dbstruct.worker_settings import concurrency_problem, read_ahead_rows

__all__ = ["LoopThread", "Request", "stream"]

R = TypeVar("R")
T = TypeVar("T")

_WAKE_S = 1.0  # re-check state at least this often while waiting (a lost wake-up is not fatal)
_SHUTDOWN_S = 10.0


@dataclass(frozen=True)
class Request:
    """One row to send: ``payload`` goes to ``call``; equal ``key``s in flight are sent once."""

    key: Hashable
    payload: Any


class LoopThread:
    """An asyncio event loop running forever in a daemon thread (one per worker process)."""

    def __init__(self, name: str = "dbstruct-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result from another thread."""
        return self.submit(coro).result(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_SHUTDOWN_S)
        if not self._thread.is_alive():
            self.loop.close()


class _Batch(Generic[R]):
    __slots__ = ("remaining", "results")

    def __init__(self, size: int) -> None:
        self.results: list[R | None] = [None] * size
        self.remaining = 0


def stream(
    batches: Iterable[Sequence[Request | None]],
    call: Callable[[Any], Awaitable[R]],
    *,
    loop: LoopThread,
    concurrency: int,
    buffer_rows: int | None = None,
    share: Callable[[R], R] | None = None,
) -> Generator[list[R | None], None, None]:
    """Send every request of every batch through ``call``; yield each batch's results in order.

    ``None`` items are not sent and yield ``None``. An exception raised by ``call`` (a bug:
    per-row failures should be results) fails the whole stream.

    >>> for results in stream(batches, fetch, loop=LoopThread(), concurrency=16): ...
    """
    problem = concurrency_problem(concurrency)  # the UDF's rule; a plain ValueError here
    if problem is not None:
        raise ValueError(problem)
    window = _Window(loop, call, concurrency, share)
    return window.run(batches, read_ahead_rows(concurrency, buffer_rows))


class _Window(Generic[R]):
    """State shared by the consuming thread and the loop; see the module docstring."""

    def __init__(
        self,
        loop: LoopThread,
        call: Callable[[Any], Awaitable[R]],
        concurrency: int,
        share: Callable[[R], R] | None,
    ) -> None:
        self._loop = loop
        self._call = call
        self._concurrency = concurrency
        self._share: Callable[[R], R] = share or (lambda r: r)
        self._progress = threading.Event()
        self._submitted = 0  # written by the consuming thread only
        self._started = 0  # written by the loop only
        self._error: BaseException | None = None
        # loop-side state, created in _start
        self._queue: asyncio.Queue[tuple[_Batch[R], int, Request]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._inflight: dict[Hashable, asyncio.Future[R]] = {}

    # ---- consuming thread -------------------------------------------------------------

    def run(
        self, batches: Iterable[Sequence[Request | None]], buffer_rows: int
    ) -> Generator[list[R | None], None, None]:
        source = iter(batches)
        pending: deque[_Batch[R]] = deque()
        held = largest = 0
        exhausted = False
        self._loop.run(self._start())
        try:
            while True:
                self._progress.clear()  # before looking, so no wake-up is missed
                if self._error is not None:
                    raise self._error
                while pending and pending[0].remaining == 0:
                    done = pending.popleft()
                    held -= len(done.results)
                    yield done.results
                if exhausted and not pending:
                    return
                if not exhausted and self._may_read(pending, held, max(buffer_rows, 2 * largest)):
                    try:
                        requests = next(source)
                    except StopIteration:
                        exhausted = True
                        continue
                    pending.append(self._submit(requests))
                    held += len(requests)
                    largest = max(largest, len(requests))
                    continue
                self._progress.wait(_WAKE_S)
        finally:
            self._close()

    def _may_read(self, pending: deque[_Batch[R]], held: int, cap: int) -> bool:
        if not pending:
            return True
        waiting_for_slot = self._submitted - self._started
        return waiting_for_slot < self._concurrency and held < cap

    def _submit(self, requests: Sequence[Request | None]) -> _Batch[R]:
        batch: _Batch[R] = _Batch(len(requests))
        items = [(batch, i, r) for i, r in enumerate(requests) if r is not None]
        batch.remaining = len(items)
        if items:
            self._submitted += len(items)
            self._loop.loop.call_soon_threadsafe(self._enqueue, items)
        return batch

    def _close(self) -> None:
        if not self._loop.alive:
            return
        try:
            self._loop.run(self._stop(), timeout=_SHUTDOWN_S)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # the loop is going away; its daemon thread dies with the process

    # ---- event loop -------------------------------------------------------------------

    async def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def _stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for future in self._inflight.values():
            future.cancel()
        self._inflight.clear()

    def _enqueue(self, items: list[tuple[_Batch[R], int, Request]]) -> None:
        assert self._queue is not None
        for item in items:
            self._queue.put_nowait(item)

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch, index, request = await self._queue.get()
            self._started += 1
            if self._submitted - self._started < self._concurrency:
                # a slot the consumer may be waiting for (see _may_read); waking it for
                # every row instead cost a thread switch per row
                self._progress.set()
            leader = self._inflight.get(request.key)
            if leader is not None:  # the same request is on its way: wait for it, slot-free
                leader.add_done_callback(partial(self._follow, batch, index))
                continue
            future: asyncio.Future[R] = loop.create_future()
            self._inflight[request.key] = future
            try:
                result = await self._call(request.payload)
            except Exception as e:  # a bug, not a row failure: stop the stream
                self._error = e
                future.cancel()
                self._progress.set()
                return
            finally:
                self._inflight.pop(request.key, None)
            future.set_result(result)
            self._finish(batch, index, result)

    def _follow(self, batch: _Batch[R], index: int, leader: asyncio.Future[R]) -> None:
        if leader.cancelled():
            return  # the stream is failing or closing
        try:
            result = self._share(leader.result())
        except Exception as e:  # a callback cannot raise usefully: hand it to the consumer
            self._error = e
            self._progress.set()
            return
        self._finish(batch, index, result)

    def _finish(self, batch: _Batch[R], index: int, result: R) -> None:
        batch.results[index] = result
        batch.remaining -= 1
        if batch.remaining == 0:
            self._progress.set()

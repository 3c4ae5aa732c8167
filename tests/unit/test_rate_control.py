"""The adaptive limiter: window AIMD, Retry-After pauses, learned pacing and caps (fake clock)."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from dbstruct._rate_control import AdaptiveLimiter, Bucket
from dbstruct.errors import BadRequestError, InvalidOutputError, RateLimitError, ServerError

OK = SimpleNamespace(usage=SimpleNamespace(total_tokens=100))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **kw: object) -> AdaptiveLimiter:
    return AdaptiveLimiter(kw.pop("ceiling", 32), clock=clock, **kw)  # type: ignore[arg-type]


def send(lim: AdaptiveLimiter, answer: object) -> None:
    assert lim.try_acquire()
    lim.release(answer)


def too_many(retry_after: float | None = 1.0) -> RateLimitError:
    return RateLimitError("429", retry_after=retry_after, status=429)


def test_slow_start_then_additive_increase_up_to_the_ceiling() -> None:
    clock = Clock()
    lim = limiter(clock, ceiling=8, initial=2)
    send(lim, OK)
    assert lim.limit == 3  # slow start: +1 per success
    send(lim, ServerError("503", status=503))
    assert lim.limit == 1.5 and lim.threshold == 1.5
    before = lim.limit
    send(lim, OK)
    assert lim.limit == pytest.approx(before + 1 / before)  # additive: +1 per window
    for _ in range(500):
        send(lim, OK)
    assert lim.limit == 8 and lim.slots == 8


def test_multiplicative_decrease_on_429_and_503_not_on_other_errors() -> None:
    clock = Clock()
    lim = limiter(clock, initial=16)
    send(lim, ServerError("503", status=503))
    assert lim.limit == 8
    for other in (ServerError("500", status=500), BadRequestError("400", status=400)):
        send(lim, other)
    assert lim.limit == 8
    send(lim, InvalidOutputError("bad json"))  # the endpoint answered: not overload
    assert lim.limit > 8
    clock.now += 0.5  # 4 answers in half a second: a rate is measured
    send(lim, too_many(None))
    assert lim.limit < 8


def test_one_decrease_per_window_of_requests_in_flight() -> None:
    clock = Clock()
    lim = limiter(clock, initial=8)
    overload = ServerError("503", status=503)
    for _ in range(4):
        assert lim.try_acquire()
    lim.release(overload)  # cut: the 3 others were sent at the old limit
    assert lim.limit == 4
    lim.release(overload)
    lim.release(overload)
    assert lim.limit == 4
    lim.release(OK)
    send(lim, overload)  # sent after the cut: judged
    assert lim.limit < 4


def test_before_a_rate_is_measured_only_a_flood_of_429s_pauses_or_cuts() -> None:
    clock = Clock()
    lim = limiter(clock, initial=8)
    for _ in range(7):
        send(lim, OK)
    send(lim, too_many(1.0))  # one 429 in eight sends, at once: may be chance
    assert lim.limit == 15 and lim.rate() is None and lim.delay() == 0.0
    flooded = limiter(clock, initial=8)
    for _ in range(8):
        assert flooded.try_acquire()
    for _ in range(5):
        flooded.release(too_many(1.0))  # 5 of 8 refused: over a limit, measured or not
    assert flooded.limit == 4 and flooded.rate() is not None
    assert flooded.delay() == pytest.approx(0.1)


def test_floor_holds_and_slots_never_exceed_the_limit() -> None:
    clock = Clock()
    lim = limiter(clock, ceiling=4, floor=2, initial=4)
    for _ in range(10):
        send(lim, ServerError("503", status=503))
    assert lim.limit == 2 and lim.slots == 2
    assert lim.try_acquire() and lim.try_acquire()
    assert not lim.try_acquire() and math.isinf(lim.delay())
    lim.release(OK)
    assert lim.try_acquire()


def test_429_pauses_every_send_for_the_surely_needed_part_of_retry_after() -> None:
    clock = Clock()
    lim = limiter(clock)
    steady(lim, clock, 100.0, 1.0)  # past slow start, a rate measured: 429s count
    assert lim.try_acquire() and lim.try_acquire()
    lim.release(too_many(1.0))  # whole seconds rounded up: the real wait may be ~0
    assert lim.in_flight == 1
    assert lim.delay() == pytest.approx(0.1)  # a tenth of it
    assert not lim.try_acquire()
    clock.now += 0.05
    lim.release(too_many(3.0))  # not judged for the window, but its Retry-After counts
    assert lim.delay() == pytest.approx(2.0)  # at least 2 s of the 3 are surely needed
    clock.now += 2.0
    assert lim.delay() == 0.0 and lim.try_acquire()


def steady(lim: AdaptiveLimiter, clock: Clock, per_second: float, seconds: float) -> None:
    """Successes at an even rate, each mid-slot (no count hangs on a window's edge)."""
    for _ in range(round(per_second * seconds)):
        clock.now += 0.5 / per_second
        send(lim, OK)
        clock.now += 0.5 / per_second


def paced_run(lim: AdaptiveLimiter, clock: Clock, seconds: float) -> int:
    """Send whenever the limiter allows (a 1 ms tick), every answer fine; returns the count."""
    sent, end = 0, clock.now + seconds
    while clock.now < end:
        while lim.try_acquire():
            lim.release(OK)
            sent += 1
        clock.now += 0.001
    return sent


def test_after_a_429_the_rate_is_paced_below_what_got_through() -> None:
    clock = Clock()
    lim = limiter(clock)
    assert lim.rate() is None
    steady(lim, clock, 10.0, 3.0)
    send(lim, too_many(1.0))
    assert lim.rate() == pytest.approx(9.5, rel=0.05)  # 0.95 x the measured 10/s
    clock.now += 0.1  # the pause
    assert lim.try_acquire()
    assert 0.1 < lim.delay() <= 1 / 9  # the next send waits its turn: even spacing
    lim.release(OK)
    clock.now += 0.5
    assert 9.5 < (lim.rate() or 0) < 10.0  # back near the peak within a second...
    clock.now += 0.5
    assert 10.0 < (lim.rate() or 0) < 10.5  # ...then probing above it...
    clock.now += 9.0
    assert (lim.rate() or 0) > 15.0  # ...faster and faster


def test_a_429_cuts_to_what_succeeded_since_the_last_one_not_below_a_floor() -> None:
    clock = Clock()
    lim = limiter(clock)
    steady(lim, clock, 10.0, 3.0)
    send(lim, too_many(1.0))  # paced at 9.5/s from here
    clock.now += 0.1
    steady(lim, clock, 9.0, 2.0)  # only 9 a second succeeded (fewer rows than the pace)
    assert (lim.rate() or 0) > 10.0
    clock.now += 0.05  # the pace's turn
    window = lim.limit
    send(lim, too_many(1.0))
    assert lim.rate() == pytest.approx(0.95 * 9.0, rel=0.02)  # what succeeded, not the pace
    assert lim.limit == window  # once paced, a 429 cuts the rate, not the window
    clock.now += 2.0
    steady(lim, clock, 2.0, 2.0)  # then 2 a second: one 429 cuts to 0.7 x the pace at most
    paced = lim.rate() or 0
    send(lim, too_many(1.0))
    assert lim.rate() == pytest.approx(0.95 * 0.7 * paced)
    clock.now += 1.5  # none succeeded since: too few to measure, the pace is the estimate
    paced = lim.rate() or 0
    send(lim, too_many(1.0))
    assert lim.rate() == pytest.approx(0.95 * paced)


def test_a_rate_is_measured_from_when_sends_resumed_not_across_idle_time() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(4):
        send(lim, OK)  # a warm-up, then nothing for a while (a Spark job between batches)
    clock.now += 30.0
    steady(lim, clock, 40.0, 0.6)
    send(lim, too_many(1.0))
    assert lim.rate() == pytest.approx(0.95 * 40, rel=0.1)  # not 24 sends over 2 s


def test_paced_sends_stay_under_the_rate_and_an_idle_worker_banks_none() -> None:
    clock = Clock()
    lim = limiter(clock)
    steady(lim, clock, 10.0, 3.0)
    send(lim, too_many(1.0))
    clock.now += 0.1
    sent = paced_run(lim, clock, 2.0)
    assert 19 <= sent <= 21  # about 9.5-10.5 a second, never a burst
    clock.now += 600.0  # idle: no successes, so the probe stops at twice the peak
    assert (lim.rate() or 0) <= 2 * 10.0 + 1e-9
    assert paced_run(lim, clock, 1.0) <= 21


def test_a_doubling_rate_stays_finite_however_long_no_429_comes() -> None:
    clock = Clock()
    lim = limiter(clock, initial=8)
    for _ in range(8):
        assert lim.try_acquire()
    for _ in range(5):
        lim.release(too_many(None))  # a flood before any rate is measured: a guess, doubling
    clock.now += 3600.0
    assert math.isfinite(lim.rate() or math.inf) and lim.delay() == 0.0


def test_not_adaptive_keeps_the_ceiling_but_honours_retry_after() -> None:
    clock = Clock()
    lim = limiter(clock, ceiling=6, adaptive=False)
    send(lim, too_many(1.0))
    assert lim.limit == 6 and lim.rate() is None and lim.delay() == pytest.approx(1.0)


def test_max_qps_spaces_sends_evenly() -> None:
    clock = Clock()
    lim = limiter(clock, max_qps=4.0)
    assert lim.try_acquire()
    assert not lim.try_acquire() and lim.delay() == pytest.approx(0.25)
    clock.now += 0.25
    assert lim.try_acquire()
    clock.now += 10.0  # no burst banked beyond one request
    assert lim.try_acquire() and not lim.try_acquire()


def test_max_tokens_per_minute_charges_the_tokens_answers_used() -> None:
    clock = Clock()
    lim = limiter(clock, max_tokens_per_minute=600.0)  # 10 tokens a second
    send(lim, OK)  # 100 tokens: 90 in debt
    assert lim.delay() == pytest.approx(9.0, rel=0.01)
    clock.now += 9.0
    assert lim.try_acquire()  # reserves its guess (100)...
    lim.release(too_many(None))  # ...and gets it back: a 429 used no tokens
    clock.now += 5.0  # the pause of a 429 without Retry-After is none
    assert lim.delay() == 0.0


def test_bucket_refills_to_capacity_and_can_owe() -> None:
    bucket = Bucket(rate=2.0, capacity=4.0, now=0.0)
    assert bucket.wait(4.0, now=0.0) == 0.0
    bucket.charge(10.0)
    assert bucket.wait(1.0, now=0.0) == pytest.approx(3.5)
    assert bucket.wait(1.0, now=100.0) == 0.0 and bucket.level == 4.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimiter(4, floor=5)
    with pytest.raises(ValueError):
        AdaptiveLimiter(4, decrease=1.0)


def test_acquire_waits_for_a_release() -> None:
    async def scenario() -> list[str]:
        lim = AdaptiveLimiter(1, initial=1)
        events: list[str] = []
        await lim.acquire()

        async def second() -> None:
            await lim.acquire()
            events.append("second in")

        task = asyncio.create_task(second())
        await asyncio.sleep(0.01)
        events.append("released")
        lim.release(OK)
        await asyncio.wait_for(task, 5)
        return events

    assert asyncio.run(scenario()) == ["released", "second in"]


# ---- a worker against a simulated endpoint (fake clock): which 429s slow it down ----------


@dataclass
class Tally:
    sent: int = 0
    limited: int = 0
    ok: int = 0


class Endpoint:
    """An endpoint on the fake clock: a token bucket of ``qps`` (holding ``burst``), and/or a
    ``share`` of answers 429 at random whatever the rate. A 429 comes back at once with a
    Retry-After of whole seconds, at least 1 (as the emulator's); an answer after ``latency``."""

    def __init__(
        self, clock: Clock, qps: float | None = None, share: float = 0.0, seed: int = 0
    ) -> None:
        self.clock, self.qps, self.share = clock, qps, share
        self.burst, self.latency = 2.0, 0.2
        self.level, self.stamp = self.burst, clock.now
        self.draw = random.Random(seed).random

    def answer(self) -> tuple[object, float]:
        now = self.clock.now
        if self.qps is not None:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.qps)
            self.stamp = now
            if self.level < 1.0:
                return too_many(float(max(1, math.ceil((1.0 - self.level) / self.qps)))), 0.005
            self.level -= 1.0
        if self.draw() < self.share:
            return too_many(1.0), 0.005
        return OK, self.latency


class Workers:
    """Workers that each keep 32 rows going (their request window). A row's attempt waits for
    its worker's limiter (None: fixed concurrency); a 429 makes the row wait its Retry-After
    and try again (the retry loop), an answer ends it and the next row starts."""

    def __init__(self, clock: Clock, endpoint: Endpoint, limiters: list[AdaptiveLimiter | None]):
        self.clock, self.endpoint, self.limiters = clock, endpoint, limiters
        self.ready = [[clock.now] * 32 for _ in limiters]  # when each row may try next
        self.answers: list[tuple[float, int, int, int, object]] = []  # due, seq, worker, row
        self.seq = 0

    def run(self, seconds: float) -> list[Tally]:
        clock, tallies = self.clock, [Tally() for _ in self.limiters]
        end = clock.now + seconds
        while clock.now < end:
            wake = min((t for rows in self.ready for t in rows if t > clock.now), default=end)
            for w, (lim, rows) in enumerate(zip(self.limiters, self.ready, strict=True)):
                for r in (r for r, t in enumerate(rows) if t <= clock.now):
                    if lim is not None and not lim.try_acquire():
                        wake = min(wake, clock.now + max(lim.delay(), 1e-6))  # inf: an answer
                        break
                    answer, after = self.endpoint.answer()
                    heapq.heappush(self.answers, (clock.now + after, self.seq, w, r, answer))
                    rows[r], self.seq = math.inf, self.seq + 1
                    tallies[w].sent += 1
            clock.now = min(wake, self.answers[0][0] if self.answers else end, end)
            while self.answers and self.answers[0][0] <= clock.now:
                _, _, w, r, answer = heapq.heappop(self.answers)
                lim = self.limiters[w]
                if lim is not None:
                    lim.release(answer)
                if isinstance(answer, RateLimitError):
                    tallies[w].limited += 1
                    self.ready[w][r] = clock.now + (answer.retry_after or 1.0)
                else:
                    tallies[w].ok += 1
                    self.ready[w][r] = clock.now
        return tallies


def test_a_token_bucket_s_429s_are_rate_driven_and_paced_just_under_it() -> None:
    clock = Clock()
    lim = limiter(clock)
    worker = Workers(clock, Endpoint(clock, qps=20.0), [lim])
    worker.run(10.0)
    [t] = worker.run(20.0)
    assert 0.9 * 20 <= t.ok / 20 <= 20 and t.limited <= 0.05 * t.sent
    assert lim.verdict == "rate-driven"  # no 429 came at a lowered rate: nothing to test
    assert 0.85 * 20 <= (lim.rate() or 0) <= 1.1 * 20


def answered(share: float, adaptive: bool) -> tuple[float, AdaptiveLimiter | None]:
    """Answers a second over 20 s after 10 s of warming up, 429s on ``share`` of requests."""
    clock = Clock()
    lim = limiter(clock) if adaptive else None
    workers = Workers(clock, Endpoint(clock, share=share, seed=1), [lim])
    workers.run(10.0)
    [t] = workers.run(20.0)
    return t.ok / 20, lim


@pytest.mark.parametrize("share", [0.05, 0.20])
def test_429s_at_a_share_whatever_the_rate_cost_no_speed(share: float) -> None:
    (adaptive, lim), (fixed, _) = answered(share, True), answered(share, False)
    assert adaptive >= 0.9 * fixed, (adaptive, fixed)
    assert lim is not None and lim.verdict == "independent"


def test_a_rate_independent_verdict_leaves_the_window_and_the_rate_open() -> None:
    clock = Clock()
    lim = limiter(clock)
    Workers(clock, Endpoint(clock, share=0.05, seed=2), [lim]).run(20.0)
    assert lim.verdict == "independent"
    assert lim.slots == lim.ceiling and (lim.rate() or 0) > 32 / 0.2  # above what 32 can send


def test_a_bucket_with_random_429s_on_top_is_still_paced_under_it() -> None:
    clock = Clock()
    lim = limiter(clock)
    worker = Workers(clock, Endpoint(clock, qps=20.0, share=0.05, seed=3), [lim])
    worker.run(10.0)
    [t] = worker.run(20.0)
    assert t.sent / 20 <= 20 and t.limited <= 0.15 * t.sent


def test_a_bucket_appearing_ends_a_rate_independent_verdict() -> None:
    clock = Clock()
    lim = limiter(clock)
    endpoint = Endpoint(clock, share=0.05, seed=4)
    worker = Workers(clock, endpoint, [lim])
    worker.run(20.0)
    assert lim.verdict == "independent"
    endpoint.qps, endpoint.stamp = 40.0, clock.now  # another job starts: a limit now binds
    worker.run(10.0)
    [t] = worker.run(10.0)
    assert t.sent / 10 <= 1.1 * 40 and t.limited <= 0.2 * t.sent


def test_workers_sharing_a_bucket_find_it_rate_driven() -> None:
    """Each worker's 429s hardly move with its own rate when others fill the bucket; half the
    rate for a test, and none below 10 requests a second, keep them from clearing them."""
    clock = Clock()
    limiters = [limiter(clock) for _ in range(4)]
    workers = Workers(clock, Endpoint(clock, qps=40.0, seed=5), list(limiters))
    workers.run(20.0)
    tallies = workers.run(40.0)
    sent, limited = sum(t.sent for t in tallies), sum(t.limited for t in tallies)
    assert limited <= 0.15 * sent and sent / 40 <= 1.1 * 40
    assert {lim.verdict for lim in limiters} == {"rate-driven"}

"""The adaptive limiter: window AIMD, Retry-After pauses, learned pacing and caps (fake clock)."""

from __future__ import annotations

import asyncio
import math
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
    send(lim, too_many(None))
    assert lim.limit == 1.5 and lim.threshold == 1.5
    before = lim.limit
    send(lim, OK)
    assert lim.limit == pytest.approx(before + 1 / before)  # additive: +1 per window
    for _ in range(500):
        clock.now += 1.0  # past the pacing a 429 turns on
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
    send(lim, too_many(None))
    assert lim.limit < 8


def test_one_decrease_per_window_of_requests_in_flight() -> None:
    clock = Clock()
    lim = limiter(clock, initial=8)
    for _ in range(4):
        assert lim.try_acquire()
    lim.release(too_many(None))  # cut: the 3 others were sent at the old limit
    assert lim.limit == 4
    lim.release(too_many(None))
    lim.release(too_many(None))
    assert lim.limit == 4
    lim.release(OK)
    send(lim, too_many(None))  # sent after the cut: judged
    assert lim.limit < 4


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

"""Adaptive concurrency for one worker: how many requests to send, and how fast.

:class:`AdaptiveLimiter` implements :class:`dbstruct.client.AsyncLimiter`: the async client
calls ``await acquire()`` before every HTTP attempt (retries included) and ``release(answer)``
after it. Four gates decide when the next attempt may start:

| gate     | what it is                                              | learned from               |
|----------|---------------------------------------------------------|----------------------------|
| window   | in-flight limit between ``floor`` and ``ceiling``: slow | answers: +1 per success    |
|          | start, then AIMD (+``increase``/limit per success,      | (slow start), 503s and the |
|          | x``decrease`` on 503, once per window of requests)      | first 429 cut it           |
| pause    | no new send for a share of a 429's Retry-After (below)  | rate-driven 429s           |
| pacing   | sends spaced evenly at a rate, on once a 429 was seen:  | rate-driven 429s and the   |
|          | 0.95 x the rate that succeeded in the seconds before a  | successes a second before  |
|          | 429, then probing up, slowly at first, then faster      | them                       |
| caps     | token buckets for ``max_qps`` and ``max_tokens_per_     | fixed by the caller        |
|          | minute`` (this worker's share of the job's caps)        |                            |

Why a rate as well as a window: Databricks enforces pay-per-token limits as queries per
second and tokens per minute with token buckets
(https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/limits), and a
429's Retry-After is in whole seconds, so each 429 costs a paused worker about a second of
sends if the whole worker waits it out. With short requests an in-flight window is too
coarse (2 vs 3 in flight is 10 vs 15 req/s at 0.2 s latency) to sit just under a rate; an
evenly spaced rate held just under the one that last succeeded makes 429s rare, and a 429
then says "a little too fast", not "stop".

Retry-After: the request that got the 429 waits all of it (the retry loop in ``_retry``
does). The worker's other sends pause for ``max(retry_after - 1, 0.1 x retry_after)``: a
whole-second value is rounded up (the emulator rounds up; Databricks does not document its
rounding), so the endpoint's real wait is somewhere in ``(retry_after - 1, retry_after]``,
and a QPS bucket's is about one request's spacing. The pacing cut keeps the rate under the
limit after the short pause; a long Retry-After (a tokens-per-minute bucket, an outage)
still pauses the worker for nearly all of it. Without ``adaptive`` there is no pacing, so
the worker pauses for the whole Retry-After.

Two kinds of 429. A token bucket's are rate-driven: they come when the job sends faster than
the bucket refills and stop when it sends slower. Others are not: standard pay-per-token
traffic is "best-effort", admitted after priority traffic "during periods of high traffic"
(https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/priority-mode),
so a share of answers can be 429 whatever this job's rate (the emulator's ``faults``).
Cutting for those gains nothing, and a cut per 429 settles far below capacity, as AIMD does
under random loss. The rule, in order:

1. Until slow start ends and half a second of sends (idle time aside) measures a rate, a 429
   neither pauses nor cuts unless over half of 8 or more sends got one: it may be chance.
2. A 429 otherwise does what is described above: pause, cut to 0.95 x what got through.
3. For about a second after that cut the worker sends below the rate that got through, which
   a bucket lets through. A 429 there starts a test (at most one per 10 s): the worker holds
   half that rate (if at least 10 requests a second: fewer answers cannot tell) for up to
   10 s, pausing for nothing, and Wald's sequential probability ratio test on the held sends
   decides between "429s go on, on 2% of sends or more" and "they stop (0.5%)" at 19 to 1.
4. Rate-independent needs 4 or more 429s there, on at most a quarter of the sends (more is a
   limit or an outage) and at most twice (plus 5 points) the share before (a share rising
   while this worker sends less is others filling a shared bucket). The worker then doubles
   from the rate before the test every half second, the window slow-starts, and 429s up to
   that share (counted on, at most twice the test's, plus half or 3 points) neither pause
   nor cut. Ten beyond it (a CUSUM), or any after 3 minutes, end that: it does as in 2.
   Otherwise they are rate-driven. A worker sharing a limit with many others sees its 429s
   barely move with its own rate: half the rate, and 10 a second at least, keep wrong
   verdicts to few, fast workers. Below that rate all 429s stay rate-driven, as before.

No Spark and no pandas here; time comes from an injectable clock, so tests use a fake one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbstruct.errors import DbstructError, OutputError, RateLimitError, ServerError
from dbstruct.worker_settings import WorkerSettings

__all__ = ["AdaptiveLimiter", "Bucket", "worker_limiter"]

_RATE_CUT = 0.95  # pacing rate after a 429, as a share of the rate that succeeded before it
_PROBE = 0.03  # then the rate grows by this share of the cut rate a second...
_ACCEL = 0.01  # ...plus this share times seconds squared: quick to claim freed capacity
_STEP = 0.3  # plus this many requests a second, per second: equal for all workers, so fair
_MAX_GAIN = 2.0  # the probe stops at this many times the most that recently succeeded
_MAX_DROP = 0.7  # one 429 cuts the rate to no less than this share of the paced rate
_MIN_RATE = 0.1  # requests per second: pacing never goes below this
_PAUSE_SHARE = 0.1  # the worker pauses for at least this share of a 429's Retry-After
_SUCCESS_WINDOW_S = 2.0  # successes counted over this long to measure the rate we got
_MEASURE_MIN_S = 1.0  # a measured rate over a shorter span, or fewer successes, is noise
_MEASURE_MIN_COUNT = 3
_FIRST_SPAN_S = 0.5
_HALF_OF_GUESS = 0.5  # leaving the doubling, the rate is at least this share of the guess
_DOUBLING_S = 0.5  # before any rate is measured, the guess doubles this often
_OVERLOAD_STATUSES = frozenset({503})  # 5xx that mean "too much load" (cut the window)
# which 429s are the rate's (module docstring, "Two kinds of 429"), in the rule's order
_FLOOD_SHARE, _FLOOD_MIN_SENDS = 0.5, 8  # 1: unmeasured, only a flood of 429s cuts
# 3: a test at most every _RETEST_S, holding _TEST_DEPTH x the rate that got through if that
# is at least _TEST_MIN_RATE requests a second, for at most _TEST_MAX_S
_RETEST_S, _TEST_DEPTH, _TEST_MIN_RATE, _TEST_MAX_S = 10.0, 0.5, 10.0, 10.0
_SHARE_IF_INDEPENDENT, _SHARE_IF_DRIVEN, _ODDS = 0.02, 0.005, math.log(19.0)  # the test's
_MIN_429S, _MAX_SHARE, _RISE, _RISE_POINTS = 4, 0.25, 2.0, 0.05  # 4: independent needs
_FLOOD_429S = 10  # a test seeing this many, on over _FLOOD_SHARE of its sends: a limit
_SLACK, _MIN_SLACK = 0.5, 0.03  # 429s a send may bring: the share + max(this x it, _MIN_)
_EXCESS, _TRUSTED_S = 10.0, 180.0  # 429s beyond that (a CUSUM), or age, end the verdict


class Bucket:
    """A token bucket: ``rate`` units a second, at most ``capacity`` banked, starts full.

    The level may go below zero (:meth:`charge` after the fact); sends then wait until the
    debt is paid back, so the average rate holds however large one request turns out.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be > 0, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now

    def wait(self, need: float, now: float) -> float:
        """Seconds until the level reaches ``need`` (capped at the capacity); 0.0 if it has."""
        self.refill(now)
        need = min(need, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def charge(self, amount: float) -> None:
        self.level -= amount

    def credit(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


@dataclass
class _Test:
    """Sends held at a lowered rate after a 429 came there, and the 429s they got."""

    started: float
    rate: float  # the pacing rate held
    rate_before: float  # sends a second before the test
    share_before: float  # of 429s among them
    sent: int = 0
    limited: int = 0


class AdaptiveLimiter:
    """Gates a worker's HTTP attempts by the endpoint's answers; see the module docstring.

    >>> limiter = AdaptiveLimiter(ceiling=32, max_qps=10.0)
    >>> client.limiter = limiter  # an AsyncStructuredClient
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 1,
        initial: int | None = None,
        increase: float = 1.0,
        decrease: float = 0.5,
        adaptive: bool = True,
        max_qps: float | None = None,
        max_tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor={floor}, ceiling={ceiling}")
        if not (increase > 0 and 0 < decrease < 1):
            raise ValueError(f"need increase > 0 and 0 < decrease < 1, got {increase}, {decrease}")
        self.ceiling, self.floor = ceiling, floor
        self.increase, self.decrease = increase, decrease
        self.adaptive = adaptive
        self._clock = clock
        start = ceiling if not adaptive else (initial or min(ceiling, 4))
        self.limit = float(max(floor, min(ceiling, start)))
        self.threshold = float(ceiling)  # slow start below it (TCP's ssthresh)
        self.in_flight = 0
        self.paused_until = 0.0
        self._unjudged = 0  # releases still due from requests sent before the last cut
        now = clock()
        self._qps = Bucket(max_qps, 1.0, now) if max_qps else None  # no burst: even spacing
        tpm = max_tokens_per_minute
        self._tokens = Bucket(tpm / 60.0, max(1.0, tpm / 60.0), now) if tpm else None
        self._token_guess = 0.0  # tokens per attempt, learned: reserved at acquire
        self._reserved = 0.0
        self._pace: Bucket | None = None  # on after the first 429
        self._peak = 0.0  # the rate a 429 answered (CUBIC's W_max)
        self._starting = False  # pacing from a guess, not yet from a measured rate
        self._cut_at = 0.0
        self._successes: deque[float] = deque()
        self._sends: deque[float] = deque()  # like _successes: the last _SUCCESS_WINDOW_S
        self._limited: deque[float] = deque()  # 429s
        self._active_from = now  # the first send after a _SUCCESS_WINDOW_S without one
        self._measure_from = now
        self._waiters: list[asyncio.Future[None]] = []
        #: what the latest 429s were found to be: "rate-driven", "testing" or "independent"
        self.verdict = "rate-driven"
        self._below = 0.0  # sends are at a lowered rate while the pace is under this
        self._test: _Test | None = None
        self._tested_at = -math.inf
        self._background = [0, 0]  # sends and 429s since 429s were found independent
        self._tested_share = 0.0  # of 429s in that test
        self._excess = 0.0  # 429s beyond the share they allow (a CUSUM)

    # ---- state, readable by tests and logs ---------------------------------------------

    @property
    def slots(self) -> int:
        """Attempts allowed in flight now."""
        return max(self.floor, min(self.ceiling, int(self.limit)))

    def rate(self, now: float | None = None) -> float | None:
        """The pacing rate (requests a second), or None before any 429."""
        if self._pace is None:
            return None
        if self._test is not None:
            return self._test.rate
        now = self._clock() if now is None else now
        t = now - self._cut_at
        # no further than twice what got through: an idle worker must not bank a rate
        top = _MAX_GAIN * max(self._peak, self._recent(now))
        if self._starting:
            doubled = float(2.0 ** min(t / _DOUBLING_S, 60.0))  # 2.0 ** 1100 would overflow
            return max(_MIN_RATE, min(top, self._peak * doubled))
        # back to the peak within a second or two, then faster: the limit may have moved
        growth = _PROBE * t + _ACCEL * t * t
        probe = _RATE_CUT * self._peak * (1 + growth) + _STEP * t
        return max(_MIN_RATE, min(top, probe))

    # ---- admission ---------------------------------------------------------------------

    def delay(self) -> float:
        """Seconds before an attempt may start (``inf``: until one in flight ends); 0.0 if now."""
        now = self._clock()
        if self.in_flight >= self.slots:
            return math.inf
        waits = [self.paused_until - now]
        if self._pace is not None:
            self._pace.rate = self.rate(now) or _MIN_RATE
            waits.append(self._pace.wait(1.0, now))
        if self._qps is not None:
            waits.append(self._qps.wait(1.0, now))
        if self._tokens is not None:
            waits.append(self._tokens.wait(0.0, now))  # no debt left
        return max(0.0, *waits)

    def try_acquire(self) -> bool:
        """Take a slot if :meth:`delay` is 0; the sync core of :meth:`acquire`."""
        if self.delay() > 0:
            return False
        self.in_flight += 1
        self._sent(self._clock())
        for bucket in (self._pace, self._qps):
            if bucket is not None:
                bucket.charge(1.0)
        if self._tokens is not None:
            self._tokens.charge(self._token_guess)
            self._reserved += self._token_guess
        return True

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.try_acquire():
            wait = self.delay()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait({waiter}, timeout=None if math.isinf(wait) else wait)
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, answer: object) -> None:
        now = self._clock()
        self.in_flight = max(0, self.in_flight - 1)
        judged = self._unjudged == 0
        self._unjudged = max(0, self._unjudged - 1)
        self._settle_tokens(answer)
        if isinstance(answer, RateLimitError):
            self._limited.append(now)
            if self._rate_driven(now, judged) and self._may_cut(now):
                pause = 0.0 if answer.retry_after is None else self._pause(answer.retry_after)
                self.paused_until = max(self.paused_until, now + pause)  # judged or not
                if judged and self.adaptive:
                    self._cut(now, rate_limited=True)
        elif isinstance(answer, ServerError) and answer.status in _OVERLOAD_STATUSES:
            if judged and self.adaptive:
                self._cut(now, rate_limited=False)
        elif not isinstance(answer, DbstructError) or isinstance(answer, OutputError):
            self._grow(now)  # the endpoint answered; a bad answer is not overload
        self._wake()

    # ---- which 429s are the rate's (module docstring, "Two kinds of 429") -------------

    def _sent(self, now: float) -> None:
        self._forget(now)
        if not self._sends:  # idle time says nothing about the rate: measure from here
            self._active_from = now
        self._sends.append(now)
        if self._test is not None:
            self._test.sent += 1
            self._judge(self._test, now)
        elif self.verdict == "independent":
            self._background[0] += 1
            self._excess = max(0.0, self._excess - self._allowed())

    def _rate_driven(self, now: float, judged: bool) -> bool:
        """Whether a 429 is to pause and slow the worker; counts it for a test or the share."""
        if not self.adaptive:
            return True
        if self._test is not None:
            if judged:  # not an answer to a send from before the test
                self._test.limited += 1
                self._judge(self._test, now)
            return False
        if self.verdict == "independent":
            self._background[1] += 1
            self._excess += 1.0
            if self._excess < _EXCESS and now - self._tested_at < _TRUSTED_S:
                return False
            self.verdict = "rate-driven"  # more than the share found independent, or stale
            return True
        held = _TEST_DEPTH * self._peak
        if not (judged and self._lowered(now) and held >= _TEST_MIN_RATE) or (
            now - self._tested_at < _RETEST_S
        ):
            return True
        sent, limited = self._trailing(now)
        rate = sent / max(_FIRST_SPAN_S, min(_SUCCESS_WINDOW_S, now - self._active_from))
        self._test = _Test(now, held, rate, limited / max(1, sent))
        self.verdict, self._unjudged = "testing", self.in_flight  # later answers judge it
        return False

    def _allowed(self) -> float:
        """429s a send may bring while independent: their share so far, and some slack."""
        sent, limited = self._background
        share = min(_MAX_SHARE, limited / max(1, sent), _RISE * self._tested_share)
        return share + max(_SLACK * share, _MIN_SLACK)

    def _lowered(self, now: float) -> bool:
        return self._pace is not None and (self.rate(now) or 0.0) < self._below

    def _may_cut(self, now: float) -> bool:
        """Paced already, a rate measured past slow start, or a flood of 429s."""
        if not self.adaptive or self._pace is not None:
            return True
        if self.limit >= self.threshold and self._accepted(now) is not None:
            return True
        sent, limited = self._trailing(now)
        return sent >= _FLOOD_MIN_SENDS and limited > _FLOOD_SHARE * sent

    def _judge(self, test: _Test, now: float) -> None:
        """Wald's sequential test on the held sends; see the module docstring."""
        k, n = test.limited, test.sent
        hi, lo = _SHARE_IF_INDEPENDENT, _SHARE_IF_DRIVEN
        evidence = k * math.log(hi / lo) + max(0, n - k) * math.log((1 - hi) / (1 - lo))
        share, before = k / max(1, n), test.share_before
        steady = share <= max(_RISE * before, before + _RISE_POINTS)
        if evidence >= _ODDS and k >= _MIN_429S and share <= _MAX_SHARE and steady:
            self._test, self.verdict, self._tested_at = None, "independent", now
            self._background, self._excess, self._tested_share = [n, k], 0.0, share
            # back to the rate before the test, doubling from there; the window slow-starts
            self.threshold = float(self.ceiling)
            self._peak = max(self._peak, test.rate_before)
            self._starting, self._cut_at = True, now
        elif (
            evidence <= -_ODDS
            or now - test.started >= _TEST_MAX_S
            or (k >= _FLOOD_429S and share > _FLOOD_SHARE)
        ):
            self._test, self.verdict, self._tested_at = None, "rate-driven", now
            self._peak, self._cut_at = test.rate / _RATE_CUT, now  # probe on from the held rate

    # ---- adaptation --------------------------------------------------------------------

    def _grow(self, now: float) -> None:
        self._successes.append(now)
        self._forget(now)
        if not self.adaptive:
            return
        step = 1.0 if self.limit < self.threshold else self.increase / self.limit
        self.limit = min(float(self.ceiling), self.limit + step)

    def _pause(self, retry_after: float) -> float:
        """The worker's pause for a 429 (the module docstring says why it is not all of it)."""
        if not self.adaptive:
            return retry_after
        return max(retry_after - 1.0, _PAUSE_SHARE * retry_after)

    def _cut(self, now: float, *, rate_limited: bool) -> None:
        """Multiplicative decrease, once per window: answers to requests already in flight
        were sent at the old limit and say nothing about the new one. Once a learned rate
        paces the sends, a 429 cuts that rate, not the window: halving 2 in flight would
        halve the rate, far below the limit just touched."""
        paced = self._pace is not None and not self._starting
        if not (rate_limited and paced):
            self.limit = max(float(self.floor), self.limit * self.decrease)
        self.threshold = self.limit
        self._unjudged = self.in_flight
        if rate_limited:
            self._learn_rate(now)

    def _learn_rate(self, now: float) -> None:
        paced = self.rate(now)
        known = self._pace is not None and not self._starting
        # a first estimate may be rough (the probe corrects it)
        measured = self._measured(now, _MEASURE_MIN_S if known else _FIRST_SPAN_S)
        if self._pace is None:  # successes lag a latency behind; sends not refused do not
            measured = self._accepted(now) or measured
        self._measure_from = max(now, self.paused_until)
        self._below = measured or self._below  # unmeasured: the last rate that got through
        if known and paced is not None:
            # what succeeded since the last 429 (sends may have been short of the pace), but
            # one noisy second must not collapse the rate
            got = paced if measured is None else measured
            peak = max(_MAX_DROP * paced, min(paced, got))
        elif measured is not None:  # a doubling guess hit the limit: it lies above half of it
            peak = max(measured, _HALF_OF_GUESS * paced) if paced is not None else measured
            self._starting = False
        else:  # nothing measured yet: guess low, then double every half second until a 429
            peak, self._starting = (paced or float(self.slots)) * self.decrease, True
        self._peak = max(_MIN_RATE, peak)
        self._cut_at = now
        if self._pace is None:
            self._pace = Bucket(self._peak, 1.0, now)

    def _measured(self, now: float, min_span: float = _MEASURE_MIN_S) -> float | None:
        """Successes a second since sends resumed after the last 429 (at most 2 s back)."""
        span = min(_SUCCESS_WINDOW_S, now - max(self._measure_from, self._active_from))
        count = sum(1 for t in self._successes if t >= now - span)
        if span < min_span or count < _MEASURE_MIN_COUNT:
            return None
        return count / span

    def _recent(self, now: float) -> float:
        """Successes a second over the last few seconds, however many (O(1): called per send)."""
        self._forget(now)
        return len(self._successes) / _SUCCESS_WINDOW_S

    def _forget(self, now: float) -> None:
        for times in (self._successes, self._sends, self._limited):
            while times and times[0] < now - _SUCCESS_WINDOW_S:
                times.popleft()

    def _trailing(self, now: float) -> tuple[int, int]:
        """Sends and 429s over the last _SUCCESS_WINDOW_S."""
        self._forget(now)
        return len(self._sends), len(self._limited)

    def _accepted(self, now: float) -> float | None:
        """Sends a second not answered 429 over the last _FIRST_SPAN_S (the rate now, not a
        slow start's average); None before sends have gone on that long."""
        if now - max(self._measure_from, self._active_from) < _FIRST_SPAN_S:
            return None
        since = now - _FIRST_SPAN_S
        count = sum(t >= since for t in self._sends) - sum(t >= since for t in self._limited)
        return count / _FIRST_SPAN_S if count >= _MEASURE_MIN_COUNT else None

    def _settle_tokens(self, answer: object) -> None:
        """Swap the guess reserved at acquire for the tokens the attempt used."""
        if self._tokens is None:
            return
        held = self._reserved / (self.in_flight + 1)
        self._reserved -= held
        usage: Any = getattr(answer, "usage", None)
        used = float(getattr(usage, "total_tokens", 0) or 0) if usage is not None else 0.0
        self._tokens.credit(held)
        self._tokens.charge(used)
        if used > 0:  # an exponential average, so a change of prompt size is followed
            old = self._token_guess
            self._token_guess = used if old == 0 else 0.8 * old + 0.2 * used

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


def worker_limiter(settings: WorkerSettings) -> AdaptiveLimiter | None:
    """A worker's limiter: ``concurrency`` is its ceiling, and the worker gets its share of
    the job's caps. None when nothing would be limited.

    >>> client.limiter = worker_limiter(WorkerSettings(concurrency=32, adaptive=True))
    """
    if not settings.limited:
        return None
    return AdaptiveLimiter(
        settings.concurrency,
        adaptive=settings.adaptive,
        max_qps=settings.qps_per_worker,
        max_tokens_per_minute=settings.tpm_per_worker,
    )

"""Rate limits as pay-per-token endpoints enforce them: token buckets.

https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/limits
"Databricks uses a token bucket implementation, which allows some burst capacity while
maintaining the average rate limit over time"; input tokens are counted from the prompt at
request time; output tokens are reserved from ``max_tokens`` before the request is admitted
("If max_tokens would cause you to exceed OTPM limits, Databricks immediately rejects the
request with a 429 error") and the unused part is credited back after the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["DEFAULT_OUTPUT_RESERVATION", "TokenBucket"]

#: output tokens reserved when a request sets no ``max_tokens`` (the docs say "a default
#: reservation" without its size; this one is ours)
DEFAULT_OUTPUT_RESERVATION = 1000


@dataclass
class TokenBucket:
    """``rate`` units a second, holding at most ``capacity``; starts full."""

    rate: float
    capacity: float
    level: float = field(default=-1.0)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.capacity

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float = 1.0, now: float | None = None) -> float:
        """Take ``amount``; 0.0 if granted, else the seconds until it would be (nothing taken)."""
        now = time.monotonic() if now is None else now
        self._refill(now)
        if self.level >= amount:
            self.level -= amount
            return 0.0
        if amount > self.capacity:
            # Never grantable (e.g. max_tokens above the whole per-minute budget): the wait is
            # a full window, which is what a client should back off by before trying again.
            return self.capacity / self.rate if self.rate > 0 else 60.0
        return (amount - self.level) / self.rate if self.rate > 0 else 60.0

    def give(self, amount: float) -> None:
        """Credit back what a request reserved but did not use."""
        self.level = min(self.capacity, self.level + amount)

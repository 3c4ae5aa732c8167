"""The emulator's mutable state: configuration, counters, scripts, tokens, rate buckets.

All of it lives on the server's event loop thread; tests reach it through the admin HTTP
routes, so in-process and subprocess emulators share one control path.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from dbstruct.testing._config import EmulatorConfig
from dbstruct.testing._token_buckets import TokenBucket

__all__ = ["State", "Stats"]

#: attempt counters kept (per content or marker text) before the oldest are forgotten
_MAX_ATTEMPT_KEYS = 500_000


@dataclass
class Stats:
    """Counters since the last reset: ``emu.stats()``."""

    #: chat requests received (any outcome)
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_endpoint: dict[str, int] = field(default_factory=dict)
    #: injected faults and rate-limit rejections ("qps", "itpm", "otpm") by kind
    by_fault: dict[str, int] = field(default_factory=dict)
    #: approximate tokens of the answered requests (see dbstruct.testing._request_text)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    oauth_tokens_issued: int = 0
    #: packed requests answered with a list of entries (not with an HTTP error, a scripted
    #: answer, a refusal or an empty answer), and how many of their items got an entry
    packed_requests: int = 0
    packed_items: int = 0
    #: packing faults injected, by kind (dbstruct.testing._config.PACK_FAULT_KINDS)
    by_pack_fault: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def status(self, code: int) -> int:
        """How many chat requests got HTTP ``code`` (0: the connection was dropped without an
        answer; 499: the client went away before the answer)."""
        return self.by_status.get(code, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "by_endpoint": dict(self.by_endpoint),
            "by_fault": dict(self.by_fault),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "oauth_tokens_issued": self.oauth_tokens_issued,
            "packed_requests": self.packed_requests,
            "packed_items": self.packed_items,
            "by_pack_fault": dict(self.by_pack_fault),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        data = dict(data)
        data["by_status"] = {int(k): v for k, v in data.get("by_status", {}).items()}
        return cls(**data)


def _bump(counter: dict[Any, int], key: Any) -> None:
    counter[key] = counter.get(key, 0) + 1


class State:
    def __init__(self, config: EmulatorConfig) -> None:
        self.initial = config.copy()
        self.config = config.copy()
        self.stats = Stats()
        self.recent: deque[dict[str, Any]] = deque(maxlen=config.keep_requests)
        self.scripts: dict[str | None, deque[dict[str, Any]]] = {}
        self.attempts: dict[str, int] = {}
        self.oauth: dict[str, float] = {}  # issued token -> expiry (monotonic clock)
        self.buckets: dict[tuple[str, str], TokenBucket] = {}

    def reset(self, initial: EmulatorConfig | None = None) -> None:
        """Back to the configuration the emulator was started with (``initial`` from now on,
        if given), counters at zero."""
        if initial is not None:
            self.initial = initial.copy()
        self.config = self.initial.copy()
        self.stats = Stats()
        self.recent = deque(maxlen=self.config.keep_requests)
        self.scripts.clear()
        self.attempts.clear()
        self.oauth.clear()
        self.buckets.clear()

    def configure(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)
        if {"qps", "burst", "itpm", "otpm"} & set(changes):
            self.buckets.clear()
        if "keep_requests" in changes:
            self.recent = deque(self.recent, maxlen=self.config.keep_requests)

    # ------------------------------------------------------------ counting

    def count_status(self, status: int) -> None:
        _bump(self.stats.by_status, status)

    def count_endpoint(self, endpoint: str) -> None:
        _bump(self.stats.by_endpoint, endpoint)

    def count_fault(self, kind: str) -> None:
        _bump(self.stats.by_fault, kind)

    def attempt(self, key: str) -> int:
        """The 1-based attempt number of this request among those sharing ``key``."""
        n = self.attempts.get(key, 0) + 1
        self.attempts[key] = n
        if len(self.attempts) > _MAX_ATTEMPT_KEYS:  # a long run: forget the oldest tenth
            for old in list(itertools.islice(self.attempts, _MAX_ATTEMPT_KEYS // 10)):
                del self.attempts[old]
        return n

    def draw(self, salt: str, key: str, attempt: int) -> float:
        """A uniform [0, 1) number fixed by the seed, the content and the attempt number, so
        fault plans are reproducible whatever order concurrent requests arrive in."""
        material = f"{self.config.seed}|{salt}|{key}|{attempt}".encode()
        digest = hashlib.blake2b(material, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    # ------------------------------------------------------------ scripts

    def push_script(self, items: list[dict[str, Any]], endpoint: str | None) -> None:
        self.scripts.setdefault(endpoint, deque()).extend(items)

    def pop_script(self, endpoint: str) -> dict[str, Any] | None:
        for key in (endpoint, None):
            queue = self.scripts.get(key)
            if queue:
                return queue.popleft()
        return None

    # ------------------------------------------------------------ tokens

    def issue_token(self) -> str:
        now = time.monotonic()
        for old in [t for t, expiry in self.oauth.items() if expiry <= now]:
            del self.oauth[old]
        token = "emu-oauth-" + secrets.token_urlsafe(24)
        self.oauth[token] = now + self.config.token_ttl
        self.stats.oauth_tokens_issued += 1
        return token

    def token_status(self, token: str) -> str:
        """ "ok", "forbidden" (valid, lacks CAN_QUERY) or "invalid" (unknown or expired)."""
        if token in self.config.forbidden_tokens:
            return "forbidden"
        if token in self.config.tokens:
            return "ok"
        expiry = self.oauth.get(token)
        if expiry is not None and time.monotonic() < expiry:
            return "ok"
        return "invalid"

    # ------------------------------------------------------------ rate limits

    def bucket(self, endpoint: str, kind: str) -> TokenBucket | None:
        """The endpoint's bucket for "qps", "itpm" or "otpm"; None when that limit is off.

        Limits are per endpoint: each pay-per-token model has its own
        (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/limits).
        """
        config = self.config
        if kind == "qps":
            if config.qps is None:
                return None
            rate, capacity = config.qps, config.burst or max(1.0, config.qps)
        else:
            limit = config.itpm if kind == "itpm" else config.otpm
            if limit is None:
                return None
            rate, capacity = limit / 60.0, float(limit)
        key = (endpoint, kind)
        found = self.buckets.get(key)
        if found is None:
            found = self.buckets[key] = TokenBucket(rate=rate, capacity=capacity)
        return found

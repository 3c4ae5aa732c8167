"""What an emulator is configured with; one JSON-able dataclass, changed at run time."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULT_KINDS", "OUTPUT_FAULTS", "PACK_FAULT_KINDS", "EmulatorConfig"]

#: every fault kind, for rates (``faults={"429": 0.1}``), markers and :class:`Fault`
FAULT_KINDS = (
    "429",  # 429 with a Retry-After header
    "429_body",  # 429 with the delay only in the body (google.rpc.RetryInfo detail)
    "429_bare",  # 429 with no delay at all: no Retry-After, no RetryInfo
    "500",
    "502",
    "503",
    "504",
    "timeout",  # hold the request (timeout_hold s), then 504 if the client is still there
    "drop",  # close the connection without an answer
    "malformed",  # answer JSON that does not parse
    "invalid",  # answer JSON that parses but breaks the schema
    "length",  # finish_reason "length", the JSON cut off
    "refusal",  # message.refusal set, content null
    "empty",  # "choices": []
    "wrong_tool",  # a tool/function call with a name that was not offered
    "oversized",  # valid JSON over 1 MiB (a string padded), max_tokens ignored
    "misquote",  # valid JSON, but every quote (evidence) is words the request's text lacks
)

#: the kinds that still answer 200 (the model's output is what is wrong)
OUTPUT_FAULTS = frozenset(
    {"malformed", "invalid", "length", "refusal", "empty", "wrong_tool", "oversized", "misquote"}
)

#: faults in the answer to a packed request (several rows in one request, dbstruct's own
#: protocol: see dbstruct.testing._packs), for ``pack_faults`` rates and ``[[pack:KIND]]``
PACK_FAULT_KINDS = (
    "drop",  # one entry missing
    "duplicate",  # one entry twice, the copy with other values
    "unknown_id",  # one entry's id not one of the request's
    "swap",  # two entries exchange ids (their echoes stay with their values)
    "truncate",  # the list ends after half its entries
    "single",  # only the first id's entry
    "invalid_item",  # one entry with a field that breaks its schema
    "misquote",  # one entry's quotes are words its item's text lacks (valid JSON)
)

# https://docs.databricks.com/aws/en/machine-learning/model-serving/model-serving-limits
# "Payload size | Per request | 16 MB. For endpoints serving foundation models, external
# models, or AI agents the limit is 4 MB."
FOUNDATION_MODEL_PAYLOAD_LIMIT = 4 * 1024 * 1024


@dataclass
class EmulatorConfig:
    """Everything :meth:`Emulator.configure` can change. Times in seconds."""

    #: bearer tokens (PATs) that may query every endpoint
    tokens: list[str] = field(default_factory=lambda: ["dapi-test"])
    #: valid tokens whose identity lacks CAN_QUERY: 403 PERMISSION_DENIED
    forbidden_tokens: list[str] = field(default_factory=list)
    #: endpoint names that exist (others 404); None serves any name
    endpoints: list[str] | None = None
    #: fixed latency added to every answered request
    latency: float = 0.0
    #: fraction of requests that take ``tail_factor`` x ``latency`` instead
    tail: float = 0.0
    tail_factor: float = 10.0
    #: queries per second (token bucket); None for no limit
    qps: float | None = None
    #: bucket size for ``qps`` (default: max(1, qps))
    burst: float | None = None
    #: input / output tokens per minute (token buckets, output reserved from max_tokens)
    itpm: int | None = None
    otpm: int | None = None
    #: fraction of requests that get each fault kind, drawn with ``seed``
    faults: dict[str, float] = field(default_factory=dict)
    #: fraction of packed requests that get each packing fault kind, drawn with ``seed``
    pack_faults: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    #: seconds announced in 429s (Retry-After / RetryInfo) for injected 429s
    retry_after: float = 1.0
    #: how long a "timeout" fault holds the request before its 504
    timeout_hold: float = 30.0
    max_payload_bytes: int = FOUNDATION_MODEL_PAYLOAD_LIMIT
    #: prompt tokens (approximate count) above which a request is rejected; None: no limit
    context_tokens: int | None = 128_000
    #: how many recent request bodies to keep
    keep_requests: int = 100
    #: OAuth M2M client (service principal) credentials and issued-token lifetime
    client_id: str = "emulator-client"
    client_secret: str = "emulator-secret"
    token_ttl: float = 3600.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> EmulatorConfig:
        return EmulatorConfig.from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        config = cls()
        config.update(data)
        return config

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes``; raise ValueError (and change nothing) if any is invalid."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown emulator settings: {unknown}; known: {sorted(names)}")
        trial = dataclasses.replace(self, **_normalised(changes))
        trial.check()
        for key in changes:
            setattr(self, key, getattr(trial, key))

    def check(self) -> None:
        bad = sorted(set(self.faults) - set(FAULT_KINDS))
        if bad:
            raise ValueError(f"unknown fault kinds {bad}; known: {list(FAULT_KINDS)}")
        if any(not 0 <= r <= 1 for r in self.faults.values()) or sum(self.faults.values()) > 1:
            raise ValueError("fault rates must be in [0, 1] and sum to at most 1")
        bad = sorted(set(self.pack_faults) - set(PACK_FAULT_KINDS))
        if bad:
            raise ValueError(f"unknown pack fault kinds {bad}; known: {list(PACK_FAULT_KINDS)}")
        rates = self.pack_faults.values()
        if any(not 0 <= r <= 1 for r in rates) or sum(rates) > 1:
            raise ValueError("pack fault rates must be in [0, 1] and sum to at most 1")
        if not 0 <= self.tail <= 1:
            raise ValueError("tail is a fraction of requests, in [0, 1]")
        for name in ("latency", "tail_factor", "retry_after", "timeout_hold", "token_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("qps", "burst", "itpm", "otpm", "context_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None")


def _normalised(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    for key in ("tokens", "forbidden_tokens"):
        if key in out:
            value = out[key]
            out[key] = [value] if isinstance(value, str) else list(value)
    if out.get("endpoints") is not None:
        value = out["endpoints"]
        out["endpoints"] = [value] if isinstance(value, str) else list(value)
    for key in ("faults", "pack_faults"):
        if key in out:
            out[key] = {str(k): float(v) for k, v in dict(out[key] or {}).items()}
    return out

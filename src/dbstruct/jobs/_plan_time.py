"""How long a run takes: the slowest of the endpoint's limits and the job's own concurrency.

    >>> t = run_time(requests=1_000, prompt_tokens=500_000, completion_tokens=60_000,
    ...              limits=Limits(qps=20), in_flight=32, latency_s=None)
    >>> round(t.minutes, 2), t.bound
    (0.83, 'qps 20')

Each limit gives a floor on the time: ``requests / qps``, prompt tokens over the input
tokens per minute, completion tokens over the output tokens per minute, all tokens over a
provisioned endpoint's tokens per second. The job itself sends at most ``in_flight``
requests at once (partitions x concurrency), each taking ``latency_s`` (a pilot measures
it), so it needs at least ``requests x latency_s / in_flight``. The run takes the largest of
these; with no limit and no latency nothing is known and ``minutes`` is None.

Databricks' pay-per-token endpoints limit queries per second and input and output tokens per
minute, per endpoint and workspace, and reserve a request's ``max_tokens`` against the output
limit until it ends (https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/limits);
provisioned throughput endpoints are sized in tokens per second
(https://docs.databricks.com/machine-learning/foundation-model-apis/prov-throughput-tokens.html).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dbstruct.worker_settings import CONCURRENCY_RANGE

__all__ = ["Limits", "RunTime", "Staffing", "parse_duration", "run_time", "staffing"]


@dataclass(frozen=True)
class Limits:
    """An endpoint's limits (None: not known)."""

    qps: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    tokens_per_second: float | None = None

    @property
    def any(self) -> bool:
        return any(
            v is not None
            for v in (
                self.qps,
                self.input_tokens_per_minute,
                self.output_tokens_per_minute,
                self.tokens_per_second,
            )
        )


@dataclass(frozen=True)
class RunTime:
    """The expected time of a run, and what bounds it (``"qps 20"``, ``"concurrency"``)."""

    minutes: float | None
    bound: str | None
    #: minutes under each known bound
    floors: dict[str, float]


def run_time(
    *,
    requests: int,
    prompt_tokens: float,
    completion_tokens: float,
    limits: Limits,
    in_flight: int,
    latency_s: float | None,
) -> RunTime:
    floors: dict[str, float] = {}
    if limits.qps:
        floors[f"qps {_num(limits.qps)}"] = requests / limits.qps / 60
    if limits.input_tokens_per_minute:
        floors[f"input tokens/min {_num(limits.input_tokens_per_minute)}"] = (
            prompt_tokens / limits.input_tokens_per_minute
        )
    if limits.output_tokens_per_minute:
        floors[f"output tokens/min {_num(limits.output_tokens_per_minute)}"] = (
            completion_tokens / limits.output_tokens_per_minute
        )
    if limits.tokens_per_second:
        floors[f"tokens/s {_num(limits.tokens_per_second)}"] = (
            (prompt_tokens + completion_tokens) / limits.tokens_per_second / 60
        )
    if latency_s is not None and in_flight > 0:
        floors[f"{in_flight} requests in flight x {latency_s:.2f} s"] = (
            requests * latency_s / in_flight / 60
        )
    if not floors:
        return RunTime(None, None, floors)
    bound = max(floors, key=lambda k: floors[k])
    return RunTime(floors[bound], bound, floors)


@dataclass(frozen=True)
class Staffing:
    """What finishing within a deadline takes: requests in flight, and a way to get them."""

    in_flight: int
    concurrency: int
    partitions: int
    #: why the deadline cannot be met whatever the job does (a limit), else None
    impossible: str | None = None


def staffing(
    *,
    deadline_minutes: float,
    requests: int,
    latency_s: float,
    run: RunTime,
    partitions: int,
) -> Staffing:
    """The in-flight requests to finish ``requests`` within the deadline at ``latency_s``
    each, as ``concurrency`` per task and ``partitions`` tasks (the job's partitions, more
    when one task would need more than the largest concurrency)."""
    limit_floors = {k: v for k, v in run.floors.items() if "in flight" not in k}
    worst = max(limit_floors.items(), key=lambda kv: kv[1], default=None)
    impossible = None
    if worst is not None and worst[1] > deadline_minutes:
        impossible = f"{worst[0]} alone takes {worst[1]:.1f} min"
    in_flight = max(1, math.ceil(requests * latency_s / (deadline_minutes * 60)))
    top = CONCURRENCY_RANGE[1]
    tasks = max(partitions, math.ceil(in_flight / top))
    concurrency = max(1, math.ceil(in_flight / tasks))
    return Staffing(in_flight, concurrency, tasks, impossible)


_UNITS = {"s": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0}


def parse_duration(text: str) -> float:
    """Minutes in ``"90s"``, ``"45m"``, ``"45min"``, ``"2h"``, ``"1h30m"`` or ``"30"``
    (minutes); ValueError naming the text otherwise."""
    import re

    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        minutes = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|h|m|s)", value)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s", "", value):
            raise ValueError(
                f"--deadline {text!r}: expected a duration such as 90s, 45m, 2h or 1h30m"
            )
        minutes = sum(float(n) * _UNITS[u] for n, u in parts)
    if minutes <= 0:
        raise ValueError(f"--deadline {text!r}: must be more than 0")
    return minutes


def _num(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,}"

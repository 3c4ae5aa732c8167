"""The executor side of a structured UDF (dbstruct.spark._worker), without a JVM.

``run_partition`` is called as Spark calls it, with an iterator of pandas Series batches,
against the serving emulator: the emulator answers from the row's text (its capitalised word
is the name, its integer the age), so every output row can be checked against its input.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

from dbstruct._rate_control import AdaptiveLimiter
from dbstruct.auth import Credentials
from dbstruct.modes import Mode
from dbstruct.spark import _worker
from dbstruct.spark._prompt import build_prompt
from dbstruct.spark._udf_spec import UdfSpec
from dbstruct.spark._worker import run_partition
from dbstruct.testing import Emulator
from dbstruct.worker_settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)


class User(BaseModel):
    name: str
    age: int


def name_of(i: int) -> str:
    return "Q" + "".join(chr(ord("a") + int(d)) for d in str(i))


def text_of(i: int) -> str:
    return f"{name_of(i)} is {i % 100} years old"


def spec_for(emu: Emulator, include_status: bool = False, **settings: Any) -> UdfSpec:
    return UdfSpec(
        id=f"test-worker-{random.random()}",
        name="extract_user",
        response_model=User,
        model="databricks/test-llm",
        prompt=build_prompt("Extract the user from this text: {text}"),
        mode=Mode.TOOLS,
        include_status=include_status,
        strict=False,
        credentials=Credentials.from_token(emu.base_url, emu.token),
        settings=WorkerSettings(**{"max_retries": 0, **settings}),
    )


def batches(*texts: Sequence[Any]) -> Iterator[pd.Series]:
    return iter([pd.Series(list(t), dtype=object) for t in texts])


def run(spec: UdfSpec, *texts: Sequence[Any]) -> list[pd.DataFrame]:
    return list(run_partition(spec, batches(*texts)))


@pytest.fixture(autouse=True)
def fresh_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a new Python worker (no loop, no clients) and ends closing them."""
    monkeypatch.setattr(_worker, "_RUNTIME", None)
    yield
    runtime = _worker._RUNTIME
    if runtime is not None:
        for client in runtime.clients.values():
            runtime.loop.run(client.close())
        runtime.loop.stop()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[UdfSpec]:
    """The specs the worker opened a client for, in order."""
    calls: list[UdfSpec] = []
    original = _worker._open_client

    async def spy(spec: UdfSpec) -> Any:
        calls.append(spec)
        return await original(spec)

    monkeypatch.setattr(_worker, "_open_client", spy)
    return calls


def test_one_client_and_loop_per_worker_reused_across_batches_and_tasks(
    dbstruct_emulator: Emulator, opened: list[UdfSpec]
) -> None:
    spec = spec_for(dbstruct_emulator)
    run(spec, [text_of(1), text_of(2)], [text_of(3)])  # one task, two batches
    runtime = _worker._runtime()
    client, loop = runtime.clients[spec.id], runtime.loop
    run(spec, [text_of(4)])  # the next task in the same Python worker
    assert opened == [spec]
    assert _worker._runtime() is runtime and runtime.loop is loop
    assert runtime.clients[spec.id] is client
    other = spec_for(dbstruct_emulator)
    run(other, [text_of(5)])  # another UDF: a client of its own, on the same loop
    assert opened == [spec, other]
    assert runtime.clients[other.id] is not client and _worker._runtime().loop is loop
    assert dbstruct_emulator.stats().requests == 5


def test_rows_come_back_in_order_one_per_input_row(dbstruct_emulator: Emulator) -> None:
    sizes = [7, 1, 12, 3]
    rows = iter(range(sum(sizes)))
    texts = [[text_of(next(rows)) for _ in range(n)] for n in sizes]
    frames = run(spec_for(dbstruct_emulator, concurrency=4), *texts)
    assert [len(f) for f in frames] == sizes
    out = pd.concat(frames, ignore_index=True).to_dict("records")
    assert out == [{"name": name_of(i), "age": i % 100} for i in range(sum(sizes))]
    assert dbstruct_emulator.stats().requests == sum(sizes)


def test_null_and_blank_rows_send_nothing(dbstruct_emulator: Emulator) -> None:
    (out,) = run(
        spec_for(dbstruct_emulator, include_status=True),
        [None, text_of(1), "", " \n\t", text_of(2), float("nan")],
    )
    assert dbstruct_emulator.stats().requests == 2
    assert out["attempts"].tolist() == [0, 1, 0, 0, 1, 0]
    values = out["value"].tolist()
    assert [v and v["name"] for v in values] == [None, name_of(1), None, None, name_of(2), None]
    assert out["error"].isna().all()


def test_concurrency_bounds_the_requests_in_flight(dbstruct_emulator: Emulator) -> None:
    dbstruct_emulator.configure(latency=0.05)
    frames = run(spec_for(dbstruct_emulator, concurrency=3), [text_of(i) for i in range(30)])
    assert len(frames[0]) == 30
    assert dbstruct_emulator.stats().max_in_flight == 3


def test_the_client_is_built_from_the_settings(dbstruct_emulator: Emulator) -> None:
    plain = spec_for(
        dbstruct_emulator, max_retries=2, timeout=30.0, total_timeout=90.0, adaptive=False
    )
    run(plain, [text_of(1)])
    client = _worker._runtime().clients[plain.id]
    policy = client.policy
    assert (policy.max_retries, policy.attempt_timeout, policy.deadline) == (2, 30.0, 90.0)
    assert client.limiter is None  # fixed concurrency, no caps: no limiter in the way
    default = spec_for(dbstruct_emulator)  # adaptive by default
    run(default, [text_of(3)])
    assert isinstance(_worker._runtime().clients[default.id].limiter, AdaptiveLimiter)
    paced = spec_for(dbstruct_emulator, concurrency=6, adaptive=True, max_qps=40.0, workers=4)
    run(paced, [text_of(2)])
    limiter = _worker._runtime().clients[paced.id].limiter
    assert isinstance(limiter, AdaptiveLimiter)
    assert limiter.ceiling == 6 and limiter.adaptive
    assert limiter._qps is not None and limiter._qps.rate == 10.0  # 40 qps over 4 workers


def test_max_retries_reaches_every_row(dbstruct_emulator: Emulator) -> None:
    flaky = [f"[[fault:500x1]] {text_of(i)}" for i in range(4)]
    (failed,) = run(spec_for(dbstruct_emulator, include_status=True, max_retries=0), flaky)
    assert failed["attempts"].tolist() == [1] * 4
    assert failed["error"].str.startswith("RetriesExhaustedError").all()
    dbstruct_emulator.reset()
    (done,) = run(spec_for(dbstruct_emulator, include_status=True, max_retries=1), flaky)
    assert done["attempts"].tolist() == [2] * 4
    assert done["error"].isna().all()

"""Client CPU per request: dbstruct vs the raw openai SDK (and instructor when installed).

All clients hit the same emulator, which runs in a subprocess so its CPU is not counted.
"Raw openai" sends the very same request body dbstruct sends (tools or response format) and
validates the answer with Pydantic: the least a user could write to get the same object.
CPU is this process's ``time.process_time()`` over N requests, best of R rounds, measured side
by side in one run; the table prints ratios, which are what the targets are about:
dbstruct <= 1.25 x raw openai, and <= 0.5 x instructor.

    python bench/client_overhead.py [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import openai
from pydantic import BaseModel, Field

import dbstruct
from dbstruct import Mode
from dbstruct.modes import ResponseTarget, build_request
from dbstruct.testing import Emulator

ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"
CONCURRENCY = 32


# Flat, with no Optional or nested model: instructor sends pydantic's raw schema, which
# Databricks rejects for those ($defs, anyOf), so a richer model would not measure instructor.
class Ticket(BaseModel):
    """A support ticket, triaged."""

    category: str = Field(description="billing, bug, feature, account or other")
    priority: Literal[1, 2, 3]
    needs_human: bool
    customer_name: str
    city: str
    tags: list[str] = Field(default_factory=list)


MESSAGES = [
    {"role": "system", "content": "You triage support tickets."},
    {
        "role": "user",
        "content": "My invoice for March is wrong, I was charged twice. Jane, 12 Oak St, Leeds",
    },
]


def cpu_per_request(run: Callable[[int], None], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        run(n)
        best = min(best, (time.process_time() - start) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, rounds = args.requests, args.rounds

    with Emulator.spawn(token="dapi-bench") as emu:
        results = measure(emu, n, rounds)
    print_table(results, n, rounds)


def measure(emu: Emulator, n: int, rounds: int) -> dict[str, float]:
    request = build_request(Mode.TOOLS, ResponseTarget.of(Ticket), MESSAGES)
    raw = openai.OpenAI(base_url=emu.base_url, api_key=emu.token, max_retries=0)
    ours = dbstruct.from_provider(
        f"databricks/{ENDPOINT}", base_url=emu.base_url, api_key=emu.token
    )
    results: dict[str, float] = {}

    def raw_sync(count: int) -> None:
        for _ in range(count):
            c = raw.chat.completions.create(model=ENDPOINT, **request)
            Ticket.model_validate_json(c.choices[0].message.tool_calls[0].function.arguments)

    def ours_sync(count: int) -> None:
        for _ in range(count):
            ours.create(response_model=Ticket, messages=MESSAGES)

    results["openai sync"] = cpu_per_request(raw_sync, n, rounds)
    results["dbstruct sync"] = cpu_per_request(ours_sync, n, rounds)
    # Async clients are made inside each round's event loop (asyncio.run makes a new one).
    results["openai async"] = _arun(
        lambda: araw_factory(emu), lambda c: raw_call(c, request), n, rounds
    )
    results["dbstruct async"] = _arun(
        lambda: dbstruct.from_provider(
            f"databricks/{ENDPOINT}", base_url=emu.base_url, api_key=emu.token, async_client=True
        ),
        lambda c: c.create(response_model=Ticket, messages=MESSAGES),
        n,
        rounds,
    )
    instructor_results(emu, n, rounds, results)
    return results


def araw_factory(emu: Emulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.base_url, api_key=emu.token, max_retries=0)


async def raw_call(client: openai.AsyncOpenAI, request: dict[str, Any]) -> None:
    c = await client.chat.completions.create(model=ENDPOINT, **request)
    Ticket.model_validate_json(c.choices[0].message.tool_calls[0].function.arguments)


def _arun(
    factory: Callable[[], Any], call: Callable[[Any], Awaitable[Any]], n: int, rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):

        async def batch() -> float:
            client = factory()
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one() -> None:
                async with sem:
                    await call(client)

            await one()  # warm the connection pool outside the measurement
            start = time.process_time()
            await asyncio.gather(*(one() for _ in range(n)))
            spent = (time.process_time() - start) / n
            await _aclose(client)
            return spent

        best = min(best, asyncio.run(batch()))
    return best


async def _aclose(client: Any) -> None:
    inner = getattr(client, "client", None)  # instructor wraps the openai client
    close = getattr(inner if inner is not None else client, "close", None)
    if close is not None:
        await close()


def instructor_results(emu: Emulator, n: int, rounds: int, results: dict[str, float]) -> None:
    try:
        import instructor
    except ImportError:
        return
    sync_client = instructor.from_openai(
        openai.OpenAI(base_url=emu.base_url, api_key=emu.token, max_retries=0),
        mode=instructor.Mode.TOOLS,
    )

    def inst_sync(count: int) -> None:
        for _ in range(count):
            sync_client.create(
                model=ENDPOINT, response_model=Ticket, messages=MESSAGES, max_retries=0
            )

    results["instructor sync"] = cpu_per_request(inst_sync, n, rounds)
    results["instructor async"] = _arun(
        lambda: instructor.from_openai(araw_factory(emu), mode=instructor.Mode.TOOLS),
        lambda c: c.create(model=ENDPOINT, response_model=Ticket, messages=MESSAGES, max_retries=0),
        n,
        rounds,
    )


def print_table(results: dict[str, float], n: int, rounds: int) -> None:
    print(
        f"client CPU per request ({n} requests, best of {rounds}; {platform.python_version()}, "
        f"openai {openai.__version__}, {platform.machine()})"
    )
    print(f"{'client':<18} {'sync us':>10} {'async us':>10}")
    for name in ("openai", "dbstruct", "instructor"):
        if f"{name} sync" in results:
            print(
                f"{name:<18} {results[f'{name} sync'] * 1e6:>10.0f}"
                f" {results[f'{name} async'] * 1e6:>10.0f}"
            )
    print()
    print(f"{'ratio':<30} {'sync':>7} {'async':>7}  target")
    for label, base, target in (
        ("dbstruct / openai", "openai", "<= 1.25"),
        ("dbstruct / instructor", "instructor", "<= 0.50"),
    ):
        if f"{base} sync" not in results:
            print(
                f"{label:<30} {'n/a':>7} {'n/a':>7}  {target} (pip install instructor to measure)"
            )
            continue
        s = results["dbstruct sync"] / results[f"{base} sync"]
        a = results["dbstruct async"] / results[f"{base} async"]
        print(f"{label:<30} {s:>7.2f} {a:>7.2f}  {target}")


if __name__ == "__main__":
    main()

"""How many requests a second one emulator process serves, so it never bounds a benchmark.

    python bench/emulator_capacity.py [--seconds 5] [--latency 0.05] [--concurrency 200 500]

Spawns the emulator in a subprocess (one core, its own GIL), drives it with aiohttp from this
process at each concurrency level, and prints requests/s next to the ceiling the latency
alone allows (concurrency / latency), and (on Linux) the server's CPU time per request, which
gives its capacity per core when the client is not the bottleneck. Requests ask for a forced
tool call on a small schema, as dbstruct does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import aiohttp

from dbstruct.testing import Emulator

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
    },
    "required": ["name", "age", "sentiment"],
}


def body(i: int) -> dict[str, object]:
    return {
        "messages": [{"role": "user", "content": f"Row {i}: John Smith is {20 + i % 50}, happy."}],
        "tools": [{"type": "function", "function": {"name": "User", "parameters": SCHEMA}}],
        "tool_choice": {"type": "function", "function": {"name": "User"}},
    }


async def drive(url: str, token: str, concurrency: int, seconds: float) -> tuple[int, int, float]:
    """Requests completed, errors, elapsed seconds: ``concurrency`` workers for ``seconds``."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal done, errors
        i = w
        while time.perf_counter() < deadline:
            async with session.post(url, data=json.dumps(body(i)), headers=headers) as response:
                await response.read()
                done += 1
                errors += response.status != 200
            i += concurrency

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(w, session) for w in range(concurrency)))
    return done, errors, time.perf_counter() - start


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[200, 500])
    args = parser.parse_args()
    emu = Emulator.spawn(latency=args.latency)
    try:
        url = f"{emu.base_url}/databricks-meta-llama-3-3-70b-instruct/invocations"
        print(f"emulator subprocess at {emu.host}, latency {args.latency * 1000:.0f} ms")
        pid = emu.pid or 0
        for concurrency in args.concurrency:
            emu.reset()
            emu.configure(latency=args.latency)
            before = cpu_seconds(pid)
            done, errors, elapsed = asyncio.run(drive(url, emu.token, concurrency, args.seconds))
            after = cpu_seconds(pid)
            ceiling = concurrency / args.latency if args.latency else float("inf")
            stats = emu.stats()
            line = (
                f"concurrency {concurrency:4d}: {done / elapsed:7.0f} req/s "
                f"(latency-bound ceiling {ceiling:.0f}), errors {errors}, "
                f"max in flight {stats.max_in_flight}"
            )
            if before is not None and after is not None and done:
                per = (after - before) / done
                line += (
                    f"; server CPU {100 * (after - before) / elapsed:.0f}%, "
                    f"{per * 1e6:.0f} us/request (~{1 / per:.0f} req/s per core)"
                )
            print(line)
    finally:
        emu.stop()


if __name__ == "__main__":
    main()

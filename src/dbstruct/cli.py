"""The ``dbstruct`` command: ``dbstruct <subcommand> ...``.

    dbstruct run conf/demo.yml
    dbstruct emulator --host 127.0.0.1 --port 8000 --token dapi-test --latency 0.05 --qps 20

Each subcommand is a ``_add_<name>(subparsers)`` function that registers its parser and sets
``func``; :func:`main` dispatches to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbstruct", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_run(subparsers)
    _add_emulator(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dbstruct`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


# ---------------------------------------------------------------- dbstruct run


def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run an extraction job from a conf file (default: conf/demo.yml)",
        description="Run the scheduled extraction job described by a YAML conf file.",
        add_help=False,  # the job parses its own arguments, --help included
    )
    p.add_argument("job_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run_job)


def _run_job(args: argparse.Namespace) -> int:
    from dbstruct.jobs import main as job_main

    return job_main(list(args.job_args))


# ---------------------------------------------------------------- dbstruct emulator


def _add_emulator(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "emulator",
        help="serve a local Databricks model serving emulator",
        description="Serve OpenAI-compatible Databricks serving endpoints locally "
        "(dbstruct.testing.Emulator) until interrupted.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--token", action="append", help="accepted bearer token (repeatable)")
    p.add_argument(
        "--endpoint",
        action="append",
        help="known endpoint name (repeatable; default: any name is served)",
    )
    p.add_argument("--latency", type=float, help="seconds added to every answer")
    p.add_argument("--tail", type=float, help="fraction of requests at --tail-factor x latency")
    p.add_argument("--tail-factor", type=float)
    p.add_argument("--qps", type=float, help="queries per second per endpoint (429 beyond)")
    p.add_argument("--burst", type=float)
    p.add_argument("--itpm", type=int, help="input tokens per minute per endpoint")
    p.add_argument("--otpm", type=int, help="output tokens per minute per endpoint")
    p.add_argument(
        "--fault",
        action="append",
        metavar="KIND=RATE",
        help="inject a fault kind into a fraction of requests (repeatable)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--client-id")
    p.add_argument("--client-secret")
    p.add_argument("--token-ttl", type=float, help="lifetime of issued OAuth tokens (s)")
    p.add_argument("--config", help="every setting as one JSON object (overridden by flags)")
    p.set_defaults(func=_run_emulator)


def _emulator_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(args.config) if args.config else {}
    flags = {
        "tokens": args.token,
        "endpoints": args.endpoint,
        "latency": args.latency,
        "tail": args.tail,
        "tail_factor": args.tail_factor,
        "qps": args.qps,
        "burst": args.burst,
        "itpm": args.itpm,
        "otpm": args.otpm,
        "seed": args.seed,
        "client_id": args.client_id,
        "client_secret": args.client_secret,
        "token_ttl": args.token_ttl,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    if args.fault:
        faults = dict(settings.get("faults") or {})
        for item in args.fault:
            kind, _, rate = item.partition("=")
            faults[kind] = float(rate)
        settings["faults"] = faults
    return settings


def _run_emulator(args: argparse.Namespace) -> int:
    from dbstruct.testing._config import EmulatorConfig
    from dbstruct.testing._emulator import serve_forever

    try:
        config = EmulatorConfig.from_dict(_emulator_settings(args))
    except (ValueError, TypeError) as e:
        print(f"dbstruct emulator: {e}", file=sys.stderr)
        return 2
    serve_forever(config, args.host, args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

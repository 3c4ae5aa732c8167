"""The emulator's command line: ``python -m dbstruct.testing [options]``, which is also
``dbstruct emulator [options]`` (the ``dbstruct`` command hands the subcommand over here).

Settings come from ``--config`` (a file or JSON text), then the flags over them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dbstruct.testing._config import EmulatorConfig
from dbstruct.testing._emulator import serve_forever

__all__ = [
    "DESCRIPTION",
    "HELP",
    "PROG",
    "add_arguments",
    "main",
    "read_config",
    "run",
    "settings_from",
]

PROG = "dbstruct emulator"
HELP = "serve a local stand-in for Databricks serving endpoints"
DESCRIPTION = (
    "Serve OpenAI-compatible Databricks serving endpoints locally "
    "(dbstruct.testing.Emulator) until interrupted."
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The emulator's options on ``parser``, whose ``func`` becomes :func:`run`."""
    p = parser
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
    p.add_argument(
        "--config",
        metavar="FILE_OR_JSON",
        help="settings (EmulatorConfig fields) from a .json, .yml or .yaml file, or as JSON "
        "text; flags override them",
    )
    p.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=PROG, description=DESCRIPTION))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dbstruct.testing``: serve until interrupted; the exit status."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve what ``args`` (parsed by :func:`add_arguments`) ask for; 2 on bad settings."""
    try:
        config = EmulatorConfig.from_dict(settings_from(args))
    except (ValueError, TypeError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    serve_forever(config, args.host, args.port)
    return 0


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`EmulatorConfig` fields ``args`` set: ``--config``'s, then the flags'."""
    settings = read_config(args.config) if args.config else {}
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


def read_config(value: str) -> dict[str, Any]:
    """``--config``: JSON text (it starts with ``{``), or a .json/.yml/.yaml file's path.

    A value that names no readable object of settings raises ValueError saying why.
    """
    if value.lstrip().startswith("{"):
        where, text, kind = "--config", value, "json"
    else:
        path = Path(value)
        kind = {".json": "json", ".yml": "yaml", ".yaml": "yaml"}.get(path.suffix.lower(), "")
        if not kind:
            raise ValueError(
                f"--config {value!r}: expected JSON text (an object, {{...}}) or the path of "
                "a .json, .yml or .yaml file"
            )
        where = f"--config {value}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{where}: cannot read the file ({e.strerror})") from None
    try:
        data = json.loads(text) if kind == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{where}: not valid {kind.upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object of settings, got {type(data).__name__}")
    return data

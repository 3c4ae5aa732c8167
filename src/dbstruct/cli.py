"""The ``dbstruct`` command: ``dbstruct <subcommand> ...``.

Each subcommand is a ``_add_<name>(subparsers)`` function that registers its parser and sets
``func``; :func:`main` dispatches to it. ``dbstruct --help`` shows :data:`DESCRIPTION` and
:data:`EXAMPLES`, every example run by tests/unit/test_cli.py or tests/e2e/test_newcomer.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dbstruct.errors import ConfigurationError

__all__ = ["build_parser", "main", "read_emulator_config", "version"]

DESCRIPTION = """\
Typed, validated columns from free text in Databricks tables, with LLMs served on
Databricks model serving endpoints."""

EXAMPLES = """\
examples:
  dbstruct run --set source.limit=40
      the demo job on 40 tickets: local Spark, the bundled sample of support tickets and
      a local serving emulator whose answers are made up (without the --set: all 1,200)
  dbstruct run conf/demo.yml --set emulator=false --set model=databricks/<your-endpoint>
      the same job against a workspace: set DATABRICKS_HOST and DATABRICKS_TOKEN first
  dbstruct emulator --port 0 --latency 0.05
      a local stand-in for Databricks serving endpoints, on a free port (prints its URL)
  dbstruct run --help
      every option of a command"""


def version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("dbstruct")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        from dbstruct import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbstruct",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dbstruct {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
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
    from dbstruct.jobs._main import EXAMPLES as RUN_EXAMPLES
    from dbstruct.jobs._main import RUN_DESCRIPTION, add_run_arguments

    p = subparsers.add_parser(
        "run",
        help="run an extraction job file (without one: the demo)",
        description=RUN_DESCRIPTION,
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)  # sets func


# ---------------------------------------------------------------- dbstruct emulator


def _add_emulator(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "emulator",
        help="serve a local stand-in for Databricks serving endpoints",
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
    p.add_argument(
        "--config",
        metavar="FILE_OR_JSON",
        help="settings (EmulatorConfig fields) from a .json, .yml or .yaml file, or as JSON "
        "text; flags override them",
    )
    p.set_defaults(func=_run_emulator)


def _emulator_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = read_emulator_config(args.config) if args.config else {}
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


def read_emulator_config(value: str) -> dict[str, Any]:
    """``--config``: JSON text (it starts with ``{``), or a .json/.yml/.yaml file's path."""
    if value.lstrip().startswith("{"):
        where, text, kind = "--config", value, "json"
    else:
        path = Path(value)
        kind = {".json": "json", ".yml": "yaml", ".yaml": "yaml"}.get(path.suffix.lower(), "")
        if not kind:
            raise ConfigurationError(
                f"--config {value!r}: expected JSON text (an object, {{...}}) or the path of "
                "a .json, .yml or .yaml file"
            )
        where = f"--config {value}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigurationError(f"{where}: cannot read the file ({e.strerror})") from None
    try:
        data = json.loads(text) if kind == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigurationError(f"{where}: not valid {kind.upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{where}: expected an object of settings, got {type(data).__name__}"
        )
    return data


def _run_emulator(args: argparse.Namespace) -> int:
    from dbstruct.testing._config import EmulatorConfig
    from dbstruct.testing._emulator import serve_forever

    try:
        config = EmulatorConfig.from_dict(_emulator_settings(args))
    except (ConfigurationError, ValueError, TypeError) as e:
        print(f"dbstruct emulator: {e}", file=sys.stderr)
        return 2
    serve_forever(config, args.host, args.port)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

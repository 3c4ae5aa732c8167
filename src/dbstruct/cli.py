"""The ``dbstruct`` command: ``dbstruct <subcommand> ...``.

Each subcommand is a ``_add_<name>(subparsers)`` function that registers its parser and sets
``func``; :func:`main` dispatches to it. ``dbstruct --help`` shows :data:`DESCRIPTION` and
:data:`EXAMPLES`, every example run by tests/unit/test_cli.py or tests/e2e/test_newcomer.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

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
  dbstruct plan --set source.limit=300 --pilot 30
      what the demo's first 300 tickets take in tokens, cost and time (30 really sent)
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
    _add_plan(subparsers)
    _add_evaluate(subparsers)
    _add_emulator(subparsers)
    _add_local_model(subparsers)
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


# ---------------------------------------------------------------- dbstruct plan


def _add_plan(subparsers: Any) -> None:
    from dbstruct.jobs._plan_main import PLAN_DESCRIPTION, PLAN_EXAMPLES, add_plan_arguments

    p = subparsers.add_parser(
        "plan",
        help="a run's rows, tokens, cost and time, before it starts",
        description=PLAN_DESCRIPTION,
        epilog=PLAN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_plan_arguments(p)  # sets func


# ---------------------------------------------------------------- dbstruct evaluate


def _add_evaluate(subparsers: Any) -> None:
    from dbstruct.jobs._evaluate_main import (
        EVALUATE_DESCRIPTION,
        EVALUATE_EXAMPLES,
        add_evaluate_arguments,
    )

    p = subparsers.add_parser(
        "evaluate",
        help="score job files' answers against labels, side by side",
        description=EVALUATE_DESCRIPTION,
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_evaluate_arguments(p)  # sets func


# ---------------------------------------------------------------- dbstruct emulator


def _add_emulator(subparsers: Any) -> None:
    from dbstruct.testing._command import DESCRIPTION as EMULATOR_DESCRIPTION
    from dbstruct.testing._command import HELP, add_arguments

    p = subparsers.add_parser("emulator", help=HELP, description=EMULATOR_DESCRIPTION)
    add_arguments(p)  # sets func


# ---------------------------------------------------------------- dbstruct local-model


def _add_local_model(subparsers: Any) -> None:
    from dbstruct.testing._local_model_command import DESCRIPTION as LOCAL_MODEL_DESCRIPTION
    from dbstruct.testing._local_model_command import HELP as LOCAL_MODEL_HELP
    from dbstruct.testing._local_model_command import add_arguments as add_local_model_arguments

    p = subparsers.add_parser(
        "local-model", help=LOCAL_MODEL_HELP, description=LOCAL_MODEL_DESCRIPTION
    )
    add_local_model_arguments(p)  # sets func


def read_emulator_config(value: str) -> dict[str, Any]:
    """The settings ``dbstruct emulator --config VALUE`` names (JSON text, or a .json/.yml/.yaml
    file); a value that names none raises ConfigurationError, as dbstruct's own errors do."""
    from dbstruct.testing._command import read_config

    try:
        return read_config(value)
    except ValueError as e:
        raise ConfigurationError(str(e)) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``dbstruct plan [CONF] [--set key=value]... [--pilot N] [--deadline D] [--json]``.

Exit status: 0 planned, 2 bad job file or settings (as ``dbstruct run``).
"""

from __future__ import annotations

import argparse
import json
import sys

from dbstruct.errors import ConfigurationError, JobStoppedError, SchemaError
from dbstruct.token_count import ESTIMATE, TOKENIZERS

__all__ = ["PLAN_DESCRIPTION", "PLAN_EXAMPLES", "add_plan_arguments", "plan_command"]

PLAN_DESCRIPTION = """\
Plan a run of a job file: the rows it would process, their prompt and completion tokens,
its cost and its time, before anything is sent. With --pilot N, N rows are really sent
first (committed to the target, so the run does not pay for them again) and what they
measured replaces the estimates."""

PLAN_EXAMPLES = """\
examples:
  dbstruct plan --set source.limit=300 --pilot 30
      the demo's first 300 tickets: 30 sent to its local emulator and committed, then the
      other 270's rows, tokens, cost at the endpoint's list price, and time
  dbstruct plan --set source.limit=300 --set endpoint_limits.qps=20 --deadline 10m --json
      the same as JSON, with the time at 20 queries per second and what finishing within
      10 minutes takes (the pilot's rows are in the target now: a plan leaves them out)

Exit status: 0 planned, 2 bad job file or settings."""


def add_plan_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``dbstruct plan``'s arguments to ``parser``."""
    from dbstruct.jobs._main import add_job_file_arguments

    add_job_file_arguments(parser)
    parser.add_argument(
        "--pilot",
        type=int,
        default=0,
        metavar="N",
        help="really send N sampled rows first and extrapolate from them (default 0: send nothing)",
    )
    parser.add_argument(
        "--deadline",
        metavar="DURATION",
        help="say what finishing within DURATION takes (90s, 45m, 2h, 1h30m); needs --pilot",
    )
    parser.add_argument(
        "--tokenizer",
        default="auto",
        choices=["auto", ESTIMATE, *TOKENIZERS],
        help="how prompt tokens are counted (default: by the endpoint's name; see docs/PLAN.md)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument("--master", help="Spark master of a local session (default local[2])")
    parser.set_defaults(func=plan_command)
    return parser


def plan_command(args: argparse.Namespace) -> int:
    """Plan the job ``args`` (from :func:`add_plan_arguments`) describe; the exit status."""
    from dbstruct.jobs._conf_file import load_config
    from dbstruct.jobs._main import _session, _setup_logging, demo_conf_path
    from dbstruct.jobs._plan_time import parse_duration
    from dbstruct.jobs.plan import plan_job

    _setup_logging()
    try:
        if args.pilot < 0:
            raise ConfigurationError(f"--pilot {args.pilot}: must be 0 (no pilot) or more")
        try:
            deadline = None if args.deadline is None else parse_duration(args.deadline)
        except ValueError as e:
            raise ConfigurationError(str(e)) from None
        conf = load_config(args.conf or demo_conf_path(), args.overrides)
    except ConfigurationError as e:
        print(f"dbstruct plan: {e}", file=sys.stderr)
        return 2
    spark, owned = _session(args.master)
    try:
        plan = plan_job(
            spark, conf, pilot=args.pilot, deadline_minutes=deadline, tokenizer=args.tokenizer
        )
    except (ConfigurationError, SchemaError, JobStoppedError) as e:
        print(f"dbstruct plan: {e}", file=sys.stderr)
        return 2
    finally:
        if owned:
            spark.stop()
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.to_text())
    return 0

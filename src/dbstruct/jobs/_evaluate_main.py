"""``dbstruct evaluate [CONF ...] --labels PATH [--set key=value]... [--json] [--report DIR]``.

Exit status: 0 evaluated, 2 bad arguments, job file or labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from dbstruct.errors import ConfigurationError, JobStoppedError, SchemaError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dbstruct.evaluation import Labels
    from dbstruct.jobs.conf import JobConfig

__all__ = [
    "EVALUATE_DESCRIPTION",
    "EVALUATE_EXAMPLES",
    "add_evaluate_arguments",
    "evaluate_command",
]

EVALUATE_DESCRIPTION = """\
Score a job file's extraction against labels: the source rows whose id is labelled are sent
through the job's own settings (endpoint, prompt, mode, rows_per_request), or read from the
job's target where a run with exactly these settings answered them (--fresh: send all), and
nothing is written; each labelled field is scored (accuracy, token F1, precision/recall/F1, mean
absolute error; see docs/EVALUATION.md). Several job files: the same rows through each,
side by side, with tokens and cost per row."""

EVALUATE_EXAMPLES = """\
examples:
  dbstruct evaluate --labels sample:tickets --set source.limit=40
      the demo on its first 40 tickets against the labels shipped with the sample (the
      demo's emulator makes its answers up: expect scores near chance)
  dbstruct evaluate conf/demo.yml conf/demo_packed.yml --labels sample:tickets --set source.limit=40
      two job files side by side on the same rows (conf/demo_packed.yml is the demo at 8
      rows per request); --json prints the same as JSON

Exit status: 0 evaluated, 2 bad arguments, job file or labels."""

_DEMO_NOTE = """\
Note: the answers come from the demo's local emulator, which makes up values that fit the
schema without reading the tickets: these scores are near chance and say nothing about a
model. They show what the command measures; run it against an endpoint for real figures."""


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``dbstruct evaluate``'s arguments to ``parser``."""
    parser.add_argument(
        "confs", nargs="*", metavar="CONF", help="job files (YAML) to compare; default: the demo"
    )
    parser.add_argument(
        "--labels",
        required=True,
        metavar="PATH",
        help="the labels: a .jsonl, .csv or .parquet file, a catalog.schema.table, or "
        "sample:tickets (the bundled sample's)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key of every job file, e.g. --set source.limit=100 (repeatable)",
    )
    parser.add_argument(
        "--free-text",
        metavar="FIELDS",
        help="comma-separated str fields scored as free text (replaces the rule by name and "
        "description; '' for none)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="send every labelled row, even those whose answer the job's target holds from a "
        "run with the same settings",
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument(
        "--report", metavar="DIR", help="also write report.md and PNG charts to DIR (matplotlib)"
    )
    parser.add_argument(
        "--rows", type=int, default=10, metavar="N", help="disagreeing rows to list (default 10)"
    )
    parser.add_argument("--master", help="Spark master of a local session (default local[2])")
    parser.set_defaults(func=evaluate_command)
    return parser


def evaluate_command(args: argparse.Namespace) -> int:
    """Evaluate the job files ``args`` (from :func:`add_evaluate_arguments`) name; the exit
    status."""
    from dbstruct.evaluation import format_runs, require_matplotlib, runs_to_dict, write_report
    from dbstruct.jobs._conf_file import load_config
    from dbstruct.jobs._main import _session, _setup_logging, demo_conf_path
    from dbstruct.jobs.evaluate import evaluate_job, is_table_name

    _setup_logging()
    paths = list(args.confs) or [demo_conf_path()]
    names = list(args.confs) or ["demo"]
    free = None if args.free_text is None else [f for f in args.free_text.split(",") if f]
    try:
        if args.rows < 0:
            raise ConfigurationError(f"--rows {args.rows}: must be 0 or more")
        if args.report:
            require_matplotlib()
        confs = [load_config(p, args.overrides) for p in paths]
        table = is_table_name(args.labels)
        labels = [] if table else [_labels(c, args.labels, None, free) for c in confs]
    except ConfigurationError as e:
        print(f"dbstruct evaluate: {e}", file=sys.stderr)
        return 2
    spark, owned = _session(args.master)
    try:
        if table:
            labels = [_labels(c, args.labels, spark, free) for c in confs]
        runs = [
            evaluate_job(spark, conf, lab, name=name, fresh=args.fresh)
            for conf, lab, name in zip(confs, labels, names, strict=True)
        ]
    except (ConfigurationError, SchemaError, JobStoppedError) as e:
        print(f"dbstruct evaluate: {e}", file=sys.stderr)
        return 2
    finally:
        if owned:
            spark.stop()
    if args.json:
        print(json.dumps(runs_to_dict(runs, args.rows), indent=2))
    else:
        print(format_runs(runs, args.rows))
        if any(c.emulator is not None for c in confs):
            print("\n" + _DEMO_NOTE)
    if args.report:
        written = write_report(args.report, runs)
        print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
    _log_to_mlflow(confs, runs, args.report)
    return 0


def _log_to_mlflow(confs: list[JobConfig], runs: list[Any], report: str | None) -> None:
    """Each job file with ``mlflow:`` gets its scores logged as an MLflow run of its own."""
    from dbstruct.jobs._mlflow_run import log_evaluation

    for conf, run in zip(confs, runs, strict=True):
        if conf.mlflow is not None:
            run_id = log_evaluation(conf, run, report)
            print(f"mlflow: {run.name} scores logged as run {run_id}", file=sys.stderr)


def _labels(
    conf: JobConfig, where: str, spark: SparkSession | None, free: list[str] | None
) -> Labels:
    from dbstruct.jobs.evaluate import read_labels

    return read_labels(
        where, conf.source.id_column, conf.response_model_class, spark, free_text=free
    )

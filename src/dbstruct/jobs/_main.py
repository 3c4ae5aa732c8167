"""``dbstruct run [CONF] [--set key=value]... [--summary-json FILE]``: the job's command line
and wheel entry point.

Exit status: 0 done, 1 error rate over ``max_error_rate``, 2 bad job file or settings (or the
endpoint refused the rows), 3 stopped by the job file's ``budget:`` (a rerun continues).
Without CONF it runs the demo (the bundled ``dbstruct/data/demo.yml``, as ``conf/demo.yml``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from dbstruct.errors import BudgetReachedError, ConfigurationError, JobStoppedError, SchemaError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dbstruct.evaluation import Labels
    from dbstruct.jobs._progress import JobSummary
    from dbstruct.jobs.conf import JobConfig

__all__ = [
    "add_job_file_arguments",
    "add_run_arguments",
    "build_parser",
    "demo_conf_path",
    "entry",
    "main",
    "real_workspace_hint",
    "run_command",
]

_DEMO_NOTICE = """\
dbstruct demo: the answers come from the local serving emulator (dbstruct.testing.Emulator),
not from a model. It makes up values that fit the response model's schema (the same request
always gets the same answer); they are not read from the tickets, so a row's category or
language says nothing about its ticket. The pipeline is real: Spark, requests, retries,
validation, writes."""
_LOCAL_MODEL_NOTICE = """\
dbstruct: the answers come from a small model served on this machine (SmolLM2-135M-Instruct
with llama.cpp, dbstruct.testing.LocalModel): real answers, read from the rows, but a
135M-parameter model's, so expect many to be wrong (docs/LOCAL_MODEL.md)."""
_REAL_WORKSPACE = """\
To run this job against a workspace (its answers go to a target of their own):
  export DATABRICKS_HOST=https://<your-workspace>.cloud.databricks.com DATABRICKS_TOKEN=<token>
  dbstruct run {conf}--set emulator=false --set model=databricks/<your-endpoint>"""
#: the repository's copy of the demo job file, as a clone's README runs it
REPO_DEMO = "conf/demo.yml"

EXAMPLES = """\
examples:
  dbstruct run --set source.limit=40
      the demo on its first 40 tickets: local Spark, the bundled sample, and a local
      serving emulator that makes up the answers (without CONF: the demo, 1,200 tickets)
  dbstruct run conf/demo.yml --set emulator=false --set model=databricks/<your-endpoint>
      the same job against a workspace: set DATABRICKS_HOST and DATABRICKS_TOKEN first

Exit status: 0 done, 1 error rate over max_error_rate, 2 bad job file or settings (or the
endpoint refused the rows), 3 stopped by the job file's budget (a rerun continues)."""


def demo_conf_path() -> str:
    """The demo job file inside the installed package."""
    return str(resources.files("dbstruct").joinpath("data/demo.yml"))


def add_job_file_arguments(parser: argparse.ArgumentParser) -> None:
    """The job file and its ``--set`` overrides, as ``dbstruct run`` and ``plan`` take them."""
    parser.add_argument(
        "conf", nargs="?", metavar="CONF", help="the job file (YAML); default: the demo"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a key of the job file, e.g. --set target.mode=overwrite (repeatable; the "
        "value is read as YAML)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``dbstruct run``'s arguments to ``parser`` (also ``dbstruct``'s ``run`` parser)."""
    add_job_file_arguments(parser)
    parser.add_argument("--master", help="Spark master of a local session (default local[2])")
    parser.add_argument(
        "--rows", type=int, default=3, metavar="N", help="extracted rows to print (0: none)"
    )
    parser.add_argument(
        "--summary-json",
        metavar="FILE",
        help="also write the run's summary to FILE as JSON (also when it stops early)",
    )
    parser.set_defaults(func=run_command)
    return parser


def build_parser(prog: str = "dbstruct run") -> argparse.ArgumentParser:
    return add_run_arguments(
        argparse.ArgumentParser(
            prog=prog,
            description=RUN_DESCRIPTION,
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )


RUN_DESCRIPTION = """\
Run an extraction job file: ask a Databricks serving endpoint for the response model of
every source row and write typed results to the target, resumably (a rerun sends only the
rows not in the target yet)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``dbstruct run``: run a job file; the exit status.

    >>> main(["run", "conf/demo.yml", "--set", "chunk_rows=500"])
    0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["run"]:
        args_list = args_list[1:]
    return run_command(build_parser().parse_args(args_list))


def run_command(args: argparse.Namespace) -> int:
    """Run the job ``args`` (from :func:`add_run_arguments`) describe; the exit status."""
    from dbstruct.jobs._conf_file import load_config
    from dbstruct.jobs._show import show_rows
    from dbstruct.jobs.run import run_job

    _setup_logging()
    try:
        conf = load_config(args.conf or demo_conf_path(), args.overrides)
    except ConfigurationError as e:
        print(f"dbstruct run: {e}", file=sys.stderr)
        return 2
    if conf.emulator is not None:
        print(_DEMO_NOTICE, flush=True)
    elif conf.local_model is not None:
        print(_LOCAL_MODEL_NOTICE, flush=True)
    spark, owned = _session(args.master)
    try:
        labels = _run_labels(spark, conf)  # before anything is sent: bad labels exit 2
        summary = run_job(spark, conf)
        print(summary.to_text())
        _write_summary(args.summary_json, summary, summary.exit_code)
        if args.rows > 0:
            show_rows(spark, conf, summary, args.rows)
        if labels is not None:
            print("\n" + _run_evaluation(spark, conf, labels, summary, args.rows))
    except (ConfigurationError, SchemaError, JobStoppedError) as e:
        code = 3 if isinstance(e, BudgetReachedError) else 2
        if isinstance(e, JobStoppedError) and e.summary is not None:
            print(e.summary.to_text())  # what was committed before the stop
            _write_summary(args.summary_json, e.summary, code)
        print(f"dbstruct run: {e}", file=sys.stderr)
        return code
    finally:
        if owned:
            spark.stop()
    if summary.source_rows and summary.skipped == summary.source_rows:
        print(
            "\nNothing left to do: every source id is in the target already "
            "(--set target.mode=overwrite starts over)."
        )
    if conf.emulator is not None:
        print("\n" + real_workspace_hint(args.conf))
    if summary.exit_code:
        print(
            f"dbstruct run: error rate {summary.error_rate:.2%} is over max_error_rate "
            f"{conf.max_error_rate:.2%}",
            file=sys.stderr,
        )
    return summary.exit_code


def _run_labels(spark: SparkSession, conf: JobConfig) -> Labels | None:
    """The labels of the job file's ``evaluate:`` section, read and checked; None without."""
    if conf.evaluate is None:
        return None
    from dbstruct.jobs.evaluate import read_labels

    return read_labels(
        conf.evaluate.labels,
        conf.source.id_column,
        conf.response_model_class,
        spark,
        free_text=conf.evaluate.free_text,
    )


def _run_evaluation(
    spark: SparkSession, conf: JobConfig, labels: Labels, summary: JobSummary, rows: int
) -> str:
    """The scores of the target's answers against ``evaluate.labels``, as text."""
    from dbstruct.evaluation import format_runs
    from dbstruct.jobs.evaluate import evaluate_target

    evaluated = evaluate_target(spark, conf, labels, summary.origin, name=conf.name)
    if evaluated is None:
        return (
            f"evaluate: no row of {summary.target} answered with this configuration is "
            f"labelled in {labels.source}"
        )
    return f"evaluate: against {labels.source}\n" + format_runs([evaluated], rows)


def _write_summary(path: str | None, summary: JobSummary, code: int) -> None:
    """Write ``summary`` as JSON to ``path`` (``--summary-json``), with the exit status."""
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(summary.to_dict(exit_code=code), f, indent=2)
            f.write("\n")


def real_workspace_hint(conf: str | None) -> str:
    """How to run the job of ``conf`` (None: the demo) against a workspace.

    For the demo it names ``conf/demo.yml`` when there is one here (a clone, as the README
    runs it), else no file (the packaged demo).
    """
    if conf is None and os.path.isfile(REPO_DEMO):
        conf = REPO_DEMO
    return _REAL_WORKSPACE.format(conf=f"{conf} " if conf else "")


def entry() -> None:
    """Console-script and ``python_wheel_task`` entry point: exits non-zero on failure.

    A wheel task calls the entry point as a function; the task fails on an exception, so a
    bad status is raised as SystemExit rather than returned (a plain return is ignored).
    """
    code = main()
    if code:
        raise SystemExit(code)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
    logging.getLogger("dbstruct").setLevel(logging.INFO)
    for noisy in ("py4j", "pyspark", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _session(master: str | None) -> tuple[SparkSession, bool]:
    """The session to run on, and whether this process made it (and must stop it).

    An active session (a notebook, a Databricks job) or one Spark builds from the
    environment (Databricks Runtime, SPARK_REMOTE) is used as it is; else a local one.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active, False
    if master is None and (
        os.environ.get("DATABRICKS_RUNTIME_VERSION") or os.environ.get("SPARK_REMOTE")
    ):
        return SparkSession.builder.getOrCreate(), False
    # Spark's Python workers must run this interpreter, which has dbstruct installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local: loopback is all it needs
    builder: Any = SparkSession.builder.master(master or "local[2]").appName("dbstruct-job")
    for key, value in {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "WARN",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.session.timeZone": "UTC",
        # a local run needs no other host: stay on loopback whatever the hostname resolves to
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }.items():
        builder = builder.config(key, value)
    return builder.getOrCreate(), True

"""``dbstruct run [CONF] [--set key=value]...``: the job's command line and wheel entry point.

Exit status: 0 done, 1 error rate over ``max_error_rate``, 2 bad job file or settings.
Without CONF it runs the demo (the bundled ``dbstruct/data/demo.yml``, as ``conf/demo.yml``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from dbstruct.errors import ConfigurationError
from dbstruct.jobs.conf import JobConfig, load_config
from dbstruct.jobs.run import run_job

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dbstruct.jobs._progress import JobSummary

__all__ = ["build_parser", "demo_conf_path", "entry", "main"]

_DEMO_NOTICE = """\
dbstruct demo: the answers come from the local serving emulator (dbstruct.testing.Emulator),
which makes up schema-valid values: the pipeline is real, the extractions are not."""
_REAL_WORKSPACE = """\
To run this job against a real workspace:
  export DATABRICKS_HOST=https://<your-workspace>  DATABRICKS_TOKEN=<a token>
  dbstruct run {conf}--set emulator=false --set model=databricks/<your-endpoint>"""


def demo_conf_path() -> str:
    """The demo job file inside the installed package."""
    return str(resources.files("dbstruct").joinpath("data/demo.yml"))


def build_parser(prog: str = "dbstruct run") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Extract a response model from every row of a table, resumably.",
        epilog="Exit status: 0 done, 1 error rate over max_error_rate, 2 bad job file.",
    )
    parser.add_argument("conf", nargs="?", help="the job file (YAML); default: the demo")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the job file, e.g. --set target.mode=overwrite (repeatable)",
    )
    parser.add_argument("--master", help="Spark master for a local session (default local[2])")
    parser.add_argument("--rows", type=int, default=5, help="extracted rows to print (0: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``dbstruct run``: run a job file; the exit status.

    >>> main(["run", "conf/demo.yml", "--set", "chunk_rows=500"])
    0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["run"]:
        args_list = args_list[1:]
    args = build_parser().parse_args(args_list)
    _setup_logging()
    try:
        conf = load_config(args.conf or demo_conf_path(), args.overrides)
    except ConfigurationError as e:
        print(f"dbstruct run: {e}", file=sys.stderr)
        return 2
    if conf.emulator is not None:
        print(_DEMO_NOTICE, flush=True)
    spark, owned = _session(args.master)
    try:
        summary = run_job(spark, conf)
        print(summary.to_text())
        if args.rows > 0:
            _show_rows(spark, conf, summary, args.rows)
    except ConfigurationError as e:
        stopped = getattr(e, "summary", None)
        if stopped is not None:  # a JobStoppedError: say what was committed before the stop
            print(stopped.to_text())
        print(f"dbstruct run: {e}", file=sys.stderr)
        return 2
    finally:
        if owned:
            spark.stop()
    if summary.source_rows and summary.skipped == summary.source_rows:
        print(
            "\nNothing left to do: every source id is in the target already "
            "(--set target.mode=overwrite starts over)."
        )
    if conf.emulator is not None:
        print("\n" + _REAL_WORKSPACE.format(conf=f"{args.conf} " if args.conf else ""))
    if summary.exit_code:
        print(
            f"dbstruct run: error rate {summary.error_rate:.2%} is over max_error_rate "
            f"{conf.max_error_rate:.2%}",
            file=sys.stderr,
        )
    return summary.exit_code


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


def _show_rows(spark: SparkSession, conf: JobConfig, summary: JobSummary, n: int) -> None:
    from pyspark.sql import functions as F

    from dbstruct.jobs._targets import open_target

    target = open_target(spark, conf.target, conf.source.id_column)
    if not target.exists():
        return
    rows = target.read()
    mine = rows.where(F.col("batch").startswith(summary.run_id + "-"))
    if summary.processed:
        rows = mine
    columns = [conf.source.id_column]
    if conf.target.output == "struct":
        struct: Any = rows.schema[conf.target.result_column].dataType
        columns += [f"{conf.target.result_column}.{name}" for name in struct.fieldNames()[:6]]
    else:
        names = set(rows.columns) - {conf.source.id_column, *conf.source.keep_columns}
        columns += [c for c in rows.columns if c in names and c not in _NOT_SHOWN][:6]
    print(f"\nA few rows of {target.where}:")
    rows.select(*columns, "error").show(n, truncate=28)


_NOT_SHOWN = {"error", "attempts", "prompt_tokens", "completion_tokens", "latency_ms", "batch",
              "processed_at"}  # fmt: skip

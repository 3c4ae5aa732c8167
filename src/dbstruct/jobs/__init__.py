"""Scheduled extraction jobs: a YAML job file in, a table of typed results out.

    dbstruct run conf/tickets.yml --set target.mode=overwrite     # command line
    python -m dbstruct.jobs run conf/tickets.yml                   # the same

    from dbstruct.jobs import load_config, run_job                 # from Python
    summary = run_job(spark, load_config("conf/tickets.yml"))
    print(summary.to_text())

A job reads a source (table, path or the bundled sample), calls a Databricks serving
endpoint once per row through :func:`dbstruct.spark.structured_udf`, and commits the
results in chunks: a rerun after a crash processes only the ids not yet in the target, and
each id is in the target once. Needs ``pip install 'dbstruct[spark]'``.
"""

from __future__ import annotations

from dbstruct.jobs._conf_file import load_config, parse_config
from dbstruct.jobs._main import build_parser, demo_conf_path, entry, main
from dbstruct.jobs._progress import ChunkStats, JobSummary
from dbstruct.jobs.conf import JobConfig
from dbstruct.jobs.run import run_job

__all__ = [
    "ChunkStats",
    "JobConfig",
    "JobSummary",
    "build_parser",
    "demo_conf_path",
    "entry",
    "load_config",
    "main",
    "parse_config",
    "run_job",
]

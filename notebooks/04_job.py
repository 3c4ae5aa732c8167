# Databricks notebook source
# MAGIC %md
# MAGIC # The extraction job, from a notebook
# MAGIC
# MAGIC This notebook runs a dbstruct job file (the same YAML that `dbstruct run` and the
# MAGIC bundle's scheduled job take): it reads the source, calls the serving endpoint once per
# MAGIC row in committed chunks, shows the run's summary, and reads back what the job wrote.
# MAGIC A rerun only sends the rows that are not in the target yet.
# MAGIC
# MAGIC Widgets:
# MAGIC - **wheel**: the dbstruct wheel to install (empty when dbstruct is installed already);
# MAGIC - **conf**: the job file, relative to this notebook's folder (or an absolute path);
# MAGIC - **endpoint**: the serving endpoint, replacing the file's `model`;
# MAGIC - **target_table**: a Unity Catalog `catalog.schema.table` to write to instead of the
# MAGIC   file's target (the demo file's relative target path is meant for local runs);
# MAGIC - **set**: more overrides, `key.path=value` separated by `;` (values are YAML), as
# MAGIC   `dbstruct run --set` takes them; `emulator=false` makes the demo file call the endpoint.
# MAGIC
# MAGIC Authentication comes from the notebook context (or the job file's `credentials:`).
# MAGIC As a scheduled notebook task, the run fails when more rows failed than the file's
# MAGIC `max_error_rate` allows.

# COMMAND ----------

# dbstruct is not on PyPI: install the wheel the bundle builds (docs/DEPLOY.md) from a Unity
# Catalog volume or a workspace path given in the **wheel** widget. Where dbstruct is
# installed already (a cluster library, or a job's environment), leave the widget empty.
import importlib.util

dbutils.widgets.text("wheel", "", "dbstruct wheel (empty: use the installed one)")
WHEEL = dbutils.widgets.get("wheel").strip()
if not WHEEL and importlib.util.find_spec("dbstruct") is None:
    raise RuntimeError(
        "dbstruct is not installed: set the wheel widget to the wheel's path, e.g. "
        "/Volumes/main/support/wheels/dbstruct-0.1.0-py3-none-any.whl (see docs/DEPLOY.md)"
    )
# An installed dbstruct satisfies the requirement "dbstruct", so %pip then installs nothing.
PIP_REQUIREMENT = WHEEL or "dbstruct"

# COMMAND ----------

# MAGIC %pip install $PIP_REQUIREMENT

# COMMAND ----------

# Load what %pip just installed (it may also have upgraded pydantic or openai).
# https://docs.databricks.com/en/libraries/notebooks-python-libraries.html
dbutils.library.restartPython()

# COMMAND ----------

dbutils.widgets.text("conf", "../conf/demo.yml", "Job file")
dbutils.widgets.text("endpoint", "databricks-meta-llama-3-3-70b-instruct", "Serving endpoint")
dbutils.widgets.text("target_table", "", "Target table (optional)")
dbutils.widgets.text("set", "emulator=false; source.limit=200", "Overrides (key=value; ...)")

# COMMAND ----------

from dbstruct.jobs import load_config, run_job

overrides = [f"model=databricks/{dbutils.widgets.get('endpoint')}"]
if dbutils.widgets.get("target_table").strip():
    overrides += [f"target.table={dbutils.widgets.get('target_table').strip()}", "target.path=null"]
overrides += [item.strip() for item in dbutils.widgets.get("set").split(";") if item.strip()]

conf = load_config(dbutils.widgets.get("conf"), overrides)
print(f"job {conf.name!r}: {conf.model}, source {conf.source.describe()}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Run it

# COMMAND ----------

summary = run_job(conf=conf, spark=spark, dbutils=dbutils)
print(summary.to_text())

# COMMAND ----------

display(
    spark.createDataFrame(
        [
            (
                summary.run_id,
                summary.source_rows,
                summary.skipped,
                summary.processed,
                summary.succeeded,
                summary.failed,
                round(summary.error_rate, 4),
                summary.prompt_tokens,
                summary.completion_tokens,
                round(summary.wall_seconds, 1),
            )
        ],
        "run string, source_rows long, skipped long, processed long, succeeded long, "
        "failed long, error_rate double, prompt_tokens long, completion_tokens long, "
        "wall_seconds double",
    )
)

# COMMAND ----------

# MAGIC %md
# MAGIC ## What the job wrote
# MAGIC
# MAGIC Every row of the target carries the `batch` that wrote it (`r<run>-c<chunk>`), its
# MAGIC status columns (`error`, `attempts`, tokens, latency) and the extracted struct.

# COMMAND ----------

from pyspark.sql import functions as F

if conf.target.table:
    written = spark.read.table(conf.target.table)
else:
    written = spark.read.format(summary.target_format).load(conf.target.path)
this_run = written.filter(F.col("batch").startswith(summary.run_id))
if conf.target.output == "struct":  # one struct column: show its fields as columns
    this_run = this_run.select("*", f"{conf.target.result_column}.*").drop(
        conf.target.result_column
    )
display(this_run.drop("processed_at").orderBy(conf.source.id_column).limit(20))

# COMMAND ----------

if "category" in this_run.columns:  # the demo's TicketTriage
    display(
        this_run.groupBy("category")
        .agg(F.count("*").alias("tickets"), F.count_if("needs_human").alias("need_an_agent"))
        .orderBy(F.desc("tickets"), "category")
    )

# COMMAND ----------

# A scheduled run fails when too many rows failed, so that job alerts fire.
if summary.exit_code != 0:
    raise RuntimeError(
        f"{summary.failed} of {summary.processed} rows failed ({summary.error_rate:.1%}), "
        f"over max_error_rate {conf.max_error_rate:.1%}"
    )

# Databricks notebook source
# MAGIC %md
# MAGIC # Structured extraction from SQL
# MAGIC
# MAGIC This notebook registers a dbstruct UDF under a SQL name, `triage`, and then uses it
# MAGIC from `%sql` cells over a temporary view of support tickets:
# MAGIC `triage(subject, body)` returns a struct, so `triage(subject, body).value.category` is
# MAGIC an ordinary string column that can be filtered, grouped and joined.
# MAGIC
# MAGIC Authentication comes from the notebook context; pick the endpoint in the **endpoint**
# MAGIC widget. Registration is per Spark session: run the Python cells first.

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

dbutils.widgets.text("endpoint", "databricks-meta-llama-3-3-70b-instruct", "Serving endpoint")
dbutils.widgets.text("rows", "100", "Sample tickets to triage")
ENDPOINT = dbutils.widgets.get("endpoint")
ROWS = int(dbutils.widgets.get("rows"))

# COMMAND ----------

from importlib.resources import files

import pandas as pd

from dbstruct.examples import TRIAGE_PROMPT, TicketTriage
from dbstruct.spark import structured_udf

with (files("dbstruct") / "data" / "tickets.jsonl").open(encoding="utf-8") as f:
    sample = pd.read_json(f, lines=True, dtype=False).head(ROWS)
spark.createDataFrame(
    sample[["ticket_id", "channel", "plan", "subject", "body"]],
    "ticket_id string, channel string, plan string, subject string, body string",
).createOrReplaceTempView("tickets")

triage = structured_udf(
    TicketTriage,
    f"databricks/{ENDPOINT}",
    prompt=TRIAGE_PROMPT,  # placeholders {subject} and {body}: triage(subject, body)
    include_status=True,
    temperature=0.0,
)
spark.udf.register("triage", triage)

# COMMAND ----------

# MAGIC %md
# MAGIC ## One row per ticket
# MAGIC
# MAGIC The UDF runs once per row of the subquery; the outer query only reads fields of its
# MAGIC result. Two things would call the endpoint twice per row: writing `triage(subject, body)`
# MAGIC twice in one `SELECT` (the UDF is non-deterministic, so Spark does not merge the calls),
# MAGIC and an `ORDER BY` right above the UDF (Spark reads a sort's input once to sample its
# MAGIC ranges, then again to sort it). Sort saved results, or aggregates, instead.

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT
# MAGIC   ticket_id,
# MAGIC   subject,
# MAGIC   t.value.category,
# MAGIC   t.value.priority,
# MAGIC   t.value.product,
# MAGIC   t.value.needs_human,
# MAGIC   t.value.order.reference AS order_reference,
# MAGIC   t.error
# MAGIC FROM (SELECT ticket_id, subject, triage(subject, body) AS t FROM tickets)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Aggregates over the extracted fields
# MAGIC
# MAGIC Every query that contains the UDF calls the endpoint again for each row it reads. To
# MAGIC query the results many times, save them once, e.g.
# MAGIC `CREATE TABLE main.support.ticket_triage AS`
# MAGIC `SELECT ticket_id, triage(subject, body) AS t FROM tickets`.

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT
# MAGIC   t.value.priority AS priority,
# MAGIC   count(*) AS tickets,
# MAGIC   count_if(t.value.needs_human) AS need_an_agent,
# MAGIC   count_if(t.value.refund_requested) AS refunds_requested
# MAGIC FROM (SELECT triage(subject, body) AS t FROM tickets WHERE plan = 'enterprise')
# MAGIC GROUP BY t.value.priority
# MAGIC ORDER BY tickets DESC, priority

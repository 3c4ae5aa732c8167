# Databricks notebook source
# MAGIC %md
# MAGIC # dbstruct quickstart: typed answers from a serving endpoint
# MAGIC
# MAGIC This notebook asks a Databricks model serving endpoint for an answer shaped like a
# MAGIC Pydantic model, once synchronously and then several times concurrently with the async
# MAGIC client. It is the example of instructor's Databricks guide, run with dbstruct.
# MAGIC
# MAGIC No token appears here: inside a notebook, dbstruct authenticates with the notebook's
# MAGIC own context (the workspace URL and the token of the user running it). Pick the
# MAGIC endpoint in the **endpoint** widget above; you need *Can Query* on it.

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
ENDPOINT = dbutils.widgets.get("endpoint")

# COMMAND ----------

# MAGIC %md
# MAGIC ## One call
# MAGIC
# MAGIC `from_provider` finds the workspace and the token by itself; printing the client shows
# MAGIC where its credentials came from (never the token).

# COMMAND ----------

from pydantic import BaseModel

import dbstruct
from dbstruct import Mode


class UserExtract(BaseModel):
    name: str
    age: int


client = dbstruct.from_provider(f"databricks/{ENDPOINT}", mode=Mode.TOOLS)
print(client)

# COMMAND ----------

user = client.create(
    response_model=UserExtract,
    messages=[{"role": "user", "content": "Extract jason is 25 years old"}],
)
print(repr(user))

# COMMAND ----------

# MAGIC %md
# MAGIC The completion behind the answer carries the token usage, summed over every attempt
# MAGIC (a wrong answer is re-asked with the validation errors, up to `max_retries` times).

# COMMAND ----------

user, completion = client.create_with_completion(
    response_model=UserExtract,
    messages=[{"role": "user", "content": "Extract jason is 25 years old"}],
)
print(f"{user!r}: {completion.usage.total_tokens} tokens")
client.close()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Many calls at once
# MAGIC
# MAGIC The async client sends requests concurrently. A notebook cell can `await` directly,
# MAGIC without `asyncio.run`.

# COMMAND ----------

import asyncio

import pandas as pd

texts = [
    "Ada Lovelace turned 36 in 1851.",
    "Our new hire, Grace, is 29.",
    "Alan is 41 years old and lives in Wilmslow.",
]

aclient = dbstruct.from_provider(f"databricks/{ENDPOINT}", async_client=True, mode=Mode.TOOLS)
users = await asyncio.gather(
    *(
        aclient.create(
            response_model=UserExtract,
            messages=[{"role": "user", "content": f"Extract the user: {text}"}],
        )
        for text in texts
    )
)
await aclient.close()
rows = [{"text": text, **user.model_dump()} for text, user in zip(texts, users, strict=True)]
display(pd.DataFrame(rows))

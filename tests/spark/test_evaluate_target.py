"""``dbstruct evaluate`` reads the answers a job's target holds from a run with the same
settings, sends the others, and says which it did; the emulator's request count shows what
was sent. On classic and Spark Connect, to a Parquet directory and to a flattened table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dbstruct.auth import Credentials
from dbstruct.evaluation import Labels, parse_labels
from dbstruct.examples import TicketTriage
from dbstruct.jobs import parse_config, run_job
from dbstruct.jobs.conf import JobConfig
from dbstruct.jobs.evaluate import evaluate_job
from dbstruct.testing import Emulator
from tests.spark.job_files import job, write_source

pytestmark = [pytest.mark.spark, pytest.mark.timeout(600)]


def conf_of(data: dict[str, Any], **source: Any) -> JobConfig:
    return parse_config({**data, "source": {**data["source"], **source}}, origin="test.yml")


def labels(n: int) -> Labels:
    rows = [{"id": str(i), "category": "billing"} for i in range(n)]
    return parse_labels(rows, "id", TicketTriage)


@pytest.mark.parametrize("kind", ["path", "table"])
def test_rows_a_run_with_the_same_settings_answered_are_read_not_sent(
    spark: Any, dbstruct_emulator: Emulator, tmp_path: Path, kind: str
) -> None:
    emu = dbstruct_emulator
    creds = Credentials.from_token(emu.base_url, emu.token)
    texts = [
        f"Ticket {i}: invoice INV-{10000 + i} was charged twice, refund me." for i in range(30)
    ]
    texts[3] = "[[fault:refusal]] " + texts[3]  # fails in the run: read back failed, as it is
    data = job(write_source(tmp_path / "in.jsonl", texts), tmp_path / "out", chunk_rows=1000)
    connect = "SPARK_CONNECT_MODE_ENABLED" in os.environ
    table = f"spark_catalog.default.evaluate_target_{os.getpid()}_{int(connect)}"
    if kind == "table":
        data["target"] = {"table": table, "output": "flatten"}
    try:
        run_job(spark, conf_of(data, limit=20), credentials=creds)
        every = conf_of(data)  # the same settings over all 30 rows
        emu.reset()
        mixed = evaluate_job(spark, every, labels(30), credentials=creds)
        assert (mixed.read_from_target, emu.stats().requests) == (20, 10)
        where = table if kind == "table" else str(tmp_path / "out")
        assert mixed.how.startswith(f"20 read from the job's target {where} (written by run 1 ")
        assert mixed.how.endswith("10 sent to databricks/test-llm (the endpoint)"), mixed.how

        # another prompt, or rows_per_request, or --fresh: everything is sent
        for changed, fresh in (({"prompt": "Triage: {text}"}, False), ({}, True)):
            emu.reset()
            sent = evaluate_job(
                spark, conf_of({**data, **changed}), labels(30), credentials=creds, fresh=fresh
            )
            assert (sent.read_from_target, emu.stats().requests) == (0, 30)
            assert sent.how == "sent to databricks/test-llm (the endpoint)"
        emu.reset()
        packed = evaluate_job(
            spark, conf_of({**data, "rows_per_request": 5}), labels(30), credentials=creds
        )
        assert packed.read_from_target == 0 and emu.stats().requests >= 6

        # a second run answers the last 10: now every row is read and nothing sent
        run_job(spark, every, credentials=creds)
        emu.reset()
        read = evaluate_job(spark, every, labels(30), credentials=creds)
        assert (read.read_from_target, emu.stats().requests) == (30, 0)
        assert "(written by runs 1, 2 with this configuration" in read.how
        stored = (
            spark.read.table(table) if kind == "table" else spark.read.parquet(where)
        ).collect()
        value = [r if kind == "table" else r["result"] for r in stored]
        category = [v["category"] if v is not None else None for v in value]
        accuracy = read.evaluation.fields["category"].metrics["accuracy"]
        assert accuracy == sum(c == "billing" for c in category) / 30
        assert read.prompt_tokens == sum(r["prompt_tokens"] for r in stored)
        assert read.completion_tokens == sum(r["completion_tokens"] for r in stored)
        assert read.to_dict()["rows_read_from_target"] == 30
        error = next(r["error"] for r in stored if str(r["id"]) == "3")
        assert error and read.evaluation.failed == {"3": error}
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")

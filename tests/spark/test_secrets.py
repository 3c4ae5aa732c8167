"""One unique token, swept for everywhere dbstruct writes text: it must appear nowhere.

The places (issue: "Secrets"): logs at DEBUG (every logger: dbstruct, openai, httpx,
databricks-sdk, py4j), exception messages and tracebacks (with their chained causes),
repr/str of the client, credentials, UDF and job conf objects, ``df.explain()`` in every mode,
the job summary, the rows of every table written and the bytes of its files, and what Spark's
Python workers print. The same sweep covers an OAuth client secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel
from pyspark import cloudpickle

import dbstruct
from dbstruct.auth import Credentials, resolve_credentials
from dbstruct.errors import DbstructError
from dbstruct.jobs import parse_config, run_job
from dbstruct.spark import structured_udf
from dbstruct.testing import Emulator

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

TOKEN = f"dapi-secret-{uuid.uuid4().hex}"
WRONG = f"dapi-wrong-{uuid.uuid4().hex}"  # a refused token must not leak either
CLIENT_SECRET = f"sp-secret-{uuid.uuid4().hex}"
SECRETS = (TOKEN, WRONG, CLIENT_SECRET)
LOGGERS = (
    *("", "dbstruct", "openai", "httpx", "httpcore", "httpx2", "httpcore2"),
    *("databricks", "urllib3", "py4j"),
)


class User(BaseModel):
    name: str
    age: int


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, retry_after=0.05, client_secret=CLIENT_SECRET)
    return dbstruct_emulator


def assert_clean(what: str, text: str) -> None:
    assert text, f"{what}: nothing was captured, so nothing was checked"
    for secret in SECRETS:
        assert secret not in text, f"{what} shows a secret"
        assert secret[-12:] not in text, f"{what} shows part of a secret"


@contextlib.contextmanager
def debug_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted with its arguments, into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def failure_texts(error: BaseException) -> str:
    """The message, repr and full traceback (chained causes included) of an error."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def as_json(df: Any) -> list[str]:
    """Every row as JSON (Spark Connect's toJSON gives a DataFrame of strings)."""
    return [r if isinstance(r, str) else r[0] for r in df.toJSON().collect()]


def messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------ the client


def test_client_logs_errors_and_reprs_hold_no_secret(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    with debug_logs() as logs:
        client = dbstruct.from_provider(
            "databricks/test-llm", base_url=emu.base_url, api_key=TOKEN, max_retries=1
        )
        assert client.create(User, messages("[[fault:429x1]] Ada is 36")).age == 36
        for text in ("[[fault:500]] Ada is 36", "[[fault:drop]] Ada", "[[fault:malformed]] Ada"):
            outcome = client.extract(User, messages(text))
            assert outcome.error is not None
            texts.append(failure_texts(outcome.error))
        texts += [repr(client), str(client), repr(client.credentials)]

        wrong = dbstruct.from_provider(
            "databricks/test-llm", base_url=emu.base_url, api_key=WRONG, async_client=True
        )
        for _ in range(2):  # refused, then failed unsent
            with pytest.raises(DbstructError) as refused:
                asyncio.run(wrong.create(User, messages("Ada is 36")))
            texts.append(failure_texts(refused.value))
        texts += [repr(wrong), str(wrong)]

        # OAuth M2M through databricks-sdk (its own DEBUG logging included)
        for key in ("DATABRICKS_TOKEN", "DATABRICKS_API_KEY", "DATABRICKS_CONFIG_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("DATABRICKS_HOST", emu.host)
        monkeypatch.setenv("DATABRICKS_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
        creds = resolve_credentials()
        oauth = dbstruct.from_provider("databricks/test-llm", credentials=creds)
        assert oauth.create(User, messages("Bo is 7")).name == "Bo"
        texts += [repr(creds), str(creds), repr(oauth)]

    assert emu.stats().status(200) >= 3 and emu.stats().status(429) == 1
    assert "oauth-m2m" in creds.source
    captured = logs.getvalue()
    assert "openai._base_client DEBUG" in captured  # the HTTP layer's records were captured
    assert_clean("DEBUG logs", captured)
    for text in texts:
        assert_clean("an error, traceback or repr", text)


# ------------------------------------------------------------------ Spark and the job


def test_udf_plans_tables_and_worker_output_hold_no_secret(
    spark: Any, emu: Emulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    extract = structured_udf(
        User,
        "databricks/test-llm",
        base_url=emu.base_url,
        api_key=TOKEN,
        include_status=True,
        max_retries=1,
    )
    texts = ["Ada is 36", "[[fault:500]] Bo is 7", "[[fault:refusal]] Cy is 9", None]
    pdf = pd.DataFrame({"id": range(len(texts)), "text": pd.Series(texts, dtype=object)})
    df = spark.createDataFrame(pdf, "id long, text string").withColumn("user", extract("text"))
    capfd.readouterr()
    for mode in ("simple", "extended", "codegen", "cost", "formatted"):
        df.explain(mode=mode)
    plans = capfd.readouterr().out
    assert "extract_user" in plans
    assert_clean("df.explain()", plans)
    assert_clean("the UDF's repr and str", repr(extract) + str(extract))

    out = tmp_path / "table"
    df.write.parquet(f"file://{out}")
    rows = as_json(spark.read.parquet(f"file://{out}"))
    assert len(rows) == 4 and any("RetriesExhaustedError" in r for r in rows)
    assert_clean("the rows written", "\n".join(rows))
    files = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in SECRETS:
        assert secret.encode() not in files
    assert_clean("Spark's and the workers' output", "".join(capfd.readouterr()) or "-")


def test_a_job_its_conf_summary_logs_and_target_hold_no_secret(
    classic_spark: Any,
    emu: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    source = tmp_path / "in.jsonl"
    lines = [f'{{"id": {i}, "text": "Ticket {i}: charged twice, refund"}}' for i in range(30)]
    lines[3] = '{"id": 3, "text": "[[fault:500]] Ticket 3: charged twice"}'
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    environ = {"EMU_HOST": emu.host, "EMU_TOKEN": TOKEN}
    conf = parse_config(
        {
            "version": 1,
            "name": "secrets",
            "source": {
                "path": str(source),
                "format": "json",
                "id_column": "id",
                "text_columns": "text",
            },
            "response_model": "dbstruct.examples:TicketTriage",
            "model": "databricks/test-llm",
            "max_retries": 1,
            "chunk_rows": 10,
            "target": {"path": str(tmp_path / "out")},
            "credentials": {"host": "{{env:EMU_HOST}}", "token": "{{env:EMU_TOKEN}}"},
        },
        origin="secrets.yml",
    )
    with debug_logs() as logs:
        summary = run_job(classic_spark, conf, environ=environ)
    assert (summary.processed, summary.failed) == (30, 1)
    assert_clean("the job's DEBUG logs", logs.getvalue())
    assert_clean("the summary", summary.to_text() + repr(summary))
    assert_clean("the conf", repr(conf) + str(conf) + conf.model_dump_json())
    rows = as_json(classic_spark.read.parquet(f"file://{tmp_path / 'out'}"))
    assert len(rows) == 30
    assert_clean("the target's rows", "\n".join(rows))
    files = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert TOKEN.encode() not in files
    assert_clean("the job's console output", "".join(capfd.readouterr()) or "-")
    assert Credentials.from_token(emu.base_url, TOKEN).token() == TOKEN  # the sweep's premise

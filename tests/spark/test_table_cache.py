"""The table-backed response cache: Spark keys equal the client's, hits send nothing, only
committed successes are stored, once per key; and the job's ``cache:`` section end to end.

Each row's text is unique, so every row is one request and emulator counts are row counts.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field
from pyspark import cloudpickle

from dbstruct.auth import Credentials
from dbstruct.cache import DiskCache
from dbstruct.errors import ConfigurationError
from dbstruct.jobs import parse_config, run_job
from dbstruct.spark import TableCache
from dbstruct.testing import Emulator
from tests.spark import job_files
from tests.spark.job_files import write_source
from tests.spark.rows import User, frame
from tests.spark.rows import make_udf as shared_make_udf

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]


class Person(BaseModel):  # User with another field: another schema, hence other keys
    name: str
    years: int


class Part(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):  # a value of every kind the JSON column must carry back unchanged
    ref: str
    total: Decimal = Field(max_digits=12, decimal_places=2)
    ratio: float
    paid: bool
    day: date
    at: datetime
    kind: Literal["new", "returned"]
    tags: list[str]
    counts: dict[str, int]
    parts: list[Part]
    note: str | None = None


# Workers cannot import this test module: ship its models by value, as a notebook's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(retry_after=0.05)
    return dbstruct_emulator


def text_of(i: int, marker: str = "") -> str:
    return f"{marker}Q{chr(97 + i % 26)}{chr(97 + i // 26 % 26)} is {i % 90} years old"


def make_udf(emu: Emulator, model: type[BaseModel] = User, **kw: Any) -> Any:
    return shared_make_udf(emu, model, **{"max_retries": 0, "include_status": True, **kw})


def requests(emu: Emulator) -> int:
    return emu.stats().requests


# ------------------------------------------------------------------ keys


def test_spark_keys_equal_the_keys_the_client_stores(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    disk = DiskCache(tmp_path / "disk")
    udf = make_udf(emu, cache=disk, temperature=0.0, max_tokens=200)
    texts = [text_of(i) for i in range(6)] + [None, "  "]
    df = frame(spark, texts)
    df.select(udf("text").alias("r")).collect()  # the workers' clients fill the sqlite file
    with sqlite3.connect(disk.path) as db:
        stored = {row[0] for row in db.execute("SELECT key FROM answers")}

    cache = TableCache(spark, path=tmp_path / "table")
    keys = {r.id: r.k for r in df.select("id", cache.key(udf, "text").alias("k")).collect()}

    assert len(stored) == 6 and {keys[i] for i in range(6)} == stored
    assert keys[6] is None and keys[7] is None  # null or blank text is never sent


# ------------------------------------------------------------------ extract and record


def committed(spark: Any, out: Any, where: Path) -> Any:
    out.write.mode("overwrite").parquet(str(where))
    return spark.read.parquet(str(where))


def test_recorded_answers_are_hits_once_per_key_and_failures_are_sent_again(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    udf = make_udf(emu)
    texts = [text_of(i) for i in range(10)] + [text_of(10, "[[fault:500]]"), None, text_of(0)]
    df = frame(spark, texts)  # row 12 repeats row 0: one entry (sent once or twice)
    cache = TableCache(spark, table=f"spark_catalog.default.answers_{uuid.uuid4().hex[:12]}")

    first = committed(spark, cache.extract(df, udf, "text", key_column="key"), tmp_path / "a")
    sent = requests(emu)  # identical rows share a request only when in flight together
    assert sent in (11, 12)
    cache.record(first, udf)
    cache.record(first, udf)  # the same rows again add nothing
    entries = cache.read().collect()
    assert len(entries) == 10 == len({e.key for e in entries})  # no failed or empty row
    assert all(e.prompt_tokens > 0 and e.endpoint == "test-llm" for e in entries)

    again = {r.id: r.result for r in cache.extract(df, udf, "text").collect()}
    assert requests(emu) == sent + 1  # only the failed row was sent again
    written = first.collect()
    before = {r.id: r.result for r in written}
    for i in [*range(10), 12]:
        assert again[i].value == before[i].value and again[i].value is not None
        assert (again[i].attempts, again[i].prompt_tokens, again[i].error) == (0, 0, None)
    stored = {e.key: json.loads(e.answer) for e in entries}
    assert all(stored[r.key]["name"] == r.result.value.name for r in written if r.id < 10)
    assert again[10].error is not None and again[10].attempts == 1
    assert again[11].value is None and again[11].attempts == 0

    # another response model (another schema) or another prompt: other keys, all sent
    few = frame(spark, texts[:3])
    person, asked = make_udf(emu, Person), make_udf(emu, prompt="Who is this? {text}")
    rows = cache.extract(few, person, "text").select("result.attempts", "result.error")
    rows = rows.union(cache.extract(few, asked, "text").select("result.attempts", "result.error"))
    assert [tuple(r) for r in rows.collect()] == [(1, None)] * 6
    assert requests(emu) == sent + 1 + 6


def test_answers_of_every_type_come_back_unchanged(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    udf = make_udf(emu, Order)
    order = Order(
        ref="A-1", total=Decimal("1234.50"), ratio=0.1, paid=True, day=date(2024, 2, 29),
        at=datetime(2024, 3, 1, 12, 30, 45, 123456, tzinfo=timezone.utc), kind="returned",
        tags=["x", "y"], counts={"a": 1}, parts=[Part(sku="S", qty=2)],
    )  # fmt: skip
    value = order.model_dump()
    value["parts"] = [tuple(p.values()) for p in value["parts"]]
    status = (tuple(value.values()), None, 1, 10, 5, 1.0)
    df = spark.createDataFrame(
        [("some order", status)], f"text string, result {udf.returnType.simpleString()}"
    )
    cache = TableCache(spark, path=tmp_path / "cache")
    cache.record(df.select(cache.key(udf, "text").alias("key"), "result"), udf)

    (row,) = cache.extract(df.select("text"), udf, "text").collect()
    assert requests(emu) == 0 and row.result.attempts == 0
    back = row.result.value.asDict(recursive=True)
    back["at"] = back["at"].replace(tzinfo=timezone.utc)  # collected in the session's UTC
    assert Order.model_validate(back) == order


# ------------------------------------------------------------------ the job's cache section


def job(source: str, target: Path, cache: Path, **extra: Any) -> Any:
    data = job_files.job(
        source,
        target,
        name="cached",
        partitions=1,
        chunk_rows=10,
        max_error_rate=1.0,
        cache={"path": str(cache)},
    )
    for key, value in extra.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return parse_config(data, origin="test.yml")


def test_a_job_rerun_through_the_cache_sends_nothing_for_answered_rows(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    texts: list[str | None] = [f"Ticket {i}: invoice INV-{10000 + i} paid twice" for i in range(20)]
    texts[3], texts[7] = None, "[[fault:500]] Ticket 7: the app crashes"
    source = write_source(tmp_path / "in.jsonl", texts)
    creds = Credentials.from_token(emu.base_url, emu.token)
    cache = tmp_path / "cache"
    flat, nested = tmp_path / "flat", tmp_path / "nested"

    first = run_job(spark, job(source, flat, cache, target__output="flatten"), credentials=creds)
    assert requests(emu) == 19 and first.chunks == 2
    assert (first.succeeded, first.failed, first.done.empty, first.cached) == (18, 1, 1, 0)
    entries = TableCache(spark, path=cache).read().select("key").collect()
    assert len(entries) == 18 == len({e.key for e in entries})  # not the failed or empty row

    # another job, nested output, without the failed row: every answer is in the cache
    conf = job(source, nested, cache, chunk_rows=100, source__where="id != 7")
    second = run_job(spark, conf, credentials=creds)
    assert requests(emu) == 19  # nothing sent
    assert (second.processed, second.cached, second.done.empty) == (19, 18, 1)
    assert (second.succeeded, second.failed, second.prompt_tokens) == (0, 0, 0)
    assert "cached              18   answered from the response cache" in second.to_text()

    flat_rows = {r["id"]: r.asDict(recursive=True) for r in spark.read.parquet(str(flat)).collect()}
    nested_rows = {r["id"]: r for r in spark.read.parquet(str(nested)).collect()}
    assert sorted(nested_rows) == [i for i in range(20) if i != 7]
    for i, row in nested_rows.items():
        assert row["attempts"] == 0 and row["error"] is None
        if i != 3:
            value = row["result"].asDict(recursive=True)
            assert value["summary"] and value == {k: flat_rows[i][k] for k in value}
    entries = TableCache(spark, path=cache).read().select("key").collect()
    assert len(entries) == 18 == len({e.key for e in entries})
    with pytest.raises(ConfigurationError, match="is not a response cache"):
        TableCache(spark, path=flat)  # a target is not a cache: refused, not written to


# ------------------------------------------------------------------ the docs' example


def test_docs_table_cache_example_runs_with_local_table_names(spark: Any, emu: Emulator) -> None:
    """docs/SPARK.md's block, verbatim but for Unity Catalog names (local Spark has no main)."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "docs" / "SPARK.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "TableCache(" in b
    ]
    suffix = uuid.uuid4().hex[:8]
    answers, users = f"llm_answers_{suffix}", f"crm_users_{suffix}"
    local = block.replace("main.llm.answers", answers).replace("main.crm.users", users)
    assert local != block and "main." not in local
    namespace: dict[str, Any] = {
        "spark": spark,
        "df": frame(spark, [text_of(i) for i in range(5)]),
        "extract_user": make_udf(emu),
    }
    try:
        exec(local, namespace)
        assert requests(emu) == 5
        exec(local.replace(f'"{users}"', f'"{users}_again"'), namespace)  # the same rows again
        assert requests(emu) == 5  # all five answered from the table
        again = spark.read.table(f"{users}_again").collect()
        assert sorted(r.result.value.name for r in again) == sorted(
            r.result.value.name for r in spark.read.table(users).collect()
        )
        assert all(r.result.attempts == 0 for r in again)
    finally:
        for table in (answers, users, f"{users}_again"):
            spark.sql(f"DROP TABLE IF EXISTS {table}")

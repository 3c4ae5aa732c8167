"""structured_udf end to end: real Spark (classic and Connect) against the serving emulator.

The emulator answers from the row's text (a capitalised word for ``name``, the integer for
``age``), so every output row can be checked against its own input, and fault markers in the
text (``[[fault:500]]``) make chosen rows fail.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel
from pyspark import cloudpickle
from pyspark.sql import functions as F

from dbstruct.errors import ConfigurationError, SchemaMappingError
from dbstruct.spark import spark_schema, structured_udf
from dbstruct.spark._result_column import STATUS_FIELDS
from dbstruct.testing import Emulator
from tests.spark.rows import User, age_of, frame, make_udf, name_of, text_of

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]

TOKEN = f"tok-{uuid.uuid4().hex}"  # unique: searched for in plans and reprs


class Sentiment(BaseModel):
    label: str
    score: int


class Loose(BaseModel):
    payload: Any


# Workers cannot import this test module: ship its models by value, as a notebook's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, retry_after=0.05)
    return dbstruct_emulator


# ------------------------------------------------------------------ end to end, 10k rows


def kind_of(i: int) -> str:
    return {0: "null", 1: "empty", 2: "blank", 3: "refusal", 4: "down", 5: "flaky"}.get(
        i % 50, "ok"
    )


def row_text(i: int) -> str | None:
    kind = kind_of(i)
    return {
        "null": None,
        "empty": "",
        "blank": "  \n\t ",
        "refusal": f"[[fault:refusal]] {text_of(i)}",
        "down": f"[[fault:500]] {text_of(i)}",
        "flaky": f"[[fault:429x1]] {text_of(i)}",
    }.get(kind, text_of(i))


def test_ten_thousand_rows_keep_count_order_and_status(spark: Any, emu: Emulator) -> None:
    n = 10_000
    extract = make_udf(emu, include_status=True, concurrency=32)
    df = frame(spark, [row_text(i) for i in range(n)])
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1000")  # several batches
    try:
        rows = df.select("id", extract("text").alias("s")).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")

    assert [r.id for r in rows] == list(range(n))
    for r in rows:
        s, kind = r.s, kind_of(r.id)
        assert s.__fields__ == list(STATUS_FIELDS)
        if kind in ("null", "empty", "blank"):
            assert (s.value, s.error, s.attempts, s.prompt_tokens) == (None, None, 0, 0), r
        elif kind == "refusal":  # not retried: the same request would be refused again
            assert s.value is None and s.error.startswith("RefusalError"), r
            assert s.attempts == 1
        elif kind == "down":
            assert s.value is None and s.error.startswith("RetriesExhaustedError"), r
            assert s.attempts == 3
        else:
            assert s.error is None, r
            assert (s.value.name, s.value.age) == (name_of(r.id), age_of(r.id))
            assert s.attempts == (2 if kind == "flaky" else 1)
            assert s.prompt_tokens > 0 and s.completion_tokens > 0 and s.latency_ms > 0
    kinds = [kind_of(i) for i in range(n)]
    stats = emu.stats()
    assert stats.status(200) == kinds.count("ok") + kinds.count("flaky") + kinds.count("refusal")
    assert stats.status(500) == 3 * kinds.count("down")
    assert stats.status(429) == kinds.count("flaky")
    # tokens are reported per row and add up to what the endpoint counted
    assert sum(r.s.prompt_tokens for r in rows) == stats.prompt_tokens
    assert sum(r.s.completion_tokens for r in rows) == stats.completion_tokens


# ------------------------------------------------------------------ how it is used


def test_sql_registration_and_field_access(spark: Any, emu: Emulator) -> None:
    extract = make_udf(emu, name="extract_user")
    spark.udf.register("extract_user", extract)
    frame(spark, [text_of(i) for i in range(5)] + [None]).createOrReplaceTempView("reviews")
    rows = spark.sql(
        "SELECT id, extract_user(text).name AS name FROM reviews ORDER BY id"
    ).collect()
    assert [(r.id, r.name) for r in rows] == [(i, name_of(i)) for i in range(5)] + [(5, None)]


def test_select_star_calls_the_endpoint_once_per_row(spark: Any, emu: Emulator) -> None:
    extract = make_udf(emu)
    df = frame(spark, [text_of(i) for i in range(20)])
    out = df.withColumn("user", extract("text")).select("id", "user.*")
    assert out.columns == ["id", "name", "age"]
    assert [tuple(r) for r in out.collect()] == [(i, name_of(i), age_of(i)) for i in range(20)]
    # the UDF is non-deterministic, so Spark does not re-evaluate it per struct field
    assert emu.stats().requests == 20


def test_two_structured_udfs_in_one_select(spark: Any, emu: Emulator) -> None:
    users = make_udf(emu)
    moods = make_udf(emu, Sentiment, prompt="Rate the sentiment of: {text}")
    df = frame(spark, [text_of(i) for i in range(10)])
    rows = df.select("id", users("text").alias("u"), moods("text").alias("m")).collect()
    assert [(r.id, r.u.name, r.m.score) for r in rows] == [(i, name_of(i), i) for i in range(10)]
    assert emu.stats().requests == 20


def test_several_columns_fill_placeholders_in_order_or_by_name(spark: Any, emu: Emulator) -> None:
    extract = make_udf(emu, prompt="user: {name}\nage: {age} {{not a placeholder}}")
    pdf = pd.DataFrame({"n": ["Ann", "Bob", None], "a": ["30 {0} %s", None, None]})
    df = spark.createDataFrame(pdf, "n string, a string")
    positional = df.select(extract("n", "a").alias("u")).collect()
    named = df.select(extract(age=F.col("a"), name=F.col("n")).alias("u")).collect()
    assert [r.u.name for r in positional] == ["Ann", "Bob", None]  # all-null row: not sent
    assert [r.u.name for r in named] == ["Ann", "Bob", None]
    sent = [m["content"] for body in emu.requests for m in body["messages"] if m["role"] == "user"]
    # a null value renders empty; braces and %s in values are data
    assert sorted(set(sent)) == [
        "user: Ann\nage: 30 {0} %s {not a placeholder}",
        "user: Bob\nage:  {not a placeholder}",
    ]
    assert len(sent) == 4


def test_failed_rows_are_null_fields_or_raise_with_strict(spark: Any, emu: Emulator) -> None:
    df = frame(spark, [text_of(1), "[[fault:refusal]] Ann is 3"])
    rows = df.select(make_udf(emu)("text").alias("u")).collect()
    assert tuple(rows[0].u) == (name_of(1), age_of(1))
    assert rows[1].u is not None and tuple(rows[1].u) == (None, None)  # no null struct
    with pytest.raises(Exception, match="RefusalError"):
        df.select(make_udf(emu, strict=True)("text").alias("u")).collect()


def test_non_string_column_fails_before_any_request(spark: Any, emu: Emulator) -> None:
    df = spark.range(3).withColumn("s", F.struct("id"))
    extract = make_udf(emu)
    # by name (and on Connect): checked on the executors, before anything is sent
    with pytest.raises(Exception, match="holds int64 values, not strings"):
        df.select(extract("id")).collect()
    with pytest.raises(Exception, match="holds struct values, not strings"):
        df.select(extract(F.col("s"))).collect()
    assert emu.stats().requests == 0
    if hasattr(df, "_jdf"):  # classic knows a DataFrame column's type already when applied
        with pytest.raises(ConfigurationError, match="input column 1 is bigint, not string"):
            extract(df["id"])
        extract(df["id"].cast("string"))  # resolved string columns pass


def test_no_token_in_plans_or_reprs(spark: Any, emu: Emulator, capsys: Any) -> None:
    extract = make_udf(emu, include_status=True)
    df = frame(spark, [text_of(1)]).withColumn("u", extract("text"))
    df.explain(mode="extended")
    df.explain(mode="formatted")
    shown = capsys.readouterr().out
    if hasattr(df, "_jdf"):  # classic: the JVM's own plan strings too
        shown += df._jdf.queryExecution().toString()
    assert "extract_user" in shown
    texts = [shown, repr(extract), repr(extract.spec), str(extract.spec.credentials)]
    assert all(TOKEN not in t for t in texts)
    assert df.collect()[0].u.error is None  # and the token did reach the executors


# ------------------------------------------------------------------ checked on the driver


def test_unmappable_model_fails_when_built(emu: Emulator) -> None:
    with pytest.raises(SchemaMappingError, match="payload"):
        make_udf(emu, Loose)


def test_bad_prompt_and_arguments_fail_when_built_or_applied(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        make_udf(emu, prompt="Extract {0}")
    with pytest.raises(ConfigurationError, match="concurrency"):
        make_udf(emu, concurrency=0)
    with pytest.raises(ConfigurationError, match="databricks"):
        structured_udf(User, "openai/gpt-4o", base_url=emu.base_url, api_key="x")
    two = make_udf(emu, prompt="{title}: {body}")
    with pytest.raises(ConfigurationError, match="2 placeholder"):
        two("text")
    with pytest.raises(ConfigurationError, match="by placeholder name"):
        two(title="a")


def test_return_type_is_the_model_schema(emu: Emulator) -> None:
    assert make_udf(emu).returnType == spark_schema(User)
    status = make_udf(emu, include_status=True).returnType
    assert status.fieldNames() == list(STATUS_FIELDS)
    assert status["value"].dataType == spark_schema(User)
    assert status.simpleString().endswith(
        "error:string,attempts:int,prompt_tokens:bigint,completion_tokens:bigint,latency_ms:double>"
    )


def test_readme_dataframe_example_runs_verbatim(
    spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    from pathlib import Path

    from dbstruct.testing import Emulator

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "structured_udf(" in b
    ]
    with Emulator(token="dapi-readme-example") as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        spark.createDataFrame(
            [(1, "jason is 25"), (2, "ada is 36")], "id long, text string"
        ).createOrReplaceTempView("reviews")
        namespace: dict[str, Any] = {
            "spark": spark,
            "df": spark.table("reviews"),
            "UserExtract": User,
        }
        exec(block, namespace)
        rows = spark.sql("SELECT id, extract_user(text).age AS age FROM reviews").collect()
    assert sorted((r.id, r.age) for r in rows) == [(1, 25), (2, 36)]


def test_a_disk_cache_answers_a_rerun_without_requests(
    spark: Any, emu: Emulator, tmp_path: Any
) -> None:
    from dbstruct.cache import DiskCache

    extract = make_udf(emu, include_status=True, cache=DiskCache(tmp_path / "cache"))
    df = frame(spark, [text_of(i) for i in range(40)])
    first = df.select(extract("text").alias("u")).selectExpr("sum(u.attempts) AS a").first()
    sent = emu.stats().requests
    again = (
        df.select(extract("text").alias("u"))
        .selectExpr("sum(u.attempts) AS a", "count(u.value) AS v", "sum(u.prompt_tokens) AS p")
        .first()
    )
    assert first.a == sent == 40
    assert emu.stats().requests == sent  # the rerun sent nothing
    assert (again.a, again.v, again.p) == (0, 40, 0)

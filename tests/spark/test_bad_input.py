"""Bad input through structured_udf on real Spark (classic and Connect): text of every
shape, an empty DataFrame, a model with names SQL finds awkward, and a 100,000-row partition.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pyspark import cloudpickle
from pyspark.sql import functions as F

from dbstruct.testing import Emulator
from tests.spark.rows import PROMPT, User, age_of, frame, name_of, text_of
from tests.spark.rows import make_udf as shared_make_udf

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]

TOKEN = f"tok-{uuid.uuid4().hex}"


class Awkward(BaseModel):
    """Field names Spark and SQL find awkward: spaces, dots, reserved words."""

    model_config = ConfigDict(populate_by_name=True)

    full_name: str = Field(alias="user name")
    dotted: str = Field(alias="a.b")
    select: int
    order: int
    group: str | None = None


# Workers cannot import this test module: ship its models by value, as a notebook's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, keep_requests=1000)
    return dbstruct_emulator


def make_udf(emu: Emulator, model: type[BaseModel] = User, **kw: Any) -> Any:
    return shared_make_udf(emu, model, **{"max_retries": 1, **kw})


# ------------------------------------------------------------------ text of every shape

BLANK: list[str | None] = [None, "", " ", "   \n\t  ", "\r\n", "\u00a0\u2003\u3000"]
# (text, id whose name and age it carries; None: only the emulator's synthesised value)
REAL: list[tuple[str, int | None]] = [
    ("{text}", None),
    ("{0}", None),
    ("}}", None),
    ("%s", None),
    ("{{text}} %(text)s {} ${text} {text!r}", None),
    (f"{{text}} {text_of(101)} {{0}} %s }}}}", 101),
    (f"😀 {text_of(102)} 👍🏽 👩‍👩‍👧", 102),
    (f"مرحبا {text_of(103)} شكرا", 103),  # Arabic, right to left
    (f"\u202b{text_of(104)} שלום עולם\u202c\u200f", 104),  # Hebrew with RTL embedding marks
    (f"{name_of(105)}\x00 is {age_of(105)} years old\x00", 105),  # NUL
    (f"\x01\x07\x1b[31m {text_of(106)}\x1b[0m\x7f\x08", 106),  # control characters, ANSI
    (f'"quoted" \\ back\\slash {text_of(107)} </s> <|eot_id|>', 107),
    (f"line one\nline two\r\n\t{text_of(108)}\u2028\u2029", 108),
]


def test_text_of_every_shape_comes_out_and_is_sent_verbatim(spark: Any, emu: Emulator) -> None:
    texts = [*BLANK, *(t for t, _ in REAL)]
    extract = make_udf(emu, include_status=True)
    rows = frame(spark, texts).select("id", extract("text").alias("s")).collect()

    assert [r.id for r in rows] == list(range(len(texts)))
    for r in rows[: len(BLANK)]:  # nothing to extract: null value, nothing sent
        assert (r.s.value, r.s.error, r.s.attempts) == (None, None, 0), r
    for r, (text, carries) in zip(rows[len(BLANK) :], REAL, strict=True):
        assert r.s.error is None and r.s.attempts == 1, (text, r)
        assert r.s.value is not None and r.s.value.name, (text, r)
        if carries is not None:
            assert (r.s.value.name, r.s.value.age) == (name_of(carries), age_of(carries)), text
    # Each text went out once, exactly as written (JSON escaping is the only change).
    sent = [m["content"] for body in emu.requests for m in body["messages"] if m["role"] == "user"]
    assert sorted(sent) == sorted(PROMPT.replace("{text}", t) for t, _ in REAL)


def test_an_empty_dataframe_gives_an_empty_result_and_sends_nothing(
    spark: Any, emu: Emulator
) -> None:
    empty = frame(spark, [])
    for include_status in (False, True):
        extract = make_udf(emu, include_status=include_status)
        out = empty.select("id", extract("text").alias("s"))
        assert out.schema["s"].dataType == extract.returnType
        assert out.collect() == []
        assert out.select("s.*").columns == extract.returnType.fieldNames()
    assert emu.stats().requests == 0


# ------------------------------------------------------------------ awkward field names


def test_awkward_field_names_extract_end_to_end_and_select(spark: Any, emu: Emulator) -> None:
    # test_schema_mapping checks awkward names with scripted answers; this one sends the
    # compiled schema to the endpoint, validates its answers by alias, and reads them in SQL.
    extract = make_udf(emu, Awkward, include_status=True, name="awkward_extract")
    df = frame(spark, [text_of(i) for i in range(4)])
    out = df.select("id", extract("text").alias("s"))
    assert out.select("s.value.*").columns == ["user name", "a.b", "select", "order", "group"]
    picked = out.select(
        "id",
        "s.error",
        F.col("s.value.`user name`").alias("user_name"),
        F.col("s.value.`a.b`").alias("ab"),
        F.col("s.value.select").alias("sel"),
        F.expr("s.value.order").alias("ord"),
    ).collect()
    assert [r.id for r in picked] == [0, 1, 2, 3]
    for r in picked:
        assert r.error is None, r
        assert isinstance(r.user_name, str) and isinstance(r.ab, str), r
        assert isinstance(r.sel, int) and isinstance(r.ord, int), r
    properties = emu.requests[0]["tools"][0]["function"]["parameters"]["properties"]
    assert set(properties) == {"user name", "a.b", "select", "order", "group"}

    spark.udf.register("awkward_extract", extract)
    df.createOrReplaceTempView("awkward_texts")
    sql = spark.sql(
        "SELECT id, awkward_extract(text).value.`user name` AS u, "
        "awkward_extract(text).value.`select` AS s FROM awkward_texts"
    ).collect()
    assert sorted(r.id for r in sql) == [0, 1, 2, 3]
    assert all(isinstance(r.u, str) and isinstance(r.s, int) for r in sql)


# ------------------------------------------------------------------ one 100,000-row partition


@pytest.fixture
def classic(classic_spark: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    return classic_spark


@pytest.mark.timeout(600)
def test_a_hundred_thousand_row_partition(classic: Any) -> None:
    # Classic only: on this 2-core machine (shared) each session took about 4 minutes
    # (~430 rows/s), far over a two-minute budget for both.
    n = 100_000
    with Emulator.spawn(token=TOKEN, latency=0) as emu:  # off this process's GIL
        extract = make_udf(emu, include_status=True, concurrency=64)
        df = frame(classic, [text_of(i) for i in range(n)]).coalesce(1)
        out = df.select("id", extract("text").alias("s"), F.spark_partition_id().alias("p"))
        started = time.monotonic()
        rows = out.collect()
        elapsed = time.monotonic() - started
        stats = emu.stats()
    print(f"100,000 rows in one partition: {elapsed:.1f}s ({n / elapsed:.0f} rows/s)")
    assert {r.p for r in rows} == {0}
    assert [r.id for r in rows] == list(range(n))
    assert all(r.s.error is None for r in rows)
    assert all((r.s.value.name, r.s.value.age) == (name_of(r.id), age_of(r.id)) for r in rows)
    assert stats.requests == n

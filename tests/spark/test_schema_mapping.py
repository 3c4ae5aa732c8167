"""spark_schema and to_frame against real Spark, on a classic and a Spark Connect session.

The UDF round trips run with the session time zone set to America/New_York, so a timestamp
that lost its offset on the way (a naive datetime) would show up shifted.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from chispa import assert_df_equality
from pydantic import BaseModel
from pyspark.sql import functions as F
from pyspark.sql.pandas.functions import pandas_udf
from pyspark.sql.types import BooleanType, LongType, StructField, StructType

import tests.corpus as corpus
from dbstruct.spark._convert import to_frame
from dbstruct.spark._result_column import return_type
from dbstruct.spark.struct_types import spark_schema, spark_schema_json
from tests.corpus import CORPUS, AwkwardNames, Catalog, EnumList, Nested1, Order, Scores

pytestmark = pytest.mark.spark

UTC = dt.timezone.utc
ORDER_ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
PEN_ID = "00000000-0000-0000-0000-0000000000aa"
BIG = 2**62 + 1


@pytest.fixture(scope="module", autouse=True)
def _corpus_on_workers(
    classic_spark: Any, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The UDFs refer to tests.corpus models, which workers import by name: ship the module,
    # as a job ships its own code. (Shipping the classes by value instead trips a pydantic bug
    # for models that use one nested model twice under `from __future__ import annotations`.)
    archive = tmp_path_factory.mktemp("corpus") / "dbstruct_tests_corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(Path(corpus.__file__).with_name("__init__.py"), "tests/__init__.py")
        zf.write(corpus.__file__, "tests/corpus.py")
    classic_spark.sparkContext.addPyFile(str(archive))
    try:
        connect_spark = request.getfixturevalue("connect_spark")
    except pytest.skip.Exception:  # no Connect server (pyspark 3.5): the classic tests still run
        return
    connect_spark.addArtifacts(str(archive), pyfile=True)


@pytest.fixture
def new_york(spark: Any) -> Iterator[Any]:
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    yield spark
    spark.conf.set("spark.sql.session.timeZone", previous)


# ------------------------------------------------------------------- schema round trips
@pytest.mark.parametrize("model", CORPUS, ids=lambda m: m.__name__)
def test_corpus_schemas_load_in_spark(spark: Any, model: type[BaseModel]) -> None:
    schema = spark_schema(model)
    assert schema.jsonValue() == spark_schema_json(model)
    assert StructType.fromJson(schema.jsonValue()) == schema
    # The JVM (or the Connect server) analyses the schema and sends it back unchanged.
    assert spark.createDataFrame([], schema).schema == schema


# ---------------------------------------------------------------------- UDF round trips
def extract_udf(model: type[BaseModel]) -> Callable[..., Any]:
    """An iterator pandas UDF: JSON text -> model -> the struct column (null text = failed)."""

    def extract(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        for texts in batches:
            yield to_frame(
                model, [None if t is None else model.model_validate_json(t) for t in texts]
            )

    # As structured_udf's, the return type has no field comments: pyspark 3.5 rejects them.
    value_type = return_type(spark_schema(model), include_status=False)
    # pyspark's stubs have no overload for iterator-of-Series -> iterator-of-DataFrame.
    udf: Callable[..., Any] = pandas_udf(extract, value_type)  # type: ignore[call-overload]
    return udf


def nulls(model: type[BaseModel]) -> dict[str, None]:
    return dict.fromkeys(f["name"] for f in spark_schema_json(model)["fields"])


ORDER_IN = [
    {
        "order_id": ORDER_ID,
        "placed_on": "2024-03-01",
        "shipped_at": "2024-03-02T10:30:00+02:00",
        "items": [
            {"sku": "ABC-1234", "quantity": 2, "unit_price": "9.5"},
            {"sku": "XYZ-0001", "quantity": 1, "unit_price": 120},
        ],
        "customer": {
            "name": "Ann",
            "email": "ann@example.com",
            "address": {"street": "Main 1", "city": "Utrecht", "postcode": "3511 AA"},
        },
    },
    {
        "order_id": ORDER_ID,
        "placed_on": "1999-12-31",
        "items": [],
        "customer": {"name": "Bo", "address": {"street": "Dam", "city": "Amsterdam"}},
    },
]
ORDER_OUT = [
    {
        "order_id": ORDER_ID,
        "placed_on": dt.date(2024, 3, 1),
        "shipped_at": dt.datetime(2024, 3, 2, 8, 30, tzinfo=UTC),
        "items": [
            {"sku": "ABC-1234", "quantity": 2, "unit_price": Decimal("9.50")},
            {"sku": "XYZ-0001", "quantity": 1, "unit_price": Decimal("120.00")},
        ],
        "customer": {
            "name": "Ann",
            "email": "ann@example.com",
            "address": {
                "street": "Main 1",
                "city": "Utrecht",
                "postcode": "3511 AA",
                "country": "NL",
            },
        },
    },
    {
        "order_id": ORDER_ID,
        "placed_on": dt.date(1999, 12, 31),
        "shipped_at": None,
        "items": [],
        "customer": {
            "name": "Bo",
            "email": None,
            "address": {"street": "Dam", "city": "Amsterdam", "postcode": None, "country": "NL"},
        },
    },
]
PEN_IN = {"id": PEN_ID, "name": "Pen", "price": "1.5", "in_stock": True, "released": "2023-05-01"}
PEN_OUT = {
    "id": PEN_ID,
    "name": "Pen",
    "price": Decimal("1.50"),
    "in_stock": True,
    "released": dt.date(2023, 5, 1),
}


def stamped_model() -> type[BaseModel]:
    """Timestamps at every depth. Defined in a function, so cloudpickle sends it by value."""

    class Stamp(BaseModel):
        at: dt.datetime

    class Stamped(BaseModel):
        at: dt.datetime
        log: list[Stamp]
        by_day: dict[str, dt.datetime]

    return Stamped


STAMPS_IN = {
    "at": "2024-03-02T10:30:00+02:00",
    "log": [{"at": "2024-03-02T10:30:00-05:00"}],
    "by_day": {"d": "2024-03-02T10:30:00Z"},
}
STAMPS_OUT: dict[str, Any] = {
    "at": dt.datetime(2024, 3, 2, 8, 30, tzinfo=UTC),
    "log": [{"at": dt.datetime(2024, 3, 2, 15, 30, tzinfo=UTC)}],
    "by_day": {"d": dt.datetime(2024, 3, 2, 10, 30, tzinfo=UTC)},
}
CASES: dict[str, tuple[type[BaseModel], list[Any], list[Any]]] = {
    "stamps": (stamped_model(), [STAMPS_IN], [STAMPS_OUT]),
    "order": (Order, ORDER_IN, ORDER_OUT),
    "catalog": (
        Catalog,
        [{"products": [PEN_IN], "by_category": {"office": [PEN_IN, PEN_IN], "none": []}}],
        [{"products": [PEN_OUT], "by_category": {"office": [PEN_OUT, PEN_OUT], "none": []}}],
    ),
    "nested": (
        Nested1,
        [
            {
                "middle": {"inner": {"value": 1}, "inners": [{"value": 2}, {"value": 3}]},
                "by_key": {"k": {"inner": {"value": 4}, "inners": []}},
            }
        ],
        [
            {
                "middle": {"inner": {"value": 1}, "inners": [{"value": 2}, {"value": 3}]},
                "by_key": {"k": {"inner": {"value": 4}, "inners": []}},
            }
        ],
    ),
    "enums": (
        EnumList,
        [{"sentiments": ["positive", "negative"], "priorities": {"a": 3, "b": 1}}],
        [{"sentiments": ["positive", "negative"], "priorities": {"a": 3, "b": 1}}],
    ),
    "awkward": (
        AwkwardNames,
        # above 2**53: a float64 column (pandas' pick for ints with a null) would round it
        [{"first name": "Ann", "a.b": "x", "select": BIG}],
        [{"first name": "Ann", "a.b": "x", "select": BIG, "from": None}],
    ),
    "maps": (
        Scores,
        [{"per_aspect": {"taste": 0.1, "price": 4.5}, "counts": {"x": 2**62}}],
        [{"per_aspect": {"taste": 0.1, "price": 4.5}, "counts": {"x": 2**62}}],
    ),
}


def run_udf(spark: Any, name: str) -> tuple[Any, Any]:
    """The UDF's output and the expected DataFrame; the last input row is null (a failure)."""
    model, inputs, outputs = CASES[name]
    texts = [json.dumps(i) for i in inputs] + [None]
    # One partition, so one Arrow batch mixes good rows with the failed one.
    source = spark.createDataFrame(list(enumerate(texts)), "idx long, raw string").coalesce(1)
    actual = source.select("idx", extract_udf(model)("raw").alias("out"))
    actual = actual.withColumn("out_is_null", F.col("out").isNull())
    schema = StructType(
        [
            StructField("idx", LongType()),
            StructField("out", return_type(spark_schema(model), include_status=False)),
            StructField("out_is_null", BooleanType(), False),
        ]
    )
    rows = [(i, out, False) for i, out in enumerate([*outputs, nulls(model)])]
    return actual.orderBy("idx"), spark.createDataFrame(rows, schema).orderBy("idx")


@pytest.mark.parametrize("name", list(CASES))
def test_udf_round_trip(new_york: Any, name: str) -> None:
    actual, expected = run_udf(new_york, name)
    # A failed row is a struct of nulls, never a null struct: out_is_null is False throughout.
    assert_df_equality(actual, expected)


def test_udf_timestamps_keep_their_instant_at_every_depth(new_york: Any) -> None:
    actual, _ = run_udf(new_york, "stamps")
    found = actual.select(
        F.unix_micros("out.at"),
        F.unix_micros(F.col("out.log")[0]["at"]),
        F.unix_micros(F.col("out.by_day")["d"]),
    ).first()
    expected = [STAMPS_OUT["at"], STAMPS_OUT["log"][0]["at"], STAMPS_OUT["by_day"]["d"]]
    assert list(found) == [int(t.timestamp()) * 10**6 for t in expected]


def test_udf_awkward_names_select(spark: Any) -> None:
    actual, _ = run_udf(spark, "awkward")
    assert actual.select("out.*").columns == ["first name", "a.b", "select", "from"]
    row = actual.select(
        F.col("out.`a.b`").alias("ab"),
        F.expr("out.`first name`").alias("first"),
        F.col("out.select").alias("sel"),
        F.col("out.from").alias("frm"),
    ).first()
    assert row.asDict() == {"ab": "x", "first": "Ann", "sel": BIG, "frm": None}
    flat = actual.select("out.*").selectExpr("`a.b`", "`first name`", "`select`")
    assert flat.first().asDict() == {"a.b": "x", "first name": "Ann", "select": BIG}

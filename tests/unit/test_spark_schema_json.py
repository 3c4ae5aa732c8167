"""Pydantic -> Spark schema without a JVM: the StructType.jsonValue() dicts, and row values."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import sys
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl, condecimal
from pydantic.alias_generators import to_camel

from dbstruct.errors import SchemaError, SchemaMappingError
from dbstruct.spark._convert import null_row, to_frame, to_row
from dbstruct.spark.struct_types import PIP_HINT, spark_schema, spark_schema_json
from tests.corpus import (
    CORPUS,
    RECURSIVE,
    UNMAPPABLE,
    Aliased,
    AwkwardNames,
    EnumList,
    Links,
    Order,
    Priority,
    Scores,
    Sentiment,
    Sets,
    Ticket,
    UserExtract,
)

UTC = dt.timezone.utc


def field(name: str, type_: Any, comment: str | None = None) -> dict[str, Any]:
    metadata = {"comment": comment} if comment else {}
    return {"name": name, "type": type_, "nullable": True, "metadata": metadata}


def struct(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "struct", "fields": list(fields)}


def array(element: Any) -> dict[str, Any]:
    return {"type": "array", "elementType": element, "containsNull": True}


def map_(key: Any, value: Any) -> dict[str, Any]:
    return {"type": "map", "keyType": key, "valueType": value, "valueContainsNull": True}


def spark_type(annotation: Any, **field_kw: Any) -> Any:
    """The Spark JSON type of one field of a throwaway model."""
    model = type("M", (BaseModel,), {"__annotations__": {"x": annotation}, "x": Field(**field_kw)})
    return spark_schema_json(model)["fields"][0]["type"]


def mapping_error(annotation: Any) -> SchemaMappingError:
    with pytest.raises(SchemaMappingError) as info:
        spark_type(annotation)
    return info.value


# --------------------------------------------------------------- exact intermediate dicts
def test_user_extract_written_out() -> None:
    assert spark_schema_json(UserExtract) == {
        "type": "struct",
        "fields": [
            {"name": "name", "type": "string", "nullable": True, "metadata": {}},
            {"name": "age", "type": "long", "nullable": True, "metadata": {}},
        ],
    }


ADDRESS = struct(
    field("street", "string"),
    field("city", "string"),
    field("postcode", "string"),
    field("country", "string"),
)


def test_order_nests_structs_arrays_decimals_and_dates() -> None:
    line_item = struct(
        field("sku", "string"), field("quantity", "long"), field("unit_price", "decimal(10,2)")
    )
    customer = struct(
        field("name", "string"),
        field("email", "string", "Email if mentioned"),
        field("address", ADDRESS),
    )
    assert spark_schema_json(Order) == struct(
        field("order_id", "string"),
        field("placed_on", "date"),
        field("shipped_at", "timestamp"),
        field("items", array(line_item)),
        field("customer", customer),
    )


def test_ticket_literals_and_enums_take_their_value_type() -> None:
    assert spark_schema_json(Ticket) == struct(
        field("category", "string"),
        field("priority", "long"),
        field("product", "string"),
        field("needs_human", "boolean"),
        field("tags", array("string")),
    )


def test_aliases_name_the_fields() -> None:
    assert spark_schema_json(Aliased) == struct(
        field("fullName", "string"), field("birthDate", "date")
    )


def test_dicts_become_maps() -> None:
    assert spark_schema_json(Scores) == struct(
        field("per_aspect", map_("string", "double")), field("counts", map_("string", "long"))
    )


def test_awkward_aliases_pass_through_verbatim() -> None:
    assert spark_schema_json(AwkwardNames) == struct(
        field("first name", "string"),
        field("a.b", "string"),
        field("select", "long"),
        field("from", "string"),
    )


# ----------------------------------------------------------------------- whole corpus
def _everything_nullable(t: Any) -> bool:
    if not isinstance(t, dict):
        return True
    if t["type"] == "struct":
        return all(f["nullable"] and _everything_nullable(f["type"]) for f in t["fields"])
    if t["type"] == "array":
        return bool(t["containsNull"]) and _everything_nullable(t["elementType"])
    return bool(t["valueContainsNull"]) and _everything_nullable(t["valueType"])


@pytest.mark.parametrize("model", CORPUS, ids=lambda m: m.__name__)
def test_every_corpus_model_maps(model: type[BaseModel]) -> None:
    schema = spark_schema_json(model)
    assert [f["name"] for f in schema["fields"]] == [
        info.serialization_alias or info.alias or name for name, info in model.model_fields.items()
    ]
    assert _everything_nullable(schema)
    assert json.loads(json.dumps(schema)) == schema


@pytest.mark.parametrize(
    ("model", "where", "type_names"),
    [
        (RECURSIVE[0], "TreeNode.children[]", ["TreeNode"]),
        (RECURSIVE[1], "Person.manager", ["Person"]),
        (UNMAPPABLE[0], "AnyField.payload", ["Any"]),
        (UNMAPPABLE[1], "MixedUnion.value", ["Union[int, str]", "int | str"]),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_unmappable_models_name_model_field_and_type(
    model: type[BaseModel], where: str, type_names: list[str]
) -> None:
    with pytest.raises(SchemaMappingError) as info:
        spark_schema_json(model)
    message = str(info.value)
    assert where in message
    assert any(f"(type {name})" in message for name in type_names), message
    assert info.value.model == model.__name__
    assert info.value.field == where.split(".", 1)[1]
    assert isinstance(info.value, SchemaError) and isinstance(info.value, TypeError)


# -------------------------------------------------------------------------- type rules
class Color(enum.Enum):
    red = "r"
    green = "g"


class Mixed(enum.Enum):
    one = 1
    two = "two"


class Inner(BaseModel):
    x: Any


class Point(BaseModel):
    x: int


class SamePoint(BaseModel):
    x: int


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (bytes, "binary"),
        (dt.datetime, "timestamp"),
        (uuid.UUID, "string"),
        (HttpUrl, "string"),
        (EmailStr, "string"),
        (ipaddress.IPv4Address, "string"),
        (Color, "string"),
        (Priority, "long"),
        (Literal[1, 2], "long"),
        (Literal[True], "boolean"),
        (Literal[Sentiment.positive, "neutral"], "string"),
        (Literal["a", "b"] | None, "string"),
        (HttpUrl | str, "string"),
        (Point | SamePoint | None, struct(field("x", "long"))),
        (Annotated[int, Field(ge=0)], "long"),
        (tuple[int, int], array("long")),
        (tuple[str, ...], array("string")),
        (set[Sentiment], array("string")),
        (dict[int, str], map_("long", "string")),
        (dict[Priority, list[float]], map_("long", array("double"))),
        (list[dict[str, Point]], array(map_("string", struct(field("x", "long"))))),
    ],
    ids=repr,
)
def test_type_rules(annotation: Any, expected: Any) -> None:
    assert spark_type(annotation) == expected


@pytest.mark.parametrize(
    ("annotation", "field_kw", "expected"),
    [
        (Decimal, {}, "decimal(38,18)"),
        (Decimal, {"decimal_places": 2}, "decimal(38,2)"),
        (Decimal, {"max_digits": 9}, "decimal(38,18)"),
        (Decimal | None, {"max_digits": 6, "decimal_places": 3}, "decimal(6,3)"),
        (condecimal(max_digits=5, decimal_places=1), {}, "decimal(5,1)"),
        (
            list[Annotated[Decimal, Field(max_digits=4, decimal_places=2)]],
            {},
            array("decimal(4,2)"),
        ),
    ],
)
def test_decimal_precision_and_scale(annotation: Any, field_kw: Any, expected: Any) -> None:
    assert spark_type(annotation, **field_kw) == expected


@pytest.mark.parametrize(
    ("annotation", "words"),
    [
        (Literal["a", 1], "mix types (bigint, string)"),
        (Literal[1, True], "mix types (bigint, boolean)"),
        (Mixed, "mix types"),
        (int | float, "different Spark types (bigint, double)"),
        (Point | int, "different Spark types"),
        (tuple[int, str], "a tuple of different types (bigint, string)"),
        (dict[tuple[int, int], str], "map keys must be atomic"),
        (dict[str | None, int], "cannot be null"),
        (list, "give the item type"),
        (list[Any], "Any has no single Spark type"),
        (dt.time, "unsupported type"),
        (Decimal, "outside Spark's decimal"),
    ],
    ids=repr,
)
def test_refused_types_say_why(annotation: Any, words: str) -> None:
    kw = {"max_digits": 40, "decimal_places": 2} if annotation is Decimal else {}
    with pytest.raises(SchemaMappingError, match=r"cannot map M\.x") as info:
        spark_type(annotation, **kw)
    assert words in str(info.value)


def test_nested_errors_give_the_dotted_path() -> None:
    class Outer(BaseModel):
        items: list[Inner]
        by_key: dict[str, Inner]

    with pytest.raises(SchemaMappingError, match=r"Outer\.items\[\]\.x \(type Any\)") as info:
        spark_schema_json(Outer)
    assert (info.value.model, info.value.field) == ("Outer", "items[].x")

    class ByKey(BaseModel):
        by_key: dict[str, Inner]

    with pytest.raises(SchemaMappingError, match=r"ByKey\.by_key\{\}\.x"):
        spark_schema_json(ByKey)


def test_names_descriptions_and_exclusions() -> None:
    class Names(BaseModel):
        model_config = ConfigDict(alias_generator=to_camel)

        first_name: str = Field(description="Given name")
        last_name: str = Field(serialization_alias="surname", alias="lastName")
        secret: str = Field("", exclude=True)

    assert spark_schema_json(Names) == struct(
        field("firstName", "string", "Given name"), field("surname", "string")
    )


def test_names_that_differ_only_in_case_collide() -> None:
    class Clash(BaseModel):
        a: int = Field(alias="Name")
        b: int = Field(alias="name")

    with pytest.raises(SchemaMappingError, match=r"Clash\.b .*collides with 'Name'"):
        spark_schema_json(Clash)


def test_unresolved_forward_references_are_refused() -> None:
    class Dangling(BaseModel):
        later: Later  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(SchemaMappingError, match=r"Dangling \(type Dangling\).*not fully defined"):
        spark_schema_json(Dangling)


def test_not_a_model_is_refused() -> None:
    with pytest.raises(SchemaMappingError, match="expected a pydantic model class"):
        spark_schema_json(dict)  # type: ignore[arg-type]


def test_results_are_fresh_dicts_from_a_cached_walk() -> None:
    first = spark_schema_json(Order)
    first["fields"].clear()
    assert len(spark_schema_json(Order)["fields"]) == 5


def test_spark_schema_without_pyspark_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ImportError) as info:
        spark_schema(UserExtract)
    assert PIP_HINT == "pip install 'dbstruct[spark]'"
    assert PIP_HINT in str(info.value)


# ------------------------------------------------------------------------- row values
ORDER = Order.model_validate(
    {
        "order_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "placed_on": "2024-03-01",
        "shipped_at": "2024-03-02T10:30:00+02:00",
        "items": [{"sku": "ABC-1234", "quantity": 2, "unit_price": "9.5"}],
        "customer": {"name": "Ann", "address": {"street": "Main 1", "city": "Utrecht"}},
    }
)


def test_to_row_matches_the_schema() -> None:
    assert to_row(ORDER) == {
        "order_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "placed_on": dt.date(2024, 3, 1),
        "shipped_at": dt.datetime(2024, 3, 2, 8, 30, tzinfo=UTC),
        "items": [{"sku": "ABC-1234", "quantity": 2, "unit_price": Decimal("9.50")}],
        "customer": {
            "name": "Ann",
            "email": None,
            "address": {"street": "Main 1", "city": "Utrecht", "postcode": None, "country": "NL"},
        },
    }
    assert str(to_row(ORDER)["items"][0]["unit_price"]) == "9.50"


def test_to_row_plain_values_for_enums_urls_sets_and_aliases() -> None:
    sets = Sets(labels={"b", "c", "a"}, pair=(1, 2), many=("x",))
    assert to_row(sets) == {"labels": ["a", "b", "c"], "pair": [1, 2], "many": ["x"]}
    enums = EnumList(sentiments=[Sentiment.negative], priorities={"p": Priority.high})
    row = to_row(enums)
    assert row == {"sentiments": ["negative"], "priorities": {"p": 3}}
    assert type(row["sentiments"][0]) is str and type(row["priorities"]["p"]) is int
    links = to_row(Links(homepage="https://example.com/a", ids=[uuid.UUID(int=1)]))
    assert links == {
        "homepage": "https://example.com/a",
        "docs": None,
        "ids": ["00000000-0000-0000-0000-000000000001"],
    }
    awkward = AwkwardNames.model_validate({"first name": "A", "a.b": "x", "select": 1})
    assert to_row(awkward) == {"first name": "A", "a.b": "x", "select": 1, "from": None}


def test_values_that_do_not_fit_become_null() -> None:
    class Loose(BaseModel):
        amount: Decimal
        count: int
        when: dt.datetime

    row = to_row(Loose(amount=Decimal("1" * 21), count=2**63, when=dt.datetime(2024, 1, 1, 12, 0)))
    assert row == {"amount": None, "count": None, "when": dt.datetime(2024, 1, 1, 12, tzinfo=UTC)}
    fits = to_row(Loose(amount=Decimal("1" * 20 + ".1234567890123456785"), count=-(2**63), when=0))
    assert fits["amount"] == Decimal("1" * 20 + ".123456789012345678")  # half-even, scale 18
    assert fits["count"] == -(2**63)


def test_to_frame_one_object_column_per_field_and_null_rows() -> None:
    frame = to_frame(Order, [ORDER, None])
    assert list(frame.columns) == [f["name"] for f in spark_schema_json(Order)["fields"]]
    assert all(dtype == np.dtype(object) for dtype in frame.dtypes)
    assert frame.iloc[0].to_dict() == to_row(ORDER)
    assert frame.iloc[1].to_dict() == null_row(Order) == dict.fromkeys(frame.columns)
    assert len(to_frame(type("Empty", (BaseModel,), {}), [None, None, None])) == 3
    with pytest.raises(TypeError, match="expected Order or None, got UserExtract"):
        to_frame(Order, [UserExtract(name="a", age=1)])

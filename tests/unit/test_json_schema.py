"""The schema compiler: accepted by the Databricks rules, faithful to the models, cached."""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, Literal, TypeVar

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from dbstruct._json_schema_rules import schema_violations
from dbstruct.errors import SchemaError
from dbstruct.json_schema import CompiledSchema, compile_schema
from tests import corpus
from tests.corpus import CORPUS, RECURSIVE, UNMAPPABLE

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
UUID = "8c7e2f36-3f4a-4a3e-9f7e-2d1c5b6a7e80"
ADDRESS = {"street": "Main 1", "city": "Utrecht", "postcode": "1234 AB"}
ENTITY = {"text": "Acme", "kind": "org", "start": 0, "end": 4}
PRODUCT = {"id": UUID, "name": "Pen", "price": "2.50", "in_stock": True, "released": "2024-02-01"}
NESTED2 = {"inner": {"value": 1}, "inners": [{"value": 2}, {"value": 3}]}

# One realistic input per corpus model: what a good answer would contain.
SAMPLES: dict[str, dict[str, Any]] = {
    "UserExtract": {"name": "Ada", "age": 36},
    "Review": {"sentiment": "positive", "stars": 4, "summary": "Works well"},
    "Address": {**ADDRESS, "country": "BE"},
    "Customer": {"name": "Ada", "email": None, "address": ADDRESS},
    "LineItem": {"sku": "ABC-1234", "quantity": 2, "unit_price": "9.99"},
    "Order": {
        "order_id": UUID,
        "placed_on": "2024-05-31",
        "shipped_at": "2024-06-01T08:00:00Z",
        "items": [{"sku": "ABC-1234", "quantity": 1, "unit_price": "10.50"}],
        "customer": {"name": "Ada", "email": "ada@example.com", "address": ADDRESS},
    },
    "Ticket": {"category": "bug", "priority": 3, "needs_human": False, "tags": ["login"]},
    "Aliased": {"fullName": "Ada Lovelace", "birthDate": "1815-12-10"},
    "Scores": {"per_aspect": {"price": 0.5, "speed": 1.0}, "counts": {"a": 2}},
    "Nested1": {"middle": NESTED2, "by_key": {"x": NESTED2}},
    "OptionalEverything": {"a": 1, "b": None, "c": True, "d": ["x"], "e": ADDRESS},
    "Constrained": {"code": "abc", "ratio": 0.25, "count": 10, "items": [1, 2]},
    "WithAnnotated": {"score": 7.5, "label": "ok"},
    "Timestamps": {"created": "2024-05-31T14:30:00+02:00", "due": "2024-06-30", "duration": 1.5},
    "Money": {"amount": "12.34", "currency": "EUR"},
    "Invoice": {
        "invoice_number": "INV-1",
        "total": {"amount": "3.00", "currency": "USD"},
        "lines": [{"amount": "1.00", "currency": "USD"}, {"amount": "2.00", "currency": "USD"}],
        "paid": True,
    },
    "Entities": {"entities": [ENTITY]},
    "Contract": {
        "parties": ["A", "B"],
        "effective_date": "2024-01-01",
        "auto_renews": True,
        "termination_notice_days": 30,
    },
    "Links": {"homepage": "https://example.com/", "docs": None, "ids": [UUID]},
    "Sets": {"labels": ["a", "b"], "pair": [1, 2], "many": ["x", "y", "z"]},
    "Defaults": {"language": "nl", "flags": [True]},
    "DeepList": {"matrix": [[1, 2], [3]], "groups": [[ENTITY], []]},
    "Documented": {"title": "Broken login", "body_language": "en"},
    "AwkwardNames": {"first name": "Ada", "a.b": "x", "select": 1, "from": "NL"},
    "LiteralMixed": {"level": 2, "flag": True},
    "EnumList": {"sentiments": ["neutral"], "priorities": {"x": 1}},
    "Catalog": {"products": [PRODUCT], "by_category": {"office": [PRODUCT]}},
    "Contact": {"email": "ada@example.com", "name": "Ada"},
}


def ids(models: list[type[BaseModel]]) -> list[str]:
    return [m.__name__ for m in models]


def schema_nodes(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every schema node (not the property-name maps), parents first."""
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from schema_nodes(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from schema_nodes(schema[key])


def to_wire(data: Any, schema: dict[str, Any]) -> Any:
    """``model_dump(mode="json")`` as an endpoint would answer it: numbers as numbers
    (Decimal dumps as a string) and, in strict mode, maps as key/value pairs."""
    kind = schema.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    items = schema.get("items") or {}
    if isinstance(data, dict) and "array" in kinds:  # strict mode's key/value pairs
        value = items["properties"]["value"]
        return [{"key": k, "value": to_wire(v, value)} for k, v in data.items()]
    if isinstance(data, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: to_wire(v, props[k]) if k in props else v for k, v in data.items()}
    if isinstance(data, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: to_wire(v, schema["additionalProperties"]) for k, v in data.items()}
    if isinstance(data, list):
        return [to_wire(v, items) for v in data]
    if isinstance(data, str) and "number" in kinds:
        return float(data)
    return data


def assert_round_trip(model: type[BaseModel], compiled: CompiledSchema) -> None:
    instance = model.model_validate(SAMPLES[model.__name__])
    wire = to_wire(instance.model_dump(mode="json", by_alias=True), compiled.parameters)
    jsonschema.Draft202012Validator(compiled.parameters).validate(wire)
    assert model.model_validate(compiled.decode(json.loads(json.dumps(wire)))) == instance


def test_every_corpus_model_has_a_sample() -> None:
    assert set(SAMPLES) == set(ids(CORPUS))


# ----------------------------------------------------------------- the corpus


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize("model", CORPUS, ids=ids(CORPUS))
def test_corpus_compiles_to_an_accepted_schema(model: type[BaseModel], strict: bool) -> None:
    compiled = compile_schema(model, strict=strict)
    assert schema_violations(compiled.parameters, strict=strict) == []
    jsonschema.Draft202012Validator.check_schema(compiled.parameters)
    assert compiled.parameters["type"] == "object"
    assert compiled.json == json.dumps(
        compiled.parameters, separators=(",", ":"), ensure_ascii=False
    )
    assert NAME.match(compiled.name)
    assert compiled.strict is strict


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize("model", CORPUS, ids=ids(CORPUS))
def test_compiled_schema_accepts_real_answers(model: type[BaseModel], strict: bool) -> None:
    assert_round_trip(model, compile_schema(model, strict=strict))


@pytest.mark.parametrize("model", CORPUS, ids=ids(CORPUS))
def test_only_the_supported_core_keywords_are_emitted(model: type[BaseModel]) -> None:
    allowed = {
        "type",
        "description",
        "enum",
        "properties",
        "required",
        "additionalProperties",
        "items",
    }
    for strict in (False, True):
        for node in schema_nodes(compile_schema(model, strict=strict).parameters):
            assert set(node) <= allowed, node


def test_compiled_schemas_reject_wrong_answers() -> None:
    def valid(model: type[BaseModel], data: Any) -> bool:
        schema = compile_schema(model).parameters
        return bool(jsonschema.Draft202012Validator(schema).is_valid(data))

    assert not valid(corpus.Review, {"sentiment": "angry", "stars": 3, "summary": "x"})
    assert not valid(corpus.Order, {**SAMPLES["Order"], "items": None})
    assert not valid(corpus.Customer, {"name": "Ada", "address": {"city": "Utrecht"}})
    assert not valid(corpus.OptionalEverything, {"a": "one"})
    assert not valid(corpus.Scores, {"per_aspect": {"price": "high"}})
    assert not valid(corpus.LiteralMixed, {"level": 4, "flag": True})


# ----------------------------------------------------------------- what the schema says


def prop(model: type[BaseModel], name: str, strict: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = compile_schema(model, strict=strict).parameters["properties"][name]
    return result


def test_nested_models_and_enums_are_inlined() -> None:
    address = prop(corpus.Customer, "address")
    assert address["type"] == "object" and address["required"] == ["street", "city"]
    assert prop(corpus.Review, "sentiment") == {
        "type": "string",
        "enum": ["positive", "neutral", "negative"],
    }
    assert prop(corpus.Ticket, "priority") == {"type": "integer", "enum": [1, 2, 3]}
    assert prop(corpus.EnumList, "priorities")["additionalProperties"]["enum"] == [1, 2, 3]
    groups = prop(corpus.DeepList, "groups")
    assert groups["items"]["items"]["properties"]["kind"]["enum"] == ["person", "org", "place"]
    by_key = prop(corpus.Nested1, "by_key")["additionalProperties"]
    assert by_key["properties"]["inners"]["items"]["properties"] == {"value": {"type": "integer"}}


def test_optional_becomes_a_type_and_null_pair() -> None:
    assert prop(corpus.OptionalEverything, "a") == {"type": ["integer", "null"]}
    assert prop(corpus.OptionalEverything, "d") == {
        "type": ["array", "null"],
        "items": {"type": "string"},
    }
    e = prop(corpus.OptionalEverything, "e")
    assert e["type"] == ["object", "null"] and "street" in e["properties"]
    assert "required" not in compile_schema(corpus.OptionalEverything).parameters


class Mood(str, enum.Enum):
    happy = "happy"
    sad = "sad"


class NullableChoices(BaseModel):
    mood: Mood | None = None
    level: Literal[1, 2] | None = None
    nothing_or_x: Literal["x", None] = None


def test_nullable_enums_admit_null_in_the_enum() -> None:
    mood = prop(NullableChoices, "mood")
    assert mood == {"type": ["string", "null"], "enum": ["happy", "sad", None]}
    assert prop(NullableChoices, "level") == {"type": ["integer", "null"], "enum": [1, 2, None]}
    assert prop(NullableChoices, "nothing_or_x") == {
        "type": ["string", "null"],
        "enum": ["x", None],
    }
    validator = jsonschema.Draft202012Validator(compile_schema(NullableChoices).parameters)
    assert validator.is_valid({"mood": None, "level": None, "nothing_or_x": None})
    assert not validator.is_valid({"mood": "angry"})


def test_literals_become_enums_never_const() -> None:
    assert prop(corpus.LiteralMixed, "flag") == {"type": "boolean", "enum": [True]}
    assert prop(corpus.LiteralMixed, "kind")["enum"] == ["a"]
    assert prop(corpus.Ticket, "category")["enum"][0] == "billing"


def test_dropped_constraints_are_hinted_in_descriptions() -> None:
    assert prop(corpus.LineItem, "sku") == {
        "type": "string",
        "description": r"pattern ^[A-Z]{3}-\d{4}$",
    }
    assert prop(corpus.Review, "stars")["description"] == "Star rating, 1 to 5 (1 <= value <= 5)"
    assert prop(corpus.Review, "summary")["description"] == "at most 200 characters"
    assert prop(corpus.LineItem, "quantity")["description"] == "value > 0"
    code = prop(corpus.Constrained, "code")["description"]
    assert "2 to 8 characters" in code and "pattern ^[a-z]+$" in code
    assert prop(corpus.Constrained, "ratio")["description"] == "0 <= value <= 1"
    assert prop(corpus.Constrained, "count")["description"] == "multiple of 5"
    assert prop(corpus.Constrained, "items")["description"] == "1 to 3 items"
    assert prop(corpus.Ticket, "tags")["description"] == "at most 5 items"
    assert prop(corpus.Sets, "labels")["description"] == "unique items"
    assert prop(corpus.Contract, "termination_notice_days")["description"] == "value >= 0"


def test_special_types_map_to_json_types_with_format_hints() -> None:
    assert prop(corpus.LineItem, "unit_price") == {
        "type": "number",
        "description": "at most 10 digits, at most 2 decimal places",
    }
    assert prop(corpus.Order, "placed_on") == {"type": "string", "description": "date, YYYY-MM-DD"}
    assert "ISO 8601" in prop(corpus.Timestamps, "created")["description"]
    assert prop(corpus.Order, "order_id") == {"type": "string", "description": "UUID"}
    assert prop(corpus.Links, "homepage")["description"].startswith("URL")
    assert prop(corpus.Sets, "pair") == {
        "type": "array",
        "description": "exactly 2 items",
        "items": {"type": "integer"},
    }
    assert prop(corpus.Sets, "many") == {"type": "array", "items": {"type": "string"}}


def test_descriptions_are_kept_and_titles_and_defaults_are_gone() -> None:
    assert prop(corpus.WithAnnotated, "label") == {"type": "string", "description": "Short label"}
    assert prop(corpus.Customer, "email")["description"] == "Email if mentioned"
    assert prop(corpus.Contract, "parties")["description"] == "Legal names of all parties"
    documented = prop(corpus.Documented, "title")["description"]
    assert documented == 'The title, as written (e.g. "Broken login")'
    assert prop(corpus.Address, "country") == {"type": "string", "description": 'default "NL"'}
    for model in CORPUS:
        for node in schema_nodes(compile_schema(model).parameters):
            assert "title" not in node and "default" not in node


def test_model_descriptions_come_from_docstrings() -> None:
    assert compile_schema(corpus.Review).description == "A product review."
    assert compile_schema(corpus.UserExtract).description == "Extract a UserExtract."
    assert "description" not in compile_schema(corpus.Review).parameters


def test_aliases_are_the_property_names() -> None:
    aliased = compile_schema(corpus.Aliased).parameters
    assert list(aliased["properties"]) == ["fullName", "birthDate"]
    assert aliased["required"] == ["fullName"]
    awkward = compile_schema(corpus.AwkwardNames, strict=True).parameters
    assert awkward["required"] == ["first name", "a.b", "select", "from"]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]


def test_names_are_valid_function_names() -> None:
    assert compile_schema(Page[corpus.Entity]).name == "Page_Entity_"
    long = create_model("X" * 80, a=(int, ...))
    assert compile_schema(long).name == "X" * 64


# ----------------------------------------------------------------- strict mode


def test_strict_closes_objects_and_makes_defaults_nullable() -> None:
    params = compile_schema(corpus.Invoice, strict=True).parameters
    assert params["additionalProperties"] is False
    assert params["required"] == ["invoice_number", "total", "lines", "paid"]
    assert params["properties"]["paid"]["type"] == ["boolean", "null"]
    assert params["properties"]["total"]["additionalProperties"] is False
    # a null for a field with a default means "use the default"
    compiled = compile_schema(corpus.Address, strict=True)
    answer = {"street": "Main 1", "city": "Utrecht", "postcode": None, "country": None}
    jsonschema.Draft202012Validator(compiled.parameters).validate(answer)
    assert corpus.Address.model_validate(compiled.decode(answer)).country == "NL"
    literal = compile_schema(corpus.LiteralMixed, strict=True)
    assert (
        corpus.LiteralMixed.model_validate(
            literal.decode({"level": 1, "flag": True, "kind": None})
        ).kind
        == "a"
    )


def test_strict_sends_maps_as_key_value_pairs_and_decodes_them() -> None:
    compiled = compile_schema(corpus.Scores, strict=True)
    per_aspect = compiled.parameters["properties"]["per_aspect"]
    assert per_aspect["type"] == "array"
    assert per_aspect["items"]["required"] == ["key", "value"]
    answer = {"per_aspect": [{"key": "price", "value": 0.5}], "counts": None}
    jsonschema.Draft202012Validator(compiled.parameters).validate(answer)
    scores = corpus.Scores.model_validate(compiled.decode(answer))
    assert scores.per_aspect == {"price": 0.5} and scores.counts == {}


def test_decode_is_the_identity_without_strict() -> None:
    compiled = compile_schema(corpus.Scores)
    answer = {"per_aspect": {"price": 0.5}}
    assert compiled.decode(answer) is answer


# ----------------------------------------------------------------- refusals


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_recursive_models_name_the_field(strict: bool) -> None:
    expected = {"TreeNode": "children", "Person": "manager"}
    for model in RECURSIVE:
        with pytest.raises(SchemaError, match=expected[model.__name__]) as info:
            compile_schema(model, strict=strict)
        assert info.value.model == model.__name__
        assert info.value.field == expected[model.__name__]


class Forest(BaseModel):
    name: str
    trees: list[corpus.TreeNode]


def test_recursion_below_the_root_is_found_too() -> None:
    with pytest.raises(SchemaError, match=r"Forest.*'children' \(in TreeNode\)"):
        compile_schema(Forest)


def test_any_and_scalar_unions_are_untyped_without_strict_and_refused_with_it() -> None:
    for model in UNMAPPABLE:
        compiled = compile_schema(model)
        assert schema_violations(compiled.parameters) == []
        with pytest.raises(SchemaError, match=next(iter(model.model_fields))):
            compile_schema(model, strict=True)
    assert prop(corpus.MixedUnion, "value") == {"description": "integer or string"}
    validator = jsonschema.Draft202012Validator(compile_schema(corpus.MixedUnion).parameters)
    assert validator.is_valid({"value": 3}) and validator.is_valid({"value": "x"})


class ShapeA(BaseModel):
    a: int


class ShapeB(BaseModel):
    b: str


class Shapes(BaseModel):
    shape: ShapeA | ShapeB


def test_unions_of_objects_are_refused() -> None:
    with pytest.raises(SchemaError, match=r"'shape'.*objects or arrays"):
        compile_schema(Shapes)


def test_mixed_tuples_are_untyped_items_without_strict() -> None:
    model = create_model("Pair", pair=(tuple[int, str], ...))
    items = prop(model, "pair")["items"]
    assert items == {"description": "item 1: integer; item 2: string"}
    with pytest.raises(SchemaError, match="'pair'"):
        compile_schema(model, strict=True)


def test_non_models_and_types_without_json_schema_are_refused() -> None:
    with pytest.raises(SchemaError):
        compile_schema(dict)  # type: ignore[arg-type]
    model = create_model("Hook", on_done=(Callable[[], int], ...))
    with pytest.raises(SchemaError, match="Hook"):
        compile_schema(model)


class Forbidding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: dt.time
    many: list[Any] = Field(default_factory=list)


def test_extra_forbid_is_kept_and_untyped_lists_stay_open() -> None:
    params = compile_schema(Forbidding).parameters
    assert params["additionalProperties"] is False
    assert params["properties"]["when"] == {"type": "string", "description": "time, HH:MM:SS"}
    assert params["properties"]["many"] == {"type": "array"}


# ----------------------------------------------------------------- caching


def test_compiling_is_cached_per_model_and_mode() -> None:
    first = compile_schema(corpus.Order)
    assert compile_schema(corpus.Order) is first
    assert compile_schema(corpus.Order, strict=False) is first
    assert compile_schema(corpus.Order, strict=True) is not first
    start = time.perf_counter()
    for _ in range(10_000):
        compile_schema(corpus.Order)
    assert time.perf_counter() - start < 0.5  # ~1 microsecond a call in practice


def test_output_is_deterministic_and_copies_are_private() -> None:
    from dbstruct.json_schema import _compile_cached

    before = compile_schema(corpus.Catalog, strict=True).json
    _compile_cached.cache_clear()
    assert compile_schema(corpus.Catalog, strict=True).json == before
    compiled = compile_schema(corpus.Catalog)
    copy = compiled.fresh_parameters()
    copy["properties"].clear()
    assert compiled.parameters["properties"] and copy == {**compiled.parameters, "properties": {}}

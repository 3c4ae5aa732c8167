"""The Databricks schema-subset checker: it must flag what endpoints reject, with paths."""

from __future__ import annotations

from typing import Any

import pytest

from dbstruct._json_schema_rules import (
    MAX_SCHEMA_KEYS,
    MAX_TOOL_SCHEMA_KEYS,
    count_keys,
    schema_violations,
)
from tests.corpus import Customer, LineItem, OptionalEverything, Order, Review, Sets, UserExtract


def obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props)}


def strict_obj(**props: Any) -> dict[str, Any]:
    return {**obj(**props), "additionalProperties": False}


def has(found: list[str], path: str, words: str) -> bool:
    return any(m.startswith(f"{path}:") and words in m for m in found)


# ----------------------------------------------------------------- raw pydantic schemas


def test_raw_nested_model_schema_is_rejected_for_ref_and_defs() -> None:
    found = schema_violations(Customer.model_json_schema())
    assert has(found, "$.properties.address", "'$ref'")
    assert has(found, "$", "'$defs'")
    # Optional[str] inside the definitions block: anyOf, found under its own path
    assert has(found, "$.$defs.Address.properties.postcode", "'anyOf'")


def test_raw_optional_fields_are_rejected_for_any_of() -> None:
    found = schema_violations(OptionalEverything.model_json_schema())
    for name in "abcdef":
        assert has(found, f"$.properties.{name}", "'anyOf'"), name


def test_raw_enum_field_is_a_ref() -> None:
    assert has(schema_violations(Review.model_json_schema()), "$.properties.sentiment", "'$ref'")


def test_raw_pattern_and_decimal_any_of_are_rejected() -> None:
    found = schema_violations(LineItem.model_json_schema())
    assert has(found, "$.properties.sku", "'pattern'")
    assert has(found, "$.properties.unit_price", "'anyOf'")


def test_raw_fixed_tuple_uses_prefix_items() -> None:
    assert has(schema_violations(Sets.model_json_schema()), "$.properties.pair", "'prefixItems'")


def test_raw_pattern_inside_definitions_has_its_path() -> None:
    found = schema_violations(Order.model_json_schema())
    assert has(found, "$.$defs.LineItem.properties.sku", "'pattern'")
    assert has(found, "$.properties.items.items", "'$ref'")


def test_plain_schema_without_strict_rules_passes_only_non_strict() -> None:
    raw = UserExtract.model_json_schema()
    assert schema_violations(raw) == []
    found = schema_violations(raw, strict=True)
    assert has(found, "$", "additionalProperties")


# ----------------------------------------------------------------- Databricks rules


def test_nested_paths_through_arrays_and_maps() -> None:
    schema = obj(
        xs={"type": "array", "items": {"type": "string", "pattern": "^a$"}},
        m={"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}]}},
    )
    found = schema_violations(schema)
    assert has(found, "$.properties.xs.items", "'pattern'")
    assert has(found, "$.properties.m.additionalProperties", "'oneOf'")


def test_awkward_property_names_are_quoted_in_paths() -> None:
    found = schema_violations(obj(**{"first name": {"allOf": [{"type": "string"}]}}))
    assert has(found, '$.properties["first name"]', "'allOf'")


def test_a_property_named_pattern_is_not_the_keyword() -> None:
    assert schema_violations(obj(pattern={"type": "string"}, title={"type": "string"})) == []


@pytest.mark.parametrize(
    ("kind", "ok"),
    [
        ("string", True),
        (["string", "null"], True),
        (["null", "object"], True),
        (["string", "integer"], False),
        (["string", "integer", "null"], False),
        (["string"], False),
        (["null", "null"], False),
        ("strng", False),
        (["strng", "null"], False),
    ],
)
def test_type_lists_only_as_type_and_null(kind: Any, ok: bool) -> None:
    found = schema_violations(obj(x={"type": kind}))
    assert (found == []) is ok, found
    if not ok:
        assert found[0].startswith("$.properties.x:")


def test_items_in_tuple_form_are_rejected() -> None:
    found = schema_violations(obj(t={"type": "array", "items": [{"type": "integer"}]}))
    assert has(found, "$.properties.t", "tuple form")


def test_root_must_be_an_object() -> None:
    assert has(schema_violations({"type": "array", "items": {"type": "string"}}), "$", "root")
    assert schema_violations([1, 2]) == ["$: the schema must be a JSON object"]


def test_size_keywords_are_accepted_because_the_docs_only_say_unenforced() -> None:
    schema = obj(s={"type": "string", "maxLength": 3}, n={"type": "integer", "minimum": 0})
    assert schema_violations(schema) == []


# ----------------------------------------------------------------- key limits


def test_key_count_sums_properties_at_every_level() -> None:
    inner = obj(a={"type": "string"}, b={"type": "string"})
    schema = obj(
        x=inner,
        ys={"type": "array", "items": inner},
        m={"type": "object", "additionalProperties": inner},
    )
    assert count_keys(schema) == 3 + 2 * 3


def test_tool_limit_is_16_keys_and_response_format_limit_is_64() -> None:
    seventeen = obj(**{f"f{i}": {"type": "string"} for i in range(17)})
    assert schema_violations(seventeen) == []
    found = schema_violations(seventeen, max_keys=MAX_TOOL_SCHEMA_KEYS)
    assert found == ["$: 17 keys exceed the maximum of 16 keys in a schema"]
    many = obj(**{f"f{i}": {"type": "string"} for i in range(MAX_SCHEMA_KEYS + 1)})
    assert has(schema_violations(many), "$", "65 keys")
    assert schema_violations(many, max_keys=None) == []


# ----------------------------------------------------------------- strict mode


def test_strict_needs_closed_objects_with_everything_required() -> None:
    schema = obj(a={"type": "string"}, b=obj(c={"type": "integer"}))
    schema["required"] = ["a"]
    found = schema_violations(schema, strict=True)
    assert has(found, "$", "missing ['b']")
    assert has(found, "$", "additionalProperties")
    assert has(found, "$.properties.b", "additionalProperties")
    assert (
        schema_violations(
            strict_obj(a={"type": "string"}, b=strict_obj(c={"type": "integer"})), strict=True
        )
        == []
    )


def test_strict_rejects_maps_untyped_schemas_and_unknown_formats() -> None:
    schema = strict_obj(
        m={"type": "object", "additionalProperties": {"type": "string"}},
        anything={},
        url={"type": "string", "format": "uri"},
        day={"type": "string", "format": "date"},
    )
    found = schema_violations(schema, strict=True)
    assert has(found, "$.properties.m", "additionalProperties")
    assert has(found, "$.properties.anything", "'type'")
    assert has(found, "$.properties.url", "'uri'")
    assert not any(m.startswith("$.properties.day") for m in found)
    assert schema_violations(schema) == []  # all fine without strict


def test_strict_nullable_object_still_needs_closing() -> None:
    schema = strict_obj(o={"type": ["object", "null"], "properties": {}, "required": []})
    assert has(schema_violations(schema, strict=True), "$.properties.o", "additionalProperties")

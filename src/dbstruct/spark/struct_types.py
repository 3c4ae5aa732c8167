"""Pydantic model -> Spark schema, through a JSON-like intermediate that needs no JVM.

    class UserExtract(BaseModel):
        name: str
        age: int = Field(description="in years")

    spark_schema_json(UserExtract)["fields"][1]
    # {"name": "age", "type": "long", "nullable": True, "metadata": {"comment": "in years"}}
    spark_schema(UserExtract).simpleString()  # "struct<name:string,age:bigint>"

:func:`spark_schema_json` walks the Python annotations (``model_fields``, ``typing.get_origin``
and ``get_args``; never ``model_json_schema``) and returns the dict that
``StructType.jsonValue()`` would; :func:`spark_schema` hands it to ``StructType.fromJson``.
The walk is cached per model class, and errors are raised by the call itself: the UDF calls
:func:`spark_schema` on the driver when it is built, never inside a task.

Mapping (every field and element is nullable: a model answer can fail):

    str, UUID, HttpUrl/AnyUrl, EmailStr, NameEmail,
    IP addresses, paths                 string
    int                                 bigint (long)
    float                               double
    bool                                boolean
    Decimal(max_digits=p, decimal_places=s)  decimal(p,s)
    Decimal(decimal_places=s)           decimal(38,s)
    Decimal, Decimal(max_digits=p)      decimal(38,18), the type pyspark infers for Python Decimal
    date / datetime                     date / timestamp
    bytes                               binary
    Enum, Literal                       their values' type (str -> string, int -> bigint,
                                        bool -> boolean); mixed value types are refused
    list/set/frozenset/Sequence[T],
    tuple[T, ...], tuple[T, T]          array<T>; a tuple of different types is refused
    dict/Mapping[K, V]                  map<K, V>; K may be any type that maps to an atomic
                                        Spark type (dict[int, V] -> map<bigint, V>); complex
                                        or Optional keys are refused (Spark keys are non-null)
    BaseModel                           struct, also inside arrays and maps
    Optional[T], Annotated[T, ...], NewType, type aliases   unwrap to T

Field names are the serialization names (``by_alias``): ``serialization_alias``, else ``alias``,
else the attribute name; two names that differ only in case are refused, as Spark resolves
names case-insensitively by default. A field description becomes the field's metadata
``{"comment": ...}``. Fields with ``exclude=True`` are left out, as ``model_dump`` leaves them out.
A union is accepted only when all its members map to the same Spark type (``HttpUrl | str``);
unions of different types, ``Any`` and recursive models raise :class:`SchemaMappingError`
naming the model, the field path (``Order.items[].sku``; ``{}`` marks map values) and the type.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import datetime as dt
import enum
import ipaddress
import pathlib
import types
import typing
import uuid
import weakref
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias, Union

import typing_extensions as te
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dbstruct.errors import SchemaMappingError

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

__all__ = ["require_pyspark", "spark_schema", "spark_schema_json"]

PIP_HINT = "pip install 'dbstruct[spark]'"

# Spark's DecimalType limits; (38, 18) is also what pyspark infers for a Python Decimal.
MAX_PRECISION = 38
DEFAULT_DECIMAL = (38, 18)


# ------------------------------------------------------------------------ the intermediate
@dataclass(frozen=True)
class Atomic:
    """A Spark atomic type by its JSON name: string, long, double, boolean, date, ..."""

    name: str

    def json(self) -> str:
        return self.name


@dataclass(frozen=True)
class DecimalNode:
    precision: int
    scale: int

    def json(self) -> str:
        return f"decimal({self.precision},{self.scale})"


@dataclass(frozen=True)
class ArrayNode:
    element: Node

    def json(self) -> dict[str, Any]:
        return {"type": "array", "elementType": self.element.json(), "containsNull": True}


@dataclass(frozen=True)
class MapNode:
    key: Node
    value: Node

    def json(self) -> dict[str, Any]:
        return {
            "type": "map",
            "keyType": self.key.json(),
            "valueType": self.value.json(),
            "valueContainsNull": True,
        }


@dataclass(frozen=True)
class FieldNode:
    attr: str  # the Python attribute the value is read from
    name: str  # the Spark field name
    node: Node
    comment: str | None

    def json(self) -> dict[str, Any]:
        metadata = {"comment": self.comment} if self.comment else {}
        return {"name": self.name, "type": self.node.json(), "nullable": True, "metadata": metadata}


@dataclass(frozen=True)
class StructNode:
    # No reference to the model class: the cache holds models weakly, and two models of the
    # same shape compare equal (a union of them has one Spark type and converts alike).
    fields: tuple[FieldNode, ...]

    def json(self) -> dict[str, Any]:
        return {"type": "struct", "fields": [f.json() for f in self.fields]}


Node: TypeAlias = Atomic | DecimalNode | ArrayNode | MapNode | StructNode

STRING = Atomic("string")
_SCALARS: tuple[tuple[type, Atomic], ...] = (  # order matters: bool < int, datetime < date
    (bool, Atomic("boolean")),
    (int, Atomic("long")),
    (float, Atomic("double")),
    (dt.datetime, Atomic("timestamp")),
    (dt.date, Atomic("date")),
    (bytes, Atomic("binary")),
    (str, STRING),
)


def _string_like() -> tuple[type, ...]:
    """Classes whose values are written as their ``str()``: ids, URLs, emails, addresses."""
    import pydantic.networks as net
    import pydantic_core

    names = "AnyUrl _BaseUrl _BaseMultiHostUrl EmailStr NameEmail IPvAnyAddress".split()
    names += ["IPvAnyInterface", "IPvAnyNetwork"]
    found = [c for c in (getattr(net, n, None) for n in names) if isinstance(c, type)]
    # pydantic < 2.10 spells HttpUrl as Annotated[pydantic_core.Url, ...]
    found += [pydantic_core.Url, pydantic_core.MultiHostUrl, uuid.UUID, pathlib.PurePath]
    found += [ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network]
    found += [ipaddress.IPv6Network, ipaddress.IPv4Interface, ipaddress.IPv6Interface]
    return tuple(found)


_STRING_LIKE = _string_like()
_ARRAY_ORIGINS: frozenset[Any] = frozenset(
    {list, set, frozenset, collections.deque, cabc.Sequence, cabc.MutableSequence}
    | {cabc.Set, cabc.MutableSet}
)
_MAP_ORIGINS: frozenset[Any] = frozenset(
    {dict, collections.OrderedDict, collections.defaultdict, cabc.Mapping, cabc.MutableMapping}
)
_UNION_ORIGINS: frozenset[Any] = frozenset({Union, types.UnionType})
# typing_extensions may define its own Literal/Annotated on older Pythons: accept both.
_LITERALS: frozenset[Any] = frozenset({typing.Literal, te.Literal})
_ANNOTATED: frozenset[Any] = frozenset({typing.Annotated, te.Annotated})


# ---------------------------------------------------------------------------- public API
def require_pyspark() -> None:
    """Raise an ImportError that says how to install pyspark, when it is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as e:
        raise ImportError(f"dbstruct.spark needs pyspark: {PIP_HINT}") from e


def spark_schema_json(model: type[BaseModel]) -> dict[str, Any]:
    """The Spark schema of ``model`` as ``StructType.jsonValue()`` would write it; no JVM.

    spark_schema_json(Aliased)["fields"][0]["name"]  # "fullName", the alias
    """
    return model_node(model).json()


def spark_schema(model: type[BaseModel]) -> StructType:
    """The Spark schema of ``model``: a struct of nullable fields named by alias.

    spark.createDataFrame([], spark_schema(UserExtract))
    """
    require_pyspark()
    from pyspark.sql.types import StructType

    return StructType.fromJson(spark_schema_json(model))


_CACHE: weakref.WeakKeyDictionary[type[BaseModel], StructNode] = weakref.WeakKeyDictionary()


def model_node(model: type[BaseModel]) -> StructNode:
    """The mapped (and cached) struct of ``model``; :mod:`._convert` reads values along it."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise SchemaMappingError(f"expected a pydantic model class, got {model!r}")
    node = _CACHE.get(model)
    if node is None:
        node = _struct(model, _Where(model.__name__, "", ()))
        _CACHE[model] = node
    return node


# ---------------------------------------------------------------------------- the walk
@dataclass(frozen=True)
class _Where:
    """Where the walk is: for error messages, and the models entered (to catch recursion)."""

    root: str
    path: str
    stack: tuple[type[BaseModel], ...]

    def at(self, suffix: str) -> _Where:
        return _Where(self.root, self.path + suffix, self.stack)

    def error(self, tp: Any, reason: str) -> SchemaMappingError:
        where = self.root + self.path
        return SchemaMappingError(
            f"cannot map {where} (type {_type_name(tp)}) to a Spark type: {reason}",
            model=self.root,
            field=self.path.lstrip(".") or None,
        )


def _struct(model: type[BaseModel], where: _Where) -> StructNode:
    if model in where.stack:
        reason = f"{model.__name__} is recursive, and a Spark schema cannot nest without end"
        raise where.error(model, reason)
    _ensure_complete(model, where)
    inside = _Where(where.root, where.path, (*where.stack, model))
    fields = []
    for attr, info in model.model_fields.items():
        if info.exclude is True:
            continue
        name = info.serialization_alias or info.alias or attr
        node = _node(info.annotation, _flat(info.metadata), inside.at(f".{attr}"))
        fields.append(FieldNode(attr, name, node, info.description))
    _check_unique_names(model, fields, where)
    return StructNode(tuple(fields))


def _ensure_complete(model: type[BaseModel], where: _Where) -> None:
    # A model with forward references pydantic could not resolve yet has no usable types.
    if getattr(model, "__pydantic_complete__", True):
        return
    try:
        model.model_rebuild()
    except Exception as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise where.error(model, f"the model is not fully defined ({first_line})") from e


def _check_unique_names(model: type[BaseModel], fields: list[FieldNode], where: _Where) -> None:
    seen: dict[str, FieldNode] = {}
    for f in fields:
        prior = seen.setdefault(f.name.lower(), f)
        if prior is not f:
            reason = (
                f"its Spark name {f.name!r} collides with {prior.name!r} (field {prior.attr}); "
                "Spark resolves names case-insensitively"
            )
            raise where.at(f".{f.attr}").error(model, reason)


def _node(tp: Any, meta: tuple[Any, ...], where: _Where) -> Node:
    tp, meta = _unwrap(tp, meta)
    origin = te.get_origin(tp)
    if tp is Any or tp is object:
        raise where.error(tp, "Any has no single Spark type; give the field a concrete type")
    if origin in _UNION_ORIGINS:
        return _union(tp, meta, where)
    if origin in _LITERALS:
        values = [v.value if isinstance(v, enum.Enum) else v for v in te.get_args(tp)]
        return _from_values([v for v in values if v is not None], tp, where)
    if origin is tuple:
        return _tuple(tp, where)
    if origin in _ARRAY_ORIGINS:
        return ArrayNode(_node(_arg(tp, 0), (), where.at("[]")))
    if origin in _MAP_ORIGINS:
        return _map(tp, where)
    if origin is None and isinstance(tp, type):
        return _class(tp, meta, where)
    raise where.error(tp, "unsupported type")


def _unwrap(tp: Any, meta: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """Strip Annotated (keeping its metadata), NewType and ``type X = ...`` aliases."""
    while True:
        if te.get_origin(tp) in _ANNOTATED:
            meta = meta + _flat(tp.__metadata__)
            tp = te.get_args(tp)[0]
        elif isinstance(tp, (typing.NewType, te.NewType)):
            tp = tp.__supertype__
        elif type(tp).__name__ == "TypeAliasType" and hasattr(tp, "__value__"):
            tp = tp.__value__
        else:
            return tp, meta


def _flat(metadata: typing.Iterable[Any]) -> tuple[Any, ...]:
    # Annotated[Decimal, Field(max_digits=4)] nests a FieldInfo whose metadata holds the limits.
    out: list[Any] = []
    for m in metadata:
        out.extend(_flat(m.metadata) if isinstance(m, FieldInfo) else [m])
    return tuple(out)


def _arg(tp: Any, index: int) -> Any:
    args = te.get_args(tp)
    return args[index] if len(args) > index else Any


def _union(tp: Any, meta: tuple[Any, ...], where: _Where) -> Node:
    members = [a for a in te.get_args(tp) if a is not type(None)]
    if not members:
        raise where.error(tp, "None has no Spark type")
    # Field-level metadata (Decimal limits) applies to every member: Optional[Decimal].
    nodes = [_node(m, meta, where) for m in members]
    if any(n != nodes[0] for n in nodes[1:]):
        kinds = ", ".join(dict.fromkeys(_describe(n) for n in nodes))
        reason = f"its members map to different Spark types ({kinds}); use a single type"
        raise where.error(tp, reason)
    return nodes[0]


def _from_values(values: list[Any], tp: Any, where: _Where) -> Node:
    """The Spark type of a Literal's or an Enum's values: one value type, or an error."""
    kinds = {_value_kind(v) for v in values}
    if not values or "" in kinds:
        raise where.error(tp, "its values are not strings, integers, floats or booleans")
    if len(kinds) > 1:
        found = ", ".join(sorted(_describe(Atomic(k)) for k in kinds))
        raise where.error(tp, f"its values mix types ({found}); Spark needs one type")
    return Atomic(kinds.pop())


def _value_kind(value: Any) -> str:
    """The Spark name of a Literal or Enum value's type; "" when it has none."""
    for base, node in _SCALARS:
        if isinstance(value, base) and base in (bool, int, float, str):
            return node.name
    return ""


def _tuple(tp: Any, where: _Where) -> Node:
    args = te.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return ArrayNode(_node(args[0], (), where.at("[]")))
    if not args:
        raise where.error(tp, "an empty tuple has no element type")
    nodes = [_node(a, (), where.at("[]")) for a in args]
    if any(n != nodes[0] for n in nodes[1:]):
        kinds = ", ".join(_describe(n) for n in nodes)
        reason = f"a tuple of different types ({kinds}) is no Spark array; use a model"
        raise where.error(tp, reason)
    return ArrayNode(nodes[0])


def _map(tp: Any, where: _Where) -> Node:
    key_tp, value_tp = _arg(tp, 0), _arg(tp, 1)
    key = _node(key_tp, (), where.at("{key}"))
    if not isinstance(key, (Atomic, DecimalNode)):
        raise where.error(tp, f"map keys must be atomic in Spark, not {_describe(key)}")
    if _admits_none(key_tp):
        raise where.error(tp, "Spark map keys cannot be null; drop Optional from the key type")
    return MapNode(key, _node(value_tp, (), where.at("{}")))


def _admits_none(tp: Any) -> bool:
    tp, _ = _unwrap(tp, ())
    if te.get_origin(tp) in _UNION_ORIGINS:
        return any(a is type(None) or _admits_none(a) for a in te.get_args(tp))
    return tp is type(None)


def _class(tp: type, meta: tuple[Any, ...], where: _Where) -> Node:
    if issubclass(tp, BaseModel):
        return _struct(tp, where)
    if issubclass(tp, enum.Enum):
        return _from_values([m.value for m in tp], tp, where)
    if issubclass(tp, Decimal):
        return _decimal(tp, meta, where)
    if issubclass(tp, _STRING_LIKE):
        return STRING
    for base, node in _SCALARS:
        if issubclass(tp, base):
            return node
    if issubclass(tp, (list, set, frozenset, tuple, dict)):
        raise where.error(tp, f"give the item type, e.g. {tp.__name__}[str]")
    raise where.error(tp, "unsupported type")


def _decimal(tp: Any, meta: tuple[Any, ...], where: _Where) -> Node:
    digits, places = _limit(meta, "max_digits"), _limit(meta, "decimal_places")
    if digits is None or places is None:
        # Without both limits no (p, s) holds every value: use pyspark's own default, or
        # decimal(38, s) when the scale is known. Values that do not fit convert to null.
        precision, scale = MAX_PRECISION, DEFAULT_DECIMAL[1] if places is None else places
    else:
        precision, scale = digits, places
    if not 0 < precision <= MAX_PRECISION or not 0 <= scale <= precision:
        reason = f"decimal({precision},{scale}) is outside Spark's decimal(38, s <= p)"
        raise where.error(tp, reason)
    return DecimalNode(precision, scale)


def _limit(meta: tuple[Any, ...], name: str) -> int | None:
    found = [v for v in (getattr(m, name, None) for m in meta) if v is not None]
    return int(found[-1]) if found else None


def _describe(node: Node) -> str:
    """A Spark-like type name for messages: bigint, array<string>, struct<...>."""
    if isinstance(node, Atomic):
        return "bigint" if node.name == "long" else node.name
    if isinstance(node, DecimalNode):
        return node.json()
    if isinstance(node, ArrayNode):
        return f"array<{_describe(node.element)}>"
    if isinstance(node, MapNode):
        return f"map<{_describe(node.key)},{_describe(node.value)}>"
    return "struct<" + ",".join(f"{f.name}:{_describe(f.node)}" for f in node.fields) + ">"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not te.get_args(tp):
        return tp.__name__
    return repr(tp).replace("typing.", "")

"""Validated instances -> the values a pandas UDF returns for ``spark_schema(model)``.

    to_row(UserExtract(name="Ann", age=31))                  # {"name": "Ann", "age": 31}
    to_frame(UserExtract, [UserExtract(name="Ann", age=31), None])  # what the UDF yields

What pyspark's Arrow path needs from a pandas UDF whose return type is a struct. Read in the
pyspark 4.3 source (``worker.py`` SQL_SCALAR_PANDAS[_ITER]_UDF, ``sql/conversion.py``
``PandasToArrowConversion``, ``sql/pandas/types.py`` ``_create_converter_from_pandas``), probed
on 4.3 with classic and Connect sessions (tests/spark/test_schema_mapping.py); the 3.5 source
(``sql/pandas/serializers.py`` ``ArrowStreamPandasUDFSerializer._create_struct_array`` and the
same ``_create_converter_from_pandas``) follows the same rules:

* a ``pandas.DataFrame`` per batch, one column per top-level field, matched by column name
  (``spark.sql.legacy.execution.pandas.groupedMap.assignColumnsByName``, on by default). A
  Series of dicts is refused: ``UDF_RETURN_TYPE`` on 4.3, "expects a pandas.DataFrame" on 3.5;
* inside a column: nested structs as dicts keyed by Spark field name (tuples, by position,
  also pass) or None (a real null: only the top-level struct cannot be null), arrays as lists,
  maps as dicts (pyspark calls ``.items()``; a list of pairs fails);
* timestamps: an aware datetime keeps its instant at every depth. A naive one is read two
  ways: nested, in ``spark.sql.session.timeZone``; at the top level of an object column, as
  UTC (an inferred ``datetime64`` column is localized to the session time zone again). So
  values leave here aware, in UTC; a naive value from the model is taken as UTC;
* columns are built with ``dtype=object``: pandas would otherwise turn an int column with a
  null into float64 (losing digits above 2**53) and datetimes into datetime64[ns] (years
  1677-2262 only). Dates stay ``datetime.date`` and decimals ``Decimal``, as Arrow wants them.

A struct returned by a pandas UDF is never null: pyspark assembles the struct column from the
DataFrame's columns with no validity mask (probed: ``col.isNull()`` is false for a row of
nulls). A failed row is therefore a row of null fields (:func:`null_row`); test a field, or
wrap the column in ``F.when(...)``, to tell failures apart.

Values become what the schema says: Spark names (aliases) as keys, enums as their values,
UUIDs, URLs and emails as ``str``, sets (sorted, for stable output) and tuples as lists,
decimals quantized half-even to the scale. A value that does not fit its type (a decimal
with more digits than the precision allows, an int outside bigint) becomes null for that
field, rather than failing the task and with it every row of the partition.
"""

from __future__ import annotations

import datetime as dt
import enum
import weakref
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from dbstruct.spark.struct_types import (
    ArrayNode,
    Atomic,
    DecimalNode,
    MapNode,
    Node,
    StructNode,
    model_node,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["null_row", "to_frame", "to_row"]

Convert = Callable[[Any], Any]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_UTC = dt.timezone.utc


def to_row(instance: BaseModel) -> dict[str, Any]:
    """The row of ``instance``: Spark field names -> values that match ``spark_schema``."""
    row: dict[str, Any] = _row_converter(type(instance))(instance)
    return row


def null_row(model: type[BaseModel]) -> dict[str, None]:
    """The row a failed answer becomes: every field of ``spark_schema(model)`` null."""
    return {f.name: None for f in model_node(model).fields}


def to_frame(model: type[BaseModel], instances: Iterable[BaseModel | None]) -> pd.DataFrame:
    """One batch of a struct-returning pandas UDF: a row per instance, nulls for ``None``.

    yield to_frame(Order, [Order.model_validate_json(t) if t else None for t in texts])
    """
    import pandas as pd

    convert, nulls = _row_converter(model), null_row(model)
    names = list(nulls)
    columns: list[list[Any]] = [[] for _ in names]
    count = 0
    for instance in instances:
        if instance is not None and not isinstance(instance, model):
            raise TypeError(f"expected {model.__name__} or None, got {type(instance).__name__}")
        row = nulls if instance is None else convert(instance)
        for column, name in zip(columns, names, strict=True):
            column.append(row[name])
        count += 1
    index = pd.RangeIndex(count)  # keeps the row count when the model has no fields
    data = {
        name: pd.Series(col, index=index, dtype=object)
        for name, col in zip(names, columns, strict=True)
    }
    frame: pd.DataFrame = pd.DataFrame(data, index=index)
    return frame


# ---------------------------------------------------------------------------- converters
_CACHE: weakref.WeakKeyDictionary[type[BaseModel], Convert] = weakref.WeakKeyDictionary()


def _row_converter(model: type[BaseModel]) -> Convert:
    convert = _CACHE.get(model)
    if convert is None:
        convert = _CACHE[model] = _converter(model_node(model))
    return convert


def _converter(node: Node) -> Convert:
    if isinstance(node, Atomic):
        return _ATOMIC[node.name]
    if isinstance(node, DecimalNode):
        return _decimal(node.precision, node.scale)
    if isinstance(node, ArrayNode):
        return _array(_converter(node.element))
    if isinstance(node, MapNode):
        return _map(_converter(node.key), _converter(node.value))
    return _struct(node)


def _struct(node: StructNode) -> Convert:
    fields = [(f.attr, f.name, _converter(f.node)) for f in node.fields]

    def convert(obj: Any) -> dict[str, Any]:
        row = {}
        for attr, name, conv in fields:
            value = getattr(obj, attr)
            row[name] = None if value is None else conv(value)
        return row

    return convert


def _array(element: Convert) -> Convert:
    def convert(values: Iterable[Any]) -> list[Any]:
        items = [None if v is None else element(v) for v in values]
        if isinstance(values, (set, frozenset)):
            try:  # a set has no order; sorting keeps reruns (and hash seeds) from reshuffling
                items.sort(key=lambda v: (v is None, v))
            except TypeError:
                pass
        return items

    return convert


def _map(key: Convert, value: Convert) -> Convert:
    def convert(mapping: dict[Any, Any]) -> dict[Any, Any]:
        return {key(k): None if v is None else value(v) for k, v in mapping.items()}

    return convert


def _decimal(precision: int, scale: int) -> Convert:
    quantum = Decimal(1).scaleb(-scale)
    # quantize() signals InvalidOperation when the result needs more than `precision` digits.
    context = Context(prec=precision, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])

    def convert(value: Any) -> Decimal | None:
        number = value if isinstance(value, Decimal) else Decimal(str(_plain(value)))
        if not number.is_finite():
            return None
        try:
            return number.quantize(quantum, context=context)
        except InvalidOperation:
            return None

    return convert


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _string(value: Any) -> str:
    value = _plain(value)  # str(StrEnum member) is "Cls.member" before Python 3.11
    return value if type(value) is str else str(value)


def _long(value: Any) -> int | None:
    number = int(_plain(value))
    return number if _LONG_MIN <= number <= _LONG_MAX else None


def _double(value: Any) -> float:
    return float(_plain(value))


def _boolean(value: Any) -> bool:
    return bool(_plain(value))


def _timestamp(value: dt.datetime) -> dt.datetime:
    # JSON Schema's date-time (RFC 3339) requires an offset; a naive value is taken as UTC.
    if value.utcoffset() is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _date(value: dt.date) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


_ATOMIC: dict[str, Convert] = {
    "string": _string,
    "long": _long,
    "double": _double,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "date": _date,
    "binary": bytes,
}

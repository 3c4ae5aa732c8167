"""Rows whose answers are known: what the UDF tests share.

The emulator answers from the row's text (a capitalised word for ``name``, the integer for
``age``), so every output row can be checked against its own input.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel
from pyspark import cloudpickle

from dbstruct.spark import structured_udf
from dbstruct.testing import Emulator

PROMPT = "Extract the user from this text: {text}"


class User(BaseModel):
    name: str
    age: int


# Workers cannot import the tests: ship this module's models by value, as a notebook's are.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


def name_of(i: int) -> str:
    """A capitalised word unique to ``i`` (the emulator takes it as the name)."""
    letters = ""
    while True:
        i, r = divmod(i, 26)
        letters += chr(ord("a") + r)
        if i == 0:
            return "Q" + letters


def age_of(i: int) -> int:
    return i % 100  # the emulator takes integers in 0..100 for an unbounded field


def text_of(i: int) -> str:
    return f"{name_of(i)} is {age_of(i)} years old"


def make_udf(emu: Emulator, model: type[BaseModel] = User, **kw: Any) -> Any:
    """A structured UDF against ``emu``: the PROMPT and 2 retries unless ``kw`` says else."""
    kw.setdefault("prompt", PROMPT)
    kw.setdefault("max_retries", 2)
    return structured_udf(
        model, "databricks/test-llm", base_url=emu.base_url, api_key=emu.token, **kw
    )


def frame(spark: Any, texts: Sequence[str | None], partitions: int | None = None) -> Any:
    """``id, text``; with ``partitions``, that many ranges of ids, each sorted, so that
    collect returns id order."""
    pdf = pd.DataFrame({"id": range(len(texts)), "text": pd.Series(texts, dtype=object)})
    df = spark.createDataFrame(pdf, "id long, text string")
    if partitions is None:
        return df
    return df.repartitionByRange(partitions, "id").sortWithinPartitions("id")

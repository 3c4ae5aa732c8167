"""structured_udf against an endpoint with a QPS limit: every row gets its value, with the
default settings (the adaptive controller, ``max_retries=3``).

Throughput against the limit is measured by bench/rate_limit.py, not asserted here.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from pydantic import BaseModel
from pyspark import cloudpickle
from pyspark.sql import functions as F

from dbstruct.errors import ConfigurationError
from dbstruct.spark import structured_udf
from dbstruct.spark._udf import _with_workers
from dbstruct.testing import Emulator
from dbstruct.worker_settings import WorkerSettings

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]


class User(BaseModel):
    name: str
    age: int


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@pytest.fixture
def limited(dbstruct_emulator: Emulator) -> Emulator:
    # 429s with a Retry-After of 1 s (whole seconds, as Databricks sends) once over 40 req/s
    dbstruct_emulator.start_from(token="dapi-limits", latency=0.02, qps=40, burst=2)
    return dbstruct_emulator


def test_udf_with_default_settings_values_every_row_at_a_qps_limit(
    spark: Any, limited: Emulator
) -> None:
    # 2 workers x 16 in flight at 0.02 s could send 40 times the limit: with adaptive=False
    # rows run out of their 3 retries (40 of these 240 did in one run on a 2-core machine)
    udf = structured_udf(
        User, "databricks/limited", "Extract: {text}", include_status=True,
        base_url=limited.base_url, api_key=limited.token,
    )  # fmt: skip
    rows = 240
    text = F.concat(F.lit("Ann is "), (F.col("id") % 90).cast("string"), F.lit(" years old"))
    df = spark.range(0, rows, 1, 2).select("id", udf(text).alias("u"))
    out = df.select("id", "u.value.name", "u.value.age", "u.error").collect()
    assert sorted(r["id"] for r in out) == list(range(rows))
    assert [r["error"] for r in out if r["error"]] == []
    assert all(r["name"] and r["age"] == r["id"] % 90 for r in out)
    assert limited.stats().status(429) > 0  # the limit was reached, and absorbed


def test_caps_are_split_across_workers(spark: Any) -> None:
    limits = _with_workers(
        WorkerSettings(adaptive=True, max_qps=10.0, max_tokens_per_minute=6000.0, workers=4)
    )
    assert (limits.qps_per_worker, limits.tpm_per_worker) == (2.5, 1500.0)
    # workers from spark.default.parallelism (2)
    derived = _with_workers(WorkerSettings(adaptive=True, max_qps=10.0))
    assert derived.workers == 2 and derived.qps_per_worker == 5.0
    with pytest.raises(ConfigurationError, match="max_qps"):
        WorkerSettings(adaptive=True, max_qps=0.0, workers=2)

"""The local model's tests: one server for the session, skipped when its packages are missing.

``local_model`` (session) is a started :class:`dbstruct.testing.LocalModel` (1 thread), or a
skip naming the pip commands; ``local_http`` an httpx client on its base URL, with its token.
``local_spark`` is a classic local Spark session (tests/spark's settings, fewer of them),
for one module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dbstruct.testing import LocalModel
from dbstruct.testing._local_model import LocalModelUnavailable


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalModel]:
    lm = LocalModel(threads=1)
    try:
        lm.start()
    except LocalModelUnavailable as e:
        pytest.skip(f"local model not installed: {e}")
    try:
        yield lm
    finally:
        lm.stop()


@pytest.fixture(scope="session")
def local_http(local_model: LocalModel) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {local_model.token}"}
    with httpx.Client(
        base_url=local_model.base_url, headers=headers, timeout=120.0, trust_env=False
    ) as http:
        yield http


@pytest.fixture(scope="module")
def local_spark(local_model: LocalModel) -> Iterator[Any]:
    """A classic local session for the module; stopped after it when this fixture made it,
    so tests/spark (collected later) builds its own, with the Spark Connect plugin."""
    pytest.importorskip("pyspark")
    import tempfile

    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master("local[2]").appName("dbstruct-local-model")
    conf = {
        "spark.sql.warehouse.dir": tempfile.mkdtemp(prefix="dbstruct-warehouse-"),
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    try:
        yield session
    finally:
        session.stop()

"""Spark sessions for the tests: one classic local session and one Spark Connect session.

Spark Connect (``SparkSession.builder.remote("local[2]")``) is how Databricks serverless and
standard-access clusters behave: no sparkContext, RDD or broadcast. Tests that take the
``spark`` fixture run on both.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pyspark = pytest.importorskip("pyspark")

# Workers must run the interpreter that has dbstruct's dependencies.
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ.setdefault("TZ", "UTC")
# Keep Spark on loopback: this machine's hostname resolves to a non-loopback address.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _builder() -> Any:
    import tempfile

    from pyspark.sql import SparkSession

    # tables written by tests go to a temporary warehouse, not ./spark-warehouse
    warehouse = tempfile.mkdtemp(prefix="dbstruct-warehouse-")
    builder = SparkSession.builder.appName("dbstruct-tests").config(
        "spark.sql.warehouse.dir", warehouse
    )
    for key, value in _CONF.items():
        builder = builder.config(key, value)
    return builder


def _connect_server_bundled() -> bool:
    """pyspark 4 ships the Spark Connect server jar; pyspark 3.5 fetches it from Maven."""
    from pathlib import Path

    jars = Path(pyspark.__file__).parent / "jars"
    return any(jars.glob("spark-connect_*.jar"))


@pytest.fixture(scope="session")
def classic_spark() -> Iterator[Any]:
    builder = _builder().master("local[2]")
    if _connect_server_bundled():
        # The Spark Connect plugin serves the same JVM to Connect clients (see connect_spark).
        builder = builder.config(
            "spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin"
        ).config("spark.connect.grpc.binding.port", str(_free_port()))
    session = builder.getOrCreate()
    yield session


@pytest.fixture(scope="session")
def connect_spark(classic_spark: Any) -> Iterator[Any]:
    # pyspark refuses remote("local[2]") beside a classic session in one process, so the
    # classic session's JVM runs the Connect server and this session talks to it over gRPC,
    # as a Databricks serverless client does.
    pytest.importorskip("grpc")
    if not _connect_server_bundled():
        pytest.skip("this pyspark does not bundle the Spark Connect server (no Maven here)")
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    port = classic_spark.conf.get("spark.connect.grpc.binding.port")
    session = ConnectSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
    yield session


@pytest.fixture(params=["classic", "connect"])
def spark(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A SparkSession of each kind: tests taking it run once per kind."""
    session = request.getfixturevalue(f"{request.param}_spark")
    # pyspark picks the classic or the Connect implementation of functions, UDFs and columns
    # by this variable; in production a process has one kind, here both share one process.
    if request.param == "connect":
        monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    else:
        monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    return session

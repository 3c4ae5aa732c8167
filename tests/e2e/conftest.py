"""The Spark sessions of tests/spark (one classic, one Spark Connect), shared with the
notebook tests: importing the fixtures gives one session of each kind per test run. And the
dbstruct wheel, built once per run with the bundle's own artifact command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.wheel import build_bundle_wheel
from tests.spark.conftest import classic_spark, connect_spark, spark

__all__ = ["bundle_wheel", "classic_spark", "connect_spark", "spark"]


@pytest.fixture(scope="session")
def bundle_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/dbstruct-<version>-py3-none-any.whl, as ``databricks bundle deploy`` builds it."""
    return build_bundle_wheel(tmp_path_factory.mktemp("bundle-wheel"))

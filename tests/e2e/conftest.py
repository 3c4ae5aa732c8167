"""The Spark sessions of tests/spark (one classic, one Spark Connect), shared with the
notebook tests: importing the fixtures gives one session of each kind per test run."""

from __future__ import annotations

from tests.spark.conftest import classic_spark, connect_spark, spark

__all__ = ["classic_spark", "connect_spark", "spark"]

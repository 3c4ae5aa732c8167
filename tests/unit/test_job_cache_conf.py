"""The job file's ``cache:`` section and the summary's ``cached`` count (no Spark)."""

from __future__ import annotations

from typing import Any

import pytest

from dbstruct.errors import ConfigurationError
from dbstruct.jobs import ChunkStats, JobSummary, parse_config
from dbstruct.jobs._progress import Progress


def conf(cache: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "source": {"table": "main.s.t", "id_column": "id", "text_columns": ["text"]},
        "response_model": "dbstruct.examples:TicketTriage",
        "model": "databricks/llm",
        "target": {"table": "main.s.out"},
        "cache": cache,
    }


def test_a_cache_is_a_table_or_a_path() -> None:
    assert parse_config(conf({"table": "main.llm.answers"})).cache is not None
    by_path = parse_config(conf({"path": "/Volumes/main/llm/answers", "format": "delta"})).cache
    assert by_path is not None and by_path.format == "delta"
    assert parse_config(conf(None)).cache is None


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ({}, "x.yml: cache: give exactly one of table or path"),
        ({"table": "a.b.c", "path": "/p"}, "x.yml: cache: give exactly one of table or path"),
        ({"table": "answers"}, "x.yml: cache.table: expected catalog.schema.table"),
        ({"path": "/p", "format": "csv"}, "x.yml: cache.format: "),
        ({"path": "/p", "ttl": 3}, "x.yml: cache.ttl: unknown key"),
    ],
)
def test_a_bad_cache_section_names_the_key(cache: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_config(conf(cache), origin="x.yml")
    assert str(info.value).startswith(message)


def test_the_summary_and_progress_count_cache_hits_apart() -> None:
    done = ChunkStats(rows=10, succeeded=3, failed=1, empty=1, cached=5)
    summary = JobSummary(
        name="t", target="/out", target_format="parquet", model="databricks/e",
        source_rows=10, skipped=0, chunks=1, done=done, wall_seconds=1.0,
        max_error_rate=0.5, run_id="r00001",
    )  # fmt: skip
    assert summary.cached == 5 and summary.processed == 10
    assert "    cached               5   answered from the response cache" in summary.to_text()
    assert (done + done).cached == 10
    assert "5 cached" in Progress(10, 1).chunk_done(done)

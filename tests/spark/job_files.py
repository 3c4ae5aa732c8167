"""Job files for the job tests: a JSON-lines source and a job conf dict around it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODEL = "dbstruct.examples:TicketTriage"


def write_source(path: Path, texts: Sequence[str | None]) -> str:
    """A JSON-lines source file with ``id`` and ``text``; its path."""
    lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def job(source: str, target: Path, **extra: Any) -> dict[str, Any]:
    """A job reading ``source`` into the Parquet path ``target``; ``extra`` replaces keys."""
    data: dict[str, Any] = {
        "version": 1,
        "name": "test",
        "source": {"path": source, "format": "json", "id_column": "id", "text_columns": "text"},
        "response_model": MODEL,
        "model": "databricks/test-llm",
        "concurrency": 8,
        "partitions": 2,
        "max_retries": 0,
        "chunk_rows": 60,
        "target": {"path": str(target)},
    }
    data.update(extra)
    return data

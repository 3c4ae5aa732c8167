"""``rows_per_request``: several rows per request through real Spark (classic and Connect),
packing faults included, with the cache and the job.

The emulator answers a packed request's items from each item's text (a capitalised word for
``name``, the integer for ``age``), so every output row can be checked against its own input:
a row given another row's answer would show another name.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from dbstruct.auth import Credentials
from dbstruct.errors import ConfigurationError, SchemaError
from dbstruct.jobs import parse_config, run_job
from dbstruct.testing import Emulator
from tests.spark.job_files import job, write_source
from tests.spark.rows import User, age_of, frame, make_udf, name_of, text_of

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

TOKEN = f"tok-{uuid.uuid4().hex}"
PACK_FAULTS = ("drop", "duplicate", "unknown_id", "swap", "truncate", "invalid_item")


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, retry_after=0.05)
    return dbstruct_emulator


def kind_of(i: int) -> str:
    # faulted rows 10 apart: each in a pack of its own (a pack holds 8 consecutive rows)
    kinds = {0: "null", 1: "blank", 10: "down", 20: "refusal", 30: "flaky"}
    kinds.update({40 + 10 * j: f"pack:{k}" for j, k in enumerate(PACK_FAULTS)})
    return kinds.get(i % 100, "ok")


def row_text(i: int) -> str | None:
    kind = kind_of(i)
    if kind == "null":
        return None
    if kind == "blank":
        return "  \t"
    marker = {"down": "fault:500", "refusal": "fault:refusal", "flaky": "fault:429x1"}.get(
        kind, kind
    )
    return text_of(i) if kind == "ok" else f"{text_of(i)} [[{marker}]]"


def test_k8_values_every_row_with_its_own_answer(spark: Any, emu: Emulator) -> None:
    n = 2_000
    extract = make_udf(emu, include_status=True, concurrency=8, rows_per_request=8)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
    try:
        rows = frame(spark, [row_text(i) for i in range(n)], partitions=2)
        rows = rows.select("id", extract("text").alias("s")).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")

    assert sorted(r.id for r in rows) == list(range(n))
    for r in rows:
        s, kind = r.s, kind_of(r.id)
        if kind in ("null", "blank"):
            assert (s.value, s.error, s.attempts) == (None, None, 0), r
        elif kind == "down":  # the pack it rode in was fine: alone, it fails on its own
            assert s.value is None and s.error.startswith("RetriesExhaustedError"), r
        elif kind == "refusal":
            assert s.value is None and s.error.startswith("RefusalError"), r
        else:
            assert s.error is None, r
            # its own answer, never another row's
            assert (s.value.name, s.value.age) == (name_of(r.id), age_of(r.id)), r
    stats = emu.stats()
    sent = sum(1 for i in range(n) if kind_of(i) not in ("null", "blank"))
    # a pack holding a row the endpoint fails on (500, refusal) is sent again row by row,
    # and 10% of the rows here are such rows: still fewer requests than rows
    assert stats.packed_requests > 0 and stats.requests < sent
    assert sum(r.s.prompt_tokens for r in rows) == stats.prompt_tokens
    assert sum(r.s.completion_tokens for r in rows) == stats.completion_tokens


def test_an_endpoint_answering_one_item_per_pack_loses_no_row(spark: Any, emu: Emulator) -> None:
    emu.configure(pack_faults={"single": 1.0})
    n = 300
    extract = make_udf(emu, include_status=True, rows_per_request=8, max_retries=2)
    rows = frame(spark, [text_of(i) for i in range(n)], partitions=2)
    rows = rows.select("id", extract("text").alias("s")).collect()
    assert sorted(r.id for r in rows) == list(range(n))
    assert all((r.s.value.name, r.s.value.age) == (name_of(r.id), age_of(r.id)) for r in rows)
    assert sum(r.s.prompt_tokens for r in rows) == emu.stats().prompt_tokens


def test_five_percent_of_packs_faulted_of_each_kind(spark: Any, emu: Emulator) -> None:
    n = 1_200
    emu.configure(pack_faults={k: 0.05 for k in PACK_FAULTS}, seed=3, keep_requests=2 * n)
    extract = make_udf(emu, include_status=True, rows_per_request=8, max_retries=2)
    rows = frame(spark, [text_of(i) for i in range(n)], partitions=2)
    rows = rows.select("id", extract("text").alias("s")).collect()
    assert sorted(r.id for r in rows) == list(range(n))
    assert all(r.s.error is None for r in rows)
    assert all((r.s.value.name, r.s.value.age) == (name_of(r.id), age_of(r.id)) for r in rows)
    stats = emu.stats()
    assert sum(stats.by_pack_fault.values()) > 0 and stats.requests == len(emu.requests)
    # every request that carried a row shows in that row's attempts, packs and resends alike
    carried = [_items(body) for body in emu.requests]
    assert sum(r.s.attempts for r in rows) == sum(carried)
    assert sum(r.s.attempts - 1 for r in rows) > 0  # some rows were sent again
    # rows that arrive while every slot is busy wait for the next pack instead of going alone
    assert stats.requests < n / 4, carried


def _items(body: dict[str, Any]) -> int:
    return len(re.findall(r"<item id=\"\d+\">", body["messages"][-1]["content"])) or 1


def test_packing_is_refused_when_the_udf_is_built(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="PARALLEL_TOOLS"):
        make_udf(emu, rows_per_request=8, mode="PARALLEL_TOOLS")
    with pytest.raises(ConfigurationError, match="last message, a user message"):
        make_udf(
            emu,
            rows_per_request=8,
            prompt=[
                {"role": "system", "content": "About {text}"},
                {"role": "user", "content": "Go"},
            ],
        )
    with pytest.raises(ConfigurationError, match="rows_per_request must be an int from 1 to 64"):
        make_udf(emu, rows_per_request=65)
    from pydantic import create_model

    wide = create_model("Wide", **{f"f{i}": (str, ...) for i in range(14)})  # type: ignore[call-overload]
    with pytest.raises(SchemaError, match="over the 16"):
        make_udf(emu, wide, rows_per_request=8)
    assert make_udf(emu, User, rows_per_request=8).spec.settings.rows_per_request == 8


# ------------------------------------------------------------------ jobs and the cache


def _text(i: int) -> str:
    return f"Ticket {i}: invoice INV-{10000 + i} was charged twice, please refund."


def test_a_packed_job_resumes_and_shares_the_table_cache_with_an_unpacked_one(
    classic_spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    spark = classic_spark
    creds = Credentials.from_token(emu.base_url, emu.token)
    source = write_source(tmp_path / "in.jsonl", [_text(i) for i in range(120)])
    cache = {"path": str(tmp_path / "cache")}
    packed = parse_config(
        job(source, tmp_path / "packed", rows_per_request=8, max_retries=2, cache=cache),
        origin="test.yml",
    )
    first = run_job(spark, packed, credentials=creds)
    assert (first.succeeded, first.failed) == (120, 0)
    assert emu.stats().packed_items == 120 and emu.stats().requests < 40
    tokens = emu.stats().prompt_tokens
    assert first.prompt_tokens == tokens

    # more rows arrive: the rerun sends only the new ones, still packed
    write_source(tmp_path / "in.jsonl", [_text(i) for i in range(150)])
    before = emu.stats().packed_items
    again = run_job(spark, packed, credentials=creds)
    assert (again.skipped, again.processed, again.succeeded) == (120, 30, 30)
    assert emu.stats().packed_items - before == 30

    # an unpacked job over the same rows finds every answer in the cache under its own keys
    requests = emu.stats().requests
    alone = parse_config(
        job(source, tmp_path / "alone", max_retries=2, cache=cache), origin="test.yml"
    )
    third = run_job(spark, alone, credentials=creds)
    assert (third.processed, third.cached) == (150, 150)
    assert emu.stats().requests == requests

"""``evidence=True`` through real Spark (classic and Connect), one row per request and packed;
a job with ``evidence: true``, its table cache, and ``dbstruct evaluate``'s found rates.

The emulator answers a quote with words copied from the row's text, and with words that are
not in it for a ``misquote`` fault: every output row's quotes can be checked against its own
input here, with offsets into that input.
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest

from dbstruct.auth import Credentials
from dbstruct.cli import main as cli_main
from dbstruct.errors import SchemaError
from dbstruct.jobs import parse_config, run_job
from dbstruct.testing import Emulator
from tests.spark.job_files import job, write_source
from tests.spark.rows import age_of, frame, make_udf, name_of, text_of

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

TOKEN = f"tok-{uuid.uuid4().hex}"
ROOT = Path(__file__).resolve().parents[2]
#: the README's command (tests/spark/test_evidence.py runs it)
EVALUATE = "dbstruct evaluate --labels sample:tickets --set source.limit=40 --set evidence=true"


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN, retry_after=0.05)
    return dbstruct_emulator


def row_text(i: int, k: int) -> str | None:
    if i % 25 == 0:
        return None
    if i % 25 == 7:  # a model that paraphrases: quotes that are not in the text
        return f"{text_of(i)} [[{'fault' if k == 1 else 'pack'}:misquote]]"
    return text_of(i)


def check_evidence(evidence: Any, text: str, misquoted: bool) -> None:
    for name in ("name", "age"):
        got = getattr(evidence, name)
        assert got.quote, (name, got)
        if misquoted:
            assert (got.found, got.start, got.end) == (False, None, None), got
        else:  # offsets into the row's own text, computed on the executor
            assert got.found and text[got.start : got.end] == got.quote, (name, got, text)


@pytest.mark.parametrize("k", [1, 8])
def test_every_row_quotes_its_own_text(spark: Any, emu: Emulator, k: int) -> None:
    n = 100
    # the prompt is the text alone: quotes are searched in the row's text, and a model
    # quoting a template's words along with it would (rightly) be "not found"
    extract = make_udf(emu, prompt="{text}", include_status=True, rows_per_request=k, evidence=True)
    value_type = extract.schema["value"].dataType
    assert value_type.fieldNames() == ["name", "age", "evidence"]
    assert value_type["evidence"].dataType.simpleString() == (
        "struct<name:struct<quote:string,found:boolean,start:bigint,end:bigint>,"
        "age:struct<quote:string,found:boolean,start:bigint,end:bigint>>"
    )
    texts = [row_text(i, k) for i in range(n)]
    rows = frame(spark, texts, partitions=2).select("id", extract("text").alias("s")).collect()

    assert sorted(r.id for r in rows) == list(range(n))
    for r in rows:
        text = texts[r.id]
        if text is None:
            assert r.s.value is None and r.s.attempts == 0
            continue
        assert r.s.error is None, r
        value = r.s.value
        assert (value.name, value.age) == (name_of(r.id), age_of(r.id)), r
        check_evidence(value.evidence, text, misquoted=r.id % 25 == 7)
    if k > 1:
        assert emu.stats().packed_items > 0


def test_evidence_is_refused_when_it_passes_the_key_limit(emu: Emulator) -> None:
    wide = {f"f{i}": (int, ...) for i in range(11)}  # 11 keys + 3 (evidence) + 3 (pack)
    from pydantic import create_model

    model = create_model("Wide", **wide)  # type: ignore[call-overload]
    make_udf(emu, model, evidence=True)  # 14 keys in one tool: fine
    with pytest.raises(SchemaError, match="over the 16"):
        make_udf(emu, model, evidence=True, rows_per_request=4)


def test_a_job_with_evidence_and_its_table_cache(
    classic_spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    creds = Credentials.from_token(emu.base_url, emu.token)
    texts = [
        f"Order {i}: my invoice INV-{1000 + i} was charged twice, please refund." for i in range(30)
    ]
    source = write_source(tmp_path / "in.jsonl", texts)
    cache = {"path": str(tmp_path / "cache")}
    conf = parse_config(
        job(source, tmp_path / "t", evidence=True, cache=cache, max_retries=2), origin="t.yml"
    )
    summary = run_job(classic_spark, conf, credentials=creds)
    assert (summary.succeeded, summary.failed) == (30, 0)
    out = classic_spark.read.parquet(str(tmp_path / "t")).collect()
    assert "evidence" in out[0]["result"].asDict()
    for row in out:
        evidence = row["result"]["evidence"].asDict(recursive=True)
        assert set(evidence) == set(conf.response_model_class.model_fields)
        text = texts[row["id"]]
        for got in evidence.values():
            if got["quote"] is not None:
                assert got["found"] and text[got["start"] : got["end"]] == got["quote"]
    # the same rows without evidence ask something else: the cache has none of their answers
    requests = emu.stats().requests
    plain = parse_config(
        job(source, tmp_path / "plain", cache=cache, max_retries=2), origin="t.yml"
    )
    again = run_job(classic_spark, plain, credentials=creds)
    assert (again.succeeded, again.cached) == (30, 0)
    assert emu.stats().requests > requests


def test_evaluate_reports_how_often_evidence_was_found(
    classic_spark: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "demo.yml").write_text((ROOT / "conf" / "demo.yml").read_text())
    monkeypatch.chdir(tmp_path)
    assert cli_main([*shlex.split(EVALUATE)[1:], "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["rows"] == 40
    evidence = got["evidence"]
    assert set(evidence) == {
        "category", "priority", "product", "sentiment", "language", "needs_human",
        "refund_requested", "order", "summary",
    }  # fmt: skip
    for name, rates in evidence.items():
        answered = 40 - got["failed_rows"]
        assert rates["rows"] == answered, name
        assert rates["found"] == rates["quoted"] > 0, name  # the emulator copies exactly
        assert rates["found_rate"] == 1.0  # as the README says: by construction
    assert cli_main(shlex.split(EVALUATE)[1:]) == 0
    text = capsys.readouterr().out
    assert "evidence found" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EVALUATE in readme
    # 8 rows per request in a tool: the wrapping and the quotes pass the key limit; said
    # plainly, with what to change, before anything is sent
    (tmp_path / "conf" / "demo_packed.yml").write_text(
        (ROOT / "conf" / "demo_packed.yml").read_text()
    )
    packed = ["evaluate", "conf/demo_packed.yml", *shlex.split(EVALUATE)[2:]]
    assert cli_main(packed) == 2
    err = capsys.readouterr().err
    assert err.startswith("dbstruct evaluate: TicketTriage has 14 keys") and "Traceback" not in err
    assert "use Mode.JSON" in err and "evidence=True" in err

"""The scheduled job end to end: real local Spark, the serving emulator, Parquet targets.

Each row's text is unique, so every row is exactly one model request (the UDF sends
identical in-flight prompts once), and emulator request counts are row counts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import functions as F

from dbstruct.auth import Credentials
from dbstruct.jobs import main, parse_config, run_job
from dbstruct.jobs.conf import JobConfig
from dbstruct.testing import Emulator
from tests.spark.job_files import MODEL, job, write_source

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]


@pytest.fixture
def spark(classic_spark: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    return classic_spark


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(retry_after=0.05)
    return dbstruct_emulator


def text(i: int, marker: str = "") -> str:
    return f"{marker}Ticket {i}: invoice INV-{10000 + i} was charged twice, please refund."


def conf_of(data: dict[str, Any]) -> JobConfig:
    return parse_config(data, origin="test.yml")


def creds(emu: Emulator) -> Credentials:
    return Credentials.from_token(emu.base_url, emu.token)


def target_rows(spark: Any, target: Path) -> list[Any]:
    return spark.read.parquet(f"file://{target}").collect()  # type: ignore[no-any-return]


# ------------------------------------------------------------------ one run, then a rerun


def test_a_run_writes_each_id_once_with_status_and_sums(spark: Any, tmp_path: Path) -> None:
    kinds = {3: None, 4: "  ", 5: text(5, "[[fault:500]]"), 6: text(6, "[[fault:refusal]]")}
    texts = [kinds.get(i % 25, text(i)) for i in range(200)]
    source = write_source(tmp_path / "in.jsonl", texts)
    target = tmp_path / "out"
    conf = conf_of(job(source, target, emulator={"latency": 0}, max_error_rate=0.05))

    summary = run_job(spark, conf)

    rows = target_rows(spark, target)
    assert len(rows) == 200 and len({r["id"] for r in rows}) == 200
    failed = [r for r in rows if r["error"] is not None]
    empty = [r for r in rows if r["attempts"] == 0]
    assert {r["id"] % 25 for r in failed} == {5, 6} and len(failed) == 16
    assert {r["id"] % 25 for r in empty} == {3, 4} and all(r["result"] is None for r in empty)
    kinds_of_error = {r["error"].split(":")[0] for r in failed}
    assert kinds_of_error <= {"RetriesExhaustedError", "ServerError", "RefusalError"}
    ok = [r for r in rows if r["error"] is None and r["attempts"] > 0]
    assert all(r["result"]["category"] and r["result"]["summary"] for r in ok)
    assert {r["batch"] for r in rows} == {f"r00001-c0000{k}" for k in range(4)}
    assert (summary.source_rows, summary.skipped, summary.processed) == (200, 0, 200)
    assert (summary.succeeded, summary.failed, summary.done.empty) == (168, 16, 16)
    assert summary.prompt_tokens == sum(r["prompt_tokens"] for r in rows) > 0
    assert summary.completion_tokens == sum(r["completion_tokens"] for r in rows) > 0
    assert summary.chunks == 4 and summary.emulated
    assert summary.error_rate == pytest.approx(0.08) and summary.exit_code == 1

    again = run_job(spark, conf)
    assert (again.processed, again.skipped, again.exit_code) == (0, 200, 0)
    assert len(target_rows(spark, target)) == 200


def test_flattened_output_to_a_table_keeps_columns(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(30)])
    table = f"spark_catalog.default.triage_{os.getpid()}"
    data = job(source, tmp_path, chunk_rows=1000)
    data["source"]["keep_columns"] = ["text"]
    data["target"] = {"table": table, "output": "flatten"}
    try:
        summary = run_job(spark, conf_of(data), credentials=creds(emu))
        df = spark.read.table(table)
        assert df.columns[:4] == ["id", "text", "category", "priority"]
        assert {"summary", "order", "error", "attempts", "batch", "processed_at"} <= set(df.columns)
        assert df.count() == 30 and summary.target_format == "parquet"
        assert emu.stats().requests == 30
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")


def test_a_changed_model_is_refused_not_mixed_in(spark: Any, emu: Emulator, tmp_path: Path) -> None:
    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(10)])
    data = job(source, tmp_path / "out")
    run_job(spark, conf_of(data), credentials=creds(emu))
    from dbstruct.errors import ConfigurationError

    data["target"]["output"] = "flatten"
    with pytest.raises(ConfigurationError, match="has other columns than this job writes"):
        run_job(spark, conf_of(data), credentials=creds(emu))
    data["target"]["mode"] = "overwrite"
    summary = run_job(spark, conf_of(data), credentials=creds(emu))
    assert summary.processed == 10
    assert "category" in spark.read.parquet(str(tmp_path / "out")).columns


def test_a_refused_first_chunk_stops_the_run_and_keeps_nothing(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    from dbstruct.errors import JobStoppedError

    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(50)])
    data = job(source, tmp_path / "out", chunk_rows=20)
    wrong = Credentials.from_token(emu.base_url, "dapi-wrong-token")
    with pytest.raises(JobStoppedError, match="refused every row of the first chunk"):
        run_job(spark, conf_of(data), credentials=wrong)
    assert emu.stats().status(403) > 0 and not list((tmp_path / "out").glob("batch=*/*.parquet"))
    summary = run_job(spark, conf_of(data), credentials=creds(emu))
    assert (summary.processed, summary.failed, summary.skipped) == (50, 0, 0)


# ------------------------------------------------------------------ a token that expires mid-job


def refused(emu: Emulator) -> int:
    stats = emu.stats()
    return stats.status(401) + stats.status(403)


def test_a_token_expiring_mid_job_stops_it_early_and_the_rerun_finishes(
    spark: Any, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbstruct.errors import JobStoppedError
    from dbstruct.jobs import run as run_module

    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(120)])
    target = tmp_path / "out"
    data = job(source, target, chunk_rows=40, concurrency=4, partitions=2)
    chunk_stats = run_module._batch_stats

    def expire_after_the_first_chunk(*args: Any) -> Any:
        emu.configure(tokens=["dapi-a-fresh-one"])  # the notebook's token expires
        return chunk_stats(*args)

    monkeypatch.setattr(run_module, "_batch_stats", expire_after_the_first_chunk)
    with pytest.raises(JobStoppedError) as stopped:
        run_job(spark, conf_of(data), credentials=creds(emu))
    monkeypatch.undo()
    emu.configure(tokens=[emu.token])

    message = str(stopped.value)
    assert "refused every row of chunk 2 of 3" in message and "service principal" in message
    assert "nothing of this chunk was kept" in message
    first = emu.stats().status(200)  # the first chunk: about 40 rows (split by id hash)
    summary = stopped.value.summary
    assert (summary.processed, summary.succeeded, summary.failed) == (first, first, 0)
    # 2 tasks x 4 in flight at most reached the endpoint with the dead token; chunk 3 never ran
    assert 1 <= refused(emu) <= 8
    assert emu.stats().requests == first + refused(emu)
    assert len(target_rows(spark, target)) == first

    rerun = run_job(spark, conf_of(data), credentials=creds(emu))
    assert (rerun.processed, rerun.succeeded, rerun.skipped) == (120 - first, 120 - first, first)
    rows = target_rows(spark, target)
    assert sorted(r["id"] for r in rows) == list(range(120))
    assert emu.stats().status(200) == 120  # no row was paid for twice


def test_rows_refused_part_way_through_a_chunk_are_sent_again_by_the_rerun(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    import threading

    from dbstruct.errors import JobStoppedError

    emu.configure(latency=0.05)
    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(200)])
    target = tmp_path / "out"
    data = job(source, target, chunk_rows=200, concurrency=2, partitions=2)
    stop = threading.Event()

    def expire_after_50_answers() -> None:
        while not stop.wait(0.01):
            if emu.stats().status(200) >= 50:
                emu.configure(tokens=["dapi-a-fresh-one"])
                return

    expire = threading.Thread(target=expire_after_50_answers, daemon=True)
    expire.start()
    try:
        with pytest.raises(JobStoppedError, match="service principal") as stopped:
            run_job(spark, conf_of(data), credentials=creds(emu))
    finally:
        stop.set()
        expire.join()
        emu.configure(tokens=[emu.token], latency=0.0)
    answered = emu.stats().status(200)
    assert 0 < answered < 200, "the token should expire part-way through the chunk"
    assert refused(emu) <= 4  # 2 tasks x 2 in flight; the other rows were failed unsent
    assert stopped.value.summary.succeeded == answered

    rerun = run_job(spark, conf_of(data), credentials=creds(emu))
    assert rerun.processed == 200 - answered and rerun.failed == 0
    rows = target_rows(spark, target)
    assert sorted(r["id"] for r in rows) == list(range(200))  # each id once, newest row kept
    assert all(r["error"] is None for r in rows)
    assert emu.stats().status(200) == 200  # every row answered once, none paid twice


# ------------------------------------------------------------------ retry_failed


def test_retry_failed_resends_only_failed_ids_and_keeps_each_id_once(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    texts = [text(i, "[[fault:500x1]]" if i % 12 == 0 else "") for i in range(120)]
    source = write_source(tmp_path / "in.jsonl", texts)
    target = tmp_path / "out"
    first = run_job(spark, conf_of(job(source, target)), credentials=creds(emu))
    assert first.failed == 10 and emu.stats().requests == 120
    failed_dirs = {r["batch"] for r in target_rows(spark, target) if r["error"] is not None}
    backup = tmp_path / "backup"
    for batch in failed_dirs:
        shutil.copytree(target / f"batch={batch}", backup / f"batch={batch}")

    before = emu.stats().requests
    retry = run_job(spark, conf_of(job(source, target, retry_failed=True)), credentials=creds(emu))
    assert emu.stats().requests - before == 10  # only the failed ids went out again
    assert (retry.processed, retry.succeeded, retry.skipped) == (10, 10, 110)
    rows = target_rows(spark, target)
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120
    assert all(r["error"] is None for r in rows)
    assert {r["batch"][:6] for r in rows if r["id"] % 12 == 0} == {"r00002"}
    dirs = {p.name for p in target.iterdir()}
    assert all(f"batch={b}" not in dirs and f"batch={b}-v001" in dirs for b in failed_dirs)

    # A crash between writing a rewritten batch and deleting the old one leaves both:
    for batch in failed_dirs:
        shutil.copytree(backup / f"batch={batch}", target / f"batch={batch}")
    assert len(target_rows(spark, target)) > 120
    before = emu.stats().requests
    repaired = run_job(spark, conf_of(job(source, target)), credentials=creds(emu))
    assert emu.stats().requests == before and repaired.processed == 0
    rows = target_rows(spark, target)
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120


# ------------------------------------------------------------------ where answers come from


@pytest.mark.parametrize("kind", ["path", "table"])
def test_answers_from_another_origin_are_refused_not_mixed_in(
    spark: Any, emu: Emulator, tmp_path: Path, kind: str
) -> None:
    from dbstruct.errors import ConfigurationError

    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(10)])
    table = f"spark_catalog.default.origin_{os.getpid()}"
    data = job(source, tmp_path / "out")
    if kind == "table":
        data["target"] = {"table": table}

    def origin() -> str | None:
        if kind == "path":
            return (tmp_path / "out" / "_dbstruct_origin").read_text(encoding="utf-8").strip()
        found = spark.sql(f"SHOW TBLPROPERTIES {table}").collect()
        return {str(r[0]): str(r[1]) for r in found}.get("dbstruct.origin")

    def rows() -> int:
        df = (
            spark.read.table(table)
            if kind == "table"
            else spark.read.parquet(str(tmp_path / "out"))
        )
        return int(df.count())

    try:
        made_up = run_job(spark, conf_of({**data, "emulator": {"latency": 0}}))
        assert made_up.processed == 10 and origin() == "emulator"

        with pytest.raises(ConfigurationError) as info:  # the same job, against "a workspace"
            run_job(spark, conf_of(data), credentials=creds(emu))
        where = table if kind == "table" else str(tmp_path / "out")
        assert str(info.value) == (
            f"target: {where} holds answers from the local serving emulator (made-up values); "
            f"this run's would come from the endpoint {emu.base_url}/test-llm, and the two must "
            f"not mix. Write them to another target (target.{kind}; with {{origin}} in it, each "
            "origin gets its own), or replace what is there with --set target.mode=overwrite"
        )
        assert emu.stats().requests == 0 and rows() == 10

        data["target"]["mode"] = "overwrite"
        real = run_job(spark, conf_of(data), credentials=creds(emu))
        assert real.processed == 10 and emu.stats().requests == 10 and rows() == 10
        assert origin() == f"{emu.base_url}/test-llm"
        data["target"]["mode"] = "append"  # the same origin resumes as before
        assert run_job(spark, conf_of(data), credentials=creds(emu)).skipped == 10
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")


# ------------------------------------------------------------------ seeding the source table


def test_seed_from_sample_creates_the_source_the_bundle_job_reads(
    spark: Any, emu: Emulator, tmp_path: Path
) -> None:
    from dbstruct.jobs import load_config
    from dbstruct.jobs._sample import sample_rows

    table = f"spark_catalog.default.tickets_raw_{os.getpid()}"

    def bundle_job(out: str) -> JobConfig:
        """conf/tickets.yml as the bundle's dev target runs it, on a local table."""
        overrides = [
            f"source.table={table}",
            "source.seed_from_sample=tickets",
            "source.where=null",  # the sample's tickets are older than the nightly 30 days
            "source.limit=30",
            "target.table=null",
            f"target.path={tmp_path / out}",
            "chunk_rows=30",
            "partitions=2",
        ]
        return load_config(Path(__file__).resolve().parents[2] / "conf/tickets.yml", overrides)

    try:
        summary = run_job(spark, bundle_job("out"), credentials=creds(emu))
        seeded = spark.read.table(table)
        assert seeded.count() == len(sample_rows("tickets"))
        assert {"ticket_id", "customer_id", "subject", "body"} <= set(seeded.columns)
        assert "customer" not in seeded.columns
        assert (summary.processed, summary.failed, emu.stats().requests) == (30, 0, 30)
        out = spark.read.parquet(str(tmp_path / "out"))
        assert out.where(F.col("customer_id").isNull()).count() == 0

        # an existing table is read as it is, never seeded over
        spark.sql(f"DROP TABLE {table}")
        spark.createDataFrame(
            [("T-1", "2025-01-01", "Acme", "Hi", "Refund please")],
            "ticket_id string, created_at string, customer_id string, subject string, body string",
        ).write.saveAsTable(table)
        again = run_job(spark, bundle_job("out2"), credentials=creds(emu))
        assert spark.read.table(table).count() == 1 and again.source_rows == 1
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")


# ------------------------------------------------------------------ the command line


def test_main_exits_1_over_max_error_rate_and_2_for_a_bad_file(
    spark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [text(i, "[[fault:500]]" if i % 4 == 0 else "") for i in range(40)]
    source = write_source(tmp_path / "in.jsonl", texts)
    path = tmp_path / "job.yml"
    data = job(source, tmp_path / "out", emulator={"latency": 0}, max_error_rate=0.2)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    assert main(["run", str(path), "--rows", "3"]) == 1
    out, err = capsys.readouterr()
    assert "failed              10   error rate 25.00% (over max_error_rate 20.00%)" in out
    assert "local serving emulator" in out and "DATABRICKS_HOST" in out
    assert "error rate 25.00% is over max_error_rate 20.00%" in err
    assert main([str(path), "--set", "max_error_rate=0.3"]) == 0  # nothing left: 0 processed

    assert main(["run", str(path), "--set", "target.mode=upsert"]) == 2
    assert "target.mode: input should be 'append' or 'overwrite'" in capsys.readouterr().err


# ------------------------------------------------------------------ crash and resume


def test_a_killed_job_resumes_and_pays_only_for_unfinished_rows(tmp_path: Path) -> None:
    n = 160
    source = write_source(tmp_path / "in.jsonl", [text(i) for i in range(n)])
    target = tmp_path / "out"
    data = job(source, target, concurrency=4, chunk_rows=40)
    data["credentials"] = {"host": "{{env:EMU_HOST}}", "token": "{{env:EMU_TOKEN}}"}
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    emu = Emulator.spawn(latency=0.05)
    try:
        env = {**os.environ, "EMU_HOST": emu.host, "EMU_TOKEN": emu.token}
        command = [sys.executable, "-m", "dbstruct.jobs", "run", str(path), "--rows", "0"]
        first = subprocess.Popen(command, env=env, start_new_session=True)
        try:
            _wait_for_a_committed_chunk(target, first)
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the job, its JVM and Python workers
            first.wait()
        committed = _ids_in(target)
        assert 0 < len(committed) < n

        before = emu.stats().requests
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert emu.stats().requests - before == n - len(committed)
        skipped = re.search(r"skipped\s+(\d+)", rerun.stdout)
        assert skipped is not None and int(skipped.group(1)) == len(committed)
        final = _ids_in(target)
        assert sorted(final) == list(range(n))  # each id exactly once
    finally:
        emu.stop()


def _wait_for_a_committed_chunk(target: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if list(target.glob("batch=*/_SUCCESS")):
            return
        assert process.poll() is None, "the job ended before a chunk was committed"
        time.sleep(0.05)
    raise AssertionError("no chunk was committed in time")


def _ids_in(target: Path) -> list[int]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    files = [p for p in target.glob("batch=*/*.parquet")]
    return sorted(i for f in files for i in pq.read_table(f, columns=["id"])["id"].to_pylist())


# ------------------------------------------------------------------ Spark Connect


def test_the_sample_on_spark_connect(
    connect_spark: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    data = {
        "version": 1,
        "source": {
            "sample": "tickets",
            "id_column": "ticket_id",
            "text_columns": ["subject", "body"],
            "keep_columns": ["created_at"],
            "limit": 40,
        },
        "response_model": MODEL,
        "model": "databricks/test-llm",
        "prompt": "Subject: {subject}\n\n{body}",
        "chunk_rows": 25,
        "target": {"path": str(tmp_path / "out")},
        "emulator": {"latency": 0},
    }
    summary = run_job(connect_spark, conf_of(data))
    df = connect_spark.read.parquet(f"file://{tmp_path / 'out'}")
    assert summary.processed == 40 and summary.succeeded == 40 and summary.chunks == 2
    assert df.select(F.count_distinct("ticket_id")).first()[0] == 40
    assert dict(df.dtypes)["created_at"] == "timestamp"
    first = df.orderBy("ticket_id").first()
    assert first["ticket_id"] == "TCK-100001" and first["result"]["category"]

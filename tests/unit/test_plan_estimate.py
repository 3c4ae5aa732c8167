"""``dbstruct plan``'s arithmetic without Spark: the rows' prompt tokens counted from the
requests the job's code builds (exact against the emulator's usage, packed or not), and the
run's time under an endpoint's limits (:mod:`dbstruct.jobs._estimate`,
:mod:`dbstruct.jobs._plan_time`)."""

from __future__ import annotations

from typing import Any

import pytest

import dbstruct
from dbstruct._many import ManyCall, run_many
from dbstruct.jobs import load_config
from dbstruct.jobs._estimate import RowEstimator
from dbstruct.jobs._plan_time import Limits, parse_duration, run_time, staffing
from dbstruct.jobs._sample import sample_rows
from dbstruct.testing import Emulator

TICKETS = sample_rows("tickets")[:40]
PROMPT_ROWS = [(t["subject"], t["body"]) for t in TICKETS]


def _client(emu: Emulator, conf: Any) -> Any:
    return dbstruct.from_provider(
        conf.model, base_url=emu.base_url, api_key=emu.token, mode=conf.mode_enum, **conf.options
    )


@pytest.mark.parametrize("mode", ["tools", "json", "md_json"])
def test_counted_prompt_tokens_are_the_emulators_usage_row_by_row(emu: Emulator, mode: str) -> None:
    # the demo's job: the estimate is the emulator's rule, so counting is exact; the
    # requests are the ones the job builds, so its prompt and options are in them
    conf = load_config("conf/demo.yml", [f"mode={mode}"])
    est = RowEstimator(conf)
    assert est.counter_name == "estimate"
    counted = est.prompt_tokens(PROMPT_ROWS[:10])
    client = _client(emu, conf)
    for (subject, body), tokens in zip(PROMPT_ROWS[:10], counted, strict=True):
        text = conf.prompt_spec.replace("{subject}", subject).replace("{body}", body)  # type: ignore[union-attr]
        outcome = client.extract(conf.response_model_class, [{"role": "user", "content": text}])
        assert outcome.usage.prompt_tokens == tokens


def test_counted_packs_are_the_emulators_usage_in_sum_and_shared_by_row(emu: Emulator) -> None:
    conf = load_config("conf/demo.yml", ["rows_per_request=8"])
    est = RowEstimator(conf)
    counted = est.prompt_tokens(PROMPT_ROWS)
    emu.reset()
    # sent as a Spark worker sends them: the UDF's prompt packs each row, the client's
    # ManyCall plans and sends the packs
    rows = [est.udf.spec.prompt.pack_row(list(values)) for values in PROMPT_ROWS]
    assert all(r is not None for r in rows)
    many = ManyCall(_client(emu, conf), conf.response_model_class, rows, 8, None, None, {})  # type: ignore[arg-type]
    outcomes = run_many(many.client, many)
    assert all(o.ok for o in outcomes)
    assert emu.stats().packed_requests == 5
    # a pack's tokens are shared among its rows by text length, as the client shares them
    assert sum(counted) == emu.stats().prompt_tokens
    assert [o.usage.prompt_tokens for o in outcomes] == counted


def test_rows_without_text_count_nothing_and_one_text_column_works() -> None:
    conf = load_config("conf/demo.yml", [])
    est = RowEstimator(conf)
    assert est.prompt_tokens([(None, " "), ("Refund", None)])[0] == 0
    assert est.prompt_tokens([("Refund", None)])[0] > 0
    assert est.arguments() == ["subject", "body"]


def test_completion_per_row_is_smaller_in_packs_and_positive() -> None:
    one = RowEstimator(load_config("conf/demo.yml", [])).completion_tokens_per_row
    eight = RowEstimator(load_config("conf/demo.yml", ["rows_per_request=8"]))
    assert 20 < one < 200 and eight.completion_tokens_per_row > 0


def test_a_real_endpoint_is_counted_with_its_tokenizer_when_installed() -> None:
    conf = load_config("conf/demo.yml", ["emulator=false"])
    name = RowEstimator(conf).counter_name
    assert name in ("estimate",) or name.startswith(("llama3", "cl100k_base"))


def test_the_slowest_limit_bounds_the_run() -> None:
    t = run_time(
        requests=1_200,
        prompt_tokens=600_000,
        completion_tokens=60_000,
        limits=Limits(qps=20, input_tokens_per_minute=200_000, output_tokens_per_minute=100_000),
        in_flight=32,
        latency_s=0.5,
    )
    assert t.floors == {
        "qps 20": 1.0,
        "input tokens/min 200,000": 3.0,
        "output tokens/min 100,000": 0.6,
        "32 requests in flight x 0.50 s": pytest.approx(1_200 * 0.5 / 32 / 60),
    }
    assert (t.minutes, t.bound) == (3.0, "input tokens/min 200,000")
    unknown = run_time(
        requests=10,
        prompt_tokens=1,
        completion_tokens=1,
        limits=Limits(),
        in_flight=8,
        latency_s=None,
    )
    assert unknown.minutes is None and unknown.bound is None


def test_staffing_for_a_deadline() -> None:
    run = run_time(
        requests=6_000, prompt_tokens=0, completion_tokens=0, limits=Limits(qps=200),
        in_flight=8, latency_s=2.0,
    )  # fmt: skip
    s = staffing(deadline_minutes=5, requests=6_000, latency_s=2.0, run=run, partitions=4)
    assert (s.in_flight, s.concurrency, s.partitions, s.impossible) == (40, 10, 4, None)
    big = run_time(
        requests=60_000, prompt_tokens=0, completion_tokens=0, limits=Limits(qps=200),
        in_flight=8, latency_s=2.0,
    )  # fmt: skip
    many = staffing(deadline_minutes=1, requests=60_000, latency_s=2.0, run=big, partitions=2)
    assert many.in_flight == 2_000 and many.concurrency <= 512
    assert many.partitions * many.concurrency >= 2_000
    assert many.impossible == "qps 200 alone takes 5.0 min"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90s", 1.5), ("45m", 45), ("45min", 45), ("2h", 120), ("1h30m", 90), ("30", 30)],
)
def test_durations(text: str, minutes: float) -> None:
    assert parse_duration(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "0", "-3m", "1h30"])
def test_bad_durations_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="--deadline"):
        parse_duration(text)


def test_evidence_is_counted_in_the_prompt_and_the_answer(emu: Emulator) -> None:
    # evidence: true asks for quotes in the same request: a larger schema, a longer answer
    plain = RowEstimator(load_config("conf/demo.yml", []))
    conf = load_config("conf/demo.yml", ["evidence=true"])
    quoted = RowEstimator(conf)
    counted = quoted.prompt_tokens(PROMPT_ROWS[:5])
    assert all(q > p for q, p in zip(counted, plain.prompt_tokens(PROMPT_ROWS[:5]), strict=True))
    assert quoted.completion_tokens_per_row > plain.completion_tokens_per_row
    client = _client(emu, conf)
    for (subject, body), tokens in zip(PROMPT_ROWS[:5], counted, strict=True):
        text = conf.prompt_spec.replace("{subject}", subject).replace("{body}", body)  # type: ignore[union-attr]
        messages = [{"role": "user", "content": text}]
        outcome = client.extract(conf.response_model_class, messages, evidence=True)
        assert outcome.usage.prompt_tokens == tokens

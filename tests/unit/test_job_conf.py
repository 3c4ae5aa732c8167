"""Job files: validation messages that name the key, secrets only as references, the
summary's arithmetic, and the bundled sample. No JVM."""

from __future__ import annotations

import copy
import importlib.util
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from dbstruct.errors import ConfigurationError
from dbstruct.jobs import ChunkStats, JobSummary, demo_conf_path, load_config, parse_config
from dbstruct.jobs._credentials import configured_credentials
from dbstruct.jobs._progress import Progress, format_duration
from dbstruct.jobs._sample import sample_rows
from dbstruct.jobs._secrets import inline_secret_errors, resolve_references
from dbstruct.jobs.conf import CredentialsConfig

ROOT = Path(__file__).resolve().parents[2]
PAT = "dapi0123456789abcdef0123456789abcdef"


class Flat(BaseModel):
    """A model whose field would collide with a status column when flattened."""

    error: str
    label: str


def good() -> dict[str, Any]:
    return {
        "version": 1,
        "source": {"table": "main.support.tickets", "id_column": "id", "text_columns": ["body"]},
        "response_model": "dbstruct.examples:TicketTriage",
        "model": "databricks/my-endpoint",
        "prompt": "Triage: {body}",
        "target": {"table": "main.support.triage"},
    }


def with_(change: dict[str, Any]) -> dict[str, Any]:
    """``good()`` with dotted keys set (value ``...`` deletes the key)."""
    data = good()
    for dotted, value in change.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return data


def error_of(data: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_config(data, origin="conf/x.yml")
    return str(info.value)


# ---------------------------------------------------------------- good files


def test_the_shipped_job_files_validate() -> None:
    demo = load_config(ROOT / "conf" / "demo.yml")
    assert demo.source.sample == "tickets" and demo.emulator is not None
    assert demo.response_model_class.__name__ == "TicketTriage"
    tickets = load_config(ROOT / "conf" / "tickets.yml")
    assert tickets.target.table == "main.support.ticket_triage" and tickets.retry_failed
    assert tickets.credentials is not None and tickets.credentials.client_secret is not None
    # conf/demo_packed.yml is the demo, key for key, at 8 rows per request
    packed = load_config(ROOT / "conf" / "demo_packed.yml")
    assert packed.rows_per_request == 8 and packed.target.path != demo.target.path
    apart = {"name", "rows_per_request", "target"}
    assert packed.model_dump(exclude=apart) == demo.model_dump(exclude=apart)


def test_the_packaged_demo_is_conf_demo_yml() -> None:
    packaged = Path(demo_conf_path()).read_text(encoding="utf-8")
    assert packaged == (ROOT / "conf" / "demo.yml").read_text(encoding="utf-8")


def test_defaults_and_normalisation() -> None:
    conf = parse_config(with_({"source.text_columns": "body", "mode": "json", "emulator": True}))
    assert conf.source.text_columns == ["body"]
    assert conf.mode == "JSON" and conf.mode_enum.name == "JSON"
    assert conf.emulator is not None and conf.emulator.latency == 0.05
    assert (conf.chunk_rows, conf.max_retries, conf.retry_failed) == (5000, 3, False)
    assert conf.target.output == "struct" and conf.target.mode == "append"
    assert parse_config(with_({"emulator": False})).emulator is None


def test_overrides_are_parsed_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(good()), encoding="utf-8")
    conf = load_config(
        path, ["target.mode=overwrite", "source.limit=10", "emulator=true", "name=night run"]
    )
    assert conf.target.mode == "overwrite" and conf.source.limit == 10
    assert conf.emulator is not None and conf.name == "night run"
    with pytest.raises(ConfigurationError, match=r"expected key\.path=value"):
        load_config(path, ["target.mode"])


# ---------------------------------------------------------------- bad files


BAD = [
    ({"source.table": "foo"}, "conf/x.yml: source.table: expected catalog.schema.table, got 'foo'"),
    ({"target.table": "a.b"}, "target.table: expected catalog.schema.table, got 'a.b'"),
    ({"version": 2}, "conf/x.yml: version: expected 1, got 2"),
    ({"source.id_column": ...}, "source.id_column: required, missing"),
    ({"source.id_column": "my id"}, "source.id_column: expected a column name, got 'my id'"),
    ({"target.colour": "red"}, "target.colour: unknown key"),
    ({"source.path": "/data"}, "source: give exactly one of table, path or sample"),
    ({"target.path": "/out"}, "target: give exactly one of table or path"),
    ({"response_model": "TicketTriage"}, "response_model: expected package.module:ClassName"),
    ({"response_model": "dbstruct.nowhere:Model"}, "response_model: cannot import"),
    ({"response_model": "dbstruct.errors:Usage"}, "is not a pydantic BaseModel class"),
    ({"model": "openai/gpt-4o"}, "model: expected databricks/<endpoint-name>, got 'openai/gpt-4o'"),
    ({"mode": "yaml"}, "mode: expected one of TOOLS, TOOLS_STRICT"),
    ({"concurrency": 0}, "concurrency: input should be greater than or equal to 1, got 0"),
    ({"rows_per_request": 65}, "rows_per_request: input should be less than or equal to 64"),
    ({"options": {"rows_per_request": 8}}, "options: 'rows_per_request' is not an option here"),
    ({"chunk_rows": "many"}, "chunk_rows: input should be a valid integer"),
    ({"max_error_rate": 1.5}, "max_error_rate: input should be less than or equal to 1"),
    ({"target.mode": "upsert"}, "target.mode: input should be 'append' or 'overwrite'"),
    ({"target.output": "columns"}, "target.output: input should be 'struct' or 'flatten'"),
    ({"prompt": "{subject}: {body}"}, "prompt: its placeholders (subject, body) must be"),
    ({"prompt": "Triage {0}"}, "prompt: template: placeholder {0} is not a name"),
    ({"options": {"base_url": "http://x"}}, "options: 'base_url' is not an option here"),
    ({"credentials": {"client_id": "abc"}}, "credentials: client_id and client_secret go"),
    ({"credentials": {"host": "{{vault:x}}"}}, "credentials.host: '{{vault:x}}' is not a ref"),
]


@pytest.mark.parametrize(("change", "expected"), BAD, ids=[e.split(":")[0] for _, e in BAD])
def test_a_bad_key_is_named_with_what_was_expected(change: dict[str, Any], expected: str) -> None:
    assert expected in error_of(with_(change))


def test_flattened_fields_must_not_collide_with_status_columns() -> None:
    data = with_({"response_model": f"{__name__}:Flat", "target.output": "flatten"})
    assert "target: output column(s) ['error'] collide" in error_of(data)
    assert parse_config(with_({"response_model": f"{__name__}:Flat"})).target.output == "struct"


def test_every_problem_is_reported_once_per_line() -> None:
    message = error_of(with_({"source.table": "foo", "concurrency": -1}))
    lines = message.splitlines()
    assert len(lines) == 2 and all(line.startswith("conf/x.yml: ") for line in lines)


def test_a_file_that_is_not_a_mapping_or_not_there(tmp_path: Path) -> None:
    path = tmp_path / "x.yml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"x.yml: expected a mapping of keys, got list"):
        load_config(path)
    with pytest.raises(ConfigurationError, match="cannot read the job file"):
        load_config(tmp_path / "missing.yml")


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"credentials": {"host": "https://h", "token": PAT}}, "credentials.token"),
        ({"credentials": {"token": "not-a-pat-but-literal"}}, "credentials.token"),
        ({"options": {"api_key": "abc123"}}, "options.api_key"),
        ({"source.options": {"password": "hunter2"}}, "source.options.password"),
        ({"prompt": f"Use {PAT} to triage {{body}}"}, "prompt"),
    ],
)
def test_a_secret_written_inline_is_refused(change: dict[str, Any], where: str) -> None:
    message = error_of(with_(change))
    assert message.startswith(f"conf/x.yml: {where}: ")
    assert "use a reference instead, e.g. '{{secrets/<scope>/<key>}}'" in message
    assert PAT not in message and "not-a-pat-but-literal" not in message
    assert "hunter2" not in message


def test_an_inline_token_given_with_set_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(good()), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"credentials\.token: a secret written inline"):
        load_config(path, [f"credentials.token={PAT}"])


def test_references_are_accepted_and_not_resolved_when_loading() -> None:
    creds = {"host": "https://{{env:WS}}.cloud.databricks.com", "token": "{{secrets/s/tok}}"}
    options = {"password": "{{secrets/db/pw}}"}
    conf = parse_config(with_({"credentials": creds, "source.options": options}))
    assert conf.source.options == options
    assert conf.credentials is not None and conf.credentials.token == "{{secrets/s/tok}}"
    assert inline_secret_errors({"a": {"token": "{{ env:T }}"}}) == []


class FakeSecrets:
    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values
        self.calls: list[tuple[str, str]] = []

    def get(self, scope: str, key: str) -> str:
        self.calls.append((scope, key))
        if (scope, key) not in self.values:
            raise RuntimeError(f"Secret does not exist with scope: {scope} and key: {key}")
        return self.values[(scope, key)]


class FakeDbutils:
    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.secrets = FakeSecrets(values)


def test_references_resolve_with_dbutils_and_the_environment() -> None:
    dbutils = FakeDbutils({("dbstruct", "token"): PAT})
    env = {"WS": "adb-1.2.azuredatabricks.net"}
    conf = CredentialsConfig(host="https://{{env:WS}}", token="{{secrets/dbstruct/token}}")
    creds = configured_credentials(conf, dbutils=dbutils, environ=env)
    assert creds.base_url == "https://adb-1.2.azuredatabricks.net/serving-endpoints"
    assert creds.token() == PAT and PAT not in repr(creds)
    assert dbutils.secrets.calls == [("dbstruct", "token")]


def test_unresolvable_references_name_the_key_and_never_a_value() -> None:
    with pytest.raises(ConfigurationError, match=r"credentials\.token: environment variable T"):
        resolve_references("{{env:T}}", "credentials.token", environ={})
    dbutils = FakeDbutils({})
    with pytest.raises(ConfigurationError) as info:
        resolve_references("{{secrets/s/k}}", "credentials.token", dbutils=dbutils)
    assert str(info.value) == (
        "credentials.token: cannot read secret 'k' of scope 's': RuntimeError"
    )
    with pytest.raises(ConfigurationError, match="is not a reference"):
        resolve_references("{{secret/s/k}}", "credentials.host", environ={})


def test_oauth_m2m_from_secret_references_against_the_emulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dbstruct.testing import Emulator

    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", "/nonexistent/.databrickscfg")
    with Emulator(client_id="sp-1", client_secret="sp-secret-value") as emu:
        dbutils = FakeDbutils({("sp", "id"): "sp-1", ("sp", "secret"): "sp-secret-value"})
        conf = CredentialsConfig(
            host=emu.host, client_id="{{secrets/sp/id}}", client_secret="{{secrets/sp/secret}}"
        )
        creds = configured_credentials(conf, dbutils=dbutils)
        assert creds.base_url == emu.base_url and "oauth-m2m" in creds.source
        assert creds.token() and emu.stats().oauth_tokens_issued >= 1


# ---------------------------------------------------------------- pricing, budget, limits

LLAMA = "databricks/databricks-meta-llama-3-3-70b-instruct"
USD = {"input_usd_per_million": 0.5, "output_usd_per_million": 1.5}


def test_price_budget_and_endpoint_limits_in_their_good_forms() -> None:
    plain = parse_config(good())
    assert plain.price is None and plain.budget is None and plain.endpoint_limits is None
    builtin = parse_config(with_({"model": LLAMA, "budget": {"max_cost_usd": 2}}))
    assert builtin.price is not None and builtin.price.origin == "built-in"
    assert builtin.budget is not None and builtin.budget.max_cost_usd == 2.0
    conf = parse_config(
        with_(
            {
                "pricing": USD,
                "budget": {"max_tokens": 1000, "max_cost_usd": 0.25},
                "endpoint_limits": {
                    "qps": 2.5,
                    "input_tokens_per_minute": 200_000,
                    "output_tokens_per_minute": 20_000,
                    "tokens_per_second": 900,
                },
            }
        )
    )
    assert conf.price is not None and conf.price.origin == "conf"
    assert conf.price.cost_usd(1_000_000, 1_000_000) == 2.0
    assert conf.budget is not None and conf.budget.max_tokens == 1000
    assert conf.endpoint_limits is not None and conf.endpoint_limits.qps == 2.5
    assert conf.endpoint_limits.tokens_per_second == 900
    dbu = parse_config(with_({"model": LLAMA, "pricing": {"usd_per_dbu": 0.1}})).price
    assert dbu is not None and dbu.usd_per_dbu == 0.1


def test_budget_set_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(good()), encoding="utf-8")
    conf = load_config(path, ["budget.max_tokens=1000"])
    assert conf.budget is not None and conf.budget.max_tokens == 1000
    with pytest.raises(ConfigurationError) as info:
        load_config(path, ["budget.max_token=1000"])
    assert (
        str(info.value) == "--set budget.max_token: unknown key; did you mean 'budget.max_tokens'?"
    )


@pytest.mark.parametrize("name", ["demo.yml", "tickets.yml"])
def test_the_budget_and_pricing_the_shipped_files_suggest_are_valid(name: str) -> None:
    lines = (ROOT / "conf" / name).read_text(encoding="utf-8").splitlines()
    keys = [ln[2:].split("#")[0] for ln in lines if ln.startswith(("# budget:", "# pricing:"))]
    assert keys and any(k.startswith("budget:") for k in keys)
    conf = parse_config({**yaml.safe_load("\n".join(lines)), **yaml.safe_load("\n".join(keys))})
    assert conf.budget is not None and conf.price is not None


BAD_BUDGETS = [
    (
        {"budget": {"max_token": 5}},
        "budget.max_token: unknown key; did you mean 'budget.max_tokens'?",
    ),
    ({"budget": {}}, "budget: give max_tokens, max_cost_usd or both"),
    (
        {"budget": {"max_tokens": 0}},
        "budget.max_tokens: input should be greater than or equal to 1",
    ),
    ({"budget": {"max_tokens": "lots"}}, "budget.max_tokens: input should be a valid integer"),
    ({"budget": {"max_cost_usd": 0}}, "budget.max_cost_usd: input should be greater than 0"),
    (
        {"budget": {"max_cost_usd": 5}},
        "budget.max_cost_usd: no price is known for databricks/my-endpoint (not in the built-in "
        "table); add pricing: {input_usd_per_million: ..., output_usd_per_million: ...}",
    ),
    (
        {"pricing": {"input_usd_per_milion": 1}},
        "pricing.input_usd_per_milion: unknown key; did you mean 'pricing.input_usd_per_million'?",
    ),
    ({"pricing": {"input_usd_per_million": 1}}, "pricing.output_usd_per_million: missing"),
    (
        {"pricing": {"input_usd_per_million": -1, "output_usd_per_million": 1}},
        "pricing.input_usd_per_million: expected a finite number >= 0",
    ),
    ({"pricing": 5}, "pricing: input should be a valid dictionary, got 5"),
    (
        {"pricing": {"usd_per_dbu": 0.1}},
        "pricing.usd_per_dbu: there is no built-in DBU rate for 'my-endpoint'",
    ),
    ({"endpoint_limits": {"qps": 0}}, "endpoint_limits.qps: input should be greater than 0"),
    (
        {"endpoint_limits": {"tokens_per_second": 0}},
        "endpoint_limits.tokens_per_second: input should be greater than or equal to 1",
    ),
    (
        {"endpoint_limits": {"qsp": 1}},
        "endpoint_limits.qsp: unknown key; did you mean 'endpoint_limits.qps'?",
    ),
]


@pytest.mark.parametrize(("change", "expected"), BAD_BUDGETS, ids=[e[:30] for _, e in BAD_BUDGETS])
def test_a_bad_price_budget_or_limit_is_named(change: dict[str, Any], expected: str) -> None:
    assert f"conf/x.yml: {expected}" in error_of(with_(change))


# ---------------------------------------------------------------- summary and progress


def summary(**kw: Any) -> JobSummary:
    done = kw.pop("done", ChunkStats(rows=200, succeeded=188, failed=10, empty=2))
    fields: dict[str, Any] = {
        "name": "t", "target": "/out", "target_format": "parquet", "model": "databricks/e",
        "source_rows": 1000, "skipped": 800, "chunks": 4, "done": done,
        "wall_seconds": 8.0, "max_error_rate": 0.05, "run_id": "r00002",
    }  # fmt: skip
    fields.update(kw)
    return JobSummary(**fields)


def test_summary_math() -> None:
    s = summary()
    assert (s.processed, s.succeeded, s.failed) == (200, 188, 10)
    assert s.error_rate == pytest.approx(0.05) and s.rows_per_second == pytest.approx(25.0)
    assert s.exit_code == 0  # at the limit is within it
    assert summary(max_error_rate=0.049).exit_code == 1
    nothing = summary(done=ChunkStats(), wall_seconds=0.0)
    assert (nothing.error_rate, nothing.rows_per_second, nothing.exit_code) == (0.0, 0.0, 0)
    text = s.to_text()
    for expected in ("1,000", "800", "200", "188", "5.00%", "25.0 rows/s", "run r00002"):
        assert expected in text
    assert "emulator" not in text and "emulator" in summary(emulated=True).to_text()


def test_chunk_stats_add_up() -> None:
    a = ChunkStats(rows=3, succeeded=2, failed=1, prompt_tokens=30, completion_tokens=9)
    b = ChunkStats(rows=2, succeeded=1, empty=1, prompt_tokens=20, completion_tokens=5)
    assert a + b == ChunkStats(5, 3, 1, 1, 50, 14)


def test_progress_logs_rows_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    progress = Progress(total=1000, chunks=4, clock=lambda: now[0])
    now[0] = 110.0
    with caplog.at_level(logging.INFO, logger="dbstruct.jobs"):
        line = progress.chunk_done(ChunkStats(rows=250, succeeded=249, failed=1))
    assert line.startswith("chunk 1/4 committed: 250 of 1,000 rows (25%), 25.0 rows/s, ETA 30.0s")
    assert "1 failed" in line and line in caplog.text
    now[0] = 140.0
    assert "ETA -" in progress.chunk_done(ChunkStats(rows=750, succeeded=750))


def test_format_duration() -> None:
    assert [format_duration(s) for s in (4.25, 185, 7380)] == ["4.2s", "3m05s", "2h03m"]


# ---------------------------------------------------------------- the bundled sample


def test_the_sample_is_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "scripts/make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = sample_rows("tickets")
    assert module.make_tickets() == rows
    assert len(rows) >= 1000
    assert len({r["ticket_id"] for r in rows}) == len(rows)
    assert len({r["body"] for r in rows}) == len(rows)  # no two rows share one request
    assert {r["language"] for r in rows} >= {"en", "de", "fr", "es", "nl", "pt"}


# ---------------------------------------------------------------- target placeholders


@pytest.mark.parametrize(
    ("change", "path", "table"),
    [
        ({"emulator": True}, "out/emulator/triage", "main.s.t_emulator"),
        ({"emulator": {"latency": 0}}, "out/emulator/triage", "main.s.t_emulator"),
        ({"emulator": False}, "out/my-endpoint/triage", "main.s.t_my_endpoint"),
        ({}, "out/my-endpoint/triage", "main.s.t_my_endpoint"),
    ],
)
def test_origin_in_a_target_is_emulator_or_the_endpoint(
    change: dict[str, Any], path: str, table: str
) -> None:
    by_path = parse_config(with_({**change, "target": {"path": "out/{origin}/triage"}}))
    assert by_path.target.path == path
    by_table = parse_config(with_({**change, "target": {"table": "main.s.t_{ origin }"}}))
    assert by_table.target.table == table
    endpoint = parse_config(with_({**change, "target": {"path": "out/{endpoint}"}}))
    assert endpoint.target.path == "out/my-endpoint"


def test_the_demo_writes_each_origins_answers_to_its_own_target() -> None:
    demo = ROOT / "conf" / "demo.yml"
    assert load_config(demo).target.path == ".dbstruct/demo/emulator/ticket_triage"
    real = load_config(demo, ["emulator=false", "model=databricks/my-llm"])
    assert real.target.path == ".dbstruct/demo/my-llm/ticket_triage"


class Brief(BaseModel):
    """A response model other than the demo's."""

    category: str


@pytest.mark.parametrize(
    ("change", "decides"),
    [
        ({"prompt": "Classify: {body}"}, True),
        ({"model": "databricks/other"}, True),
        ({"mode": "JSON"}, True),
        ({"rows_per_request": 8}, True),
        ({"evidence": True}, True),
        ({"max_retries": 0}, True),
        ({"options.temperature": 0.7}, True),
        ({"response_model": "tests.unit.test_job_conf:Brief"}, True),
        ({"emulator": {"seed": 1}}, True),
        ({"emulator": {"faults": {"500": 0.1}}}, True),
        ({"concurrency": 4}, False),
        ({"partitions": 9}, False),
        ({"chunk_rows": 10}, False),
        ({"source.limit": 5}, False),
        ({"source.where": "id > 3"}, False),
        ({"retry_failed": True}, False),
        ({"target.table": "main.support.other"}, False),
        ({"budget": {"max_tokens": 1000}}, False),
        ({"emulator": {"latency": 0.5}}, False),
    ],
)
def test_a_runs_fingerprint_changes_with_what_decides_an_answer(
    change: dict[str, Any], decides: bool
) -> None:
    from dbstruct.jobs._origin import answers_fingerprint

    base = {"emulator": {"seed": 0}} if "emulator" in change else {}
    before = answers_fingerprint(parse_config(with_(base)), "emulator")
    after = answers_fingerprint(parse_config(with_({**base, **change})), "emulator")
    assert (before != after) is decides
    assert answers_fingerprint(parse_config(with_(base)), "https://h/serving-endpoints/x") != before


def test_an_unknown_placeholder_is_named_with_the_closest_one() -> None:
    message = error_of(with_({"target": {"path": "out/{orign}"}}))
    assert message == (
        "conf/x.yml: target.path: unknown placeholder {orign}; did you mean '{origin}'? "
        "(placeholders: {origin}, {endpoint})"
    )


def test_a_placeholder_waits_for_a_valid_model() -> None:
    message = error_of(with_({"model": "openai/x", "target": {"path": "out/{origin}"}}))
    assert message == "conf/x.yml: model: expected databricks/<endpoint-name>, got 'openai/x'"


# ---------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"concurency": 8}, "conf/x.yml: concurency: unknown key; did you mean 'concurrency'?"),
        ({"source.tabel": "a.b.c"}, "source.tabel: unknown key; did you mean 'source.table'?"),
        ({"target.pth": "/o"}, "target.pth: unknown key; did you mean 'target.path'?"),
        ({"cache": {"tabel": "a.b.c"}}, "cache.tabel: unknown key; did you mean 'cache.table'?"),
        ({"emulator": {"latncy": 1}}, "emulator.latncy: unknown key; did you mean 'emulator.l"),
        ({"zzz": 1}, "zzz: unknown key (the keys: version, name, source, response_model"),
    ],
)
def test_an_unknown_key_is_named_with_the_closest_valid_one(
    change: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(with_(change))


def test_set_refuses_unknown_keys_but_not_free_form_ones(tmp_path: Path) -> None:
    path = tmp_path / "job.yml"
    path.write_text(yaml.safe_dump(good()), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_config(path, ["source.tabel=a.b.c"])
    assert str(info.value) == "--set source.tabel: unknown key; did you mean 'source.table'?"
    conf = load_config(path, ["options.top_p=0.5", "source.options.multiLine='true'"])
    assert conf.options == {"top_p": 0.5} and conf.source.options == {"multiLine": "true"}


def test_a_missing_class_or_module_is_named() -> None:
    missing_class = error_of(with_({"response_model": "dbstruct.examples:TicketTriag"}))
    assert missing_class == (
        "conf/x.yml: response_model: module 'dbstruct.examples' has no class 'TicketTriag'; "
        "did you mean 'dbstruct.examples:TicketTriage'?"
    )
    nothing_close = error_of(with_({"response_model": "dbstruct.examples:Invoice"}))
    assert nothing_close.endswith("module 'dbstruct.examples' has no class 'Invoice'")
    top_level = error_of(with_({"response_model": "no_such_models:Ticket"}))
    assert top_level.endswith("cannot import 'no_such_models': there is no module of that name")


# ---------------------------------------------------------------- seeding a source table


def test_seed_from_sample_goes_with_a_table() -> None:
    conf = parse_config(with_({"source.seed_from_sample": "tickets"}))
    assert conf.source.seed_from_sample == "tickets" and conf.source.table
    path_source = {"path": "/in", "id_column": "id", "text_columns": ["body"]}
    message = error_of(with_({"source": {**path_source, "seed_from_sample": "tickets"}}))
    assert "source: seed_from_sample goes with table" in message
    assert "source.seed_from_sample: input should be 'tickets'" in error_of(
        with_({"source.seed_from_sample": "ticket"})
    )


# ---------------------------------------------------------------- what the demo prints


def test_the_demo_notice_says_the_answers_are_made_up_not_read() -> None:
    from dbstruct.jobs._main import _DEMO_NOTICE

    assert "not from a model" in _DEMO_NOTICE and "not read from the tickets" in _DEMO_NOTICE
    assert "the same request\nalways gets the same answer" in _DEMO_NOTICE
    assert all(len(line) <= 100 for line in _DEMO_NOTICE.splitlines())


def test_rows_are_printed_one_field_a_line() -> None:
    from dbstruct.jobs._show import MAX_WIDTH, format_records

    records = [
        {"id": "T-1", "summary": "x " * 200, "order": {"reference": "INV-1", "amount": None}},
        {"id": "T-2", "summary": "Refund\nplease", "order": None, "error": "RefusalError: no"},
    ]
    text = format_records(records, ["id", "summary", "order", "error"])
    blocks = text.split("\n\n")
    assert len(blocks) == 2
    first = blocks[0].splitlines()
    assert first[0] == "  id       T-1"
    assert first[1].startswith("  summary  x x ") and first[1].endswith("...")
    assert len(first[1]) == len("  summary  ") + MAX_WIDTH
    assert first[2] == '  order    {"reference": "INV-1", "amount": null}'
    assert first[3] == "  error    null"
    assert blocks[1].splitlines()[1:] == [
        "  summary  Refund please",
        "  order    null",
        "  error    RefusalError: no",
    ]

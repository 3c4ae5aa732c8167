"""Fault injection, rate limits, latency, OAuth M2M, the subprocess mode and the CLI."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from dbstruct.cli import build_parser, main
from dbstruct.testing import FAULT_KINDS, Emulator, Fault
from dbstruct.testing._command import settings_from as emulator_settings

# One client for the whole module: a new httpx client per call costs an SSL context (~20 ms).
HTTP = httpx.Client(timeout=10, trust_env=False)

USER: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
TOOLS: Any = [{"type": "function", "function": {"name": "User", "parameters": USER}}]
FORCED: Any = {"type": "function", "function": {"name": "User"}}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}


def without_request_info(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without its RequestInfo detail (a fresh id per answer), after checking it has
    exactly one; ``details`` dropped when nothing else is in it."""
    details = body.get("details", [])
    info = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RequestInfo"]
    assert len(info) == 1 and len(info[0]["request_id"]) == 36, body
    rest = [d for d in details if d not in info]
    return {k: v for k, v in body.items() if k != "details"} | ({"details": rest} if rest else {})


def post(emu: Emulator, text: str = "John is 42", **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}], **extra}
    headers = {"Authorization": f"Bearer {emu.token}"}
    return HTTP.post(f"{emu.base_url}/m/invocations", json=body, headers=headers, timeout=10)


def valid_user(text: str | None) -> bool:
    try:
        value = json.loads(text or "")
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and (isinstance(value.get("age"), int))
    )


# ---------------------------------------------------------------- HTTP faults


def test_429_with_retry_after_header_and_in_the_body(emu: Emulator) -> None:
    emu.script([Fault("429"), Fault("429", retry_after=2.5), Fault("429_body")])
    first, second, third = post(emu), post(emu), post(emu)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert first.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert first.json()["message"].startswith(
        "REQUEST_LIMIT_EXCEEDED: Exceeded workspace rate limit for m"
    )
    assert second.headers["Retry-After"] == "3"
    assert "Retry-After" not in third.headers
    assert without_request_info(third.json())["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "1s"}
    ]
    assert emu.stats().by_fault == {"429": 2, "429_body": 1}


def test_429_bare_announces_no_delay_anywhere(emu: Emulator) -> None:
    emu.script([Fault("429_bare")])
    answer = post(emu)
    assert answer.status_code == 429 and "Retry-After" not in answer.headers
    assert without_request_info(answer.json()) == {
        "error_code": "REQUEST_LIMIT_EXCEEDED",
        "message": "REQUEST_LIMIT_EXCEEDED: Exceeded workspace rate limit for m.",
    }
    assert emu.stats().by_fault == {"429_bare": 1}


def test_server_errors(emu: Emulator) -> None:
    emu.script([Fault("500"), Fault("502"), Fault("503"), Fault("504")])
    answers = [post(emu) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 502, 503, 504]
    assert answers[0].json()["error_code"] == "INTERNAL_ERROR"
    assert answers[2].json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert answers[1].text.startswith("upstream connect error")
    assert answers[3].text == "upstream request timeout"
    assert emu.stats().by_fault == {"500": 1, "502": 1, "503": 1, "504": 1}


def test_timeout_holds_then_504_or_is_cancelled_by_the_client(emu: Emulator) -> None:
    emu.script([Fault("timeout", hold=0.3)])
    start = time.perf_counter()
    assert post(emu).status_code == 504
    assert time.perf_counter() - start >= 0.3
    emu.configure(timeout_hold=30)
    emu.script([Fault("timeout")])
    client = emu.openai_client(timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    for _ in range(50):  # the server notices the client leaving and stops holding
        if emu.stats().in_flight == 0:
            break
        time.sleep(0.02)
    stats = emu.stats()
    assert stats.in_flight == 0 and stats.status(499) == 1 and stats.status(504) == 1
    assert stats.by_fault == {"timeout": 2}


def test_dropped_connection_gets_no_answer(emu: Emulator) -> None:
    emu.script([Fault("drop")])
    with pytest.raises(httpx.TransportError):
        post(emu)
    with pytest.raises(openai.APIConnectionError):
        emu.script([Fault("drop")])
        emu.openai_client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert emu.stats().status(0) == 2


# ---------------------------------------------------------------- output faults


def test_output_faults(emu: Emulator) -> None:
    kinds = ["malformed", "invalid", "length", "refusal", "empty", "wrong_tool"]
    emu.script([Fault(k) for k in kinds])
    client = emu.openai_client()
    outs: list[Any] = [
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "John is 42"}],
            tools=TOOLS,
            tool_choice=FORCED,
        )
        for _ in kinds
    ]
    malformed, invalid, length, refusal, empty, wrong = outs
    args = [o.choices[0].message.tool_calls[0].function.arguments for o in (malformed, invalid)]
    with pytest.raises(ValueError):
        json.loads(args[0])
    assert json.loads(args[1]) is not None and not valid_user(args[1])
    assert length.choices[0].finish_reason == "length"
    assert not valid_user(length.choices[0].message.tool_calls[0].function.arguments)
    message = refusal.choices[0].message
    assert message.refusal and message.content is None and not message.tool_calls
    assert empty.choices == []
    assert wrong.choices[0].message.tool_calls[0].function.name != "User"
    assert emu.stats().by_fault == dict.fromkeys(kinds, 1) and emu.stats().status(200) == 6
    # in JSON content shapes too
    emu.script([Fault("malformed"), Fault("invalid"), Fault("length")])
    contents = [post(emu, response_format=FORMAT).json()["choices"][0] for _ in range(3)]
    assert not any(valid_user(c["message"]["content"]) for c in contents)
    assert contents[2]["finish_reason"] == "length"


def test_oversized_answers_are_valid_json_over_1_mib_in_every_shape(emu: Emulator) -> None:
    emu.script([Fault("oversized")] * 3)
    tools = post(emu, tools=TOOLS, tool_choice=FORCED, max_tokens=10).json()["choices"][0]
    fmt = post(emu, response_format=FORMAT).json()["choices"][0]
    text = post(emu).json()["choices"][0]
    arguments = tools["message"]["tool_calls"][0]["function"]["arguments"]
    for answer in (arguments, fmt["message"]["content"]):
        assert len(answer.encode()) > 1 << 20 and valid_user(answer)
    assert tools["finish_reason"] == "tool_calls"  # max_tokens does not cut it
    assert len(text["message"]["content"].encode()) > 1 << 20
    assert emu.stats().by_fault == {"oversized": 3}


# ---------------------------------------------------------------- markers


def test_marker_with_a_count_fails_only_the_first_attempts_of_that_text(emu: Emulator) -> None:
    row = "[[fault:500x2]] Ada is 36"
    assert [post(emu, row).status_code for _ in range(3)] == [500, 500, 200]
    assert post(emu, "[[fault:500x2]] Bo is 7").status_code == 500  # other text, own count
    assert [post(emu, "[[fault:503]] x").status_code for _ in range(2)] == [503, 503]


def test_markers_apply_in_sequence_and_add_latency(emu: Emulator) -> None:
    row = "[[fault:429x1]][[fault:502x1]] Ada"
    assert [post(emu, row).status_code for _ in range(3)] == [429, 502, 200]
    start = time.perf_counter()
    assert post(emu, "[[latency:0.3]] slow row").status_code == 200
    assert time.perf_counter() - start >= 0.3


def test_output_marker_counts_attempts_across_reasks(emu: Emulator) -> None:
    row = {"role": "user", "content": "[[fault:invalidx1]] John is 42"}
    first = post(emu, row["content"], response_format=FORMAT).json()
    bad = first["choices"][0]["message"]["content"]
    assert not valid_user(bad)
    reask = {
        "messages": [
            row,
            {"role": "assistant", "content": bad},
            {"role": "user", "content": "fix it"},
        ],
        "response_format": FORMAT,
    }
    headers = {"Authorization": f"Bearer {emu.token}"}
    again = HTTP.post(f"{emu.base_url}/m/invocations", json=reask, headers=headers).json()
    assert valid_user(again["choices"][0]["message"]["content"])


EXPECTED = {"429": 429, "429_body": 429, "429_bare": 429}
EXPECTED |= {"500": 500, "502": 502, "503": 503, "504": 504, "timeout": 504, "drop": 0}
EXPECTED |= dict.fromkeys(
    ("malformed", "invalid", "length", "refusal", "empty", "wrong_tool", "oversized", "misquote"),
    200,
)


def status_of(emu: Emulator, text: str) -> int:
    try:
        return post(emu, text, response_format=FORMAT).status_code
    except httpx.TransportError:
        return 0


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_kind_as_a_marker(emu: Emulator, kind: str) -> None:
    emu.configure(timeout_hold=0.05)
    assert status_of(emu, f"[[fault:{kind}x1]] John is 42") == EXPECTED[kind]
    assert status_of(emu, f"[[fault:{kind}x1]] John is 42") == 200
    assert emu.stats().by_fault == {kind: 1}


# ---------------------------------------------------------------- the seeded plan


def test_every_kind_from_the_plan(emu: Emulator) -> None:
    emu.configure(timeout_hold=0.01, faults=dict.fromkeys(FAULT_KINDS, 1 / len(FAULT_KINDS)))
    statuses = [status_of(emu, f"row {i}") for i in range(150)]
    by_fault = emu.stats().by_fault
    assert set(by_fault) == set(FAULT_KINDS) and sum(by_fault.values()) == 150
    assert statuses.count(0) == by_fault["drop"]


def test_fault_rates_with_a_seed_are_reproducible(emu: Emulator) -> None:
    def run(seed: int) -> list[int]:
        emu.reset()
        emu.configure(faults={"500": 0.3, "malformed": 0.1}, seed=seed)
        return [post(emu, f"row {i}").status_code for i in range(200)]

    first = run(1)
    assert 40 <= first.count(500) <= 80
    assert emu.stats().by_fault["malformed"] in range(8, 35)
    assert run(1) == first
    assert run(2) != first


def test_latency_and_tail_latency(emu: Emulator) -> None:
    emu.configure(latency=0.1)
    start = time.perf_counter()
    post(emu)
    assert 0.1 <= time.perf_counter() - start < 0.5
    emu.configure(latency=0.05, tail=1.0, tail_factor=6)
    start = time.perf_counter()
    post(emu, "another row")
    assert time.perf_counter() - start >= 0.3


# ---------------------------------------------------------------- rate limits


def test_qps_token_bucket(emu: Emulator) -> None:
    emu.configure(qps=5, burst=2)
    statuses = [post(emu, f"r{i}").status_code for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert emu.stats().by_fault["qps"] == 2
    time.sleep(0.25)  # 5 per second refills one
    assert post(emu, "later").status_code == 200


def test_token_per_minute_limits(emu: Emulator) -> None:
    emu.configure(otpm=100)
    refused = post(emu, max_tokens=500)  # the reservation alone is over the minute's budget
    assert refused.status_code == 429 and "output tokens per minute" in refused.json()["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert post(emu, max_tokens=50).status_code == 200
    emu.configure(otpm=None, itpm=20)
    assert post(emu, "a short row").status_code == 200
    assert post(emu, "a somewhat longer row " * 10).status_code == 429
    assert emu.stats().by_fault == {"otpm": 1, "itpm": 1}


# ---------------------------------------------------------------- OAuth M2M


def test_databricks_sdk_oauth_m2m_against_the_emulator(emu: Emulator) -> None:
    from databricks.sdk.core import Config

    config = Config(host=emu.host, client_id=emu.client_id, client_secret=emu.client_secret)
    headers = config.authenticate()
    assert config.auth_type == "oauth-m2m"
    assert headers["Authorization"].startswith("Bearer emu-oauth-")
    token = headers["Authorization"].split()[1]
    client = openai.OpenAI(base_url=emu.base_url, api_key=token, max_retries=0)
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert out.choices[0].message.content
    assert emu.stats().oauth_tokens_issued == 1


def test_issued_tokens_expire_after_the_ttl(emu: Emulator) -> None:
    emu.configure(token_ttl=0.3)
    answer = HTTP.post(
        f"{emu.host}/oidc/v1/token",
        data={"grant_type": "client_credentials", "scope": "all-apis"},
        auth=(emu.client_id, emu.client_secret),
    ).json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 1
    url = f"{emu.base_url}/m/invocations"
    body = {"messages": [{"role": "user", "content": "x"}]}
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    assert HTTP.post(url, json=body, headers=headers).status_code == 200
    time.sleep(0.35)
    expired = HTTP.post(url, json=body, headers=headers)
    assert (expired.status_code, expired.json()["message"]) == (403, "Invalid access token.")


def test_token_endpoint_refuses_bad_clients_and_grants(emu: Emulator) -> None:
    url = f"{emu.host}/oidc/v1/token"
    bad = HTTP.post(url, data={"grant_type": "client_credentials"}, auth=("x", "y"))
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid_client")
    grant = HTTP.post(
        url,
        data={
            "grant_type": "password",
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
        },
    )
    assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
    discovery = HTTP.get(f"{emu.host}/oidc/.well-known/oauth-authorization-server").json()
    assert discovery["token_endpoint"] == url


def test_sdk_with_a_wrong_secret_fails(emu: Emulator) -> None:
    from databricks.sdk.core import Config

    with pytest.raises(ValueError, match="invalid_client"):
        Config(host=emu.host, client_id=emu.client_id, client_secret="wrong").authenticate()


# ---------------------------------------------------------------- subprocess and CLI


def test_spawned_emulator_shares_the_api() -> None:
    emu = Emulator.spawn(token="dapi-sub", endpoints=["only"], latency=0.0)
    try:
        assert emu.env() == {"DATABRICKS_HOST": emu.host, "DATABRICKS_TOKEN": "dapi-sub"}
        emu.script([{"name": "Ada", "age": 36}, Fault("503")])
        client = emu.openai_client()
        out = client.chat.completions.create(
            model="only",
            messages=[{"role": "user", "content": "x"}],
            response_format=FORMAT,
        )
        assert json.loads(out.choices[0].message.content or "") == {"name": "Ada", "age": 36}
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="only", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="other", messages=[{"role": "user", "content": "x"}]
            )
        assert emu.stats().by_status == {200: 1, 503: 1, 404: 1}
        emu.reset()
        assert emu.stats().requests == 0
    finally:
        emu.stop()
    emu.stop()  # idempotent


def test_cli_settings_and_bad_config() -> None:
    args = build_parser().parse_args(
        ["emulator", "--port", "0", "--token", "a", "--token", "b", "--qps", "3",
         "--fault", "500=0.1", "--fault", "timeout=0.05", "--endpoint", "e1"]
    )  # fmt: skip
    settings = emulator_settings(args)
    assert settings["tokens"] == ["a", "b"] and settings["qps"] == 3.0
    assert settings["faults"] == {"500": 0.1, "timeout": 0.05}
    assert settings["endpoints"] == ["e1"]
    assert main(["emulator", "--fault", "teapot=0.1"]) == 2

"""The emulator's wire behaviour where it must match real endpoints: SSE streaming, ids, ``n``,
the served model's name, HTTP Basic auth, the REST lookup routes, unknown routes and the
request id in error bodies. Raw HTTP (httpx, curl), so nothing is hidden by a client library;
tests/unit/test_emulator_real_clients.py drives the same through real clients.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbstruct.testing import Emulator, Fault

HTTP = httpx.Client(timeout=10, trust_env=False)
REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo"

USER: Any = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "User", "schema": USER}}
ROW: Any = [{"role": "user", "content": "John Smith is 42 years old."}]
LLAMA = "databricks-meta-llama-3-3-70b-instruct"


def tool(name: str, schema: Any = USER) -> Any:
    return {"type": "function", "function": {"name": name, "parameters": schema}}


def post(emu: Emulator, body: dict[str, Any], endpoint: str = "m", **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", {"Authorization": f"Bearer {emu.token}"})
    return HTTP.post(f"{emu.base_url}/{endpoint}/invocations", json=body, **kwargs)


def events(emu: Emulator, body: dict[str, Any], endpoint: str = "m") -> list[Any]:
    """The SSE ``data:`` payloads of a streamed answer, decoded; "[DONE]" kept as a string."""
    answer = post(emu, {**body, "stream": True}, endpoint)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    out: list[Any] = []
    for block in answer.text.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c["choices"]]


# ---------------------------------------------------------------- streaming


def test_stream_sends_role_then_token_deltas_then_finish_then_usage_then_done(
    emu: Emulator,
) -> None:
    body = {"messages": ROW, "response_format": FORMAT}
    whole = post(emu, body, LLAMA).json()
    chunks = events(emu, {**body, "stream_options": {"include_usage": True}}, LLAMA)
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] != whole["id"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"meta-llama-3.3-70b-instruct-121024"}
    got = deltas(chunks)
    assert got[0] == {"role": "assistant", "content": ""}
    pieces = [d["content"] for d in got[1:] if d.get("content")]
    text = whole["choices"][0]["message"]["content"]
    assert len(pieces) >= 4 and all(len(p) < len(text) for p in pieces)
    assert "".join(pieces) == text
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[:-1] == [None] * (len(finishes) - 1) and finishes[-1] == "stop"
    # usage: the last chunk (choices []) has the total; every earlier chunk the usage so far
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    so_far = [c["usage"]["completion_tokens"] for c in chunks[:-1]]
    assert so_far == sorted(so_far) and so_far[-1] == whole["usage"]["completion_tokens"]


def test_a_client_that_does_not_accumulate_deltas_gets_no_json(emu: Emulator) -> None:
    chunks = events(emu, {"messages": ROW, "response_format": FORMAT})
    first_text = next(d["content"] for d in deltas(chunks) if d.get("content"))
    with pytest.raises(json.JSONDecodeError):
        json.loads(first_text)


def test_stream_tool_calls_come_as_a_head_then_argument_fragments(emu: Emulator) -> None:
    pet: Any = {
        "type": "object",
        "properties": {"species": {"enum": ["cat", "dog"]}},
        "required": ["species"],
    }
    body = {"messages": ROW, "tools": [tool("User"), tool("Pet", pet)], "tool_choice": "required"}
    got = deltas(events(emu, body))
    assert got[0] == {"role": "assistant", "content": None}
    calls = [c for d in got for c in d.get("tool_calls", [])]
    heads = [c for c in calls if "id" in c]
    assert [(h["index"], h["type"], h["function"]) for h in heads] == [
        (0, "function", {"name": "User", "arguments": ""}),
        (1, "function", {"name": "Pet", "arguments": ""}),
    ]
    assert heads[0]["id"].startswith("call_") and heads[0]["id"] != heads[1]["id"]
    fragments = [c for c in calls if "id" not in c]
    assert all(set(c) == {"index", "function"} for c in fragments)
    assert all(set(c["function"]) == {"arguments"} for c in fragments)
    args = {
        i: "".join(c["function"]["arguments"] for c in calls if c["index"] == i) for i in (0, 1)
    }
    assert len([c for c in fragments if c["index"] == 0]) >= 3
    user, species = json.loads(args[0]), json.loads(args[1])
    assert user["age"] == 42 and species["species"] in ("cat", "dog")
    assert got[-1] == {}


def test_stream_legacy_function_call_and_empty_answer(emu: Emulator) -> None:
    body = {
        "messages": ROW,
        "functions": [{"name": "User", "parameters": USER}],
        "function_call": {"name": "User"},
    }
    got = deltas(events(emu, body))
    assert got[1] == {"function_call": {"name": "User", "arguments": ""}}
    arguments = "".join(d["function_call"]["arguments"] for d in got[2:-1])
    assert json.loads(arguments)["age"] == 42
    emu.script([Fault("empty")])
    chunks = events(emu, {"messages": ROW})
    assert chunks[-1] == "[DONE]" and [c["choices"] for c in chunks[:-1]] == [[]]


# ---------------------------------------------------------------- ids, n, model


def test_ids_are_new_per_answer_while_values_stay_fixed_by_the_request(emu: Emulator) -> None:
    body = {"messages": ROW, "tools": [tool("User")], "tool_choice": "required"}
    first, second = post(emu, body).json(), post(emu, body).json()
    assert first["id"] != second["id"] and first["id"].startswith("chatcmpl_")
    calls = [a["choices"][0]["message"]["tool_calls"][0] for a in (first, second)]
    assert calls[0]["id"] != calls[1]["id"]
    assert calls[0]["function"] == calls[1]["function"]


def test_a_reask_is_the_same_request_whatever_the_earlier_call_ids(emu: Emulator) -> None:
    def reask(call_id: str) -> Any:
        call = {"id": call_id, "type": "function", "function": {"name": "User", "arguments": "{"}}
        messages = [
            *ROW,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": "Not JSON; call User again."},
        ]
        body = {"messages": messages, "tools": [tool("User")], "tool_choice": "required"}
        return post(emu, body).json()["choices"][0]["message"]["tool_calls"][0]["function"]

    assert reask("call_aaa") == reask("call_bbb")


def test_n_gives_distinct_choices_and_counts_the_tokens_of_all(emu: Emulator) -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}},
        "required": ["id"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "T", "schema": schema}}
    one = post(emu, {"messages": ROW, "response_format": fmt}).json()
    three = post(emu, {"messages": ROW, "response_format": fmt, "n": 3}).json()
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    contents = [c["message"]["content"] for c in three["choices"]]
    assert len(set(contents)) == 3
    assert contents[0] == one["choices"][0]["message"]["content"]
    assert three["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]
    streamed = [c for c in events(emu, {"messages": ROW, "response_format": fmt, "n": 3})[:-1]]
    by_index: dict[int, str] = {}
    for chunk in streamed:
        for choice in chunk["choices"]:
            text = choice["delta"].get("content") or ""
            by_index[choice["index"]] = by_index.get(choice["index"], "") + text
    assert [by_index[i] for i in range(3)] == contents


def test_answers_name_the_served_model(emu: Emulator) -> None:
    models = {
        "databricks-meta-llama-3-3-70b-instruct": "meta-llama-3.3-70b-instruct-121024",
        "databricks-gpt-oss-120b": "gpt-oss-120b-080525",
        "my-custom-endpoint": "my-custom-endpoint",
    }
    got = {e: post(emu, {"messages": ROW}, e).json()["model"] for e in models}
    assert got == models


# ---------------------------------------------------------------- auth


def test_http_basic_auth_with_user_token_is_a_pat(emu: Emulator) -> None:
    body = {"messages": ROW}
    url = f"{emu.base_url}/m/invocations"
    ok = HTTP.post(url, json=body, auth=httpx.BasicAuth("token", emu.token))
    assert ok.status_code == 200 and ok.json()["choices"]
    for user, password in (("token", "dapi-wrong"), ("someone@example.com", emu.token)):
        refused = HTTP.post(url, json=body, auth=httpx.BasicAuth(user, password))
        assert refused.status_code == 403
        assert refused.json() == {"error_code": 403, "message": "Invalid access token."}
    garbled = HTTP.post(url, json=body, headers={"Authorization": "Basic %%%"})
    assert garbled.status_code == 401


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_u_token_pat_as_in_the_rest_examples(emu: Emulator) -> None:
    # The command the emulator's docs show: curl -u token:<PAT> ...
    command = [
        "curl", "-sS", "-u", f"token:{emu.token}",
        f"{emu.host}/serving-endpoints/{LLAMA}/invocations",
        "-H", "Content-Type: application/json",
        "-d", json.dumps({"messages": ROW}),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(done.stdout)["model"] == "meta-llama-3.3-70b-instruct-121024"


# ---------------------------------------------------------------- REST routes and errors


def get(emu: Emulator, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or emu.token}"}
    return HTTP.get(f"{emu.host}{path}", headers=headers)


def test_list_and_get_describe_endpoints_in_the_rest_shape(emu: Emulator) -> None:
    post(emu, {"messages": ROW}, "seen-endpoint")
    listed = get(emu, "/api/2.0/serving-endpoints").json()["endpoints"]
    names = [e["name"] for e in listed]
    assert names[0] == LLAMA and "databricks-gpt-oss-120b" in names and "seen-endpoint" in names
    llama = get(emu, f"/api/2.0/serving-endpoints/{LLAMA}").json()
    assert llama == listed[0]
    assert llama["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    assert (llama["task"], llama["endpoint_type"]) == ("llm/v1/chat", "FOUNDATION_MODEL_API")
    (entity,) = llama["config"]["served_entities"]
    assert entity["foundation_model"]["name"] == "meta-llama-3.3-70b-instruct-121024"
    custom = get(emu, "/api/2.0/serving-endpoints/seen-endpoint").json()
    assert custom["endpoint_type"] == "EXTERNAL_MODEL"
    assert custom["config"]["served_entities"][0]["external_model"]["provider"] == "custom"
    assert custom["permission_level"] == "CAN_QUERY"
    emu.configure(forbidden_tokens=["dapi-viewer"])
    viewer = get(emu, "/api/2.0/serving-endpoints/seen-endpoint", "dapi-viewer").json()
    assert viewer["permission_level"] == "CAN_VIEW"
    assert HTTP.get(f"{emu.host}/api/2.0/serving-endpoints").status_code == 401


def test_with_endpoints_configured_only_those_exist(emu: Emulator) -> None:
    emu.configure(endpoints=["alpha", LLAMA])
    listed = get(emu, "/api/2.0/serving-endpoints").json()["endpoints"]
    assert [e["name"] for e in listed] == ["alpha", LLAMA]
    missing = get(emu, "/api/2.0/serving-endpoints/beta")
    chat = post(emu, {"messages": ROW}, "beta")
    for answer in (missing, chat):
        assert answer.status_code == 404
        body = answer.json()
        assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert body["message"] == "Endpoint with name 'beta' does not exist."


@pytest.mark.parametrize(
    ("method", "path", "shown"),
    [
        ("GET", "/api/2.0/nothing/here", "GET /nothing/here"),
        ("POST", "/api/2.1/jobs/unknown", "POST /jobs/unknown"),
        ("GET", "/serving-endpoints/m/invocations", "GET /serving-endpoints/m/invocations"),
        ("DELETE", "/api/2.0/serving-endpoints", "DELETE /serving-endpoints"),
    ],
)
def test_unknown_routes_answer_databricks_json_404(
    emu: Emulator, method: str, path: str, shown: str
) -> None:
    answer = HTTP.request(method, f"{emu.host}{path}", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 404
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["error_code"] == "ENDPOINT_NOT_FOUND"
    assert body["message"] == f"No API found for '{shown}'"


def test_serving_error_bodies_carry_a_new_request_id_each(emu: Emulator) -> None:
    emu.script([Fault("500"), Fault("429_body")])
    auth = {"Authorization": f"Bearer {emu.token}"}
    answers = [
        post(emu, {"messages": ROW}),  # 500
        post(emu, {"messages": ROW}),  # 429 with a RetryInfo detail too
        post(emu, {"messages": "not a list"}),  # 400
        HTTP.post(f"{emu.base_url}/m/invocations", content=b"{", headers=auth),  # 400
        get(emu, "/api/2.0/nope"),  # 404
    ]
    assert [a.status_code for a in answers] == [500, 429, 400, 400, 404]
    assert answers[1].json()["details"][0]["@type"].endswith("RetryInfo")
    ids = []
    for answer in answers:
        assert answer.status_code >= 400
        infos = [d for d in answer.json()["details"] if d["@type"] == REQUEST_INFO]
        assert len(infos) == 1 and infos[0]["serving_data"] == ""
        ids.append(infos[0]["request_id"])
    assert len(set(ids)) == len(ids) and all(len(i) == 36 for i in ids)
    # the workspace edge's 401/403 bodies carry no details, as quoted from real answers
    edge = [
        post(emu, {"messages": ROW}, headers={}),
        post(emu, {"messages": ROW}, headers={"Authorization": "Bearer dapi-wrong"}),
    ]
    assert [(a.status_code, "details" in a.json()) for a in edge] == [(401, False), (403, False)]


# ---------------------------------------------------------------- the startup notice


def _serve(*flags: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``dbstruct emulator --port 0 FLAGS`` started; the process and its first two lines."""
    script = Path(sys.executable).parent / "dbstruct"
    command = [str(script), "emulator", "--port", "0", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, [process.stdout.readline().strip(), process.stdout.readline().strip()]


def test_the_emulator_command_says_which_endpoints_it_serves() -> None:
    process, lines = _serve()
    try:
        assert lines[0].startswith("dbstruct emulator listening on http://127.0.0.1:")
        assert lines[1] == (
            "dbstruct emulator: serving any endpoint name; pass --endpoint NAME to serve only "
            "those and answer 404 for others"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    process, lines = _serve("--endpoint", "alpha", "--endpoint", "beta")
    try:
        assert lines[1] == (
            "dbstruct emulator: serving only alpha, beta; other endpoint names answer 404"
        )
        url = lines[0].rsplit(" ", 1)[1]
        headers = {"Authorization": "Bearer dapi-test"}
        body = {"messages": ROW}
        codes = [
            HTTP.post(f"{url}/serving-endpoints/{name}/invocations", json=body, headers=headers)
            for name in ("alpha", "gamma")
        ]
        assert [c.status_code for c in codes] == [200, 404]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------- its own statement of the rules


def test_the_emulator_imports_nothing_from_the_client() -> None:
    import ast

    import dbstruct.testing

    found = {}
    for path in sorted(Path(dbstruct.testing.__file__).parent.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        outside = {n for n in names if n.split(".")[0] == "dbstruct"}
        outside = {n for n in outside if not n.startswith("dbstruct.testing")}
        if outside:
            found[path.name] = sorted(outside)
    # `python -m dbstruct.testing` runs the emulator's own command line (_command.py)
    assert found == {}


def test_the_token_estimate_agrees_with_the_clients() -> None:
    from dbstruct import _request_checks as client_side
    from dbstruct.testing import _request_text as emulator_side

    call = {"id": "call_1", "type": "function", "function": {"name": "User", "arguments": "{}"}}
    body: Any = {
        "messages": [
            {"role": "system", "content": "Extract the user. " * 7},
            {"role": "user", "content": [{"type": "text", "text": "Ada, 36"}, {"type": "x"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "again"},
        ],
        "tools": [tool("User")],
        "response_format": FORMAT,
    }
    expected = client_side.prompt_tokens(body)
    assert emulator_side.prompt_tokens(body) == expected > 40
    for text in ("", "abc", "abcd", "abcde", "ü" * 9):
        assert emulator_side.estimate_tokens(text) == client_side.estimate_tokens(text)

"""The structured client end to end against the serving emulator, sync and async."""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

import dbstruct
from dbstruct import Mode
from dbstruct.testing import Emulator, Reply
from tests.corpus import CORPUS, Constrained, Customer, LineItem, Order, Ticket, UserExtract

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dapi-client-test-0123456789abcdef"
GPT = "databricks-gpt-oss-20b"


@pytest.fixture
def emu(dbstruct_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN)
    for key in (
        "DATABRICKS_TOKEN",
        "DATABRICKS_HOST",
        "DATABRICKS_API_KEY",
        "DATABRICKS_WORKSPACE_URL",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in dbstruct_emulator.env().items():
        monkeypatch.setenv(key, value)
    return dbstruct_emulator


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def client(mode: Mode = Mode.TOOLS, endpoint: str = "dbrx-instruct", **kw: Any) -> Any:
    kw.setdefault("max_retries", 3)
    return dbstruct.from_provider(f"databricks/{endpoint}", mode=mode, **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def acreate(mode: Mode, endpoint: str, **create: Any) -> Any:
    aclient = dbstruct.from_provider(f"databricks/{endpoint}", mode=mode, async_client=True)
    try:
        return await aclient.create(**create)
    finally:
        await aclient.close()


# ---------------------------------------------------------------- docs run verbatim


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_instructor_guide_runs_with_only_the_import_changed(emu: Emulator) -> None:
    guide = (ROOT / "tests/data/instructor-databricks-guide.md").read_text()
    namespace: dict[str, Any] = {}
    for block in python_blocks(guide):
        exec(block.replace("import instructor", "import dbstruct as instructor"), namespace)
    assert isinstance(namespace["user"], namespace["UserExtract"])
    assert namespace["user"].age == 25  # the emulator takes integers from the text
    assert isinstance(namespace["async_client"], dbstruct.AsyncStructuredClient)


def test_readme_client_examples_run_verbatim(emu: Emulator) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in python_blocks(readme) if "from_provider" in b and "Emulator" not in b]
    assert len(blocks) >= 2
    for block in blocks:
        namespace: dict[str, Any] = {}
        exec(block, namespace)
        assert namespace.get("user") is None or isinstance(
            namespace["user"], namespace["UserExtract"]
        )


def test_docs_emulator_example_runs_verbatim() -> None:
    readme = (ROOT / "docs" / "EMULATOR.md").read_text()
    (block,) = [b for b in python_blocks(readme) if "with Emulator(" in b]
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    assert namespace["user"].name == "Ada"


# ---------------------------------------------------------------- every mode


class Weather(BaseModel):
    city: str


class Search(BaseModel):
    query: str


def mode_case(mode: Mode) -> tuple[Any, str]:
    if mode is Mode.PARALLEL_TOOLS:
        return Iterable[Weather | Search], "dbrx-instruct"
    return Customer, GPT if mode is Mode.TOOLS_STRICT else "dbrx-instruct"


@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.name)
def test_every_mode_sync_and_async_agree(emu: Emulator, mode: Mode) -> None:
    response_model, endpoint = mode_case(mode)
    messages = user("Order 7 of 3 widgets for Jane Doe, Main Street 1, Utrecht")
    sync_value = client(mode, endpoint).create(response_model=response_model, messages=messages)
    async_value = run(acreate(mode, endpoint, response_model=response_model, messages=messages))
    if mode is Mode.PARALLEL_TOOLS:
        assert sync_value and all(isinstance(v, (Weather, Search)) for v in sync_value)
    else:
        assert isinstance(sync_value, Customer)
    assert sync_value == async_value
    first, second = emu.requests[-2:]
    assert first == second  # the same request goes out on both paths


# Constraints Databricks' schema subset cannot say (pattern, bounds, multipleOf) reach the model
# only as description hints; the emulator, unlike an LLM, does not read them, so its answers
# fail validation and every re-ask is spent: the path a stubborn model takes.
HINT_ONLY = {LineItem, Order, Constrained}


@pytest.mark.parametrize("mode", [Mode.JSON, Mode.JSON_O1, Mode.MD_JSON, Mode.TOOLS])
def test_reasoning_endpoints_content_blocks_are_read(emu: Emulator, mode: Mode) -> None:
    # GPT OSS endpoints answer content as [reasoning block, text block]
    value = client(mode, GPT).create(response_model=UserExtract, messages=user("jason is 25"))
    assert value.age == 25


@pytest.mark.parametrize("model", CORPUS, ids=lambda m: m.__name__)
def test_every_corpus_model_round_trips_in_tools_mode(
    emu: Emulator, model: type[BaseModel]
) -> None:
    outcome = client().extract(model, user("Some text about 3 things"))
    assert emu.stats().status(400) == 0  # every compiled schema was accepted
    if model in HINT_ONLY:
        assert isinstance(outcome.error, dbstruct.RetriesExhaustedError)
        assert isinstance(outcome.error.last_error, dbstruct.InvalidOutputError)
        assert outcome.attempts == 4
    else:
        assert isinstance(outcome.value, model), outcome.error


def test_defaults_apply_and_a_per_call_value_wins(emu: Emulator) -> None:
    c = client(temperature=0.1, max_tokens=200)
    c.create(response_model=UserExtract, messages=user("jason is 25"), temperature=0.7)
    body = emu.requests[-1]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 200


def test_messages_are_never_mutated(emu: Emulator) -> None:
    emu.script([{"name": "J"}, {"name": "J", "age": 1}])  # first answer invalid: a re-ask
    messages = [{"role": "system", "content": "Be brief."}, *user("jason is 25")]
    before = copy.deepcopy(messages)
    for mode in (Mode.TOOLS, Mode.MD_JSON, Mode.JSON_O1):
        emu.script([{"name": "J"}, {"name": "J", "age": 1}])
        client(mode).create(response_model=UserExtract, messages=messages)
    assert messages == before


# ---------------------------------------------------------------- re-asking


def test_reask_sends_the_validation_error_back(emu: Emulator) -> None:
    emu.script([{"name": "Jason", "age": "twenty-five"}, {"name": "Jason", "age": 25}])
    value, completion = client().create_with_completion(
        response_model=UserExtract, messages=user("jason is 25")
    )
    assert value == UserExtract(name="Jason", age=25)
    first, second = emu.requests[-2:]
    assert len(second["messages"]) == len(first["messages"]) + 2
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"]
    assert tool["role"] == "tool" and "age" in tool["content"] and "integer" in tool["content"]
    stats = emu.stats()
    assert completion.usage.prompt_tokens == stats.prompt_tokens
    assert completion.usage.completion_tokens == stats.completion_tokens


CLAUDE_REASKS = {
    Mode.TOOLS: Reply(content="", tool_calls=[("UserExtract", {"name": "Jason", "age": "x"})]),
    Mode.TOOLS_STRICT: Reply(tool_calls=[("UserExtract", {"name": "Jason", "age": "x"})]),
    Mode.JSON: Reply(content="   "),
    Mode.MD_JSON: Reply(content=""),
}


@pytest.mark.parametrize("mode", CLAUDE_REASKS, ids=lambda m: m.name)
def test_reasks_after_an_empty_text_are_accepted_by_claude(emu: Emulator, mode: Mode) -> None:
    # Opus refuses an empty text block even beside tool calls (databricks-ai-bridge PR 333)
    endpoint = "databricks-claude-opus-4-1"
    emu.script([CLAUDE_REASKS[mode], {"name": "Jason", "age": 25}])
    outcome = client(mode, endpoint).extract(UserExtract, user("jason is 25"))
    assert outcome.value == UserExtract(name="Jason", age=25) and outcome.attempts == 2
    assert [r["status"] for r in emu.records] == [200, 200]
    assistant = emu.requests[-1]["messages"][-2]
    assert assistant["role"] == "assistant"
    if mode in (Mode.TOOLS, Mode.TOOLS_STRICT):
        assert assistant["tool_calls"] and assistant["content"] == " "
    else:
        assert assistant["content"] == "(no answer)"


class Strict(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def upper(cls, v: str) -> str:
        if v != v.upper():
            raise ValueError("name must be upper case")
        return v


def test_retries_exhausted_carries_attempts_usage_and_the_last_answer(emu: Emulator) -> None:
    emu.script([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    with pytest.raises(dbstruct.RetriesExhaustedError) as caught:
        client(max_retries=2).create(response_model=Strict, messages=user("x"))
    error = caught.value
    assert error.attempts == 3 and emu.stats().requests == 3
    assert error.usage.prompt_tokens == emu.stats().prompt_tokens > 0
    assert error.last_raw is not None and '"c"' in error.last_raw
    assert "upper case" in str(error.last_error)


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    "marker",
    [
        "[[fault:429]]",
        "[[fault:429_body]]",
        "[[fault:429_bare]]",
        "[[fault:500]]",
        "[[fault:502]]",
        "[[fault:503]]",
        "[[fault:504]]",
        "[[fault:drop]]",
        "[[fault:malformed]]",
        "[[fault:invalid]]",
        "[[fault:wrong_tool]]",
        "[[fault:empty]]",
    ],
)
def test_transient_faults_are_retried(emu: Emulator, marker: str) -> None:
    text = marker.replace("]]", "x1]]") + " jason is 25"
    value = client().create(response_model=UserExtract, messages=user(text))
    assert isinstance(value, UserExtract)
    assert emu.stats().requests == 2


def test_429_waits_retry_after(emu: Emulator) -> None:
    emu.configure(retry_after=0.3)
    started = time.monotonic()
    outcome = client().extract(UserExtract, user("[[fault:429x1]] jason is 25"))
    assert isinstance(outcome.value, UserExtract) and outcome.attempts == 2
    assert time.monotonic() - started >= 0.3


def test_timeouts_are_retried_within_the_deadline(emu: Emulator) -> None:
    c = client(timeout=0.5)
    value = c.create(response_model=UserExtract, messages=user("[[fault:timeoutx1]] jason is 25"))
    assert isinstance(value, UserExtract)
    assert emu.stats().requests == 2


@pytest.mark.parametrize(
    ("marker", "error"),
    [
        ("[[fault:length]]", dbstruct.IncompleteOutputError),
        ("[[fault:refusal]]", dbstruct.RefusalError),
        ("[[fault:oversized]]", dbstruct.OversizedOutputError),
    ],
)
def test_length_and_refusal_are_not_retried(
    emu: Emulator, marker: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        client().create(response_model=UserExtract, messages=user(marker))
    assert emu.stats().requests == 1


def test_500s_until_retries_run_out(emu: Emulator) -> None:
    with pytest.raises(dbstruct.RetriesExhaustedError) as caught:
        client(max_retries=2).create(response_model=UserExtract, messages=user("[[fault:500]]"))
    assert caught.value.attempts == 3
    assert isinstance(caught.value.last_error, dbstruct.ServerError)
    assert caught.value.last_error.status == 500


def test_total_timeout_bounds_the_waits(emu: Emulator) -> None:
    emu.configure(retry_after=30)
    with pytest.raises(dbstruct.RetriesExhaustedError, match="deadline"):
        client(total_timeout=5).create(response_model=UserExtract, messages=user("[[fault:429]]"))
    assert emu.stats().requests == 1


def test_401_403_404_and_400_raise_at_once(emu: Emulator) -> None:
    with pytest.raises(dbstruct.AuthenticationError, match="invalid or expired") as caught:
        client(api_key="dapi-wrong").create(response_model=UserExtract, messages=user("x"))
    # Databricks answers a wrong or expired token with 403 "Invalid access token."
    assert caught.value.status == 403 and "dapi-wrong" not in str(caught.value)
    emu.configure(endpoints=["only-this-one"])
    with pytest.raises(dbstruct.EndpointNotFoundError, match="no-such") as missing:
        client(endpoint="no-such").create(response_model=UserExtract, messages=user("x"))
    assert missing.value.status == 404
    emu.configure(endpoints=None)
    # (TOOLS_STRICT on a non-GPT endpoint no longer draws a 400: tests/unit/test_tools_strict.py)
    with pytest.raises(dbstruct.BadRequestError) as bad:
        client(temperature=2.5).create(response_model=UserExtract, messages=user("x"))
    assert bad.value.status == 400 and bad.value.error_code
    assert emu.stats().requests == 3


def test_payload_over_4_mb_fails_before_sending(emu: Emulator) -> None:
    with pytest.raises(dbstruct.InputError, match="4 MB"):
        client().create(response_model=Ticket, messages=user("x" * (4 * 1024 * 1024 + 10)))
    assert emu.stats().requests == 0


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("model", ["openai/gpt-4o", "dbrx-instruct", "databricks/", 42])
def test_only_databricks_models(model: Any) -> None:
    with pytest.raises(dbstruct.ConfigurationError, match="databricks/"):
        dbstruct.from_provider(model)


def test_explicit_base_url_is_used_as_is(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://wrong.example.invalid")
    c = client(base_url=emu.base_url, api_key=TOKEN)
    assert isinstance(
        c.create(response_model=UserExtract, messages=user("jason is 25")), UserExtract
    )


def test_token_is_not_in_repr_or_errors(emu: Emulator) -> None:
    c = client()
    assert TOKEN not in repr(c) and "dbrx-instruct" in repr(c)
    with pytest.raises(dbstruct.RetriesExhaustedError) as caught:
        c.create(response_model=UserExtract, messages=user("[[fault:500]]"), max_retries=0)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value.__dict__)

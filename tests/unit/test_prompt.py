"""Prompt templates of dbstruct.spark._prompt: parsed once, row values inserted as data."""

from __future__ import annotations

import pytest

from dbstruct.errors import ConfigurationError
from dbstruct.spark._prompt import TemplatePrompt, as_messages, build_prompt

TRICKY = ["{text}", "{0}", "}}", "{{", "%s", "%(text)s", "{", "}", "{text!r:>10}", "$text", "\\n"]


@pytest.mark.parametrize("value", TRICKY)
def test_braces_and_format_codes_in_the_text_are_data(value: str) -> None:
    prompt = build_prompt("Extract the user from this text: {text}")
    assert prompt.render([value]) == (("user", f"Extract the user from this text: {value}"),)


def test_text_is_not_formatted_twice() -> None:
    # a value that names another placeholder must not pull that placeholder's value in
    prompt = build_prompt("A={a} B={b}")
    assert prompt.render(["{b}", "x"]) == (("user", "A={b} B=x"),)


def test_several_placeholders_fill_in_order_of_first_appearance() -> None:
    prompt = build_prompt("Title: {title}\n{body}\n(again: {title})")
    assert isinstance(prompt, TemplatePrompt)
    assert prompt.names == ("title", "body")
    assert prompt.render(["Hi", "text"]) == (("user", "Title: Hi\ntext\n(again: Hi)"),)


def test_messages_share_one_placeholder_order() -> None:
    prompt = build_prompt(
        [
            {"role": "system", "content": "Language: {lang}. Literal {{braces}}."},
            {"role": "user", "content": "{body} / {lang} / {title}"},
        ]
    )
    assert isinstance(prompt, TemplatePrompt)
    assert prompt.names == ("lang", "body", "title")
    assert prompt.render(["nl", "B", "T"]) == (
        ("system", "Language: nl. Literal {braces}."),
        ("user", "B / nl / T"),
    )


def test_null_value_renders_empty() -> None:
    assert build_prompt("{a}|{b}").render([None, "x"]) == (("user", "|x"),)


def test_wrong_number_of_values() -> None:
    with pytest.raises(ConfigurationError, match="takes 2 value"):
        build_prompt("{a} {b}").render(["x"])


@pytest.mark.parametrize(
    "template",
    ["{}", "{0}", "{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "unclosed {a", "lone } brace", "{ a }"],
)
def test_bad_templates_fail_when_built(template: str) -> None:
    with pytest.raises(ConfigurationError, match="prompt"):
        build_prompt(template)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "robot", "content": "{text}"}],
        [{"role": "user"}],
        [{"role": "user", "content": ["parts"]}],
        {"role": "user", "content": "{text}"},
    ],
)
def test_bad_messages_fail_when_built(messages: object) -> None:
    with pytest.raises(ConfigurationError):
        build_prompt(messages)  # type: ignore[arg-type]


def test_callable_prompt_gets_row_values() -> None:
    prompt = build_prompt(lambda title, body: [{"role": "user", "content": f"{title}: {body}"}])
    assert prompt.arity is None
    assert prompt.render(["T", "{x}"]) == (("user", "T: {x}"),)
    assert build_prompt(lambda text: text.upper()).render(["hi"]) == (("user", "HI"),)


def test_callable_returning_garbage_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="returned by"):
        build_prompt(lambda text: 42).render(["x"])


def test_as_messages_returns_fresh_dicts() -> None:
    rendered = build_prompt("{text}").render(["hi"])
    first = as_messages(rendered)
    first[0]["content"] = "changed"
    assert as_messages(rendered) == [{"role": "user", "content": "hi"}]


# ---------------------------------------------------------------- rows in a pack


@pytest.mark.parametrize(
    ("template", "lead"),
    [
        ("You triage tickets.\n\nSubject: {subject}\n\n{body}", "You triage tickets.\n\n"),
        ("Extract the user from this text: {subject} {body}", ""),
        (
            [
                {"role": "system", "content": "Triage."},
                {"role": "user", "content": "{subject}\n{body}"},
            ],
            "",
        ),
    ],
)
def test_a_packed_row_is_the_row_alone_split_at_its_first_placeholder_line(
    template: object, lead: str
) -> None:
    prompt = build_prompt(template)  # type: ignore[arg-type]
    values = ["Refund {0}", "I paid twice %s"]
    row = prompt.pack_row(values)
    assert row is not None and row.lead == lead
    # alone, the row sends exactly what the unpacked UDF sends: cache keys stay the same
    assert row.messages() == as_messages(prompt.render(values))
    assert prompt.packing_problem() is None


def test_a_prompt_with_values_outside_the_last_user_message_cannot_pack() -> None:
    prompt = build_prompt(
        [{"role": "system", "content": "About {a}"}, {"role": "user", "content": "{b}"}]
    )
    assert "last message, a user message" in str(prompt.packing_problem())
    last_assistant = build_prompt(lambda t: [{"role": "assistant", "content": t}])
    assert last_assistant.pack_row(["x"]) is None  # sent alone
    assert build_prompt(lambda t: f"Q: {t}").pack_row(["x"]).text == "Q: x"  # type: ignore[union-attr]

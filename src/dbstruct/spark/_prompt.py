"""Prompts for structured UDFs: a template parsed once, filled with row values as data.

A prompt is one of

* a string: ``"Extract the user from this text: {text}"``, sent as one user message;
* a list of messages, e.g.
  ``[{"role": "system", "content": "..."}, {"role": "user", "content": "{text}"}]``;
* a callable taking the row's values (one per input column) and returning a string or messages.

Placeholders are ``{name}`` (a Python identifier). The UDF's input columns fill them
**positionally, in order of first appearance** across the messages: ``"Title: {title}\\n{body}"``
applied to ``(df.headline, df.text)`` puts ``headline`` in ``{title}``. A placeholder used
twice takes the same column. ``{{`` and ``}}`` are literal braces in the template.

Row values are inserted literally: the template is parsed once, with the grammar of
:meth:`str.format`, and rendering only concatenates. Braces, ``%s`` or ``{0}`` inside a
row's text are data and never change the prompt. A null value in a multi-column prompt
renders as the empty string (a row whose values are all null or blank is not sent at all).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbstruct._packing import PackRow
from dbstruct.errors import ConfigurationError

__all__ = [
    "CallablePrompt",
    "Message",
    "Prompt",
    "PromptSpec",
    "Rendered",
    "TemplatePrompt",
    "as_messages",
    "build_prompt",
]

Message = dict[str, str]
PromptSpec = str | Sequence[Mapping[str, str]] | Callable[..., Any]

# The roles a chat request may carry before the answer; "tool" turns belong to the client.
# https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/api-reference
# (ChatMessage.role: system, user, assistant, tool)
_ROLES = frozenset({"system", "user", "assistant"})

#: a rendered prompt: messages as (role, content) pairs, hashable, so equal rows dedupe
Rendered = tuple[tuple[str, str], ...]


def _parse(text: str, where: str) -> tuple[tuple[str | int, ...], list[str]]:
    """Split a template into literal strings and placeholder indexes (first-appearance order)."""
    names: list[str] = []
    parts: list[str | int] = []
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ConfigurationError(
            f"prompt {where}: {e} (write {{{{ and }}}} for literal braces)"
        ) from None
    for literal, field, spec, conversion in pieces:
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            extra = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            shown = "{" + field + extra + "}"
            raise ConfigurationError(
                f"prompt {where}: placeholder {shown} is not a name; use {{text}}-style names "
                f"(no indexes, attributes or format specs) and {{{{ }}}} for literal braces"
            )
        if field not in names:
            names.append(field)
        parts.append(names.index(field))
    return tuple(parts), names


@dataclass(frozen=True)
class TemplatePrompt:
    """Messages whose contents hold ``{name}`` placeholders."""

    roles: tuple[str, ...]
    contents: tuple[tuple[str | int, ...], ...]
    names: tuple[str, ...]

    @property
    def arity(self) -> int:
        return len(self.names)

    def packing_problem(self) -> str | None:
        """Why rows of this prompt cannot share a request; None when they can: the values
        must all go into the last message, a user message (it becomes one item of a pack)."""
        if self.roles[-1] != "user" or any(
            isinstance(p, int) for parts in self.contents[:-1] for p in parts
        ):
            return (
                "rows_per_request > 1 packs each row's last message as one item, so the "
                "prompt's {placeholders} must all be in its last message, a user message"
            )
        return None

    def pack_row(self, values: Sequence[str | None]) -> PackRow | None:
        """The row as packing sees it: the messages before the last, the last message's
        text up to the line before its first placeholder (instructions every row shares),
        and the rest (this row's own). Its messages are exactly :meth:`render`'s."""
        rendered = self.render(values)
        last = rendered[-1][1]
        head = self.contents[-1][0] if self.contents[-1] else ""
        literal = head if isinstance(head, str) else ""
        cut = literal.rfind("\n") + 1
        return PackRow(rendered[:-1], last[:cut], last[cut:])

    def render(self, values: Sequence[str | None]) -> Rendered:
        if len(values) != len(self.names):
            raise ConfigurationError(
                f"prompt takes {len(self.names)} value(s) ({', '.join(self.names)}), "
                f"got {len(values)}"
            )
        filled = ["" if v is None else v for v in values]
        return tuple(
            (role, "".join(p if isinstance(p, str) else filled[p] for p in parts))
            for role, parts in zip(self.roles, self.contents, strict=True)
        )


@dataclass(frozen=True)
class CallablePrompt:
    """A function of the row's values returning a string (one user message) or messages."""

    fn: Callable[..., Any]

    @property
    def arity(self) -> int | None:
        return None  # whatever the UDF is applied to is passed on

    def render(self, values: Sequence[str | None]) -> Rendered:
        return _normalize(self.fn(*values), f"returned by {_name(self.fn)}")

    def packing_problem(self) -> str | None:
        return None  # decided per row by pack_row

    def pack_row(self, values: Sequence[str | None]) -> PackRow | None:
        """The row's last message as its item when it is a user message; else None (the
        row is sent alone)."""
        rendered = self.render(values)
        role, content = rendered[-1]
        return PackRow(rendered[:-1], "", content) if role == "user" else None


Prompt = TemplatePrompt | CallablePrompt


def build_prompt(prompt: PromptSpec) -> Prompt:
    """Parse a prompt once, on the driver, so template errors surface when the UDF is built.

    >>> build_prompt("Title: {title}\\n{body}").render(["Hi", "{0} %s }}"])
    (('user', 'Title: Hi\\n{0} %s }}'),)
    """
    if isinstance(prompt, str):
        parts, names = _parse(prompt, "template")
        return TemplatePrompt(("user",), (parts,), tuple(names))
    if callable(prompt):
        return CallablePrompt(prompt)
    messages = _normalize(prompt, "messages")
    all_names: list[str] = []
    contents: list[tuple[str | int, ...]] = []
    for i, (_, content) in enumerate(messages):
        parts, names = _parse(content, f"message {i}")
        # renumber this message's placeholders into the prompt-wide first-appearance order
        for name in names:
            if name not in all_names:
                all_names.append(name)
        contents.append(
            tuple(p if isinstance(p, str) else all_names.index(names[p]) for p in parts)
        )
    return TemplatePrompt(tuple(r for r, _ in messages), tuple(contents), tuple(all_names))


def _normalize(messages: Any, where: str) -> Rendered:
    """Check messages (or a bare string) and freeze them into a hashable tuple."""
    if isinstance(messages, str):
        return (("user", messages),)
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence) or not messages:
        raise ConfigurationError(
            f"prompt {where}: expected a string or a non-empty list of "
            f"{{'role': ..., 'content': ...}} messages, got {type(messages).__name__}"
        )
    out: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(role, str) or role not in _ROLES or not isinstance(content, str):
            raise ConfigurationError(
                f"prompt {where}: message {i} must be {{'role': one of {sorted(_ROLES)}, "
                f"'content': str}}, got {message!r:.200}"
            )
        out.append((role, content))
    return tuple(out)


def as_messages(rendered: Rendered) -> list[Message]:
    """The chat messages of a rendered prompt, fresh dicts (the client may not mutate ours)."""
    return [{"role": role, "content": content} for role, content in rendered]


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)

"""Scripted answers: what a test queues with :meth:`Emulator.script`.

A script item is one of

- a JSON value (dict, list, number, bool, None): the answer's value, put in whatever shape
  the request asked for (tool-call arguments, JSON content, a ```json fence);
- a ``str``: raw text, used verbatim as the content or the call's arguments;
- :class:`Reply`: the whole assistant message, field by field;
- :class:`Fault`: a fault for that request.

Items cross the admin HTTP API as JSON (:func:`to_wire`), so the in-process and subprocess
emulators run the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbstruct.testing._config import FAULT_KINDS

__all__ = ["Fault", "Reply", "to_wire"]


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``Fault("429")``, ``Fault("timeout", hold=5)``.

    ``kind`` is one of ``FAULT_KINDS``; ``retry_after`` overrides the announced delay of a
    429; ``hold`` overrides how long a timeout holds the request.
    """

    kind: str
    retry_after: float | None = None
    hold: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {list(FAULT_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "retry_after": self.retry_after, "hold": self.hold}


@dataclass(frozen=True)
class Reply:
    """A scripted assistant message.

    ``content``: a str (verbatim) or a JSON value (serialised); ``tool_calls``: pairs of
    ``(function name, arguments)`` with arguments a str (verbatim) or a JSON value;
    ``function_call``: one such pair (legacy functions); ``refusal``: the refusal text;
    ``finish_reason``: overrides the one the shape implies.
    """

    content: Any = None
    tool_calls: Sequence[tuple[str, Any]] | None = None
    function_call: tuple[str, Any] | None = None
    refusal: str | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "tool_calls": [list(c) for c in self.tool_calls] if self.tool_calls else None,
            "function_call": list(self.function_call) if self.function_call else None,
            "refusal": self.refusal,
            "finish_reason": self.finish_reason,
        }


def to_wire(item: Any) -> dict[str, Any]:
    """A script item as the JSON the admin API takes."""
    if isinstance(item, Fault):
        return {"fault": item.to_dict()}
    if isinstance(item, Reply):
        return {"reply": item.to_dict()}
    if isinstance(item, str):
        return {"text": item}
    return {"value": item}


def check_wire(item: Any) -> dict[str, Any]:
    """A wire item as received, checked (ValueError if it is not one)."""
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError(f"a script item is one of fault/reply/text/value, got {item!r}")
    ((key, value),) = item.items()
    if key == "fault":
        Fault(**value)  # validates the kind
    elif key == "text" and not isinstance(value, str):
        raise ValueError("a text script item must be a string")
    elif key not in ("fault", "reply", "text", "value"):
        raise ValueError(f"unknown script item {key!r}")
    return item

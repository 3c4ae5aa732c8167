"""Token usage, summed over the attempts of one call."""

from __future__ import annotations

from typing import Any

__all__ = ["Usage"]


class Usage:
    """Token usage summed over attempts."""

    __slots__ = ("completion_tokens", "prompt_tokens")

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, usage: Any) -> None:
        """Add an OpenAI ``CompletionUsage`` (or anything with the same attributes)."""
        if usage is None:
            return
        self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Usage)
            and self.prompt_tokens == other.prompt_tokens
            and self.completion_tokens == other.completion_tokens
        )

    def __repr__(self) -> str:
        return (
            f"Usage(prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens})"
        )

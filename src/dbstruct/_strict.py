"""Mode.TOOLS_STRICT on every endpoint: where a tool's ``"strict": true`` may be sent.

Only GPT endpoints take the field; the others (Llama, Claude, DBRX, ...) answer 400
``tools.0.custom.strict: Extra inputs are not permitted``. Databricks' own OpenAI client
(databricks-openai ``DatabricksOpenAI``) decides by the endpoint name, keeping ``strict`` only
for names containing "gpt" (https://github.com/databricks/databricks-ai-bridge/pull/269,
``_should_strip_strict`` in integrations/openai/src/databricks_openai/utils/clients.py).

dbstruct decides the same way where the name says what is served, and learns otherwise:

- a name containing "gpt" gets ``strict``;
- a Databricks-hosted name (``databricks-...``) or one naming a non-GPT model family gets the
  same strict-shaped schema without the flag (answers are validated with the Pydantic model
  as always, so nothing the flag would have promised is lost);
- any other (custom) name is tried with ``strict``; its first 400 about ``strict`` teaches the
  client (once per endpoint and client) to leave the flag out, and that row is resent
  without it (:func:`dbstruct._retry.attempts`: the resend is not counted as an attempt).

The downgrade is logged once per endpoint and client, on the ``dbstruct`` logger.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dbstruct.errors import BadRequestError, DbstructError

__all__ = ["StrictSupport", "is_strict_refusal", "sends_strict", "takes_strict", "without_strict"]

logger = logging.getLogger("dbstruct")

# Model families served on Databricks that are not GPT (Foundation Model APIs' supported
# models: https://docs.databricks.com/aws/en/machine-learning/model-serving/foundation-model-overview).
_NOT_GPT = ("llama", "claude", "dbrx", "mixtral", "mistral", "gemma", "gemini", "qwen", "deepseek")


def takes_strict(endpoint: str) -> bool | None:
    """Whether ``endpoint`` takes a tool's ``strict`` field, by its name; None: unknown."""
    name = endpoint.lower()
    if "gpt" in name:
        return True
    if name.startswith("databricks-") or any(family in name for family in _NOT_GPT):
        return False
    return None


def sends_strict(request: dict[str, Any]) -> bool:
    """Whether a tool of ``request`` carries the ``strict`` field."""
    return any("strict" in _function(tool) for tool in request.get("tools") or ())


def without_strict(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with no tool's ``strict`` field (copies; the schema itself is unchanged)."""
    tools = [
        {**tool, "function": {k: v for k, v in _function(tool).items() if k != "strict"}}
        if "strict" in _function(tool)
        else tool
        for tool in request.get("tools") or ()
    ]
    return {**request, "tools": tools}


def is_strict_refusal(error: DbstructError) -> bool:
    """A 400 about the ``strict`` field (``tools.0.custom.strict: Extra inputs are not
    permitted``, or another endpoint's words for it)."""
    return isinstance(error, BadRequestError) and "strict" in str(error).lower()


def _function(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    return function if isinstance(function, dict) else {}


class StrictSupport:
    """One client's knowledge of which endpoints take ``strict``: by name, or learned."""

    def __init__(self) -> None:
        self._known: dict[str, bool] = {}
        self._lock = threading.Lock()

    def get(self, endpoint: str) -> bool | None:
        """True: send ``strict``; False: leave it out; None: try it (see :meth:`refused`)."""
        known = self._known.get(endpoint)
        if known is not None:
            return known
        by_name = takes_strict(endpoint)
        if by_name is not None:
            self._learn(
                endpoint,
                by_name,
                logging.INFO,
                "only GPT endpoints take a tool's 'strict' field",
            )
        return by_name

    def refused(self, endpoint: str) -> None:
        """``endpoint`` answered 400 to ``strict``: leave it out from now on."""
        self._learn(endpoint, False, logging.WARNING, "it answered 400 to a tool's 'strict'")

    def _learn(self, endpoint: str, value: bool, level: int, why: str) -> None:
        with self._lock:
            if endpoint in self._known:
                return
            self._known[endpoint] = value
        if not value:
            logger.log(
                level,
                "Mode.TOOLS_STRICT on %s: %s; sending the strict schema without the flag "
                "and validating every answer against the response model",
                endpoint,
                why,
            )

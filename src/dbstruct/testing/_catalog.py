"""Which endpoints exist, what model answers behind each, and how the REST API describes them.

An answer's ``model`` is the served model's name, not the endpoint's: a pay-per-token
endpoint answers with a dated model id. The table holds only names seen in real answers:

| endpoint                                 | ``model`` in its answers              |
|------------------------------------------|---------------------------------------|
| databricks-meta-llama-3-3-70b-instruct   | meta-llama-3.3-70b-instruct-121024    |
| databricks-meta-llama-3-1-70b-instruct   | meta-llama-3.1-70b-instruct-072424    |
| databricks-gpt-oss-120b                  | gpt-oss-120b-080525                   |
| databricks-claude-sonnet-4-5             | us.anthropic.claude-sonnet-4-5-20250929-v1:0 |

Sources: the 3.1 id is in the recorded FMAPI answers of databricks/databricks-ai-bridge
(integrations/langchain/tests/utils/chat_models.py); the others are quoted from live answers in
public repositories' run records (GitHub code search for the ids). Any other endpoint answers
with its own name (chosen: docs are silent on what a custom or external endpoint puts there,
and a name the caller knows is the least surprising).

Endpoint descriptions follow the REST reference
(https://docs.databricks.com/api/model-serving/v1/serving-endpoint for GET by name,
https://docs.databricks.com/api/model-serving/v1/list-inference-endpoints for the list):
``name``, ``state {ready, config_update}``, ``config.served_entities``, ``task``,
``endpoint_type``, ``permission_level``. Pay-per-token endpoints are ``FOUNDATION_MODEL_API``
with a ``foundation_model`` entity and no ``creator`` (as seen in public fixtures of workspace
listings); any other name is described as an external model with the ``custom`` provider
(databricks-sdk ``ExternalModelProvider.CUSTOM``; chosen, the emulator cannot know more).
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["FOUNDATION_ENDPOINTS", "describe", "served_model"]

#: endpoint name -> (served model id in answers, display name)
FOUNDATION_ENDPOINTS: dict[str, tuple[str, str]] = {
    "databricks-meta-llama-3-3-70b-instruct": (
        "meta-llama-3.3-70b-instruct-121024",
        "Meta Llama 3.3 70B Instruct",
    ),
    "databricks-meta-llama-3-1-70b-instruct": (
        "meta-llama-3.1-70b-instruct-072424",
        "Meta Llama 3.1 70B Instruct",
    ),
    "databricks-gpt-oss-120b": ("gpt-oss-120b-080525", "GPT OSS 120B"),
    "databricks-claude-sonnet-4-5": (
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "Claude Sonnet 4.5",
    ),
}

#: a fixed creation time (ms since the epoch) for every described endpoint: 2025-01-01
_CREATED_MS = 1_735_689_600_000


def served_model(endpoint: str) -> str:
    """The ``model`` an answer of ``endpoint`` carries."""
    known = FOUNDATION_ENDPOINTS.get(endpoint)
    return known[0] if known is not None else endpoint


def describe(endpoint: str, permission: str) -> dict[str, Any]:
    """``endpoint`` as ``GET /api/2.0/serving-endpoints/{name}`` answers it."""
    known = FOUNDATION_ENDPOINTS.get(endpoint)
    entity: dict[str, Any] = {"name": endpoint}
    if known is not None:
        model, display = known
        entity["foundation_model"] = {"name": model, "display_name": display}
        entity["entity_name"] = f"system.ai.{endpoint}"
        kind = "FOUNDATION_MODEL_API"
    else:
        entity["external_model"] = {"name": endpoint, "provider": "custom", "task": "llm/v1/chat"}
        kind = "EXTERNAL_MODEL"
    return {
        "name": endpoint,
        "id": hashlib.blake2b(endpoint.encode(), digest_size=16).hexdigest(),
        "creation_timestamp": _CREATED_MS,
        "last_updated_timestamp": _CREATED_MS,
        "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
        "config": {"served_entities": [entity]},
        "task": "llm/v1/chat",
        "endpoint_type": kind,
        "permission_level": permission,
    }

"""Every corpus model's compiled schema is accepted by llama.cpp's JSON-schema grammar.

Each schema goes as dbstruct's Mode.JSON sends it (``response_format`` json_schema, built by
:func:`dbstruct.modes.build_schema_request`), plain and strict, with ``max_tokens`` small: a
schema llama.cpp cannot turn into a grammar is answered 400 (the control below shows it);
one it converts only in part is logged as "JSON schema conversion was incomplete", and the
test fails on such a line too, naming the model.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from dbstruct.examples import OrderRef, TicketTriage
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Mode, build_schema_request
from dbstruct.testing import LocalModel
from dbstruct.testing._local_model import MODEL_NAME
from tests.corpus import CORPUS

pytestmark = pytest.mark.local_model

MODELS: list[type[BaseModel]] = [*CORPUS, TicketTriage, OrderRef]
MESSAGES = [{"role": "user", "content": "Fill in an example."}]
INCOMPLETE = "JSON schema conversion was incomplete"


def _send(http: httpx.Client, request: dict[str, Any]) -> httpx.Response:
    return http.post("/chat/completions", json={"model": MODEL_NAME, "max_tokens": 8, **request})


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_compiled_schema_is_a_grammar(
    local_model: LocalModel, local_http: httpx.Client, model: type[BaseModel], strict: bool
) -> None:
    compiled = compile_schema(model, strict=strict)
    request = build_schema_request(Mode.JSON, compiled, MESSAGES)
    assert request["response_format"]["json_schema"]["schema"] == compiled.parameters
    logged = len(local_model.log_text())
    answer = _send(local_http, request)
    assert answer.status_code == 200, f"{model.__name__}: {answer.text}"
    assert answer.json()["choices"][0]["message"]["content"]
    partial = [line for line in local_model.log_text()[logged:].splitlines() if INCOMPLETE in line]
    assert partial == [], f"{model.__name__}: llama.cpp enforced only part of the schema"


def test_a_schema_llama_cpp_cannot_read_is_refused(local_http: httpx.Client) -> None:
    broken = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    request = {"messages": MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"name": "Broken", "schema": broken}}}  # fmt: skip
    answer = _send(local_http, request)
    assert answer.status_code == 400
    assert "$defs" in answer.json()["error"]["message"]


def test_a_schema_enforced_in_part_is_logged(
    local_model: LocalModel, local_http: httpx.Client
) -> None:
    # the control of the INCOMPLETE check: a pattern llama.cpp does not support
    loose = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}}
    request = {"messages": MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"name": "Loose", "schema": loose}}}  # fmt: skip
    logged = len(local_model.log_text())
    assert _send(local_http, request).status_code == 200
    assert INCOMPLETE in local_model.log_text()[logged:]

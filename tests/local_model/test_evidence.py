"""Evidence on real answers: SmolLM2 asked for a quote per field, each quote located by
dbstruct in the text. Whatever the small model quotes, a quote is marked found only where the
text holds it (offsets checked here), and not found otherwise; nothing is dropped."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct import Mode
from dbstruct.evidence import locate
from dbstruct.examples import TicketTriage
from dbstruct.testing import LocalModel
from tests.local_model.test_client import PEOPLE, UserExtract

pytestmark = pytest.mark.local_model


def _tickets(n: int) -> list[str]:
    data = resources.files("dbstruct").joinpath("data/tickets.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in data.splitlines()[:n]]
    return [f"{row['subject']}\n{row['body']}" for row in rows]


def _check(outcome: Any, text: str, fields: list[str]) -> tuple[int, int]:
    """(quoted, found) fields of one answered row, each quote checked against ``text``."""
    assert (outcome.value is None) != (outcome.error is None), outcome
    if outcome.value is None:
        return 0, 0
    quoted = found = 0
    for name in fields:
        got = outcome.value.evidence[name]
        if got.quote is None:
            assert not got.found and got.start is None
            continue
        quoted += 1
        span = locate(got.quote, text)
        if got.found:  # where dbstruct says it is: the quote, up to case and spacing
            found += 1
            assert span == (got.start, got.end), got
            assert " ".join(text[got.start : got.end].lower().split()) == " ".join(
                got.quote.strip(" \"'").lower().split()
            )
        else:
            assert span is None and got.start is None, got
    return quoted, found


@pytest.mark.parametrize(
    ("model", "texts", "max_tokens"),
    [(UserExtract, PEOPLE, 128), (TicketTriage, _tickets(4), 400)],
    ids=["users", "tickets"],
)
def test_quotes_are_found_only_where_the_text_holds_them(
    local_model: LocalModel, model: type[BaseModel], texts: list[str], max_tokens: int
) -> None:
    client = dbstruct.from_provider(
        local_model.model,
        mode=Mode.JSON,
        base_url=local_model.base_url,
        api_key=local_model.token,
        max_retries=0,
        temperature=0.0,
        max_tokens=max_tokens,
    )
    fields = list(model.model_fields)
    quoted = found = answered = 0
    for text in texts:
        outcome = client.extract(model, [{"role": "user", "content": text}], evidence=True)
        q, f = _check(outcome, text, fields)
        answered += outcome.value is not None
        quoted, found = quoted + q, found + f
    print(f"{model.__name__}: {answered}/{len(texts)} answered, {quoted} quotes, {found} found")
    assert answered >= 1  # real answers flowed, evidence and all

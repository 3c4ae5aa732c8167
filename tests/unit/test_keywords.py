"""Keyword arguments that become request fields are checked before anything is sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import dbstruct
from dbstruct import ConfigurationError, Mode
from dbstruct._params import CLIENT_OPTIONS, REQUEST_FIELDS, check_keywords
from dbstruct.testing import Emulator

ROW = [{"role": "user", "content": "Extract jason is 25 years old"}]
VALID = {"temperature": 0.2, "max_tokens": 200, "top_p": 0.9, "stop": ["</end>"]}


class UserExtract(BaseModel):
    name: str
    age: int


def client(emu: Emulator, *, async_client: bool = False, **kw: Any) -> Any:
    return dbstruct.from_provider(
        "databricks/databricks-meta-llama-3-3-70b-instruct",
        async_client=async_client,
        base_url=emu.base_url,
        api_key=emu.token,
        **kw,
    )


# ---------------------------------------------------------------- from_provider


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("temprature", "temperature"),
        ("max_token", "max_tokens"),
        ("max_retry", "max_retries"),  # from_provider's own parameter
        ("totaltimeout", "total_timeout"),
        ("extra_header", "extra_headers"),
    ],
)
def test_from_provider_refuses_a_misspelt_keyword_naming_the_closest(
    dbstruct_emulator: Emulator, typo: str, meant: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        client(dbstruct_emulator, **{typo: 1})
    assert f"unknown parameter '{typo}'; did you mean '{meant}'?" in str(caught.value)
    assert dbstruct_emulator.stats().requests == 0


def test_from_provider_refuses_a_keyword_with_no_close_match(dbstruct_emulator: Emulator) -> None:
    with pytest.raises(ConfigurationError) as caught:
        client(dbstruct_emulator, xyzzy=True)
    assert str(caught.value).startswith("unknown parameter 'xyzzy' (from_provider sends")


@pytest.mark.parametrize("field", ["tools", "response_format", "tool_choice", "messages"])
def test_fields_the_mode_sets_are_refused_not_silently_overwritten(
    dbstruct_emulator: Emulator, field: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"'{field}' of from_provider is set by the mode"):
        client(dbstruct_emulator, **{field: None})


def test_documented_request_fields_pass_and_are_sent(dbstruct_emulator: Emulator) -> None:
    with client(dbstruct_emulator, **VALID) as c:
        assert isinstance(c.create(response_model=UserExtract, messages=ROW), UserExtract)
    (body,) = dbstruct_emulator.requests
    assert {k: body[k] for k in VALID} == VALID


def test_openai_request_options_pass_and_apply(dbstruct_emulator: Emulator) -> None:
    options = {"extra_headers": {"X-Trace": "t1"}, "extra_body": {"seed": 7}}
    with client(dbstruct_emulator, **options) as c:
        assert isinstance(c.create(response_model=UserExtract, messages=ROW), UserExtract)
    (body,) = dbstruct_emulator.requests
    assert body["seed"] == 7  # extra_body's fields are merged into the request
    assert "extra_headers" not in body and "extra_body" not in body


# ---------------------------------------------------------------- create()


@pytest.mark.parametrize("path", ["sync", "async"])
def test_create_refuses_a_misspelt_keyword_before_sending(
    dbstruct_emulator: Emulator, path: str
) -> None:
    async def acreate() -> Any:
        async with client(dbstruct_emulator, async_client=True) as c:
            return await c.create(response_model=UserExtract, messages=ROW, top_pp=0.5)

    with pytest.raises(ConfigurationError, match="'top_pp'; did you mean 'top_p'"):
        if path == "sync":
            with client(dbstruct_emulator) as c:
                c.create_with_completion(response_model=UserExtract, messages=ROW, top_pp=0.5)
        else:
            asyncio.run(acreate())
    assert dbstruct_emulator.stats().requests == 0


def test_create_suggests_its_own_parameters(dbstruct_emulator: Emulator) -> None:
    with client(dbstruct_emulator) as c, pytest.raises(ConfigurationError) as caught:
        c.create(response_model=UserExtract, messages=ROW, validation_contxt={})
    assert "did you mean 'validation_context'?" in str(caught.value)


def test_create_passes_request_fields_and_the_per_call_one_wins(
    dbstruct_emulator: Emulator,
) -> None:
    with client(dbstruct_emulator, temperature=0.1) as c:
        c.create(response_model=UserExtract, messages=ROW, temperature=0.7, max_tokens=300)
        c.create(response_model=UserExtract, messages=ROW, model="databricks-claude-sonnet-4")
    first, second = dbstruct_emulator.records
    assert (first["body"]["temperature"], first["body"]["max_tokens"]) == (0.7, 300)
    assert second["endpoint"] == "databricks-claude-sonnet-4"
    assert second["body"]["temperature"] == 0.1


def test_every_documented_field_and_option_is_accepted() -> None:
    # the chat request fields of the Foundation Model REST API reference that the mode leaves
    # to the caller, and the openai client's per-request options
    documented = [
        "model", "max_tokens", "stream", "temperature", "top_p", "top_k", "stop", "n",
        "logprobs", "top_logprobs", "reasoning_effort",
    ]  # fmt: skip
    check_keywords(documented, "create()")
    check_keywords(["timeout", "extra_headers", "extra_query", "extra_body"], "create()")
    assert REQUEST_FIELDS >= set(documented) and CLIENT_OPTIONS >= {"timeout", "extra_body"}


# ---------------------------------------------------------------- structured_udf

pytest.importorskip("pyspark")


def udf(emu: Emulator, **kw: Any) -> Any:
    from dbstruct.spark import structured_udf

    return structured_udf(
        UserExtract,
        "databricks/databricks-meta-llama-3-3-70b-instruct",
        base_url=emu.base_url,
        api_key=emu.token,
        **kw,
    )


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("concurency", "concurrency"),
        ("include_stats", "include_status"),
        ("max_qp", "max_qps"),
        ("temperatur", "temperature"),
        ("max_answer_byte", "max_answer_bytes"),  # an option it passes to from_provider
    ],
)
def test_structured_udf_refuses_a_misspelt_keyword_at_once(
    dbstruct_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, typo: str, meant: str
) -> None:
    # checked before anything else: before credentials are even looked for
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    from dbstruct.spark import structured_udf

    with pytest.raises(ConfigurationError) as caught:
        structured_udf(UserExtract, "databricks/x", **{typo: 16})
    assert f"unknown parameter '{typo}'; did you mean '{meant}'?" in str(caught.value)
    assert dbstruct_emulator.stats().requests == 0


def test_structured_udf_refuses_async_client(dbstruct_emulator: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="unknown parameter 'async_client'"):
        udf(dbstruct_emulator, async_client=True)


def test_structured_udf_passes_request_fields_and_sends_them(dbstruct_emulator: Emulator) -> None:
    import pandas as pd

    extract = udf(dbstruct_emulator, max_answer_bytes=4096, **VALID)
    assert dict(extract.spec.client_options) == {"max_answer_bytes": 4096, **VALID}
    # the UDF's own function, as an executor runs it, on one Arrow batch
    (frame,) = list(extract.func(iter([pd.Series(["jason is 25", "ada is 36"])])))
    assert frame["age"].tolist() == [25, 36]
    bodies = dbstruct_emulator.requests
    assert len(bodies) == 2 and all({k: b[k] for k in VALID} == VALID for b in bodies)


def test_udf_mode_strings_still_work(dbstruct_emulator: Emulator) -> None:
    assert udf(dbstruct_emulator, mode="tools_strict").spec.mode is Mode.TOOLS_STRICT

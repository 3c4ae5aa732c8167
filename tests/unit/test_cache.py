"""The opt-in response cache: hits send nothing, keys see every part of the request, errors are
never stored, sync and async share one file, several processes write to it at once."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationInfo, field_validator

import dbstruct
from dbstruct import ConfigurationError, Mode
from dbstruct.cache import CachedAnswer, DiskCache, cache_key
from dbstruct.testing import Emulator, Fault
from tests.corpus import Customer, Ticket, UserExtract

TOKEN = "dapi-cache-test-0123456789abcdef"
ENDPOINT = "dbrx-instruct"
MESSAGES = [{"role": "user", "content": "jason is 25"}]


@pytest.fixture
def emu(dbstruct_emulator: Emulator) -> Emulator:
    dbstruct_emulator.start_from(token=TOKEN)
    return dbstruct_emulator


def client(emu: Emulator, cache: Any, mode: Mode = Mode.TOOLS, **kw: Any) -> Any:
    return dbstruct.from_provider(
        f"databricks/{kw.pop('endpoint', ENDPOINT)}",
        mode=mode,
        base_url=emu.base_url,
        api_key=emu.token,
        cache=cache,
        max_retries=kw.pop("max_retries", 0),
        **kw,
    )


def sent(emu: Emulator) -> int:
    return len(emu.records)


# ---------------------------------------------------------------- hits and misses


@pytest.mark.parametrize("mode", [Mode.TOOLS, Mode.FUNCTIONS, Mode.JSON, Mode.MD_JSON])
def test_second_call_is_answered_from_disk(emu: Emulator, tmp_path: Path, mode: Mode) -> None:
    c = client(emu, tmp_path / "c", mode)
    first, completion = c.create_with_completion(response_model=Customer, messages=MESSAGES)
    assert sent(emu) == 1 and completion.usage.total_tokens > 0
    again, cached = c.create_with_completion(response_model=Customer, messages=MESSAGES)
    assert sent(emu) == 1
    assert again == first and isinstance(again, Customer)
    assert cached.id.startswith("cached-") and cached.usage.total_tokens == 0
    outcome = c.extract(Customer, MESSAGES)
    assert outcome.ok and outcome.attempts == 0 and outcome.usage.total_tokens == 0


def test_parallel_tools_lists_round_trip(emu: Emulator, tmp_path: Path) -> None:
    c = client(emu, tmp_path / "c", Mode.PARALLEL_TOOLS)
    model: Any = Iterable[UserExtract | Ticket]
    first = c.create(response_model=model, messages=MESSAGES)
    assert c.create(response_model=model, messages=MESSAGES) == first
    assert sent(emu) == 1


def test_a_new_client_on_the_same_path_hits(emu: Emulator, tmp_path: Path) -> None:
    client(emu, str(tmp_path / "c"), Mode.TOOLS).create(UserExtract, MESSAGES)
    client(emu, DiskCache(tmp_path / "c"), Mode.TOOLS).create(UserExtract, MESSAGES)
    assert sent(emu) == 1
    assert len(DiskCache(tmp_path / "c")) == 1


def test_without_a_cache_every_call_is_sent(emu: Emulator) -> None:
    c = client(emu, None)
    c.create(UserExtract, MESSAGES)
    c.create(UserExtract, MESSAGES)
    assert sent(emu) == 2


def test_errors_are_never_cached(emu: Emulator, tmp_path: Path) -> None:
    c = client(emu, tmp_path / "c")
    emu.script([Fault("500")])
    assert not c.extract(UserExtract, MESSAGES).ok
    assert len(DiskCache(tmp_path / "c")) == 0
    assert c.extract(UserExtract, MESSAGES).ok
    assert sent(emu) == 2


def test_usage_of_the_first_answer_is_kept(emu: Emulator, tmp_path: Path) -> None:
    c = client(emu, tmp_path / "c")
    outcome = c.extract(UserExtract, MESSAGES)
    (key,) = _keys(tmp_path / "c")
    stored = DiskCache(tmp_path / "c").get(key)
    assert stored is not None and stored.prompt_tokens == outcome.usage.prompt_tokens > 0


def _keys(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(DiskCache(path).path) as conn:
        return [k for (k,) in conn.execute("SELECT key FROM answers")]


# ---------------------------------------------------------------- the key


class Renamed(BaseModel):
    name: str
    age: int
    city: str | None = None


def test_each_part_of_the_request_changes_the_key(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "c"
    client(emu, path).create(UserExtract, MESSAGES)
    variants: list[Callable[[], Any]] = [
        lambda: client(emu, path, endpoint="other-endpoint").create(UserExtract, MESSAGES),
        lambda: client(emu, path, Mode.JSON).create(UserExtract, MESSAGES),
        lambda: client(emu, path).create(Renamed, MESSAGES),  # another schema
        lambda: client(emu, path).create(UserExtract, [{"role": "user", "content": "ada, 36"}]),
        lambda: client(emu, path).create(UserExtract, MESSAGES, temperature=0.3),
        lambda: client(emu, path, temperature=0.3, max_tokens=50).create(UserExtract, MESSAGES),
    ]
    for i, call in enumerate(variants, start=2):
        call()
        assert sent(emu) == i, f"variant {i - 1} was answered from the cache"
    assert len(DiskCache(path)) == 7
    client(emu, path, temperature=0.3).create(UserExtract, MESSAGES)  # default == per-call
    assert sent(emu) == 7


def test_transport_options_do_not_change_the_key() -> None:
    request = {"model": "e", "messages": MESSAGES, "temperature": 0}
    key = cache_key(Mode.TOOLS, request)
    assert key == cache_key(Mode.TOOLS, {**request, "timeout": 5, "extra_headers": {"a": "b"}})
    assert key == cache_key(Mode.TOOLS, dict(reversed(list(request.items()))))
    assert key != cache_key(Mode.TOOLS, {**request, "temperature": 0.0001})


class Picky(BaseModel):
    name: str
    age: int

    @field_validator("age")
    @classmethod
    def check(cls, v: int, info: ValidationInfo) -> int:
        if (info.context or {}).get("reject"):
            raise ValueError("rejected by context")
        return v


def test_a_hit_is_validated_again_and_a_failure_is_a_miss(emu: Emulator, tmp_path: Path) -> None:
    c = client(emu, tmp_path / "c")
    c.create(Picky, MESSAGES)
    assert c.create(Picky, MESSAGES) is not None and sent(emu) == 1  # a hit
    # the context is not in the key: same key, but the stored answer fails validation now
    outcome = c.extract(Picky, MESSAGES, validation_context={"reject": True})
    assert sent(emu) == 2 and not outcome.ok


# ---------------------------------------------------------------- sync and async


def test_sync_and_async_share_the_cache(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "c"
    value = client(emu, path).create(Customer, MESSAGES)

    async def go() -> Any:
        aclient = client(emu, path, async_client=True)
        try:
            return await aclient.create_with_completion(response_model=Customer, messages=MESSAGES)
        finally:
            await aclient.close()

    again, completion = asyncio.run(go())
    assert again == value and completion.usage.total_tokens == 0
    assert sent(emu) == 1

    async def new_row() -> Any:
        aclient = client(emu, path, async_client=True)
        try:
            return await aclient.create(Customer, [{"role": "user", "content": "new"}])
        finally:
            await aclient.close()

    fresh = asyncio.run(new_row())
    assert client(emu, path).create(Customer, [{"role": "user", "content": "new"}]) == fresh
    assert sent(emu) == 2


# ---------------------------------------------------------------- the file


def _writer(path: str, start: int, count: int) -> None:
    cache = DiskCache(path, timeout=30)
    for i in range(start, start + count):
        cache.put(f"k{i}", CachedAnswer((("UserExtract", f'{{"name":"n","age":{i}}}'),), False))


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    DiskCache(path)  # made once, so both processes open a WAL file
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, n * 300, 300)) for n in range(2)]
    for p in procs:
        p.start()
    _writer(path, 600, 100)  # and this process too
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = DiskCache(path)
    assert len(cache) == 700
    hit = cache.get("k599")
    assert hit is not None and hit.items == (("UserExtract", '{"name":"n","age":599}'),)


def test_a_corrupted_file_is_moved_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    cache = DiskCache(path)
    assert len(cache) == 0 and cache.get("k") is None
    assert [p.name for p in tmp_path.glob("c.sqlite3.corrupt-*")]
    assert "not a usable database" in caplog.text
    _writer(str(path), 0, 1)
    assert len(DiskCache(path)) == 1


def test_an_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match=r"cannot use the response cache at .*file"):
        DiskCache(blocker / "sub" / "c.sqlite3")


def test_a_directory_path_holds_the_default_file(tmp_path: Path) -> None:
    assert DiskCache(tmp_path).path == tmp_path / "responses.sqlite3"
    assert DiskCache(tmp_path / "new").path == tmp_path / "new" / "responses.sqlite3"
    assert DiskCache(tmp_path / "x.db").path == tmp_path / "x.db"


def test_pickling_keeps_the_path_and_reopens(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("k", CachedAnswer((("A", "{}"),), False, 3, 4))
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.get("k") == CachedAnswer((("A", "{}"),), False, 3, 4)


def test_a_bad_cache_argument_is_refused(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="cache must be a path"):
        client(emu, 42)


# ---------------------------------------------------------------- the key without a client


@pytest.mark.parametrize("mode", [Mode.TOOLS, Mode.JSON, Mode.MD_JSON])
def test_request_key_is_the_key_the_client_stores(
    emu: Emulator, tmp_path: Path, mode: Mode
) -> None:
    from dbstruct.cache import request_key

    c = client(emu, tmp_path / "c", mode, temperature=0.2, max_tokens=300, timeout=30)
    c.create(UserExtract, MESSAGES)
    (stored,) = _keys(tmp_path / "c")
    assert request_key(mode, UserExtract, MESSAGES, c.defaults, ENDPOINT) == stored
    assert request_key(mode, UserExtract, MESSAGES, {}, ENDPOINT) != stored  # defaults count


def test_the_spark_row_key_is_the_clients_key_and_null_for_blank_rows(
    emu: Emulator, tmp_path: Path
) -> None:
    pytest.importorskip("pyspark")
    from dbstruct.spark import structured_udf
    from dbstruct.spark._table_cache import key_spec, row_key

    udf = structured_udf(
        UserExtract, f"databricks/{ENDPOINT}", "Who is this? {text}",
        base_url=emu.base_url, api_key=emu.token, temperature=0.0, timeout=20,
    )  # fmt: skip
    spec = key_spec(udf)
    c = client(emu, tmp_path / "c", temperature=0.0, timeout=20)
    c.create(UserExtract, [{"role": "user", "content": "Who is this? jason is 25"}])
    (stored,) = _keys(tmp_path / "c")
    assert row_key(spec, ["jason is 25"]) == stored
    assert row_key(spec, [None]) is None and row_key(spec, [" \n"]) is None
    assert sent(emu) == 1  # keys are computed without a request

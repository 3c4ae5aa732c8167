"""An opt-in cache of validated answers, so rerunning a notebook cell costs nothing for rows
already answered.

    cache = DiskCache("~/.cache/dbstruct")
    client = dbstruct.from_provider("databricks/databricks-meta-llama-3-3-70b-instruct",
                                    cache=cache)
    client.create(response_model=UserExtract, messages=messages)  # asks the endpoint
    client.create(response_model=UserExtract, messages=messages)  # answered from disk

The key is a sha256 of a canonical JSON (sorted keys, compact) of the mode and the request as
it would be sent: endpoint, messages, the compiled schema (in tools, response_format or the
MD_JSON system message) and parameters (temperature, max_tokens, ...). Transport options
(``extra_headers``, ``timeout``) are left out: they do not change the answer. The validation
context is left out too: it cannot be serialised in general, and a hit is validated again with
the caller's context and model, so a changed validator that rejects the stored answer turns
the hit into a miss rather than a wrong value.

A hit sends nothing. Its :class:`~dbstruct.Outcome` has ``attempts == 0`` and zero
usage (no tokens were spent this time; the tokens the answer first cost stay in the cache),
and ``create_with_completion`` returns a synthesised completion shaped like the mode's answer
(tool call, function call, content or a json code block) with ``id`` ``"cached-<key>"`` and
usage 0. Only successes are stored: errors, refusals and cut-off answers never are.

:class:`DiskCache` is a sqlite3 file in WAL mode: one writer and many readers at a time
across the processes of one machine (Spark's Python workers, say); not for network file
systems (https://www.sqlite.org/wal.html). Any object with ``get`` and ``put`` like
:class:`ResponseCache` can stand in for it. For jobs and clusters,
:class:`dbstruct.spark.TableCache` keeps answers in a table under the same keys
(:func:`request_key`), computed in Spark without a client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from dbstruct.errors import ConfigurationError
from dbstruct.json_schema import compile_schema
from dbstruct.modes import Message, Mode, ResponseTarget, chat_request
from dbstruct.usage import Usage

__all__ = [
    "CachedAnswer",
    "DiskCache",
    "ResponseCache",
    "cache_key",
    "cached_answer",
    "open_cache",
    "request_key",
    "to_cached",
]

log = logging.getLogger(__name__)

_KEY_VERSION = 1  # bump when the key's recipe changes, so old entries are never misread
_TRANSPORT_ONLY = frozenset({"extra_headers", "extra_query", "timeout"})
_DEFAULT_FILE = "responses.sqlite3"


@dataclass(frozen=True)
class CachedAnswer:
    """One validated answer: ``(tool or schema name, JSON)`` per item, and what it cost."""

    items: tuple[tuple[str, str], ...]
    parallel: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ResponseCache(Protocol):
    """What the clients need of a cache. Implementations must not raise for I/O trouble:
    a cache that cannot answer returns ``None`` (a miss), one that cannot store skips it."""

    def get(self, key: str) -> CachedAnswer | None: ...

    def put(self, key: str, answer: CachedAnswer) -> None: ...


# ---------------------------------------------------------------- keys and entries


def cache_key(mode: Mode, request: dict[str, Any]) -> str:
    """sha256 of the mode and the request as sent (``model`` is the endpoint)."""
    sent = {k: v for k, v in request.items() if k not in _TRANSPORT_ONLY}
    canonical = json.dumps(
        {"v": _KEY_VERSION, "mode": mode.value, "request": sent},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_key(
    mode: Mode,
    response_model: Any,
    messages: Sequence[Message],
    defaults: Mapping[str, Any],
    endpoint: str,
) -> str:
    """The key a client with these ``defaults`` (``client.defaults``: its per-request
    parameters, not its transport settings) stores an answer under, without a client.

    >>> request_key(Mode.TOOLS, User, [{"role": "user", "content": "jason is 25"}], {}, "llm")

    The client and the Spark table cache both call this, so their keys cannot drift apart.
    """
    target = ResponseTarget.of(response_model)
    return cache_key(mode, chat_request(mode, target, messages, defaults, endpoint))


def to_cached(value: Any, usage: Usage) -> CachedAnswer:
    """The entry for a validated answer (a model instance, or a list for PARALLEL_TOOLS)."""
    parallel = isinstance(value, list)
    values: list[BaseModel] = value if parallel else [value]
    # by alias: what validation accepts back, whatever populate_by_name says
    items = tuple((compile_schema(type(v)).name, v.model_dump_json(by_alias=True)) for v in values)
    return CachedAnswer(items, parallel, usage.prompt_tokens, usage.completion_tokens)


def cached_answer(
    answer: CachedAnswer,
    mode: Mode,
    target: ResponseTarget,
    *,
    key: str,
    endpoint: str,
    context: Any = None,
) -> tuple[Any, ChatCompletion] | None:
    """The value and a synthesised completion for a hit; ``None`` if the stored answer no
    longer validates (the model changed), which the client treats as a miss."""
    by_name = {compile_schema(m).name: m for m in target.models}
    values = []
    for name, text in answer.items:
        model = by_name.get(name)
        if model is None:
            return None
        try:
            values.append(model.model_validate_json(text, context=context))
        except ValidationError:
            log.debug("cached answer %s no longer validates as %s", key[:16], name)
            return None
    if answer.parallel != target.parallel or (not target.parallel and len(values) != 1):
        return None
    value = values if target.parallel else values[0]
    return value, _completion(answer, mode, key, endpoint)


def _completion(answer: CachedAnswer, mode: Mode, key: str, endpoint: str) -> ChatCompletion:
    """A completion shaped like ``mode``'s answer, so callers reading it find the JSON."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if mode in (Mode.TOOLS, Mode.TOOLS_STRICT, Mode.PARALLEL_TOOLS):
        message["tool_calls"] = [
            {"id": f"cached-{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(answer.items)
        ]
        finish = "tool_calls"
    elif mode is Mode.FUNCTIONS:
        name, arguments = answer.items[0]
        message["function_call"] = {"name": name, "arguments": arguments}
        finish = "function_call"
    elif mode is Mode.MD_JSON:
        message["content"] = f"```json\n{answer.items[0][1]}\n```"
    else:
        message["content"] = answer.items[0][1]
    return ChatCompletion.model_validate(
        {
            "id": f"cached-{key[:32]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": endpoint,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


def open_cache(cache: ResponseCache | str | os.PathLike[str] | None) -> ResponseCache | None:
    """``from_provider(cache=...)``: a path becomes a :class:`DiskCache`."""
    if cache is None:
        return None
    if isinstance(cache, (str, os.PathLike)):
        return DiskCache(cache)
    if callable(getattr(cache, "get", None)) and callable(getattr(cache, "put", None)):
        return cache
    raise ConfigurationError(
        f"cache must be a path or an object with get(key) and put(key, answer); got {cache!r}"
    )


# ---------------------------------------------------------------- on disk


_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID
"""
_FORMAT = 1  # PRAGMA user_version of files this code writes


class DiskCache:
    """Answers in a sqlite3 file on local disk, shared by the processes of one machine.

    >>> cache = DiskCache("~/.cache/dbstruct")  # a directory: responses.sqlite3 inside it
    >>> endpoint = "databricks/databricks-meta-llama-3-3-70b-instruct"
    >>> client = dbstruct.from_provider(endpoint, cache=cache)

    The file opens when the cache is made, so a path that cannot be used raises
    :class:`~dbstruct.errors.ConfigurationError` at once. A file that is not a sqlite
    database (corrupted, truncated) is moved aside to ``<name>.corrupt-<time>`` with a
    warning, and a new one is made: a cache only saves requests, it holds nothing that
    cannot be asked again. Later I/O errors (a lock held past ``timeout``, a full disk) are
    logged and count as misses: the cache never fails a call.

    Each process (and each fork) opens its own connection; pickling keeps only the path, so
    the cache can travel with a UDF to Spark executors.
    """

    def __init__(
        self, path: str | os.PathLike[str] = "~/.cache/dbstruct", *, timeout: float = 30.0
    ) -> None:
        self.path = _file_of(Path(path).expanduser())
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._connection()

    def __repr__(self) -> str:
        return f"DiskCache({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout = state["path"], state["timeout"]
        self._lock = threading.Lock()
        self._conn, self._pid = None, 0

    def get(self, key: str) -> CachedAnswer | None:
        try:
            with self._lock:
                row = (
                    self._connection()
                    .execute(
                        "SELECT answer, prompt_tokens, completion_tokens"
                        " FROM answers WHERE key = ?",
                        (key,),
                    )
                    .fetchone()
                )
        except sqlite3.Error as e:
            log.warning("dbstruct cache %s: read failed, treated as a miss: %s", self.path, e)
            return None
        if row is None:
            return None
        stored = json.loads(row[0])
        items = tuple((str(n), str(a)) for n, a in stored["items"])
        return CachedAnswer(items, bool(stored["parallel"]), int(row[1]), int(row[2]))

    def put(self, key: str, answer: CachedAnswer) -> None:
        text = json.dumps({"items": answer.items, "parallel": answer.parallel})
        try:
            with self._lock:
                self._connection().execute(  # autocommit: one statement, one transaction
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                    (key, text, answer.prompt_tokens, answer.completion_tokens, time.time()),
                )
        except sqlite3.Error as e:
            log.warning("dbstruct cache %s: write failed, answer not stored: %s", self.path, e)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connection().execute("SELECT COUNT(*) FROM answers").fetchone()
        return int(count)

    def clear(self) -> None:
        with self._lock:
            self._connection().execute("DELETE FROM answers")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        # a connection inherited through fork() must not be used: open one per process
        if self._conn is None or self._pid != os.getpid():
            self._conn = _open(self.path, self.timeout)
            self._pid = os.getpid()
        return self._conn


def _file_of(path: Path) -> Path:
    """A directory (existing, or a path without a suffix) holds ``responses.sqlite3``."""
    if path.is_dir() or not path.suffix:
        return path / _DEFAULT_FILE
    return path


def _open(path: Path, timeout: float) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _connect(path, timeout)
    except sqlite3.OperationalError as e:  # before DatabaseError: it is a subclass
        raise _unusable(path, e) from e
    except sqlite3.DatabaseError as e:  # "file is not a database", "malformed"
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning("dbstruct cache %s is not a usable database (%s); moved to %s", path, e, aside)
        try:
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                pass  # another process moved it first
            return _connect(path, timeout)
        except (OSError, sqlite3.Error) as again:
            raise _unusable(path, again) from again
    except OSError as e:
        raise _unusable(path, e) from e


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    # isolation_level=None: autocommit, so no transaction stays open between calls
    conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
    try:
        # the first read of the header: raises "file is not a database" for a corrupt file
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version not in (0, _FORMAT):
            raise ConfigurationError(
                f"the response cache {path} was written by a newer dbstruct (format {version}); "
                "use another path or upgrade"
            )
        conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        conn.execute("PRAGMA synchronous=NORMAL")  # durable enough for a cache, far faster
        conn.execute(_SCHEMA)
        conn.execute(f"PRAGMA user_version={_FORMAT}")
    except BaseException:
        conn.close()
        raise
    return conn


def _unusable(path: Path, error: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"cannot use the response cache at {path}: {error}. Pass another path to "
        "cache=, or fix the file's permissions."
    )

"""Job files read from YAML, ``--set`` overrides applied, validated into a JobConfig.

    conf = load_config("conf/tickets.yml", overrides=["target.mode=overwrite"])

A bad file raises :class:`~dbstruct.errors.ConfigurationError` with one line per problem,
naming the file, the key and what was expected::

    conf/x.yml: source.table: expected catalog.schema.table, got 'foo'

A key that does not exist is named with the closest valid one (``concurency: unknown key;
did you mean 'concurrency'?``), in the file and in ``--set``. The keys themselves are
:class:`dbstruct.jobs.conf.JobConfig`'s.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dbstruct.errors import ConfigurationError
from dbstruct.jobs._did_you_mean import did_you_mean
from dbstruct.jobs._secrets import inline_secret_errors
from dbstruct.jobs.conf import JobConfig

__all__ = ["apply_overrides", "load_config", "parse_config", "unknown_key"]


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (``SourceConfig``, ``CacheConfig | None``...)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def unknown_key(parts: Sequence[str]) -> str | None:
    """Why the dotted key ``parts`` names no key of a job file, with the closest valid
    key; None when it does (keys under free-form mappings such as ``options`` all do)."""
    model: type[BaseModel] | None = JobConfig
    for depth, part in enumerate(parts):
        if model is None:
            return None  # inside a mapping (options...) or a value: anything goes
        fields = list(model.model_fields)
        if part not in fields:
            where = ".".join(parts[: depth + 1])
            parent = ".".join(parts[:depth]) + "." if depth else ""
            hint = did_you_mean(part, fields, prefix=parent)
            if not hint:
                hint = f" (the keys{' of ' + parent[:-1] if parent else ''}: {', '.join(fields)})"
            return f"{where}: unknown key{hint}"
        model = _section_class(model.model_fields[part].annotation)
    return None


def load_config(
    path: str | os.PathLike[str], overrides: Iterable[str] | Mapping[str, Any] = ()
) -> JobConfig:
    """Read, override (``"key.path=value"``, values parsed as YAML) and validate a job file.

    >>> conf = load_config("conf/demo.yml", ["target.path=/tmp/out", "emulator=false"])
    """
    origin = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigurationError(f"{origin}: cannot read the job file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{origin}: not valid YAML: {e}") from None
    return parse_config(apply_overrides(data, overrides, origin), origin=origin)


def apply_overrides(
    data: Any, overrides: Iterable[str] | Mapping[str, Any], origin: str = "<conf>"
) -> Any:
    """A copy of ``data`` with dotted keys set: ``["target.mode=overwrite"]`` or a mapping."""
    if not overrides:
        return data
    if not isinstance(data, dict):
        return data  # parse_config reports the shape
    out: dict[str, Any] = _deep_copy(data)
    items = overrides.items() if isinstance(overrides, Mapping) else map(_split, overrides)
    for key, value in items:
        problem = unknown_key(key.split("."))
        if problem is not None:
            raise ConfigurationError(f"--set {key}: {problem.partition(': ')[2]}")
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else _not_a_section(origin, key, part)
            node = child
        node[last] = value
    return out


def _split(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigurationError(f"--set {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _not_a_section(origin: str, key: str, part: str) -> dict[str, Any]:
    raise ConfigurationError(f"{origin}: --set {key}: {part} is not a section")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def parse_config(data: Any, *, origin: str = "<conf>") -> JobConfig:
    """Validate parsed YAML; every problem in one ConfigurationError, a line each."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{origin}: expected a mapping of keys, got {type(data).__name__}")
    problems = inline_secret_errors(data)
    if problems:
        raise ConfigurationError("\n".join(f"{origin}: {p}" for p in problems))
    if data.get("version") != 1:
        got = data.get("version", "nothing")
        raise ConfigurationError(f"{origin}: version: expected 1, got {got!r}")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{origin}: {_describe(err)}" for err in e.errors(include_url=False)]
        raise ConfigurationError("\n".join(dict.fromkeys(lines))) from None


def _describe(err: Any) -> str:
    """One pydantic error as ``key.path: what was expected, got what``."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "literal["))]
    where = ".".join(loc)
    kind, message = err["type"], str(err["msg"])
    if not where:  # a check across sections; its message starts with the key it is about
        return message.removeprefix("Value error, ")
    if kind == "missing":
        return f"{where}: required, missing"
    if kind == "extra_forbidden":
        return unknown_key(loc) or f"{where}: unknown key"
    if kind in ("value_error", "assertion_error"):
        return f"{where}: {message.removeprefix('Value error, ')}"
    got = err.get("input")
    return f"{where}: {message[0].lower() + message[1:]}, got {got!r:.80}"

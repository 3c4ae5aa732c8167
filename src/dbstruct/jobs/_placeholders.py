"""``{origin}`` and ``{endpoint}`` in a job file's ``target.path`` and ``target.table``: each
origin's answers get a target of their own (:mod:`dbstruct.jobs._origin`).

    target:
      path: .dbstruct/demo/{origin}/ticket_triage    # .dbstruct/demo/emulator/ticket_triage
"""

from __future__ import annotations

import re
from typing import Any

from dbstruct.errors import ConfigurationError
from dbstruct.jobs._did_you_mean import did_you_mean
from dbstruct.providers import parse_model

__all__ = ["EMULATOR", "LOCAL_MODEL", "PLACEHOLDERS", "fill_target_placeholders"]

#: the origin of answers from the job file's in-process emulator
EMULATOR = "emulator"
#: the origin of answers from the job file's local model (its URL changes with its port)
LOCAL_MODEL = "local-model"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = ("origin", "endpoint")


def fill_target_placeholders(data: Any) -> Any:
    """``data`` with ``{origin}`` and ``{endpoint}`` filled in ``target.path``/``table``.

    ``{origin}`` is ``emulator`` when the job file's emulator answers, ``local-model`` when
    its local model does, else the endpoint name; ``{endpoint}`` is the endpoint name. In a
    table name, characters other than letters, digits and ``_`` become ``_``. Left as they
    are while ``model`` is invalid (its own error is reported).
    """
    if not isinstance(data, dict) or not isinstance(data.get("target"), dict):
        return data
    target = data["target"]
    keys = [k for k in ("path", "table") if isinstance(target.get(k), str) and "{" in target[k]]
    if not keys:
        return data
    try:
        endpoint = parse_model(str(data.get("model", "")))
    except ConfigurationError:
        return data
    origin = endpoint
    if data.get("emulator") not in (None, False):
        origin = EMULATOR
    elif data.get("local_model") not in (None, False):
        origin = LOCAL_MODEL
    values = {"origin": origin, "endpoint": endpoint}
    filled = dict(target)
    for key in keys:

        def fill(match: re.Match[str], key: str = key) -> str:
            name = match.group(1).strip()
            if name not in values:
                raise ValueError(
                    f"target.{key}: unknown placeholder {{{name}}}"
                    f"{did_you_mean(name, PLACEHOLDERS, prefix='{', suffix='}')}"
                    f" (placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
                )
            value = values[name]
            return re.sub(r"\W", "_", value) if key == "table" else value

        filled[key] = _PLACEHOLDER.sub(fill, target[key])
    return {**data, "target": filled}

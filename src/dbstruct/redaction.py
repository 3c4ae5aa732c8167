"""Keeping secrets out of text: :class:`Secret` hides a value from reprs and logs,
:func:`redact` scrubs secrets from text that comes from outside (error bodies, log lines).

Tokens and client secrets travel inside dbstruct as :class:`Secret`; any text dbstruct keeps
from elsewhere (an endpoint's error message, a library's exception) passes :func:`redact`
first. (Secret *references* in job files, ``{{secrets/<scope>/<key>}}``, are
:mod:`dbstruct.jobs._secrets`.)

    >>> redact("401: Bearer abc.def")
    '401: Bearer ***'
"""

from __future__ import annotations

import hmac
import re

from dbstruct.errors import WrongTypeError

__all__ = ["Secret", "redact"]


class Secret:
    """A string that stays out of reprs, str(), f-strings and logs.

    >>> Secret("dapi123")
    Secret('***')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise WrongTypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


# Shapes of secrets, for text that comes from outside (error bodies, log lines).
# PATs: "dapi" + hex, optionally "-<n>" (Azure); OAuth secrets: "dose" + alphanumerics
# (https://github.com/google/osv-scalibr/issues/1721).
_SECRET_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bdapi[0-9a-fA-F]{16,}(?:-\d+)?"), "dapi***"),
    (re.compile(r"\bdose[0-9a-zA-Z]{16,}"), "dose***"),
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9\-._~+/=:]+"), r"\1\2***"),
    # "Basic" only capitalized and before base64, so the English word survives.
    (re.compile(r"\b(Basic)(\s+)[A-Za-z0-9+/]{8,}=*"), r"\1\2***"),
    (
        re.compile(
            r"(?i)(?<![\w-])((?:client_secret|access_token|refresh_token|id_token|api_key|apikey"
            r"|password|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}\]]+"
        ),
        r"\1***",
    ),
)
_MIN_SECRET_LENGTH = 4  # shorter "secrets" would shred ordinary text and protect nothing


def redact(text: str, *secrets: str | Secret | None) -> str:
    """``text`` without the given secrets, PATs, OAuth secrets, bearer values and key=value secrets.

    >>> redact('401: Bearer abc.def {"client_secret": "x1"}')
    '401: Bearer *** {"client_secret": "***"}'
    """
    values = [s.get_secret_value() if isinstance(s, Secret) else s for s in secrets]
    for value in sorted((v for v in values if v), key=len, reverse=True):
        if len(value) >= _MIN_SECRET_LENGTH:
            text = text.replace(value, "***")
    for pattern, replacement in _SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text

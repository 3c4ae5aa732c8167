"""A client's memory of the tokens an endpoint refused, so requests with them fail unsent.

An expired or invalid token, a missing permission or a missing endpoint is refused the same
way on every request: once the endpoint has said so for a token, later requests with that
token fail at once, unsent, rather than hammer the endpoint (a long job whose notebook token
expires would otherwise send every remaining row to get a 401 each). A refreshed token
(OAuth) has another fingerprint, so it is tried again; so is the same token once
:data:`REFUSAL_MEMORY_S` has passed (a permission granted meanwhile), one request.
"""

from __future__ import annotations

import hashlib
import time

from dbstruct.errors import (
    AuthenticationError,
    DbstructError,
    EndpointError,
    EndpointNotFoundError,
    PermissionDeniedError,
)

__all__ = ["REFUSAL_MEMORY_S", "RefusalMemory"]

#: seconds a 401/403/404 for a token is remembered, so requests with it fail unsent
REFUSAL_MEMORY_S = 30.0
_REFUSALS = (AuthenticationError, PermissionDeniedError, EndpointNotFoundError)


class RefusalMemory:
    """(endpoint, token fingerprint) -> the refusal it got, and when; never the token itself."""

    def __init__(self) -> None:
        self._refused: dict[tuple[str, str], tuple[EndpointError, float]] = {}

    def known(self, endpoint: str, headers: dict[str, str]) -> EndpointError | None:
        """The error to return unsent, if this endpoint has refused this token lately."""
        if not self._refused:  # the usual case: no token hashed for nothing
            return None
        key = (endpoint, _fingerprint(headers))
        known, when = self._refused.get(key, (None, 0.0))
        if known is None:
            return None
        if time.monotonic() - when > REFUSAL_MEMORY_S:
            del self._refused[key]
            return None
        return type(known)(
            f"not sent: {known}",
            endpoint=endpoint,
            status=known.status,
            error_code=known.error_code,
            sent=False,
        )

    def note(self, error: DbstructError, endpoint: str, headers: dict[str, str]) -> None:
        """Remember ``error`` if it is a refusal of the token in ``headers``."""
        if isinstance(error, _REFUSALS):
            self._refused[(endpoint, _fingerprint(headers))] = (error, time.monotonic())


def _fingerprint(headers: dict[str, str]) -> str:
    """A digest of the Authorization header: the memory never keeps the token itself."""
    return hashlib.sha256(headers.get("Authorization", "").encode()).hexdigest()

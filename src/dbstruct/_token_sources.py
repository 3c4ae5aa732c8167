"""Token strategies: each way of getting the current bearer token, as a named class.

    StaticToken     a token that does not change: explicit, environment, a profile PAT
    CallableToken   a caller's function, called per request
    NotebookToken   the notebook context's token, re-read per request on the driver
    OAuthM2M        a service principal's OAuth M2M token, refreshed (on executors too)
    SdkToken        any other databricks-sdk auth type (CLI login, cloud identities...)

Each pickles to something a Spark executor can use: OAuth M2M as host + client id + secret,
a static token as a :class:`~dbstruct.redaction.Secret`, the others as a snapshot of the
current token. :mod:`dbstruct.auth` picks the strategy (its resolution order) and wraps it in
:class:`~dbstruct.auth.Credentials`; :class:`BearerAuth` applies one to an httpx client's
requests, for callers who build their own.
"""

from __future__ import annotations

import abc
import functools
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, cast

import httpx

from dbstruct.errors import ConfigurationError, TransportError
from dbstruct.redaction import Secret, redact

__all__ = [
    "BearerAuth",
    "CallableToken",
    "NotebookToken",
    "OAuthM2M",
    "SdkToken",
    "StaticToken",
    "TokenSource",
    "auth_class",
    "check_token",
    "read_notebook_context",
    "sdk_timeouts",
    "token_async",
]

logger = logging.getLogger(__name__)

# databricks-sdk probes <host>/.well-known/databricks-config while building a Config, with a
# 300 s retry budget by default: an unreachable host would stall resolution for minutes.
_SDK_HTTP_TIMEOUT_SECONDS = 10.0
_SDK_RETRY_TIMEOUT_SECONDS = 15


class TokenSource(abc.ABC):
    """One way of getting the current bearer token; pickles to something executors can use."""

    #: whether token() may do I/O (async callers then run it in a thread)
    blocking = False

    @abc.abstractmethod
    def token(self) -> str: ...


class StaticToken(TokenSource):
    """A token that does not change: explicit, env, a profile PAT, or a snapshot."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def token(self) -> str:
        return self._secret.get_secret_value()

    def __repr__(self) -> str:
        return f"StaticToken({self._secret!r})"


class CallableToken(TokenSource):
    """A caller-supplied function returning the current token."""

    blocking = True

    def __init__(self, provider: Callable[[], str]) -> None:
        self._provider = provider

    def token(self) -> str:
        return check_token(self._provider(), "token provider")

    def __repr__(self) -> str:
        return "CallableToken(...)"


class NotebookToken(TokenSource):
    """The notebook context's token, re-read per call on the driver as databricks-sdk does
    (databricks/sdk/runtime/__init__.py, init_runtime_legacy_auth). Executors have no
    notebook context: pickling snapshots the current token."""

    blocking = True

    def __init__(self, dbutils: Any, token: str) -> None:
        self._dbutils = dbutils
        self._last = Secret(token)

    def token(self) -> str:
        found = read_notebook_context(self._dbutils)
        if found is not None:
            self._last = Secret(found[1])
        return self._last.get_secret_value()

    def __reduce__(self) -> tuple[type[StaticToken], tuple[Secret]]:
        return (StaticToken, (Secret(self.token()),))

    def __repr__(self) -> str:
        return "NotebookToken(Secret('***'))"


class OAuthM2M(TokenSource):
    """OAuth M2M with a service principal's client id and secret.

    The sdk Config is built lazily, so after unpickling on an executor it is rebuilt there
    and refreshes tokens itself (they last one hour:
    https://docs.databricks.com/aws/en/dev-tools/auth/oauth-m2m).
    """

    blocking = True

    def __init__(
        self,
        host: str,
        client_id: str,
        client_secret: Secret,
        scopes: tuple[str, ...] | None = None,
        config: Any = None,
    ) -> None:
        self.host = host
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self._config = config
        self._lock = threading.Lock()

    def _get_config(self) -> Any:
        with self._lock:
            if self._config is None:
                from databricks.sdk.core import Config

                kwargs: dict[str, Any] = {
                    "host": self.host,
                    "client_id": self.client_id,
                    "client_secret": self._client_secret.get_secret_value(),
                    "auth_type": "oauth-m2m",
                    **sdk_timeouts(),
                }
                if self.scopes:
                    kwargs["scopes"] = list(self.scopes)
                self._config = _call_sdk(lambda: Config(**kwargs), "oauth-m2m", self.host)
            return self._config

    def token(self) -> str:
        return _sdk_bearer(self._get_config(), "oauth-m2m", self.host)

    def __reduce__(self) -> tuple[type[OAuthM2M], tuple[Any, ...]]:
        # No Config, lock or cached token: small, and the executor fetches its own token.
        return (OAuthM2M, (self.host, self.client_id, self._client_secret, self.scopes))

    def __repr__(self) -> str:
        return f"OAuthM2M(host={self.host!r}, client_id={self.client_id!r})"


class SdkToken(TokenSource):
    """Any other databricks-sdk auth type (CLI U2M, azure-cli, metadata service, runtime...).

    These need the driver's environment (a CLI, a login cache, a local service), so the
    token cannot be refreshed on executors: pickling snapshots the current token, which
    expires (typically after an hour) on long jobs. For those, use a service principal
    (DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET), whose tokens refresh everywhere.
    """

    blocking = True

    def __init__(self, config: Any, auth_type: str) -> None:
        self._config = config
        self.auth_type = auth_type

    def token(self) -> str:
        return _sdk_bearer(self._config, self.auth_type, self._config.host)

    def __reduce__(self) -> tuple[type[StaticToken], tuple[Secret]]:
        return (StaticToken, (Secret(self.token()),))

    def __repr__(self) -> str:
        return f"SdkToken(auth_type={self.auth_type!r})"


def check_token(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what}: no token (expected a non-empty string)")
    return value.strip()


class BearerAuth(httpx.Auth):
    """Sets ``Authorization: Bearer <token>`` on every request, replacing any other value
    (the openai SDK sets one from its api_key). Async flows read a token that may need I/O
    in a worker thread, so a refresh never blocks the event loop."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    def _apply(self, request: Any, token: str) -> Any:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self._apply(request, self._source.token())

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        yield self._apply(request, await token_async(self._source))

    def __repr__(self) -> str:
        return f"BearerAuth({self._source!r})"


@functools.cache
def auth_class() -> type[BearerAuth]:
    """BearerAuth, also an ``httpx2.Auth`` when httpx2 (used by recent openai SDKs for
    ``DefaultHttpxClient``) is installed, so the same object works with either library."""
    try:
        import httpx2
    except ImportError:
        return BearerAuth
    return cast("type[BearerAuth]", type("BearerAuth", (BearerAuth, httpx2.Auth), {}))


async def token_async(source: TokenSource) -> str:
    if not source.blocking:
        return source.token()
    import anyio.to_thread

    return await anyio.to_thread.run_sync(source.token)


def read_notebook_context(dbutils: Any) -> tuple[str, str] | None:
    """(apiUrl, apiToken) of the notebook's command context, or None outside a notebook."""
    try:
        context = dbutils.notebook.entry_point.getDbutils().notebook().getContext()
        api_url, token = context.apiUrl().get(), context.apiToken().get()
    except Exception as e:  # py4j errors, a RemoteDbUtils without entry_point, no context...
        logger.debug("no notebook context: %s", type(e).__name__)
        return None
    if not isinstance(api_url, str) or not isinstance(token, str) or not api_url or not token:
        return None
    return api_url, token.strip()


def sdk_timeouts() -> dict[str, Any]:
    return {
        "http_timeout_seconds": _SDK_HTTP_TIMEOUT_SECONDS,
        "retry_timeout_seconds": _SDK_RETRY_TIMEOUT_SECONDS,
    }


def _sdk_bearer(config: Any, auth_type: str, host: str | None) -> str:
    headers = _call_sdk(config.authenticate, auth_type, host)
    scheme, _, token = str(headers.get("Authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ConfigurationError(
            f"databricks-sdk auth type {auth_type!r} gives no bearer token; serving endpoints "
            "need one (use a token or a service principal)"
        )
    return token.strip()


def _call_sdk(call: Callable[[], Any], auth_type: str, host: str | None) -> Any:
    """Run an sdk call, translating its errors: network trouble may pass, the rest will not."""
    try:
        return call()
    except (ConfigurationError, TransportError):
        raise
    except Exception as e:
        import requests

        message = f"databricks-sdk ({auth_type}) could not get a token: {redact(str(e))}"
        if isinstance(e, requests.RequestException):
            raise TransportError(message, endpoint=host) from e
        raise ConfigurationError(message) from e

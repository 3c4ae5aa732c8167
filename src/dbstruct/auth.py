"""Databricks credentials for serving endpoints: resolved once, applied to every request.

Resolution order; the first step that supplies what is still missing wins::

    1. arguments        base_url / api_key (an explicit base_url is used as given)
    2. environment      DATABRICKS_HOST + DATABRICKS_TOKEN
    3. environment      DATABRICKS_WORKSPACE_URL + DATABRICKS_API_KEY
    4. notebook         the Databricks notebook context (driver only)
    5. databricks-sdk   unified auth: ~/.databrickscfg profiles, DATABRICKS_CONFIG_PROFILE,
                        OAuth M2M (DATABRICKS_CLIENT_ID/SECRET), CLI login, cloud identities...

An explicit ``api_key`` takes its host from steps 2-5, an explicit ``base_url`` its token.
Each way of getting a token is a named strategy (a ``_TokenSource``); the token is read per
request through :meth:`Credentials.httpx_auth`, so OAuth tokens refresh during long runs.
:class:`Credentials` pickle small for Spark executors: static tokens travel as a
:class:`Secret`, OAuth M2M as host + client id + secret (it refreshes on the executor),
anything else as a snapshot of the current token.

    >>> creds = resolve_credentials()
    >>> client = openai.OpenAI(base_url=creds.base_url, api_key="set-per-request",
    ...                        http_client=httpx.Client(auth=creds.httpx_auth()))
"""

from __future__ import annotations

import abc
import functools
import hmac
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx

if TYPE_CHECKING:
    import httpx2

from dbstruct.errors import ConfigurationError, TransportError

__all__ = [
    "Credentials",
    "Secret",
    "redact",
    "resolve_credentials",
    "serving_base_url",
]

logger = logging.getLogger(__name__)

# Hint shared by every "nothing configured" message.
_HINT = (
    "set DATABRICKS_HOST and DATABRICKS_TOKEN (or DATABRICKS_WORKSPACE_URL and "
    "DATABRICKS_API_KEY), pass base_url/api_key, or configure a Databricks CLI profile "
    "(~/.databrickscfg, DATABRICKS_CONFIG_PROFILE) or a service principal "
    "(DATABRICKS_HOST, DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET)"
)
# databricks-sdk probes <host>/.well-known/databricks-config while building a Config, with a
# 300 s retry budget by default: an unreachable host would stall resolution for minutes.
_SDK_HTTP_TIMEOUT_SECONDS = 10.0
_SDK_RETRY_TIMEOUT_SECONDS = 15


# ---------------------------------------------------------------- secrets


class Secret:
    """A string that stays out of reprs, str(), f-strings and logs.

    >>> Secret("dapi123")
    Secret('***')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
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


# ---------------------------------------------------------------- hosts


def _normalize_host(raw: str, what: str = "host") -> str:
    """``scheme://netloc[/path]`` without trailing slash; https:// added when missing."""
    value = raw.strip()
    if "://" not in value:
        value = "https://" + value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ConfigurationError(f"{what} is not a workspace URL: {redact(raw)!r}")
    path = parts.path.rstrip("/")
    # Tolerate a host given as the serving URL, so it is not appended twice.
    path = path.removesuffix("/serving-endpoints")
    return f"{parts.scheme}://{parts.netloc}{path}"


def serving_base_url(host: str) -> str:
    """The OpenAI-compatible base URL of a workspace's serving endpoints.

    https://docs.databricks.com/machine-learning/model-serving/score-foundation-models.html
    (the OpenAI client takes ``base_url=<workspace URL>/serving-endpoints``).

    >>> serving_base_url("adb-1.azuredatabricks.net/")
    'https://adb-1.azuredatabricks.net/serving-endpoints'
    """
    return _normalize_host(host) + "/serving-endpoints"


def _host_of(base_url: str) -> str | None:
    """The workspace host of an explicit base_url, when it has the usual shape."""
    stripped = base_url.rstrip("/")
    if stripped.endswith("/serving-endpoints") and "://" in stripped:
        return stripped.removesuffix("/serving-endpoints")
    return None


# ---------------------------------------------------------------- token strategies


class _TokenSource(abc.ABC):
    """One way of getting the current bearer token; pickles to something executors can use."""

    #: whether token() may do I/O (async callers then run it in a thread)
    blocking = False

    @abc.abstractmethod
    def token(self) -> str: ...


class _StaticToken(_TokenSource):
    """A token that does not change: explicit, env, a profile PAT, or a snapshot."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    def token(self) -> str:
        return self._secret.get_secret_value()

    def __repr__(self) -> str:
        return f"_StaticToken({self._secret!r})"


class _CallableToken(_TokenSource):
    """A caller-supplied function returning the current token."""

    blocking = True

    def __init__(self, provider: Callable[[], str]) -> None:
        self._provider = provider

    def token(self) -> str:
        return _check_token(self._provider(), "token provider")

    def __repr__(self) -> str:
        return "_CallableToken(...)"


class _NotebookToken(_TokenSource):
    """The notebook context's token, re-read per call on the driver as databricks-sdk does
    (databricks/sdk/runtime/__init__.py, init_runtime_legacy_auth). Executors have no
    notebook context: pickling snapshots the current token."""

    blocking = True

    def __init__(self, dbutils: Any, token: str) -> None:
        self._dbutils = dbutils
        self._last = Secret(token)

    def token(self) -> str:
        found = _read_notebook_context(self._dbutils)
        if found is not None:
            self._last = Secret(found[1])
        return self._last.get_secret_value()

    def __reduce__(self) -> tuple[type[_StaticToken], tuple[Secret]]:
        return (_StaticToken, (Secret(self.token()),))

    def __repr__(self) -> str:
        return "_NotebookToken(Secret('***'))"


class _OAuthM2M(_TokenSource):
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
                    **_sdk_timeouts(),
                }
                if self.scopes:
                    kwargs["scopes"] = list(self.scopes)
                self._config = _call_sdk(lambda: Config(**kwargs), "oauth-m2m", self.host)
            return self._config

    def token(self) -> str:
        return _sdk_bearer(self._get_config(), "oauth-m2m", self.host)

    def __reduce__(self) -> tuple[type[_OAuthM2M], tuple[Any, ...]]:
        # No Config, lock or cached token: small, and the executor fetches its own token.
        return (_OAuthM2M, (self.host, self.client_id, self._client_secret, self.scopes))

    def __repr__(self) -> str:
        return f"_OAuthM2M(host={self.host!r}, client_id={self.client_id!r})"


class _SdkToken(_TokenSource):
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

    def __reduce__(self) -> tuple[type[_StaticToken], tuple[Secret]]:
        return (_StaticToken, (Secret(self.token()),))

    def __repr__(self) -> str:
        return f"_SdkToken(auth_type={self.auth_type!r})"


def _check_token(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what}: no token (expected a non-empty string)")
    return value.strip()


# ---------------------------------------------------------------- httpx


class _BearerAuth(httpx.Auth):
    """Sets ``Authorization: Bearer <token>`` on every request, replacing any other value
    (the openai SDK sets one from its api_key). Async flows read a token that may need I/O
    in a worker thread, so a refresh never blocks the event loop."""

    def __init__(self, source: _TokenSource) -> None:
        self._source = source

    def _apply(self, request: Any, token: str) -> Any:
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self._apply(request, self._source.token())

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        yield self._apply(request, await _token_async(self._source))

    def __repr__(self) -> str:
        return f"_BearerAuth({self._source!r})"


@functools.cache
def _auth_class() -> type[_BearerAuth]:
    """_BearerAuth, also an ``httpx2.Auth`` when httpx2 (used by recent openai SDKs for
    ``DefaultHttpxClient``) is installed, so the same object works with either library."""
    try:
        import httpx2
    except ImportError:
        return _BearerAuth
    return cast("type[_BearerAuth]", type("_BearerAuth", (_BearerAuth, httpx2.Auth), {}))


async def _token_async(source: _TokenSource) -> str:
    if not source.blocking:
        return source.token()
    import anyio.to_thread

    return await anyio.to_thread.run_sync(source.token)


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True, repr=False, eq=False)
class Credentials:
    """Where to send requests and how to authenticate them; picklable for Spark executors.

    >>> creds = resolve_credentials()
    >>> creds.base_url, creds.source
    ('https://adb-1.azuredatabricks.net/serving-endpoints', 'environment (DATABRICKS_HOST, ...)')
    >>> httpx.Client(auth=creds.httpx_auth())

    A pickle carries the token (or the OAuth client secret) in clear: Spark ships it to its
    executors, treat it like the token itself.
    """

    base_url: str
    host: str | None
    source: str
    _tokens: _TokenSource = field(repr=False)

    @classmethod
    def from_token(
        cls, base_url: str, token: str, *, host: str | None = None, source: str = "arguments"
    ) -> Credentials:
        """Credentials for a fixed token (tests, emulators, tokens from elsewhere)."""
        secret = Secret(_check_token(token, "from_token"))
        return cls(base_url, host or _host_of(base_url), source, _StaticToken(secret))

    @classmethod
    def from_token_provider(
        cls,
        base_url: str,
        provider: Callable[[], str],
        *,
        host: str | None = None,
        source: str = "token provider",
    ) -> Credentials:
        """Credentials whose token comes from ``provider()`` on every request.

        Spark pickles the provider with cloudpickle: it must work on executors.
        """
        return cls(base_url, host or _host_of(base_url), source, _CallableToken(provider))

    def token(self) -> str:
        """The current bearer token (refreshed where the strategy can)."""
        return self._tokens.token()

    async def atoken(self) -> str:
        """:meth:`token` for async code: I/O (an OAuth refresh) runs in a worker thread."""
        return await _token_async(self._tokens)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    async def aheaders(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.atoken()}"}

    def httpx_auth(self) -> httpx.Auth:
        """Auth for ``httpx.Client``/``AsyncClient`` setting the token on every request.

        The object is also an ``httpx2.Auth`` when httpx2 is installed (see httpx2_auth).
        """
        return _auth_class()(self._tokens)

    def httpx2_auth(self) -> httpx2.Auth:
        """:meth:`httpx_auth`, typed for httpx2: openai 3.x's ``DefaultHttpxClient`` is httpx2.

        >>> openai.DefaultHttpxClient(auth=creds.httpx2_auth())
        """
        if _auth_class() is _BearerAuth:
            raise ConfigurationError("httpx2 is not installed: use httpx_auth() with httpx")
        return cast("httpx2.Auth", _auth_class()(self._tokens))

    def __repr__(self) -> str:
        return (
            f"Credentials(base_url={self.base_url!r}, host={self.host!r}, source={self.source!r})"
        )


# ---------------------------------------------------------------- resolution


@dataclass(frozen=True)
class _Found:
    """What one step of the order supplied: maybe a host, maybe a token, maybe a complaint."""

    source: str
    host: str | None = None
    tokens: _TokenSource | None = None
    note: str | None = None
    error: BaseException | None = None


def resolve_credentials(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
    dbutils: Any = None,
) -> Credentials:
    """Credentials from arguments, environment, notebook context or databricks-sdk, in that order.

    >>> resolve_credentials()                    # DATABRICKS_HOST + DATABRICKS_TOKEN, ...
    >>> resolve_credentials(api_key="dapi...")   # host from the next steps
    >>> resolve_credentials(base_url="http://localhost:8000/serving-endpoints", api_key="x")

    ``environ`` defaults to ``os.environ`` (the databricks-sdk step also reads ``os.environ``
    for settings absent from ``environ``); ``dbutils`` replaces the notebook's own (tests).
    Raises ConfigurationError naming what to set when nothing complete is found.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    explicit_url = _argument("base_url", base_url)
    explicit_key = _argument("api_key", api_key)
    if explicit_url is not None and explicit_key is not None:
        return Credentials.from_token(explicit_url, explicit_key)
    found: list[_Found] = []
    for step in _steps(env, dbutils):
        result = step(explicit_key is None)
        if result is None:
            continue
        tokens = _StaticToken(Secret(explicit_key)) if explicit_key else result.tokens
        if tokens is not None and (explicit_url or result.host):
            return _combine(result, tokens, explicit_url, explicit_key is not None)
        found.append(result)
    error = next((f.error for f in reversed(found) if f.error is not None), None)
    raise ConfigurationError(_missing_message(explicit_url, explicit_key, found)) from error


def _argument(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    return value.strip()


def _steps(env: Mapping[str, str], dbutils: Any) -> list[Callable[[bool], _Found | None]]:
    """Steps 2-5 of the order, evaluated lazily (the last two are expensive)."""
    return [
        lambda _: _from_env(env, "DATABRICKS_HOST", "DATABRICKS_TOKEN"),
        lambda _: _from_env(env, "DATABRICKS_WORKSPACE_URL", "DATABRICKS_API_KEY"),
        lambda _: _from_notebook(env, dbutils),
        lambda need_token: _from_sdk(env, need_token),
    ]


def _combine(
    found: _Found, tokens: _TokenSource, base_url: str | None, explicit_key: bool
) -> Credentials:
    """Explicit arguments completed by what one step found (resolve_credentials checked that
    together they give a URL and a token)."""
    if explicit_key:
        source = f"arguments (api_key), host from {found.source}"
    elif base_url is not None:
        source = f"arguments (base_url), token from {found.source}"
    else:
        source = found.source
    host = (_host_of(base_url) if base_url else None) or found.host
    url = base_url or serving_base_url(found.host or "")
    logger.debug("dbstruct credentials from %s", source)
    return Credentials(url, host, source, tokens)


def _missing_message(base_url: str | None, api_key: str | None, found: list[_Found]) -> str:
    notes = [f.note for f in found if f.note and f.error is None]
    if api_key is not None:
        head = "api_key was given but no workspace host was found"
        hint = (
            "pass base_url, set DATABRICKS_HOST (or DATABRICKS_WORKSPACE_URL), "
            "or configure a Databricks CLI profile with a host"
        )
    elif base_url is not None:
        head = "base_url was given but no token was found"
        hint = (
            "pass api_key, set DATABRICKS_TOKEN (or DATABRICKS_API_KEY), "
            "or configure a Databricks CLI profile"
        )
    else:
        head = "; ".join(notes) if notes else "No Databricks credentials found"
        hint = _HINT
    message = f"{head}: {hint}"
    sdk = [f.note for f in found if f.error is not None and f.note]
    if sdk:
        message += f" ({sdk[-1]})"
    return message


# ---------------------------------------------------------------- steps 2-3: environment


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _from_env(env: Mapping[str, str], host_var: str, token_var: str) -> _Found | None:
    raw_host, token = _get(env, host_var), _get(env, token_var)
    if raw_host is None and token is None:
        return None
    host = _normalize_host(raw_host, host_var) if raw_host else None
    tokens = _StaticToken(Secret(token)) if token else None
    if host and tokens:
        return _Found(f"environment ({host_var}, {token_var})", host, tokens)
    if host:
        return _Found(
            f"environment ({host_var})", host, note=f"{host_var} is set but {token_var} is not"
        )
    return _Found(
        f"environment ({token_var})",
        tokens=tokens,
        note=f"{token_var} is set but {host_var} is not",
    )


# ---------------------------------------------------------------- step 4: notebook context


def _from_notebook(env: Mapping[str, str], dbutils: Any) -> _Found | None:
    """The notebook's own host and token, as databricks-sdk reads them
    (databricks/sdk/runtime/__init__.py, init_runtime_legacy_auth; the Java SDK's
    NotebookNativeCredentialsProvider reads the same "command context")."""
    if dbutils is None:
        dbutils = _find_dbutils(env)
    if dbutils is None:
        return None
    found = _read_notebook_context(dbutils)
    if found is None:
        return None
    api_url, token = found
    return _Found(
        "notebook context",
        _normalize_host(api_url, "notebook apiUrl"),
        _NotebookToken(dbutils, token),
    )


def _find_dbutils(env: Mapping[str, str]) -> Any:
    """The notebook's dbutils: only on Databricks Runtime, from IPython's namespace or __main__."""
    if "DATABRICKS_RUNTIME_VERSION" not in env:
        return None
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    namespace = getattr(shell, "user_ns", None) or {}
    if namespace.get("dbutils") is not None:
        return namespace["dbutils"]
    return getattr(sys.modules.get("__main__"), "dbutils", None)


def _read_notebook_context(dbutils: Any) -> tuple[str, str] | None:
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


# ---------------------------------------------------------------- step 5: databricks-sdk


def _sdk_timeouts() -> dict[str, Any]:
    return {
        "http_timeout_seconds": _SDK_HTTP_TIMEOUT_SECONDS,
        "retry_timeout_seconds": _SDK_RETRY_TIMEOUT_SECONDS,
    }


def _from_sdk(env: Mapping[str, str], need_token: bool) -> _Found | None:
    """databricks-sdk unified auth, tried only when something configures it, so a bare
    environment neither waits nor touches the network.
    https://docs.databricks.com/dev-tools/auth/unified-auth.html
    https://docs.databricks.com/aws/dev-tools/auth/env-vars
    """
    try:
        from databricks.sdk.core import Config
    except ImportError:
        return None
    if not _sdk_configured(env, Config):
        return None
    kwargs = {**_sdk_env_kwargs(env, Config), **_sdk_timeouts()}
    try:
        if not need_token:
            config = Config(credentials_strategy=cast(Any, _HostOnly()), **kwargs)
            host = config.host
            return _Found("databricks-sdk config", _normalize_host(host)) if host else None
        config = Config(**kwargs)
        return _found_from_config(config)
    except ConfigurationError as e:
        return _Found("databricks-sdk", note=str(e), error=e)
    except Exception as e:  # ValueError for config problems, requests errors for network ones
        return _Found("databricks-sdk", note=f"databricks-sdk: {redact(str(e))}", error=e)


def _sdk_configured(env: Mapping[str, str], config_cls: Any) -> bool:
    """Whether any setting databricks-sdk authenticates from is present."""
    names = {
        "DATABRICKS_RUNTIME_VERSION",
        "IS_IN_DB_MODEL_SERVING_ENV",
        "IS_IN_DATABRICKS_MODEL_SERVING_ENV",
    }
    for attr in config_cls.attributes():
        # DATABRICKS_CONFIG_FILE alone counts only if the file exists (checked below).
        if attr.env and (attr.auth or attr.name in ("host", "profile", "auth_type")):
            names.update([attr.env, *attr.env_aliases])
    if any(_get(env, name) for name in names):
        return True
    path = _get(env, "DATABRICKS_CONFIG_FILE") or "~/.databrickscfg"
    home = _get(env, "HOME")
    if path.startswith("~") and home:
        path = home + path[1:]
    return Path(path).expanduser().is_file()


def _sdk_env_kwargs(env: Mapping[str, str], config_cls: Any) -> dict[str, str]:
    """Config keyword arguments for the variables in ``env`` (so a given ``environ`` counts)."""
    kwargs: dict[str, str] = {}
    for attr in config_cls.attributes():
        for name in [attr.env, *attr.env_aliases] if attr.env else []:
            value = _get(env, name)
            if value:
                kwargs[attr.name] = value
                break
    return kwargs


class _HostOnly:
    """A credentials strategy that authenticates nothing: reads a profile's host only."""

    def auth_type(self) -> str:
        return "dbstruct-host-only"

    def __call__(self, cfg: Any) -> Callable[[], dict[str, str]]:
        return dict


def _found_from_config(config: Any) -> _Found:
    """Turn a resolved sdk Config into a token strategy that can travel to executors."""
    auth_type = str(config.auth_type)
    profile = f", profile {config.profile}" if config.profile else ""
    source = f"databricks-sdk ({auth_type}{profile})"
    host = _normalize_host(config.host, "databricks-sdk host")
    tokens: _TokenSource
    if auth_type == "pat":
        tokens = _StaticToken(Secret(_check_token(config.token, "databricks-sdk pat")))
    elif auth_type == "oauth-m2m":
        scopes = tuple(config.scopes) if config.scopes else None
        secret = Secret(config.client_secret)
        tokens = _OAuthM2M(config.host, config.client_id, secret, scopes, config)
    else:
        tokens = _SdkToken(config, auth_type)
    tokens.token()  # fail here, with the order's message, rather than in the first request
    return _Found(source, host, tokens)


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

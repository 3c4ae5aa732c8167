"""Databricks credentials for serving endpoints: resolved once, applied to every request.

Resolution order; the first step that supplies what is still missing wins::

    1. arguments        base_url / api_key (an explicit base_url is used as given)
    2. environment      DATABRICKS_HOST + DATABRICKS_TOKEN
    3. environment      DATABRICKS_WORKSPACE_URL + DATABRICKS_API_KEY
    4. notebook         the Databricks notebook context (driver only)
    5. databricks-sdk   unified auth: ~/.databrickscfg profiles, DATABRICKS_CONFIG_PROFILE,
                        OAuth M2M (DATABRICKS_CLIENT_ID/SECRET), CLI login, cloud identities...

An explicit ``api_key`` takes its host from steps 2-5, an explicit ``base_url`` its token.
Each way of getting a token is a named strategy (:mod:`dbstruct._token_sources`), read anew
for every request: the clients send it as the request's ``Authorization`` header
(:meth:`Credentials.headers`, ``extra_headers`` of the openai call), so OAuth tokens refresh
during long runs. :class:`Credentials` pickle small for Spark executors: static tokens travel
as a :class:`~dbstruct.redaction.Secret`, OAuth M2M as host + client id + secret (it
refreshes on the executor), anything else as a snapshot of the current token.

    >>> creds = resolve_credentials()
    >>> creds.headers()
    {'Authorization': 'Bearer ...'}

For an HTTP client of your own, :meth:`Credentials.httpx_auth` sets the same header on each
of its requests:

    >>> client = openai.OpenAI(base_url=creds.base_url, api_key="set-per-request",
    ...                        http_client=httpx.Client(auth=creds.httpx_auth()))
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx

from dbstruct._token_sources import (
    BearerAuth,
    CallableToken,
    NotebookToken,
    OAuthM2M,
    SdkToken,
    StaticToken,
    TokenSource,
    auth_class,
    check_token,
    read_notebook_context,
    sdk_timeouts,
    token_async,
)
from dbstruct.errors import ConfigurationError
from dbstruct.redaction import Secret, redact

if TYPE_CHECKING:
    import httpx2

__all__ = ["Credentials", "resolve_credentials", "serving_base_url"]

logger = logging.getLogger(__name__)

# Hint shared by every "nothing configured" message.
_HINT = (
    "set DATABRICKS_HOST and DATABRICKS_TOKEN (or DATABRICKS_WORKSPACE_URL and "
    "DATABRICKS_API_KEY), pass base_url/api_key, or configure a Databricks CLI profile "
    "(~/.databrickscfg, DATABRICKS_CONFIG_PROFILE) or a service principal "
    "(DATABRICKS_HOST, DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET)"
)


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


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True, repr=False, eq=False)
class Credentials:
    """Where to send requests and how to authenticate them; picklable for Spark executors.

    >>> creds = resolve_credentials()
    >>> creds.base_url, creds.source
    ('https://adb-1.azuredatabricks.net/serving-endpoints', 'environment (DATABRICKS_HOST, ...)')
    >>> creds.headers()  # what the clients send with each request
    {'Authorization': 'Bearer ...'}

    A pickle carries the token (or the OAuth client secret) in clear: Spark ships it to its
    executors, treat it like the token itself.
    """

    base_url: str
    host: str | None
    source: str
    _tokens: TokenSource = field(repr=False)

    @classmethod
    def from_token(
        cls, base_url: str, token: str, *, host: str | None = None, source: str = "arguments"
    ) -> Credentials:
        """Credentials for a fixed token (tests, emulators, tokens from elsewhere)."""
        secret = Secret(check_token(token, "from_token"))
        return cls(base_url, host or _host_of(base_url), source, StaticToken(secret))

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
        return cls(base_url, host or _host_of(base_url), source, CallableToken(provider))

    def token(self) -> str:
        """The current bearer token (refreshed where the strategy can)."""
        return self._tokens.token()

    async def atoken(self) -> str:
        """:meth:`token` for async code: I/O (an OAuth refresh) runs in a worker thread."""
        return await token_async(self._tokens)

    def headers(self) -> dict[str, str]:
        """The request's auth header, with the current token (what the clients send)."""
        return {"Authorization": f"Bearer {self.token()}"}

    async def aheaders(self) -> dict[str, str]:
        """:meth:`headers` for async code (see :meth:`atoken`)."""
        return {"Authorization": f"Bearer {await self.atoken()}"}

    def httpx_auth(self) -> httpx.Auth:
        """Auth for an ``httpx.Client``/``AsyncClient`` of your own, setting the token on
        every request (dbstruct's clients send :meth:`headers` instead).

        The object is also an ``httpx2.Auth`` when httpx2 is installed (see httpx2_auth).
        """
        return auth_class()(self._tokens)

    def httpx2_auth(self) -> httpx2.Auth:
        """:meth:`httpx_auth`, typed for httpx2: openai 3.x's ``DefaultHttpxClient`` is httpx2.

        >>> openai.DefaultHttpxClient(auth=creds.httpx2_auth())
        """
        if auth_class() is BearerAuth:
            raise ConfigurationError("httpx2 is not installed: use httpx_auth() with httpx")
        return cast("httpx2.Auth", auth_class()(self._tokens))

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
    tokens: TokenSource | None = None
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
        tokens = StaticToken(Secret(explicit_key)) if explicit_key else result.tokens
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
    found: _Found, tokens: TokenSource, base_url: str | None, explicit_key: bool
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
    tokens = StaticToken(Secret(token)) if token else None
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
    found = read_notebook_context(dbutils)
    if found is None:
        return None
    api_url, token = found
    return _Found(
        "notebook context",
        _normalize_host(api_url, "notebook apiUrl"),
        NotebookToken(dbutils, token),
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


# ---------------------------------------------------------------- step 5: databricks-sdk


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
    kwargs = {**_sdk_env_kwargs(env, Config), **sdk_timeouts()}
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
    tokens: TokenSource
    if auth_type == "pat":
        tokens = StaticToken(Secret(check_token(config.token, "databricks-sdk pat")))
    elif auth_type == "oauth-m2m":
        scopes = tuple(config.scopes) if config.scopes else None
        secret = Secret(config.client_secret)
        tokens = OAuthM2M(config.host, config.client_id, secret, scopes, config)
    else:
        tokens = SdkToken(config, auth_type)
    tokens.token()  # fail here, with the order's message, rather than in the first request
    return _Found(source, host, tokens)

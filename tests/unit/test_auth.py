"""Credential resolution order, secrets, pickling for executors, and per-request auth."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import openai
import pytest

from dbstruct._token_sources import StaticToken
from dbstruct.auth import Credentials, resolve_credentials, serving_base_url
from dbstruct.errors import ConfigurationError
from dbstruct.redaction import Secret, redact

PAT = "dapi0123456789abcdef0123456789abcdef"
PAT2 = "dapifedcba9876543210fedcba9876543210"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "dose0123456789abcdefABCDEF012345"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABRICKS_* or cloud identity from the machine; HOME and the config file in tmp."""
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_", "GOOGLE_", "IS_IN_D", "ACTIONS_ID_TOKEN")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "absent.databrickscfg"))
    return home


class Workspace:
    """What a workspace serves for auth: host metadata, OIDC discovery, client-credentials
    tokens, a metadata service, and a chat completions endpoint that records Authorization."""

    def __init__(self) -> None:
        self.url = ""
        self.oauth_clients: dict[str, str] = {}
        self.lifetime = 3600
        self.issued: list[str] = []
        self.seen_auth: list[str | None] = []

    def get(self, path: str) -> tuple[int, Any]:
        if path == "/.well-known/databricks-config" and self.oauth_clients:
            return 200, {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": "1"}
        if path == "/oidc/.well-known/oauth-authorization-server":
            return 200, {
                "token_endpoint": f"{self.url}/oidc/v1/token",
                "authorization_endpoint": f"{self.url}/oidc/v1/authorize",
            }
        if path == "/metadata":
            token = self._issue("meta")
            return 200, {
                "access_token": token,
                "token_type": "Bearer",
                "expires_on": time.time() + 3600,
            }
        return 404, {"error_code": "NOT_FOUND", "message": f"no {path}"}

    def post(self, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        if path == "/oidc/v1/token":
            scheme, _, value = str(headers.get("Authorization", "")).partition(" ")
            user, _, password = base64.b64decode(value).decode().partition(":")
            if scheme != "Basic" or self.oauth_clients.get(user) != password:
                return 401, {"error": "invalid_client", "error_description": "bad client"}
            token = self._issue("oauth")
            return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        if path.endswith("/chat/completions"):
            self.seen_auth.append(headers.get("Authorization"))
            return 200, _completion()
        return 404, {"error_code": "NOT_FOUND", "message": f"no {path}"}

    def _issue(self, kind: str) -> str:
        self.issued.append(f"{kind}-token-{len(self.issued) + 1}")
        return self.issued[-1]


def _completion() -> dict[str, Any]:
    message = {"role": "assistant", "content": "ok"}
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    state = Workspace()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(*state.get(self.path))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._reply(*state.post(self.path, self.headers, body))

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def fake_dbutils(api_url: str, tokens: list[str]) -> Any:
    """dbutils.notebook.entry_point.getDbutils().notebook().getContext(), with Scala Options;
    each apiToken() read returns the first of ``tokens`` (mutate the list to rotate)."""

    class Option:
        def __init__(self, value: str | None) -> None:
            self.value = value

        def get(self) -> str:
            if self.value is None:
                raise RuntimeError("None.get")
            return self.value

    context = SimpleNamespace(apiUrl=lambda: Option(api_url), apiToken=lambda: Option(tokens[0]))
    notebook = SimpleNamespace(getContext=lambda: context)
    entry_point = SimpleNamespace(getDbutils=lambda: SimpleNamespace(notebook=lambda: notebook))
    return SimpleNamespace(notebook=SimpleNamespace(entry_point=entry_point))


def write_profiles(path: Path, host: str, **extra: dict[str, str]) -> Path:
    sections = {"DEFAULT": {"host": host, "token": PAT}, **extra}
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
        for name, values in sections.items()
    )
    path.write_text(text)
    return path


# ---------------------------------------------------------------- base URLs


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (
            "https://adb-1.azuredatabricks.net",
            "https://adb-1.azuredatabricks.net/serving-endpoints",
        ),
        (
            "https://adb-1.azuredatabricks.net/",
            "https://adb-1.azuredatabricks.net/serving-endpoints",
        ),
        ("adb-1.azuredatabricks.net", "https://adb-1.azuredatabricks.net/serving-endpoints"),
        (" dbc-1.cloud.databricks.com/ ", "https://dbc-1.cloud.databricks.com/serving-endpoints"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/serving-endpoints"),
        ("https://h.example/serving-endpoints/", "https://h.example/serving-endpoints"),
        ("https://h.example/?o=123", "https://h.example/serving-endpoints"),
    ],
)
def test_serving_base_url(host: str, expected: str) -> None:
    assert serving_base_url(host) == expected


@pytest.mark.parametrize("host", ["https://", "ftp://h.example", "   "])
def test_serving_base_url_rejects_non_urls(host: str) -> None:
    with pytest.raises(ConfigurationError):
        serving_base_url(host)


# ---------------------------------------------------------------- steps 1-3


def test_explicit_arguments_base_url_used_as_is() -> None:
    creds = resolve_credentials(base_url="http://proxy:9/custom/path/", api_key=PAT)
    assert creds.base_url == "http://proxy:9/custom/path/"
    assert creds.token() == PAT
    assert creds.source == "arguments"
    assert creds.headers() == {"Authorization": f"Bearer {PAT}"}


def test_explicit_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://env.example")
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT2)
    creds = resolve_credentials(base_url="https://arg.example/serving-endpoints", api_key=PAT)
    assert (creds.base_url, creds.host, creds.token()) == (
        "https://arg.example/serving-endpoints",
        "https://arg.example",
        PAT,
    )


@pytest.mark.parametrize(
    ("host_var", "token_var"),
    [("DATABRICKS_HOST", "DATABRICKS_TOKEN"), ("DATABRICKS_WORKSPACE_URL", "DATABRICKS_API_KEY")],
)
def test_environment_pairs(monkeypatch: pytest.MonkeyPatch, host_var: str, token_var: str) -> None:
    monkeypatch.setenv(host_var, "dbc-1.cloud.databricks.com/")
    monkeypatch.setenv(token_var, PAT)
    creds = resolve_credentials()
    assert creds.base_url == "https://dbc-1.cloud.databricks.com/serving-endpoints"
    assert creds.host == "https://dbc-1.cloud.databricks.com"
    assert creds.token() == PAT
    assert creds.source == f"environment ({host_var}, {token_var})"


def test_first_pair_beats_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://one.example")
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT)
    monkeypatch.setenv("DATABRICKS_WORKSPACE_URL", "https://two.example")
    monkeypatch.setenv("DATABRICKS_API_KEY", PAT2)
    creds = resolve_credentials()
    assert (creds.host, creds.token()) == ("https://one.example", PAT)


@pytest.mark.parametrize("host_var", ["DATABRICKS_HOST", "DATABRICKS_WORKSPACE_URL"])
def test_explicit_api_key_takes_host_from_environment(
    monkeypatch: pytest.MonkeyPatch, host_var: str
) -> None:
    monkeypatch.setenv(host_var, "https://env.example/")
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT2)
    creds = resolve_credentials(api_key=PAT)
    assert (creds.base_url, creds.token()) == ("https://env.example/serving-endpoints", PAT)
    assert creds.source.startswith("arguments (api_key), host from environment")


def test_explicit_base_url_takes_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_API_KEY", PAT)
    creds = resolve_credentials(base_url="http://localhost:1/serving-endpoints")
    assert (creds.base_url, creds.token()) == ("http://localhost:1/serving-endpoints", PAT)
    assert "DATABRICKS_API_KEY" in creds.source


def test_environ_argument_replaces_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://os.example")
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT2)
    env = {"DATABRICKS_HOST": "https://given.example", "DATABRICKS_TOKEN": PAT}
    creds = resolve_credentials(environ=env)
    assert (creds.host, creds.token()) == ("https://given.example", PAT)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "  ")
    monkeypatch.setenv("DATABRICKS_TOKEN", "")
    monkeypatch.setenv("DATABRICKS_WORKSPACE_URL", "https://two.example")
    monkeypatch.setenv("DATABRICKS_API_KEY", PAT)
    assert resolve_credentials().host == "https://two.example"


@pytest.mark.parametrize("kwargs", [{"api_key": ""}, {"base_url": " ", "api_key": PAT}])
def test_empty_arguments_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="non-empty"):
        resolve_credentials(**kwargs)


# ---------------------------------------------------------------- missing credentials


def test_nothing_configured_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk_calls: list[object] = []
    monkeypatch.setattr("databricks.sdk.core.Config.__init__", lambda *a, **k: sdk_calls.append(a))
    with pytest.raises(ConfigurationError) as info:
        resolve_credentials()
    assert sdk_calls == []  # nothing configures the sdk: it neither waits nor touches the network
    message = str(info.value)
    assert "No Databricks credentials found" in message
    assert "DATABRICKS_HOST and DATABRICKS_TOKEN" in message
    assert "DATABRICKS_WORKSPACE_URL and DATABRICKS_API_KEY" in message
    assert "base_url/api_key" in message and "profile" in message


def test_host_without_token_says_token_is_missing(
    monkeypatch: pytest.MonkeyPatch, workspace: Workspace
) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)  # the sdk is tried too: answers 404
    with pytest.raises(
        ConfigurationError, match="DATABRICKS_HOST is set but DATABRICKS_TOKEN is not"
    ):
        resolve_credentials()


@pytest.mark.parametrize(
    ("token_var", "host_var"),
    [("DATABRICKS_TOKEN", "DATABRICKS_HOST"), ("DATABRICKS_API_KEY", "DATABRICKS_WORKSPACE_URL")],
)
def test_token_without_host_says_host_is_missing(
    monkeypatch: pytest.MonkeyPatch, token_var: str, host_var: str
) -> None:
    monkeypatch.setenv(token_var, PAT)
    with pytest.raises(ConfigurationError) as info:
        resolve_credentials()
    assert f"{token_var} is set but {host_var} is not" in str(info.value)
    assert PAT not in str(info.value)


def test_api_key_without_host() -> None:
    with pytest.raises(ConfigurationError, match="api_key was given but no workspace host") as info:
        resolve_credentials(api_key=PAT)
    assert "DATABRICKS_HOST" in str(info.value)
    assert PAT not in str(info.value)


def test_base_url_without_token() -> None:
    with pytest.raises(ConfigurationError, match="base_url was given but no token") as info:
        resolve_credentials(base_url="http://localhost:1/serving-endpoints")
    assert "DATABRICKS_TOKEN" in str(info.value)


# ---------------------------------------------------------------- step 4: notebook


def test_notebook_context() -> None:
    tokens = ["nb-token-1"]
    creds = resolve_credentials(dbutils=fake_dbutils("https://nb.example", tokens))
    assert creds.source == "notebook context"
    assert (creds.base_url, creds.token()) == ("https://nb.example/serving-endpoints", "nb-token-1")
    tokens[0] = "nb-token-2"  # the driver re-reads the context, as databricks-sdk does
    assert creds.token() == "nb-token-2"
    travelled = pickle.loads(pickle.dumps(creds))
    tokens[0] = "nb-token-3"  # executors keep the snapshot: they have no notebook context
    assert travelled.token() == "nb-token-2"


def test_notebook_dbutils_found_in_main_only_on_databricks_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "dbutils", fake_dbutils("https://nb.example", ["t"]), raising=False)
    with pytest.raises(ConfigurationError):
        resolve_credentials()
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    assert resolve_credentials().source == "notebook context"


def test_notebook_without_context_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT)
    broken = SimpleNamespace(notebook=SimpleNamespace())  # e.g. a RemoteDbUtils: no entry_point
    creds = resolve_credentials(base_url="http://x/serving-endpoints", dbutils=broken)
    assert creds.token() == PAT


def test_environment_beats_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://env.example")
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT)
    creds = resolve_credentials(dbutils=fake_dbutils("https://nb.example", ["nb"]))
    assert (creds.host, creds.token()) == ("https://env.example", PAT)


def test_explicit_api_key_takes_host_from_notebook() -> None:
    creds = resolve_credentials(api_key=PAT, dbutils=fake_dbutils("https://nb.example/", ["nb"]))
    assert (creds.base_url, creds.token()) == ("https://nb.example/serving-endpoints", PAT)


def test_notebook_beats_sdk_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Workspace
) -> None:
    cfg = write_profiles(tmp_path / "cfg", workspace.url)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    creds = resolve_credentials(dbutils=fake_dbutils("https://nb.example", ["nb"]))
    assert creds.source == "notebook context"


# ---------------------------------------------------------------- step 5: databricks-sdk


def test_profile_default_pat(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Workspace
) -> None:
    cfg = write_profiles(tmp_path / "cfg", workspace.url)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    creds = resolve_credentials()
    assert creds.source == "databricks-sdk (pat)"
    assert (creds.base_url, creds.token()) == (f"{workspace.url}/serving-endpoints", PAT)


def test_profile_in_home_databrickscfg(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, workspace: Workspace
) -> None:
    monkeypatch.delenv("DATABRICKS_CONFIG_FILE")
    write_profiles(clean_env / ".databrickscfg", workspace.url)
    assert resolve_credentials().token() == PAT


def test_profile_selected_by_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Workspace
) -> None:
    staging = {"host": f"{workspace.url}/", "token": PAT2}
    cfg = write_profiles(tmp_path / "cfg", "https://default.example", staging=staging)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("DATABRICKS_CONFIG_PROFILE", "staging")
    creds = resolve_credentials()
    assert creds.source == "databricks-sdk (pat, profile staging)"
    assert (creds.host, creds.token()) == (workspace.url, PAT2)


def test_unknown_profile_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Workspace
) -> None:
    cfg = write_profiles(tmp_path / "cfg", workspace.url)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("DATABRICKS_CONFIG_PROFILE", "nope")
    with pytest.raises(ConfigurationError, match="nope") as info:
        resolve_credentials()
    assert isinstance(info.value.__cause__, ValueError)


def test_environment_beats_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Workspace
) -> None:
    monkeypatch.setenv(
        "DATABRICKS_CONFIG_FILE", str(write_profiles(tmp_path / "cfg", workspace.url))
    )
    monkeypatch.setenv("DATABRICKS_WORKSPACE_URL", "https://env.example")
    monkeypatch.setenv("DATABRICKS_API_KEY", PAT2)
    assert resolve_credentials().token() == PAT2


def test_explicit_api_key_takes_host_from_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Workspace
) -> None:
    (tmp_path / "cfg").write_text(f"[DEFAULT]\nhost = {workspace.url}\n")  # a host, no auth
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "cfg"))
    creds = resolve_credentials(api_key=PAT)
    assert (creds.base_url, creds.token()) == (f"{workspace.url}/serving-endpoints", PAT)
    assert creds.source == "arguments (api_key), host from databricks-sdk config"


def oauth_env(
    monkeypatch: pytest.MonkeyPatch, workspace: Workspace, secret: str = CLIENT_SECRET
) -> None:
    workspace.oauth_clients[CLIENT_ID] = CLIENT_SECRET
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", secret)


def test_oauth_m2m_refreshes(monkeypatch: pytest.MonkeyPatch, workspace: Workspace) -> None:
    oauth_env(monkeypatch, workspace)
    workspace.lifetime = 1
    creds = resolve_credentials()
    assert creds.source == "databricks-sdk (oauth-m2m)"
    assert creds.base_url == f"{workspace.url}/serving-endpoints"
    first = creds.token()
    assert first == workspace.issued[-1]
    time.sleep(1.2)  # past expiry: the sdk fetches a new token instead of reusing a frozen one
    assert creds.token() not in (first, "")
    assert creds.token() == workspace.issued[-1]


def test_oauth_m2m_bad_secret_fails_at_resolution(
    monkeypatch: pytest.MonkeyPatch, workspace: Workspace
) -> None:
    wrong = "dose" + "9" * 28
    oauth_env(monkeypatch, workspace, secret=wrong)
    with pytest.raises(ConfigurationError, match="oauth-m2m") as info:
        resolve_credentials()
    assert wrong not in str(info.value) and CLIENT_SECRET not in str(info.value)
    assert info.value.__cause__ is not None


def test_oauth_m2m_against_the_emulator_refreshes_mid_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the emulator answers 403 to an expired token, so the second call only
    succeeds if the token was refreshed per request, on the driver and after unpickling."""
    testing = pytest.importorskip("dbstruct.testing")
    settings = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_ttl": 1}
    with testing.Emulator(**settings) as emu:
        monkeypatch.setenv("DATABRICKS_HOST", emu.host)
        monkeypatch.setenv("DATABRICKS_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
        creds = resolve_credentials()
        assert creds.base_url == emu.base_url
        executor = pickle.loads(pickle.dumps(creds))
        for attempt in range(2):
            for current in (creds, executor):
                http = cast(Any, httpx.Client(auth=current.httpx_auth()))
                client = openai.OpenAI(
                    base_url=current.base_url,
                    api_key="placeholder",
                    http_client=http,
                    max_retries=0,
                )
                messages: Any = [{"role": "user", "content": "hi"}]
                client.chat.completions.create(model="databricks-llama", messages=messages)
            if attempt == 0:
                time.sleep(1.2)
        stats = emu.stats()
        assert stats.by_status == {200: 4}  # a token frozen at construction would get 403
        assert stats.oauth_tokens_issued >= 4  # two identities, each refreshed at least once


# ---------------------------------------------------------------- executors: pickling


def _no_secret_in(obj: Any, *secrets: str) -> None:
    texts = [repr(obj), str(obj), repr(vars(obj))]
    texts += [repr(v) for v in vars(obj).values()]
    texts += [repr(vars(v)) for v in vars(obj).values() if hasattr(v, "__dict__")]
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_static_credentials_pickle_small_and_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://env.example")
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT)
    creds = resolve_credentials()
    data = pickle.dumps(creds)
    assert len(data) < 600
    travelled = pickle.loads(data)
    assert (travelled.base_url, travelled.source, travelled.token()) == (
        creds.base_url,
        creds.source,
        PAT,
    )
    _no_secret_in(creds, PAT)
    _no_secret_in(travelled, PAT)
    assert repr(creds) == (
        "Credentials(base_url='https://env.example/serving-endpoints', host='https://env.example', "
        "source='environment (DATABRICKS_HOST, DATABRICKS_TOKEN)')"
    )


def test_credentials_travel_in_a_cloudpickled_closure() -> None:
    cloudpickle = pytest.importorskip("pyspark.cloudpickle")
    creds = Credentials.from_token("https://h.example/serving-endpoints", PAT)

    def udf(text: str) -> str:
        return f"{text}:{creds.headers()['Authorization']}"

    shipped = pickle.loads(cloudpickle.dumps(udf))
    assert shipped("x") == f"x:Bearer {PAT}"


def test_oauth_m2m_pickles_without_config_and_refreshes_on_executor(
    monkeypatch: pytest.MonkeyPatch, workspace: Workspace
) -> None:
    oauth_env(monkeypatch, workspace)
    creds = resolve_credentials()
    driver_token = creds.token()
    data = pickle.dumps(creds)
    assert len(data) < 1000  # host, client id, secret: no sdk Config, lock or token cache
    for name in ("DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name)  # an executor has none of the driver's environment
    travelled = pickle.loads(data)
    _no_secret_in(travelled, CLIENT_SECRET, driver_token)
    executor_token = travelled.token()
    assert executor_token == workspace.issued[-1] != driver_token


def test_other_sdk_auth_travels_as_a_snapshot(
    monkeypatch: pytest.MonkeyPatch, workspace: Workspace
) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_METADATA_SERVICE_URL", f"{workspace.url}/metadata")
    creds = resolve_credentials()
    assert creds.source == "databricks-sdk (metadata-service)"
    snapshot = creds.token()
    travelled = pickle.loads(pickle.dumps(creds))
    issued = len(workspace.issued)
    assert travelled.token() == snapshot
    assert len(workspace.issued) == issued  # no refresh possible away from the driver
    _no_secret_in(travelled, snapshot)


# ---------------------------------------------------------------- secrets and redaction


def test_secret_hides_its_value() -> None:
    secret = Secret(PAT)
    assert repr(secret) == "Secret('***')"
    assert str(secret) == f"{secret}" == "***"
    assert secret.get_secret_value() == PAT
    assert secret == Secret(PAT) and secret != Secret(PAT2)
    assert pickle.loads(pickle.dumps(secret)) == secret
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


def test_redact() -> None:
    text = (
        f"token {PAT} and {PAT}-2, header 'Authorization: Bearer eyJhbGciOi.x-y_z', "
        "a basic header: Basic Y2lkOnNlY3JldA==, "
        "form client_secret=s3cr3t&grant_type=client_credentials, "
        f'json {{"access_token": "at-123", "token_type": "Bearer", "max_tokens": 5}}, '
        f"sp {CLIENT_SECRET}, mine my-own-secret-value"
    )
    out = redact(text, "my-own-secret-value", None, Secret("at-123"))
    for leaked in (
        PAT,
        "eyJhbGciOi",
        "Y2lkOnNlY3JldA",
        "s3cr3t",
        "at-123",
        CLIENT_SECRET,
        "my-own",
    ):
        assert leaked not in out
    for kept in ("grant_type=client_credentials", '"token_type": "Bearer"', '"max_tokens": 5'):
        assert kept in out
    assert "Bearer ***" in out and "dapi***" in out
    assert redact("a b c", "b") == "a b c"  # too short to be a secret worth shredding text for


def test_token_never_in_errors_about_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", f"https://{PAT}:x@")  # a token pasted in the wrong place
    monkeypatch.setenv("DATABRICKS_TOKEN", PAT)
    with pytest.raises(ConfigurationError) as info:
        resolve_credentials()
    assert PAT not in str(info.value)


# ---------------------------------------------------------------- per-request auth with openai


def rotating(*tokens: str) -> Callable[[], str]:
    queue = list(tokens)
    return lambda: queue.pop(0)


def test_openai_sync_sends_our_token_per_request(workspace: Workspace) -> None:
    creds = Credentials.from_token_provider(
        f"{workspace.url}/serving-endpoints", rotating("t1", "t2")
    )
    client = openai.OpenAI(
        base_url=creds.base_url,
        api_key="placeholder-key",
        # openai 3.x types http_client as httpx2.Client; an httpx.Client works the same.
        http_client=cast(Any, httpx.Client(auth=creds.httpx_auth())),
    )
    for _ in range(2):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert workspace.seen_auth == ["Bearer t1", "Bearer t2"]


def test_openai_async_sends_our_token_per_request(workspace: Workspace) -> None:
    creds = Credentials.from_token_provider(
        f"{workspace.url}/serving-endpoints", rotating("t1", "t2")
    )

    async def run() -> None:
        async with httpx.AsyncClient(auth=creds.httpx_auth()) as http:
            client = openai.AsyncOpenAI(
                base_url=creds.base_url, api_key="placeholder", http_client=cast(Any, http)
            )
            for _ in range(2):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )

    asyncio.run(run())
    assert workspace.seen_auth == ["Bearer t1", "Bearer t2"]


def test_openai_default_http_client_accepts_our_auth(workspace: Workspace) -> None:
    """openai's DefaultHttpxClient may be httpx2: the same auth object works with it."""
    creds = Credentials.from_token_provider(
        f"{workspace.url}/serving-endpoints", rotating("a", "b")
    )
    sync = openai.OpenAI(
        base_url=creds.base_url,
        api_key="placeholder",
        http_client=openai.DefaultHttpxClient(auth=creds.httpx2_auth()),
    )
    sync.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    async def run() -> None:
        http = openai.DefaultAsyncHttpxClient(auth=creds.httpx2_auth())
        client = openai.AsyncOpenAI(
            base_url=creds.base_url, api_key="placeholder", http_client=http
        )
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )

    asyncio.run(run())
    assert workspace.seen_auth == ["Bearer a", "Bearer b"]


def test_httpx_auth_replaces_existing_header_mock_transport() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={})

    creds = Credentials.from_token("http://h/serving-endpoints", PAT)
    with httpx.Client(transport=httpx.MockTransport(handler), auth=creds.httpx_auth()) as http:
        http.get("http://h/x", headers={"Authorization": "Bearer placeholder"})
    assert seen == [f"Bearer {PAT}"]
    assert PAT not in repr(creds.httpx_auth())


def test_async_token_runs_blocking_sources_off_the_loop() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def provider() -> str:
        threads.append(threading.get_ident())
        return "t"

    creds = Credentials.from_token_provider("http://h/serving-endpoints", provider)
    assert asyncio.run(creds.aheaders()) == {"Authorization": "Bearer t"}
    assert threads and threads[0] != loop_thread
    assert StaticToken.blocking is False

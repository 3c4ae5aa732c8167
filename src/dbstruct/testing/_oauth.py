"""OAuth M2M (service principal, client credentials) as a workspace serves it.

databricks-sdk's ``oauth-m2m`` strategy (``Config(host, client_id, client_secret)``) does:

1. ``GET {host}/.well-known/databricks-config``: host metadata; its ``oidc_endpoint`` gives
   the discovery URL ``{oidc_endpoint}/.well-known/oauth-authorization-server``
   (databricks/sdk/config.py ``_resolve_host_metadata``);
2. ``GET`` that discovery URL: ``token_endpoint`` (databricks/sdk/oauth.py ``OidcEndpoints``);
3. ``POST {token_endpoint}`` form ``grant_type=client_credentials&scope=all-apis`` with the
   client id and secret as HTTP Basic auth (oauth.py ``ClientCredentials``, ``use_header``);
   expects ``{"access_token", "token_type", "expires_in"}``; an error body is read as
   ``{"error", "error_description"}`` (RFC 6749 section 5.2).

https://docs.databricks.com/aws/en/dev-tools/auth/oauth-m2m : "Each access token is valid for
one hour" (the default ``token_ttl``; tests shorten it to see tokens expire).
"""

from __future__ import annotations

import base64
import binascii
import json
import math

from aiohttp import web

from dbstruct.testing._state import State

__all__ = ["add_oauth_routes"]

WORKSPACE_ID = "1234567890123456"


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _json(data: object, status: int = 200) -> web.Response:
    body = json.dumps(data).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def add_oauth_routes(app: web.Application, state: State) -> None:
    async def host_metadata(request: web.Request) -> web.Response:
        return _json(
            {
                "oidc_endpoint": f"{_base(request)}/oidc",
                "workspace_id": WORKSPACE_ID,
                "cloud": "aws",
            }
        )

    async def discovery(request: web.Request) -> web.Response:
        oidc = f"{_base(request)}/oidc"
        return _json(
            {
                "issuer": oidc,
                "authorization_endpoint": f"{oidc}/v1/authorize",
                "token_endpoint": f"{oidc}/v1/token",
                "jwks_uri": f"{oidc}/jwks.json",
                "scopes_supported": ["all-apis", "offline_access", "sql"],
                "response_types_supported": ["code"],
                "grant_types_supported": [
                    "client_credentials",
                    "authorization_code",
                    "refresh_token",
                ],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        client_id, client_secret = _client(request, {k: str(v) for k, v in form.items()})
        config = state.config
        if client_id != config.client_id or client_secret != config.client_secret:
            return _json(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                status=401,
            )
        if form.get("grant_type") != "client_credentials":
            return _json(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Only client_credentials is supported here",
                },
                status=400,
            )
        scope = str(form.get("scope") or "all-apis")
        return _json(
            {
                "access_token": state.issue_token(),
                "token_type": "Bearer",
                "expires_in": max(1, math.ceil(config.token_ttl)),
                "scope": scope,
            }
        )

    app.router.add_get("/.well-known/databricks-config", host_metadata)
    app.router.add_get("/oidc/.well-known/oauth-authorization-server", discovery)
    app.router.add_post("/oidc/v1/token", token)


def _client(request: web.Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    """Client credentials from HTTP Basic auth (client_secret_basic) or the form (post)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")

"""The error answers the emulator gives, shaped like the ones Databricks gives.

Every body is what a real workspace was seen or documented to send; where only the shape is
known the wording is ours, and the comment says so.

| status | body                                                        | when              |
|--------|-------------------------------------------------------------|-------------------|
| 400    | ``{"error_code": "BAD_REQUEST", "message": "Bad request: ..."}`` | invalid request |
| 401    | ``{"error_code": 401, "message": "Credential was not sent..."}`` | no bearer token |
| 403    | ``{"error_code": 403, "message": "Invalid access token."}`` | bad/expired token |
| 403    | ``{"error_code": "PERMISSION_DENIED", ...}``                | lacks CAN_QUERY   |
| 404    | ``{"error_code": "RESOURCE_DOES_NOT_EXIST", ...}``          | unknown endpoint  |
| 404    | ``{"error_code": "ENDPOINT_NOT_FOUND", "message": "No API found..."}`` | unknown path |
| 429    | ``{"error_code": "REQUEST_LIMIT_EXCEEDED", ...}``, Retry-After | rate limits    |
| 500    | ``{"error_code": "INTERNAL_ERROR", ...}``                   | injected          |
| 502    | text ``upstream connect error ...`` (the proxy's, not JSON) | injected          |
| 503    | ``{"error_code": "TEMPORARILY_UNAVAILABLE", ...}``          | injected          |
| 504    | text ``upstream request timeout`` (the proxy's, not JSON)   | injected, timeout |

Every JSON body from the serving layer carries a ``google.rpc.RequestInfo`` detail with a fresh
``request_id``, as real ones do::

    {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Endpoint with name 'x' does not exist.",
     "details": [{"@type": "type.googleapis.com/google.rpc.RequestInfo",
                  "request_id": "28e113da-...", "serving_data": ""}]}

(quoted from a live answer in https://github.com/databricks-demos/dbdemos/issues/220; the
shape databricks-sdk errors/details.py parses). The workspace edge's 401/403 bodies have no
details in the answers quoted in their issues, so they get none. No ``x-request-id`` header:
none is documented.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from aiohttp import web

__all__ = [
    "ApiError",
    "bad_request",
    "endpoint_not_found",
    "invalid_token",
    "missing_credentials",
    "not_found",
    "permission_denied",
    "rate_limited",
    "server_error",
]

JSON_TYPE = "application/json"


class ApiError(Exception):
    """An HTTP error answer: raised anywhere in a handler, turned into the response once."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any] | str,
        *,
        headers: dict[str, str] | None = None,
        fault: str | None = None,
        request_info: bool = True,
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}
        #: the stats bucket this answer counts under (a fault kind or a limit name)
        self.fault = fault
        #: add a RequestInfo detail (a fresh request_id) to a JSON body
        self.request_info = request_info

    def response(self) -> web.Response:
        if isinstance(self.body, str):
            return web.Response(
                status=self.status, text=self.body, content_type="text/plain", headers=self.headers
            )
        body = self.body
        if self.request_info:
            details = [*body.get("details", []), request_detail()]
            body = {**body, "details": details}
        return web.Response(
            status=self.status,
            body=json.dumps(body).encode(),
            content_type=JSON_TYPE,
            headers=self.headers,
        )


def request_detail() -> dict[str, str]:
    """A ``google.rpc.RequestInfo`` error detail with a new request id."""
    return {
        "@type": "type.googleapis.com/google.rpc.RequestInfo",
        "request_id": str(uuid.uuid4()),
        "serving_data": "",
    }


def bad_request(message: str) -> ApiError:
    # Shape and the "Bad request: " prefix as real endpoints send them, e.g.
    # {'error_code': 'BAD_REQUEST', 'message': 'Bad request: rpc error: ... roles must alternate'}
    # https://github.com/567-labs/instructor/pull/691 (a Databricks answer quoted in the thread)
    return ApiError(400, {"error_code": "BAD_REQUEST", "message": message})


def missing_credentials() -> ApiError:
    # What the workspace edge answers a request without a bearer token, seen in the wild:
    # 401, WWW-Authenticate: Bearer realm="DatabricksRealm", body with a numeric error_code.
    # https://github.com/omnigent-ai/omnigent/issues/3231
    # https://github.com/PipedreamHQ/pipedream/issues/20701
    message = "Credential was not sent or was of an unsupported type for this API."
    return ApiError(
        401,
        {"error_code": 401, "message": message},
        headers={
            "WWW-Authenticate": 'Bearer realm="DatabricksRealm"',
            "X-Databricks-Reason-Phrase": message,
        },
        request_info=False,
    )


def invalid_token() -> ApiError:
    # An unknown, revoked or expired token is a 403 at the workspace edge, not a 401:
    # "HTTP/2.0 403 Forbidden ... X-Databricks-Reason-Phrase: Invalid access token.
    #  {"error_code": 403, "message": "Invalid access token."}"
    # https://github.com/databricks/databricks-sdk-go/issues/873
    # https://github.com/databricks/databricks-sdk-go/issues/1046
    message = "Invalid access token."
    return ApiError(
        403,
        {"error_code": 403, "message": message},
        headers={"X-Databricks-Reason-Phrase": message},
        request_info=False,
    )


def permission_denied(endpoint: str) -> ApiError:
    # Shape of Databricks PERMISSION_DENIED errors (e.g. the ai_query 403 quoted in
    # https://github.com/databricks-demos/dbdemos/issues/241); the wording is ours. Querying
    # needs CAN_QUERY on the endpoint (levels listed in
    # https://github.com/databricks-solutions/ai-dev-kit/pull/416).
    return ApiError(
        403,
        {
            "error_code": "PERMISSION_DENIED",
            "message": (
                f"User does not have permission 'CAN_QUERY' on serving endpoint '{endpoint}'."
            ),
        },
    )


def not_found(endpoint: str) -> ApiError:
    # Body as a workspace answers a query of an endpoint that does not exist (request id
    # detail added by ApiError.response):
    # https://github.com/databricks-demos/dbdemos/issues/220
    return ApiError(
        404,
        {
            "error_code": "RESOURCE_DOES_NOT_EXIST",
            "message": f"Endpoint with name '{endpoint}' does not exist.",
        },
    )


def endpoint_not_found(method: str, path: str) -> ApiError:
    """404 for a path no API serves, as the workspace answers it: the path without its
    ``/api/2.x`` prefix, e.g. ``No API found for 'GET /repos'`` for ``GET /api/2.0/repos``
    (https://github.com/databricks/databricks-cli/issues/383,
    https://github.com/polar-rams/databricks-sdk-golang/issues/7)."""
    parts = path.split("/", 3)
    if len(parts) > 2 and parts[1] == "api" and parts[2][:1].isdigit():
        path = "/" + (parts[3] if len(parts) > 3 else "")
    return ApiError(
        404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"No API found for '{method} {path}'"}
    )


def rate_limited(
    endpoint: str,
    retry_after: float | None,
    *,
    header: bool = True,
    what: str = "rate limit",
    fault: str | None = "429",
) -> ApiError:
    """429 as pay-per-token endpoints send it.

    ``header``: ``Retry-After`` in whole seconds (what the platform sends, per databricks-sdk
    errors/customizer.py); otherwise the delay is only in the body, as a
    ``google.rpc.RetryInfo`` error detail (the platform's error-details format, parsed by
    databricks-sdk errors/details.py). ``retry_after`` None: no delay anywhere (the limits
    page documents the 429 but not that a delay comes with it, so a client must cope).
    """
    # Body FMAPI endpoints send: {"error_code":"REQUEST_LIMIT_EXCEEDED","message":
    # "REQUEST_LIMIT_EXCEEDED: Exceeded workspace rate limit for <endpoint>..."}; public client
    # code matches on exactly this prefix (the rest of the sentence is ours). Limits and the 429:
    # https://docs.databricks.com/aws/en/machine-learning/foundation-model-apis/limits
    body: dict[str, Any] = {
        "error_code": "REQUEST_LIMIT_EXCEEDED",
        "message": f"REQUEST_LIMIT_EXCEEDED: Exceeded workspace {what} for {endpoint}.",
    }
    headers: dict[str, str] = {}
    if retry_after is None:
        return ApiError(429, body, headers=headers, fault=fault)
    seconds = max(1, math.ceil(retry_after))
    if header:
        headers["Retry-After"] = str(seconds)
    else:
        body["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": f"{seconds}s"}
        ]
    return ApiError(429, body, headers=headers, fault=fault)


def server_error(status: int) -> ApiError:
    """An injected 5xx. Docs are silent on these bodies; 500/503 use the platform's codes
    (INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE: databricks-sdk errors/platform.py), 502/504 the
    plain-text answers of the proxy in front of serving (chosen: most plausible). Counted under
    the fault that caused it by the caller, so the error carries no stats bucket."""
    if status == 500:
        body: dict[str, Any] | str = {
            "error_code": "INTERNAL_ERROR",
            "message": "The server received an invalid response from an upstream server.",
        }
    elif status == 503:
        body = {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": "The service is currently unavailable.",
        }
    elif status == 502:
        body = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    elif status == 504:
        body = "upstream request timeout"
    else:
        raise ValueError(f"not an injectable server error: {status}")
    return ApiError(status, body)

"""The aiohttp application: serving routes, OAuth routes and the admin (control) routes.

A chat request goes through the checks a workspace makes, in this order:

1. token, as a bearer token or HTTP Basic ``token:<PAT>`` (401 none, 403 invalid or expired),
2. payload size (400 over 4 MB),
3. JSON body (400), 4. endpoint name (404), 5. CAN_QUERY (403), 6. QPS (429),
7. request validation (400), 8. context length (400), 9. input/output tokens per minute (429),

then a fault (marker, script or the seeded plan) or the answer, after the configured latency.

Besides chat, the REST routes clients call to look endpoints up:
``GET /api/2.0/serving-endpoints`` and ``GET /api/2.0/serving-endpoints/{name}``
(:mod:`dbstruct.testing._catalog`). Any other path answers Databricks' JSON 404
``ENDPOINT_NOT_FOUND`` ("No API found for ..."), not aiohttp's plain-text page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dbstruct.testing._answer import build_completion, packed_request, stream_events
from dbstruct.testing._catalog import FOUNDATION_ENDPOINTS, describe
from dbstruct.testing._config import FAULT_KINDS, OUTPUT_FAULTS, EmulatorConfig
from dbstruct.testing._error_bodies import (
    ApiError,
    bad_request,
    endpoint_not_found,
    invalid_token,
    missing_credentials,
    not_found,
    permission_denied,
    rate_limited,
    server_error,
)
from dbstruct.testing._oauth import add_oauth_routes
from dbstruct.testing._packs import PackPlan, plan_pack
from dbstruct.testing._request_text import hints_from, parse_markers, prompt_tokens
from dbstruct.testing._scripted import check_wire
from dbstruct.testing._state import State, Stats
from dbstruct.testing._token_buckets import DEFAULT_OUTPUT_RESERVATION
from dbstruct.testing._validate import canonical_specs, validate_chat

__all__ = ["DROPPED", "build_app"]

#: the by_status key of requests whose connection was dropped without an answer
DROPPED = 0
#: the by_status key of requests whose client went away before the answer (nginx's 499)
CLIENT_GONE = 499
# Fields that change how an answer is sampled, not what is asked: left out of the content key.
_SAMPLING = frozenset({"stream", "stream_options", "temperature", "top_p", "top_k", "seed", "n"})


class _Dropped(Exception):
    """The connection was closed without an answer."""


class _Decision:
    __slots__ = ("fault", "latency", "params", "source")

    def __init__(self) -> None:
        self.fault: str | None = None
        self.params: dict[str, Any] = {}
        self.source: dict[str, Any] | None = None
        self.latency = 0.0


class ChatHandler:
    def __init__(self, state: State) -> None:
        self.state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info.get("name")
        stats = self.state.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        record: dict[str, Any] = {"endpoint": endpoint, "status": CLIENT_GONE, "body": None}
        try:
            response = await self._handle(request, endpoint, record, stats)
            record["status"] = response.status
            return response
        except ApiError as error:
            record["status"] = error.status
            if error.fault:
                _bump(stats.by_fault, error.fault)
            return error.response()
        except _Dropped:
            record["status"] = DROPPED
            return web.Response(status=500)  # never written: the transport is gone
        finally:
            stats.in_flight -= 1
            _bump(stats.by_status, record["status"])

    async def _handle(
        self, request: web.Request, endpoint: str | None, record: dict[str, Any], stats: Stats
    ) -> web.StreamResponse:
        state = self.state
        config = state.config
        access = _access(request, state)
        raw = await request.read()
        if len(raw) > config.max_payload_bytes:
            # https://docs.databricks.com/aws/en/machine-learning/model-serving/model-serving-limits
            # (4 MB for foundation models); the status and wording are ours (docs silent).
            raise bad_request(
                f"Bad request: the request payload is {len(raw)} bytes, over the limit of "
                f"{config.max_payload_bytes} bytes"
            )
        body = _parse(raw)
        if endpoint is None:
            endpoint = body.get("model")
            if not isinstance(endpoint, str) or not endpoint:
                raise bad_request("Bad request: 'model' (the serving endpoint name) is required")
        record["endpoint"] = endpoint
        record["body"] = body
        state.recent.append(record)
        if config.endpoints is not None and endpoint not in config.endpoints:
            raise not_found(endpoint)
        if access == "forbidden":
            raise permission_denied(endpoint)
        _bump(stats.by_endpoint, endpoint)
        self._take(endpoint, "qps", 1, "rate limit")
        specs = canonical_specs(body)
        validate_chat(body, endpoint, specs)
        prompt = prompt_tokens(body, specs)
        if config.context_tokens is not None and prompt > config.context_tokens:
            # The prefix real endpoints use: 'Bad request: prompt token count ...'; the rest
            # of the sentence is ours.
            raise bad_request(
                f"Bad request: prompt token count ({prompt}) cannot exceed the maximum "
                f"context length of {config.context_tokens} tokens"
            )
        reserved = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        reserved = reserved or DEFAULT_OUTPUT_RESERVATION
        self._take(endpoint, "itpm", prompt, "input tokens per minute rate limit")
        try:
            self._take(endpoint, "otpm", reserved, "output tokens per minute rate limit")
        except ApiError:
            itpm = state.bucket(endpoint, "itpm")
            if itpm is not None:  # refused after all: its input tokens were not spent
                itpm.give(prompt)
            raise
        digest = _content_digest(endpoint, body, specs)
        return await self._respond(request, body, endpoint, digest, prompt, reserved, stats)

    def _take(self, endpoint: str, kind: str, amount: float, what: str) -> None:
        bucket = self.state.bucket(endpoint, kind)
        if bucket is None:
            return
        wait = bucket.take(amount)
        if wait > 0:
            raise rate_limited(endpoint, wait, what=what, fault=kind)

    async def _respond(
        self,
        request: web.Request,
        body: dict[str, Any],
        endpoint: str,
        digest: int,
        prompt: int,
        reserved: int,
        stats: Stats,
    ) -> web.StreamResponse:
        state = self.state
        decision = self._decide(body, endpoint, digest)
        fault = decision.fault
        if fault is not None:
            _bump(stats.by_fault, fault)
        if fault in ("429", "429_body", "429_bare"):
            retry = decision.params.get("retry_after") or state.config.retry_after
            delay = None if fault == "429_bare" else retry
            raise rate_limited(endpoint, delay, header=fault == "429", fault=None)
        if decision.latency > 0:
            await asyncio.sleep(decision.latency)
        if fault in ("500", "502", "503", "504"):
            raise server_error(int(fault))
        if fault == "timeout":
            await asyncio.sleep(decision.params.get("hold") or state.config.timeout_hold)
            raise server_error(504)
        if fault == "drop":
            _drop(request)
        plan = self._pack_plan(body, digest)
        completion, completion_tokens = build_completion(
            body,
            endpoint,
            digest,
            hints_from(body["messages"]),
            source=decision.source,
            fault=fault if fault in OUTPUT_FAULTS else None,
            prompt_tokens=prompt,
            pack=plan,
        )
        if plan is not None and decision.source is None and fault not in ("empty", "refusal"):
            answer = plan.answer()
            stats.packed_requests += 1
            stats.packed_items += answer.answered
            for kind in answer.applied:
                _bump(stats.by_pack_fault, kind)
        stats.prompt_tokens += prompt
        stats.completion_tokens += completion_tokens
        otpm = state.bucket(endpoint, "otpm")
        if otpm is not None:
            otpm.give(max(0, reserved - completion_tokens))
        if body.get("stream"):
            return await _stream(request, completion, body)
        return web.Response(body=json.dumps(completion).encode(), content_type="application/json")

    def _pack_plan(self, body: dict[str, Any], digest: int) -> PackPlan | None:
        """A packed request's answer plan (its faults by marker and by ``pack_faults``)."""
        pack = packed_request(body)
        if pack is None:
            return None
        state, key = self.state, f"{digest:x}"
        rates = state.config.pack_faults
        attempt = state.attempt(f"k{key}") if rates else 0
        return plan_pack(pack, rates, lambda salt: state.draw(salt, key, attempt), digest)

    def _decide(self, body: dict[str, Any], endpoint: str, digest: int) -> _Decision:
        """Which fault (if any) and which scripted answer (if any) this request gets."""
        state = self.state
        config = state.config
        decision = _Decision()
        scan = parse_markers(body["messages"])
        decision.latency = config.latency + scan.latency
        key = f"{digest:x}"
        if scan.faults and scan.key_text is not None:
            marker_key = _digest(f"{endpoint}\x00{scan.key_text}")
            decision.fault = _marker_fault(scan.faults, state.attempt(f"m{marker_key:x}"))
        if decision.fault is None:
            item = state.pop_script(endpoint)
            if item is not None and "fault" in item:
                decision.fault = item["fault"]["kind"]
                decision.params = item["fault"]
            else:
                decision.source = item
        if not config.faults and config.tail == 0:
            return decision
        attempt = state.attempt(f"p{key}")
        if decision.fault is None and decision.source is None and config.faults:
            decision.fault = _planned_fault(config, state.draw("fault", key, attempt))
        if config.tail > 0 and state.draw("tail", key, attempt) < config.tail:
            decision.latency += config.latency * (config.tail_factor - 1)
        return decision


def _marker_fault(markers: list[Any], attempt: int) -> str | None:
    """Markers apply in sequence: [[fault:429x1]][[fault:500x2]] gives 429, 500, 500, then
    answers; a marker without a count applies to every later attempt."""
    used = 0
    for marker in markers:
        if marker.count is None or attempt <= used + marker.count:
            return marker.kind if marker.kind in FAULT_KINDS else None
        used += marker.count
    return None


def _planned_fault(config: EmulatorConfig, u: float) -> str | None:
    edge = 0.0
    for kind, rate in config.faults.items():
        edge += rate
        if u < edge:
            return kind
    return None


def _content_digest(endpoint: str, body: dict[str, Any], specs: dict[str, str]) -> int:
    """A key for "the same request": its content, without sampling parameters, and without
    the tool-call ids of earlier answers (new per answer), so a re-ask after the same answer
    is the same request again."""
    rest = {k: v for k, v in body.items() if k not in _SAMPLING and k not in specs}
    if isinstance(rest.get("messages"), list):
        rest["messages"] = [_without_ids(m) for m in rest["messages"]]
    parts = [endpoint, json.dumps(rest, sort_keys=True), *(f"{k}={v}" for k, v in specs.items())]
    return _digest("\x00".join(parts))


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _bump(counter: dict[Any, int], key: Any) -> None:
    counter[key] = counter.get(key, 0) + 1


def _without_ids(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = {k: v for k, v in message.items() if k != "tool_call_id"}
    calls = out.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [
            {k: v for k, v in c.items() if k != "id"} if isinstance(c, dict) else c for c in calls
        ]
    return out


def _token(request: web.Request) -> str | None:
    """The PAT or OAuth token a request carries: ``Authorization: Bearer <token>``, or HTTP
    Basic with user name ``token`` and the token as password (``curl -u token:<PAT>``;
    databricks-sdk's ``basic`` auth, ``Config(username="token", password=<PAT>)``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # Any other user name would be a password login, which workspaces no longer accept
        # for the REST API (chosen: refused like an unknown token).
        return password if user == "token" and password else ""
    return None


def _access(request: web.Request, state: State) -> str:
    """ "ok" or "forbidden" (valid, lacks CAN_QUERY); raise 401 without credentials and 403
    for an invalid or expired token."""
    token = _token(request)
    if token is None:
        raise missing_credentials()
    access = state.token_status(token)
    if access == "invalid":
        raise invalid_token()
    return access


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Bad request: unable to parse json body for request") from None
    if not isinstance(body, dict):
        raise bad_request("Bad request: the request body must be a JSON object")
    return body


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()  # reset, no response bytes: what a crashed proxy hop looks like
    raise _Dropped


async def _stream(
    request: web.Request, completion: dict[str, Any], body: dict[str, Any]
) -> web.StreamResponse:
    options = body.get("stream_options") or {}
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in stream_events(completion, bool(options.get("include_usage"))):
        await response.write(event.encode())
    await response.write_eof()
    return response


# ---------------------------------------------------------------- REST routes


def _endpoint_routes(app: web.Application, state: State) -> None:
    """``GET /api/2.0/serving-endpoints[/{name}]``: with ``endpoints`` configured, those;
    otherwise the known pay-per-token endpoints and every name queried so far (any name is
    served, so any name can be looked up)."""

    def names() -> list[str]:
        if state.config.endpoints is not None:
            return list(state.config.endpoints)
        return list(dict.fromkeys([*FOUNDATION_ENDPOINTS, *state.stats.by_endpoint]))

    def level(access: str) -> str:
        return "CAN_QUERY" if access == "ok" else "CAN_VIEW"

    async def list_endpoints(request: web.Request) -> web.Response:
        try:
            permission = level(_access(request, state))
        except ApiError as error:
            return error.response()
        return _ok({"endpoints": [describe(n, permission) for n in names()]})

    async def get_endpoint(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            permission = level(_access(request, state))
            if state.config.endpoints is not None and name not in state.config.endpoints:
                raise not_found(name)
        except ApiError as error:
            return error.response()
        return _ok(describe(name, permission))

    app.router.add_get("/api/2.0/serving-endpoints", list_endpoints)
    app.router.add_get("/api/2.0/serving-endpoints/{name}", get_endpoint)


@web.middleware
async def _no_api_found(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A path (or method) no route serves answers Databricks' JSON 404."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return endpoint_not_found(request.method, request.path).response()


# ---------------------------------------------------------------- admin routes


def _ok(data: Any) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json")


def _admin_routes(app: web.Application, state: State) -> None:
    async def health(_: web.Request) -> web.Response:
        return _ok({"ok": True})

    async def get_config(_: web.Request) -> web.Response:
        return _ok(state.config.to_dict())

    async def set_config(request: web.Request) -> web.Response:
        try:
            state.configure(await request.json())
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return _ok(state.config.to_dict())

    async def stats(_: web.Request) -> web.Response:
        return _ok(state.stats.to_dict())

    async def requests(_: web.Request) -> web.Response:
        return _ok(list(state.recent))

    async def reset(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        try:
            initial = EmulatorConfig.from_dict(data["initial"]) if data.get("initial") else None
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        state.reset(initial)
        return _ok({"ok": True})

    async def script(request: web.Request) -> web.Response:
        data = await request.json()
        try:
            items = [check_wire(i) for i in data.get("items", [])]
        except (ValueError, TypeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        state.push_script(items, data.get("endpoint"))
        return _ok({"queued": len(items)})

    app.router.add_get("/_emulator/health", health)
    app.router.add_get("/_emulator/config", get_config)
    app.router.add_post("/_emulator/config", set_config)
    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/requests", requests)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_post("/_emulator/script", script)


def build_app(config: EmulatorConfig) -> web.Application:
    """The whole emulator as an aiohttp application."""
    state = State(config)
    # Bodies up to 4x the payload limit are read, so the limit answers as Databricks' 400
    # rather than aiohttp's 413.
    app = web.Application(
        client_max_size=max(config.max_payload_bytes * 4, 64 * 1024 * 1024),
        middlewares=[_no_api_found],
    )
    chat = ChatHandler(state)
    app.router.add_post("/serving-endpoints/chat/completions", chat.handle)
    app.router.add_post("/serving-endpoints/{name}/invocations", chat.handle)
    _endpoint_routes(app, state)
    add_oauth_routes(app, state)
    _admin_routes(app, state)
    return app

"""How the clients send a chat request through the openai SDK, and read its answer.

``client.chat.completions.create(**request)`` costs a worker more CPU than the HTTP exchange
itself, in two steps that do nothing for dbstruct's requests:

* before sending, the SDK walks the request through its TypedDict annotations
  (``async_maybe_transform``) to rename aliased keys and format dates and files. The requests
  :func:`dbstruct.modes.chat_request` builds have none of them: the walk returns them
  unchanged (``tests/unit/test_openai_calls.py`` checks every mode), at about 0.45 ms a request;
* after, it builds the ``ChatCompletion`` field by field in Python (``construct_type``,
  about 0.13 ms), where pydantic-core validates the same JSON in about 0.01 ms.

So the clients ``post`` the request with the SDK's own ``client.post`` (its headers,
timeouts, status errors and connection pool, exactly as ``create`` uses them) and read the
answer here.

    >>> response = await client.post(CHAT_PATH, **post_arguments(with_headers(request, headers)))
    >>> completion = read_completion(response)  # a ChatCompletion, as create() returns
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import openai
import pydantic
from openai.types.chat import ChatCompletion

from dbstruct._params import CLIENT_OPTIONS

__all__ = ["CHAT_PATH", "post_arguments", "read_completion"]

#: the path ``chat.completions.create`` posts to, under the client's base_url
CHAT_PATH = "/chat/completions"

# the response class of the HTTP library this openai version uses (httpx or httpx2): asking
# ``post`` for it returns the response itself, read, with its headers
_HTTP = importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.partition(".")[0])


def post_arguments(request: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``client.post(CHAT_PATH, ...)`` that send ``request`` (with
    its auth headers merged in, :func:`dbstruct._client_base.with_headers`) as
    ``chat.completions.create(**request)`` would: its fields as the body, its client options
    as the options ``create`` makes of them (openai's ``make_request_options``)."""
    options: dict[str, Any] = {"security": {"bearer_auth": True}}  # as create(): no admin key
    for field, option in _OPTIONS.items():
        if request.get(field) is not None:
            options[option] = request[field]
    if "timeout" in request:  # None too: no timeout
        options["timeout"] = request["timeout"]
    body = {k: v for k, v in request.items() if k not in CLIENT_OPTIONS}
    return {"body": body, "options": options, "cast_to": _HTTP.Response}


#: create()'s keyword arguments -> the request options it makes of them
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "extra_body": "extra_json"}


def read_completion(response: Any) -> Any:
    """What ``create`` would have returned for a successful ``response``: a ChatCompletion
    (validated; built without validation, as the SDK builds it, when it does not validate,
    e.g. content as a list of blocks), with its ``_request_id``. A body that is not JSON
    gives its text (as the SDK does), which the attempt loop reads as an answer without
    choices."""
    content = response.content
    try:
        completion = ChatCompletion.model_validate_json(content)
    except pydantic.ValidationError:
        try:
            data = json.loads(content)
        except ValueError:
            return response.text
        if not isinstance(data, dict):
            return data  # as the SDK's construct_type returns it
        completion = ChatCompletion.construct(**data)
    completion._request_id = response.headers.get("x-request-id")
    return completion

"""What the sync and async clients share: their settings, and everything one ``create()``
does before its first attempt and after its last.

Before: check the keywords and the text, build the request (:func:`dbstruct.modes.chat_request`),
refuse it unsent when it is over the payload limit or the context window, look it up in the
cache, and plan its attempts (:func:`dbstruct._retry.attempts`). After: store a success in the
cache. In between, :mod:`dbstruct.client` drives the attempts, blocking or async.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

import openai
from pydantic import BaseModel

from dbstruct._openai_errors import translate
from dbstruct._packing import PackHealth, PackRow
from dbstruct._params import check_keywords
from dbstruct._refusal_memory import RefusalMemory
from dbstruct._request_checks import check_context, check_size, check_text, context_window
from dbstruct._retry import Outcome, RetryPolicy, Send, Sleep, attempts
from dbstruct._strict import StrictSupport, without_strict
from dbstruct.answers import DEFAULT_MAX_ANSWER_BYTES
from dbstruct.auth import Credentials
from dbstruct.cache import ResponseCache, cache_key, cached_answer, to_cached
from dbstruct.errors import ConfigurationError, DbstructError, InputError, RowsFailedError
from dbstruct.evidence import evidence_model, source_text, with_evidence
from dbstruct.modes import Message, Mode, ResponseTarget, chat_request
from dbstruct.tracing import Tracer

__all__ = ["ClientBase", "raise_or_value", "text_rows", "timed", "values_or_raise", "with_headers"]

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)


class ClientBase(Generic[C]):
    """The settings and the per-call planning of both clients."""

    #: which calls are traced to MLflow, and where (:mod:`dbstruct.tracing`); None: those
    #: ``dbstruct.autolog()`` asks for, if it is on
    tracer: Tracer | None = None

    def __init__(
        self,
        openai_client: C,
        *,
        endpoint: str,
        mode: Mode,
        credentials: Credentials,
        policy: RetryPolicy,
        defaults: dict[str, Any],
        cache: ResponseCache | None = None,
        max_context_tokens: int | Literal["auto"] | None = "auto",
        max_answer_bytes: int | None = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self._openai: C = openai_client
        self.endpoint = endpoint
        self.mode = mode
        self.credentials = credentials
        self.policy = policy
        self.defaults = dict(defaults)
        self.cache = cache
        #: prompt tokens (estimated) above which a row fails unsent; "auto": the endpoint's
        #: documented window (dbstruct._request_checks.CONTEXT_WINDOWS), None: no check
        self.max_context_tokens = max_context_tokens
        #: answers larger than this (UTF-8 bytes) fail unparsed; None: no limit
        self.max_answer_bytes = max_answer_bytes
        # the tokens this client's endpoints refused lately (see dbstruct._refusal_memory)
        self._refusals = RefusalMemory()
        # which endpoints take a tool's "strict" field (Mode.TOOLS_STRICT): by name or learned
        self._strict = StrictSupport()
        #: rows per request each endpoint gets, halved where packs keep failing
        self.packing = PackHealth()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(endpoint={self.endpoint!r}, mode={self.mode}, "
            f"base_url={self.credentials.base_url!r}, auth={self.credentials.source!r})"
        )

    @property
    def chat(self) -> _Chat:
        """``client.chat.completions.create(...)``, as with instructor."""
        return _Chat(self)

    def _plan(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None,
        validation_context: Any,
        kwargs: dict[str, Any],
    ) -> _Call:
        evidence = _evidence_of(response_model, messages, kwargs.pop("evidence", False))
        check_keywords(kwargs, "create()", own=_CREATE_PARAMETERS)
        if evidence is not None:
            response_model = evidence_model(evidence[0], self.mode)
        target = ResponseTarget.of(response_model)
        endpoint = kwargs.pop("model", None) or self.endpoint
        check_text(messages)
        # the same recipe as dbstruct.cache.request_key, so a table cache's keys match ours
        request = chat_request(self.mode, target, messages, {**self.defaults, **kwargs}, endpoint)
        check_size(request, endpoint)
        check_context(request, endpoint, self.context_limit(endpoint))
        policy = self.policy
        if max_retries is not None:
            policy = replace(policy, max_retries=max_retries)
        # keyed as built: whether "strict" is sent depends on what the client has learned
        key = cache_key(self.mode, request) if self.cache is not None else None
        request, strict_refused = self._strict_plan(request, endpoint)
        steps = attempts(
            self.mode,
            target,
            request,
            policy,
            endpoint=endpoint,
            context=validation_context,
            max_answer_bytes=self.max_answer_bytes,
            strict_refused=strict_refused,
        )
        return _Call(steps, target, endpoint, key, validation_context, request, evidence)

    def context_limit(self, endpoint: str) -> int | None:
        """The prompt tokens (estimated) a request to ``endpoint`` may take; None: no check."""
        window = self.max_context_tokens
        return context_window(endpoint) if window == "auto" else window

    def _strict_plan(
        self, request: dict[str, Any], endpoint: str
    ) -> tuple[dict[str, Any], Callable[[str], None] | None]:
        """The request to send, with or without a tool's ``strict`` (see
        :mod:`dbstruct._strict`), and what to call when ``endpoint`` refuses it."""
        if self.mode is not Mode.TOOLS_STRICT:
            return request, None
        takes = self._strict.get(endpoint)
        if takes is None:
            return request, self._strict.refused
        return (request if takes else without_strict(request)), None

    def _begin(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None,
        validation_context: Any,
        kwargs: dict[str, Any],
    ) -> _Call | Outcome:
        """The call to run, or its outcome already: a cache hit or a row that cannot be sent."""
        try:
            call = self._plan(response_model, messages, max_retries, validation_context, kwargs)
        except InputError as e:
            return Outcome(error=e)
        return self._cached(call) or call

    def _cached(self, call: _Call) -> Outcome | None:
        """The outcome of a cache hit (no request, ``attempts == 0``, no usage), or None."""
        if self.cache is None or call.key is None:
            return None
        answer = self.cache.get(call.key)
        if answer is None:
            return None
        hit = cached_answer(
            answer,
            self.mode,
            call.target,
            key=call.key,
            endpoint=call.endpoint,
            context=call.context,
        )
        if hit is None:
            return None
        return _located(call, Outcome(value=hit[0], completion=hit[1], attempts=0))

    def _translate(
        self, error: openai.APIError, endpoint: str, headers: dict[str, str]
    ) -> DbstructError:
        """:func:`translate`, remembering a refusal of this token."""
        translated = translate(error, endpoint, self.credentials)
        self._refusals.note(translated, endpoint, headers)
        return translated

    def _remember(self, call: _Call, outcome: Outcome) -> Outcome:
        if self.cache is not None and call.key is not None and outcome.ok:
            self.cache.put(call.key, to_cached(outcome.value, outcome.usage))
        return _located(call, outcome)


@dataclass(frozen=True)
class _Call:
    """One create(): its attempt plan and what the cache needs to know about it."""

    steps: Generator[Send | Sleep, Any, Outcome]
    target: ResponseTarget
    endpoint: str
    key: str | None
    context: Any
    #: the request its first attempt sends (``dbstruct plan`` counts its tokens)
    request: dict[str, Any]
    #: with ``evidence=True``: the response model and the text its quotes are searched in
    evidence: tuple[type[BaseModel], str] | None = None


def _evidence_of(
    response_model: Any, messages: Sequence[Message], wanted: object
) -> tuple[type[BaseModel], str] | None:
    """``evidence=True``'s model and source text (:mod:`dbstruct.evidence`), or None."""
    if wanted is False or wanted is None:
        return None
    if wanted is not True:
        raise ConfigurationError(f"evidence must be True or False, not {wanted!r}")
    if not (isinstance(response_model, type) and issubclass(response_model, BaseModel)):
        raise ConfigurationError(
            "evidence=True needs one Pydantic response model (quotes are per field), "
            f"not {response_model!r}"
        )
    return response_model, source_text(messages)


def _located(call: _Call, outcome: Outcome) -> Outcome:
    """A success of an ``evidence=True`` call: its value is the response model with its
    quotes located in the call's text (``value.evidence``)."""
    if call.evidence is not None and outcome.ok and outcome.value is not None:
        model, source = call.evidence
        outcome.value = with_evidence(outcome.value, model, source)
    return outcome


#: create()'s own parameters, suggested with the request fields for a misspelt keyword
_CREATE_PARAMETERS = ("response_model", "messages", "max_retries", "validation_context", "evidence")


def timed(step: Send) -> dict[str, Any]:
    """The request of an attempt, with its shorter timeout when the deadline is near."""
    return step.request if step.timeout is None else {**step.request, "timeout": step.timeout}


def with_headers(request: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """The SDK call's arguments: the request, its caller's ``extra_headers`` and the auth
    headers (which win)."""
    extra = request.get("extra_headers")
    return {**request, "extra_headers": {**extra, **headers} if extra else headers}


def raise_or_value(outcome: Outcome) -> Any:
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def text_rows(texts: Sequence[str], instructions: str | None) -> list[PackRow]:
    """The rows of ``extract_many(texts, instructions=...)``: each text a user message after
    the instructions' system message."""
    if isinstance(texts, str):
        raise ConfigurationError("texts must be a list of strings, not one string")
    prefix = (("system", instructions),) if instructions else ()
    rows = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigurationError(f"texts[{index}] is {type(text).__name__}, not str")
        rows.append(PackRow(prefix, "", text))
    return rows


def values_or_raise(outcomes: list[Outcome]) -> list[Any]:
    """Every row's value; :class:`RowsFailedError` with them all when any row failed."""
    failed = [(i, o.error) for i, o in enumerate(outcomes) if o.error is not None]
    if not failed:
        return [o.value for o in outcomes]
    shown = "; ".join(f"row {i}: {type(e).__name__}: {e}" for i, e in failed[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    raise RowsFailedError(
        f"{len(failed)} of {len(outcomes)} rows failed: {shown}{more}", outcomes=outcomes
    )


class _Completions:
    def __init__(self, client: ClientBase[Any]) -> None:
        self.create = client.create  # type: ignore[attr-defined]
        self.create_with_completion = client.create_with_completion  # type: ignore[attr-defined]


class _Chat:
    def __init__(self, client: ClientBase[Any]) -> None:
        self.completions = _Completions(client)

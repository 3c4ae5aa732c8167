"""Structured-output clients for Databricks model serving endpoints, sync and async.

Both clients plan a call the same way (:mod:`dbstruct._client_base`) and run the same attempt
loop (:mod:`dbstruct._retry`); they differ only in how they wait and send. The ``openai`` SDK
does the HTTP (its own retries off, ours on), and the bearer token is read for every request
and sent as its ``Authorization`` header, so a refreshing credential stays fresh. With a
:mod:`dbstruct.cache` (opt-in), a stored answer is returned before the loop starts and a
success is stored after it.

    >>> client = dbstruct.from_provider("databricks/databricks-meta-llama-3-3-70b-instruct")
    >>> user = client.create(UserExtract, [{"role": "user", "content": "jason is 25"}])
    >>> user.age  # typed: create() returns an instance of its response model
    25
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, overload

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from dbstruct import tracing
from dbstruct._call_trace import CallTrace
from dbstruct._client_base import (
    ClientBase,
    raise_or_value,
    text_rows,
    timed,
    values_or_raise,
    with_headers,
)
from dbstruct._many import ManyCall, Steps, run_many, run_many_async
from dbstruct._openai_calls import CHAT_PATH, post_arguments, read_completion
from dbstruct._retry import Outcome, Sleep
from dbstruct.errors import ConfigurationError, DbstructError
from dbstruct.modes import Message
from dbstruct.worker_settings import (
    DEFAULT_CONCURRENCY,
    concurrency_problem,
    rows_per_request_problem,
)

__all__ = ["AsyncLimiter", "AsyncStructuredClient", "StructuredClient"]

#: the response model of a create(): it returns an instance of it
M = TypeVar("M", bound=BaseModel)


class AsyncLimiter(Protocol):
    """Gates every HTTP attempt of an async client (first tries and retries alike).

    ``acquire`` waits for a slot; ``release`` gets what the attempt produced: the completion,
    or the :class:`DbstructError` it was translated to (a ``RateLimitError`` carries
    ``retry_after``), so a limiter can adapt its rate to the endpoint's answers.
    """

    async def acquire(self) -> None: ...

    def release(self, answer: object) -> None: ...


class StructuredClient(ClientBase[openai.OpenAI]):
    """Blocking client; build it with :func:`dbstruct.from_provider`.

    >>> messages = [{"role": "user", "content": "jason is 25"}]
    >>> user = client.create(response_model=UserExtract, messages=messages)
    """

    @overload
    def create(
        self,
        response_model: type[M],
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> M: ...

    @overload  # Iterable[A | B] with Mode.PARALLEL_TOOLS: a list of A and B instances
    def create(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> list[Any]: ...

    def create(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> M | list[Any]:
        """A validated ``response_model`` instance (a list of them for PARALLEL_TOOLS)."""
        outcome = self.extract(response_model, messages, max_retries, validation_context, **kwargs)
        value: M | list[Any] = raise_or_value(outcome)  # the loop validated it as response_model
        return value

    @overload
    def create_with_completion(
        self,
        response_model: type[M],
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[M, ChatCompletion]: ...

    @overload
    def create_with_completion(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[list[Any], ChatCompletion]: ...

    def create_with_completion(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[M | list[Any], ChatCompletion]:
        """The validated answer and the raw completion (usage summed over attempts)."""
        outcome = self.extract(response_model, messages, max_retries, validation_context, **kwargs)
        return raise_or_value(outcome), outcome.completion

    def extract(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> Outcome:
        """Like :meth:`create`, but returns an :class:`Outcome` rather than raising."""
        trace = tracing.begin(self, response_model, messages, kwargs)  # None: not traced
        call = self._begin(response_model, messages, max_retries, validation_context, kwargs)
        if isinstance(call, Outcome):
            return tracing.end(trace, call)
        return self._remember(call, self._drive(call.steps, trace))

    def create_many(
        self,
        response_model: type[M],
        texts: Sequence[str],
        *,
        instructions: str | None = None,
        rows_per_request: int = 1,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> list[M]:
        """One validated ``response_model`` per text, in order, up to ``rows_per_request``
        texts a request (see :mod:`dbstruct._many`); ``instructions`` is the system message.

        >>> tickets = client.create_many(Ticket, texts, instructions="Triage.", rows_per_request=8)

        Raises :class:`~dbstruct.errors.RowsFailedError`, holding every row's outcome, when
        any row failed; :meth:`extract_many` returns the outcomes instead.
        """
        outcomes = self.extract_many(
            response_model,
            texts,
            instructions=instructions,
            rows_per_request=rows_per_request,
            max_retries=max_retries,
            validation_context=validation_context,
            **kwargs,
        )
        values: list[M] = values_or_raise(outcomes)
        return values

    def extract_many(
        self,
        response_model: type[BaseModel],
        texts: Sequence[str],
        *,
        instructions: str | None = None,
        rows_per_request: int = 1,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> list[Outcome]:
        """Like :meth:`create_many`, but returns every text's :class:`Outcome` (its value or
        its error, attempts, tokens) rather than raising."""
        many = ManyCall(
            self,
            response_model,
            text_rows(texts, instructions),
            _checked_k(rows_per_request),
            max_retries,
            validation_context,
            kwargs,
        )
        return run_many(self, many)

    def _drive(self, steps: Steps, trace: CallTrace | None = None) -> Outcome:
        """Run one call's attempts (:func:`dbstruct._retry.attempts`) to its outcome;
        ``trace`` records each step (:mod:`dbstruct.tracing`)."""
        step = next(steps)
        while True:
            if trace is not None:
                trace.step(step)
            answer: Any = None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                answer = self._attempt(timed(step))
                if trace is not None:
                    trace.answered(answer)
            try:
                step = steps.send(answer)
            except StopIteration as done:
                outcome: Outcome = done.value
                return tracing.end(trace, outcome)

    def _attempt(self, request: dict[str, Any]) -> Any:
        try:
            headers = self.credentials.headers()
        except DbstructError as e:  # a token refresh that failed
            return e
        known = self._refusals.known(request["model"], headers)
        if known is not None:
            return known
        try:
            arguments = post_arguments(with_headers(request, headers))
            return read_completion(self._openai.post(CHAT_PATH, **arguments))
        except openai.APIError as e:
            return self._translate(e, request["model"], headers)

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> StructuredClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStructuredClient(ClientBase[openai.AsyncOpenAI]):
    """Asynchronous client; build it with ``dbstruct.from_provider(..., async_client=True)``."""

    #: optional gate around every HTTP attempt (see :class:`AsyncLimiter`)
    limiter: AsyncLimiter | None = None

    @overload
    async def create(
        self,
        response_model: type[M],
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> M: ...

    @overload  # Iterable[A | B] with Mode.PARALLEL_TOOLS: a list of A and B instances
    async def create(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> list[Any]: ...

    async def create(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> M | list[Any]:
        """A validated ``response_model`` instance (a list of them for PARALLEL_TOOLS)."""
        outcome = await self.extract(
            response_model, messages, max_retries, validation_context, **kwargs
        )
        value: M | list[Any] = raise_or_value(outcome)  # the loop validated it as response_model
        return value

    @overload
    async def create_with_completion(
        self,
        response_model: type[M],
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[M, ChatCompletion]: ...

    @overload
    async def create_with_completion(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[list[Any], ChatCompletion]: ...

    async def create_with_completion(
        self,
        response_model: Any,
        messages: Sequence[Message],
        *,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> tuple[M | list[Any], ChatCompletion]:
        """The validated answer and the raw completion (usage summed over attempts)."""
        outcome = await self.extract(
            response_model, messages, max_retries, validation_context, **kwargs
        )
        return raise_or_value(outcome), outcome.completion

    async def extract(
        self,
        response_model: Any,
        messages: Sequence[Message],
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> Outcome:
        """Like :meth:`create`, but returns an :class:`Outcome` rather than raising."""
        # the cache lookup stays on the loop: sqlite answers in microseconds
        trace = tracing.begin(self, response_model, messages, kwargs)  # None: not traced
        call = self._begin(response_model, messages, max_retries, validation_context, kwargs)
        if isinstance(call, Outcome):
            return tracing.end(trace, call)
        return self._remember(call, await self._drive(call.steps, trace))

    async def create_many(
        self,
        response_model: type[M],
        texts: Sequence[str],
        *,
        instructions: str | None = None,
        rows_per_request: int = 1,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> list[M]:
        """As :meth:`StructuredClient.create_many`, with ``concurrency`` requests in flight."""
        outcomes = await self.extract_many(
            response_model,
            texts,
            instructions=instructions,
            rows_per_request=rows_per_request,
            concurrency=concurrency,
            max_retries=max_retries,
            validation_context=validation_context,
            **kwargs,
        )
        values: list[M] = values_or_raise(outcomes)
        return values

    async def extract_many(
        self,
        response_model: type[BaseModel],
        texts: Sequence[str],
        *,
        instructions: str | None = None,
        rows_per_request: int = 1,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int | None = None,
        validation_context: Any = None,
        **kwargs: Any,
    ) -> list[Outcome]:
        """As :meth:`StructuredClient.extract_many`, with ``concurrency`` requests in flight."""
        problem = concurrency_problem(concurrency)
        if problem is not None:
            raise ConfigurationError(problem)
        many = ManyCall(
            self,
            response_model,
            text_rows(texts, instructions),
            _checked_k(rows_per_request),
            max_retries,
            validation_context,
            kwargs,
        )
        await run_many_async(self, many, asyncio.Semaphore(concurrency))
        return many.results()

    async def _drive(self, steps: Steps, trace: CallTrace | None = None) -> Outcome:
        """Run one call's attempts (:func:`dbstruct._retry.attempts`) to its outcome;
        ``trace`` records each step (:mod:`dbstruct.tracing`)."""
        step = next(steps)
        while True:
            if trace is not None:
                trace.step(step)
            answer: Any = None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                answer = await self._attempt(timed(step))
                if trace is not None:
                    trace.answered(answer)
            try:
                step = steps.send(answer)
            except StopIteration as done:
                outcome: Outcome = done.value
                return tracing.end(trace, outcome)

    async def _attempt(self, request: dict[str, Any]) -> Any:
        limiter = self.limiter
        if limiter is not None:
            await limiter.acquire()
        answer: Any = None
        try:
            headers = await self.credentials.aheaders()
            answer = self._refusals.known(request["model"], headers)
            if answer is None:
                arguments = post_arguments(with_headers(request, headers))
                response = await self._openai.post(CHAT_PATH, **arguments)
                answer = read_completion(response)
        except openai.APIError as e:
            answer = self._translate(e, request["model"], headers)
        except DbstructError as e:  # a token refresh that failed
            answer = e
        finally:
            if limiter is not None:
                limiter.release(answer)
        return answer

    async def close(self) -> None:
        await self._openai.close()

    async def __aenter__(self) -> AsyncStructuredClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _checked_k(rows_per_request: object) -> int:
    problem = rows_per_request_problem(rows_per_request)
    if problem is not None:
        raise ConfigurationError(problem)
    assert isinstance(rows_per_request, int)
    return rows_per_request

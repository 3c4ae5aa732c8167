"""Many rows with one response model: cut into packs, each sent as one request, every row a
pack could not answer sent again alone.

:class:`ManyCall` plans and settles; :func:`run_many` (blocking) and :func:`run_many_async`
send; :class:`PackCollector` gathers rows that arrive one at a time (a Spark worker's) into
packs. The rules, in order:

1. Each distinct row is planned as if sent alone (:meth:`ClientBase._begin`): a cache hit or
   a row too large for a request ends there, and the row keeps its own cache key, so packed
   and unpacked runs share cache entries. Identical rows are sent once.
2. The other rows are cut into packs of at most ``k`` (:func:`dbstruct._packing.plan_packs`);
   a pack over the payload or context limit is halved until it fits. ``max_tokens`` and
   ``max_answer_bytes`` are per row: a pack of n rows may answer n times as much.
3. A pack answered 429 or 503 (the endpoint is loaded) is retried whole, with the client's
   backoff (:mod:`dbstruct._retry`). Its rows share its tokens (prompt tokens by text
   length, completion tokens by the size of each row's entry), so the rows' sum is what the
   endpoint counted; each row counts the pack's attempts and latency.
4. A row whose entry is missing, duplicated, misquoted or invalid, and every row of a pack
   that failed otherwise (an answer unusable as a whole: not JSON, cut off, refused; a 400;
   another 5xx; a timeout or dropped connection), is sent again alone with the retries it
   has left (``max_retries`` minus the pack's attempts), re-asked with its errors as any
   row is: a row the endpoint fails on fails alone, not its pack. A pack still loaded when
   its retries run out fails its rows with that error, as sending them one by one would
   only add load; so do auth errors.
5. When most rows of an endpoint's recent packs had to be sent again, its rows per request
   are halved (down to 1) for the life of the client, and a warning says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from dbstruct import tracing
from dbstruct._packing import (
    PackAnswer,
    PackRow,
    PackSchema,
    echo_words,
    pack_messages,
    pack_schema,
    plan_packs,
    read_pack,
    share,
)
from dbstruct._request_checks import check_context, check_size
from dbstruct._retry import Outcome, Send, Sleep, attempts
from dbstruct.errors import (
    BadRequestError,
    DbstructError,
    InputError,
    OutputError,
    RetriesExhaustedError,
    ServerError,
    TransportError,
)
from dbstruct.evidence import evidence_model
from dbstruct.modes import ResponseTarget, build_schema_request
from dbstruct.usage import Usage

if TYPE_CHECKING:
    from dbstruct._client_base import ClientBase

__all__ = ["ManyCall", "PackCollector", "run_many", "run_many_async", "share_prompt"]

Steps = Generator[Send | Sleep, Any, Outcome]
_SCALED = ("max_tokens", "max_completion_tokens")  # per-row budgets, times the pack's rows
_OVERLOADED = 503  # "too much load": like a 429, a reason to slow down, not to split


@dataclass
class Pack:
    """Rows (indexes into the call's rows) sent together; one row: an ordinary request."""

    indexes: list[int]
    steps: Steps
    #: the request its first attempt sends (``dbstruct plan`` counts its tokens)
    request: dict[str, Any]
    echo: int = 0

    @property
    def single(self) -> bool:
        return len(self.indexes) == 1


class ManyCall:
    """One call for many rows: its plan, and every row's outcome as it settles."""

    def __init__(
        self,
        client: ClientBase[Any],
        response_model: type[BaseModel],
        rows: Sequence[PackRow],
        k: int,
        max_retries: int | None,
        context: Any,
        kwargs: dict[str, Any],
        on_done: Callable[[int, Outcome], None] | None = None,
    ) -> None:
        self.client = client
        # evidence=True: each row's call asks for quotes and locates them in its own text
        # (the client's _begin and _remember); a pack's items carry them too
        self.evidence = kwargs.get("evidence") is True
        self.kwargs = {k: v for k, v in kwargs.items() if k != "evidence"}
        self.model = (
            evidence_model(response_model, client.mode) if self.evidence else response_model
        )
        self.rows = list(rows)
        self.context = context
        self.max_retries = client.policy.max_retries if max_retries is None else max_retries
        self.endpoint = kwargs.get("model") or client.endpoint
        self.schema: PackSchema | None = pack_schema(self.model, client.mode) if k > 1 else None
        self.k = client.packing.limit(self.endpoint, k)
        self._on_done = on_done
        self.outcomes: list[Outcome | None] = [None] * len(self.rows)
        self._parts: dict[int, Outcome] = {}
        self._followers: dict[int, list[int]] = {}
        self._calls: dict[int, Any] = {}
        self._todo: list[int] = []
        leaders: dict[PackRow, int] = {}
        for index, row in enumerate(self.rows):
            leader = leaders.setdefault(row, index)
            if leader != index:
                self._followers.setdefault(leader, []).append(index)
                continue
            begun = client._begin(
                response_model, row.messages(), max_retries, context, dict(kwargs)
            )
            if isinstance(begun, Outcome):
                self._settled(index, begun)
            else:
                self._calls[index] = begun
                self._todo.append(index)

    # ---- planning ---------------------------------------------------------------------

    def packs(self) -> list[Pack]:
        """The requests to send: packs, and single rows as ordinary calls."""
        out: list[Pack] = []
        todo = [self.rows[i] for i in self._todo]
        for members in plan_packs(todo, self.k if self.schema is not None else 1):
            out.extend(self._fitting([self._todo[m] for m in members]))
        self._todo = []
        return out

    def first_requests(self) -> list[tuple[list[int], dict[str, Any]]]:
        """The requests :meth:`packs` would send first, each with the rows it carries, sending
        nothing (``dbstruct plan`` counts their tokens); rows settled already carry none."""
        planned = []
        for pack in self.packs():
            pack.steps.close()
            planned.append((pack.indexes, pack.request))
        return planned

    def _fitting(self, indexes: list[int]) -> list[Pack]:
        """``indexes`` as one pack, or halves of it while it is over a request's limits."""
        if len(indexes) == 1:
            call = self._calls[indexes[0]]
            return [Pack(indexes, call.steps, call.request)]
        rows = [self.rows[i] for i in indexes]
        echo = echo_words(rows)
        assert echo is not None and self.schema is not None  # plan_packs keeps rows apart
        try:
            steps, request = self._pack_steps(rows, echo)
        except InputError:
            half = len(indexes) // 2
            return self._fitting(indexes[:half]) + self._fitting(indexes[half:])
        return [Pack(indexes, steps, request, echo)]

    def _pack_steps(self, rows: list[PackRow], echo: int) -> tuple[Steps, dict[str, Any]]:
        client, schema = self.client, self.schema
        assert schema is not None
        n = len(rows)
        fields = {**client.defaults, **{k: v for k, v in self.kwargs.items() if k != "model"}}
        for name in _SCALED:
            if isinstance(fields.get(name), int):
                fields[name] *= n
        messages = pack_messages(schema, rows, echo)
        body = build_schema_request(client.mode, schema.for_count(n), messages)
        request = {**fields, **body, "model": self.endpoint}
        check_size(request, self.endpoint)
        check_context(request, self.endpoint, client.context_limit(self.endpoint))
        request, strict_refused = client._strict_plan(request, self.endpoint)
        sent = request
        limit = client.max_answer_bytes
        bytes_limit = None if limit is None else limit * n
        context = self.context

        def read(completion: Any) -> PackAnswer:
            return read_pack(
                client.mode,
                schema,
                rows,
                echo,
                completion,
                context=context,
                max_answer_bytes=bytes_limit,
            )

        return attempts(
            client.mode,
            ResponseTarget.of(self.model),
            request,
            replace(client.policy, max_retries=self.max_retries),
            endpoint=self.endpoint,
            context=context,
            max_answer_bytes=bytes_limit,
            strict_refused=strict_refused,
            read=read,
            stop=_resend_alone,
        ), sent

    # ---- settling ---------------------------------------------------------------------

    def single_done(self, pack: Pack, outcome: Outcome) -> None:
        index = pack.indexes[0]
        self._settled(index, self.client._remember(self._calls.pop(index), outcome))

    def settle(self, pack: Pack, outcome: Outcome) -> list[tuple[int, int]]:
        """Record a pack's outcome; the rows to send again alone, with their retries left."""
        rows = [self.rows[i] for i in pack.indexes]
        answer: PackAnswer | None = outcome.value if outcome.ok else None
        prompt = share_prompt(outcome.usage.prompt_tokens, rows)
        sizes = answer.sizes if answer is not None else [0] * len(rows)
        completion = share(outcome.usage.completion_tokens, [float(s) for s in sizes])
        again: list[tuple[int, int]] = []
        failed = 0
        for j, index in enumerate(pack.indexes):
            part = Outcome(
                None,
                None,
                outcome.completion,
                outcome.attempts,
                Usage(prompt[j], completion[j]),
                outcome.latency_s,
            )
            call = self._calls.pop(index)
            result = answer.results[j] if answer is not None else outcome.error
            if isinstance(result, BaseModel):
                part.value = result
                self._settled(index, self.client._remember(call, part))
                continue
            failed += 1
            assert isinstance(result, DbstructError)
            left = self.max_retries - outcome.attempts
            if left >= 0 and (answer is not None or _resend_alone(result)):
                self._parts[index] = part
                again.append((index, left))
                continue
            part.error = result if answer is None else _exhausted(result, part, self.endpoint)
            self._settled(index, part)
        if answer is not None or _resend_alone(outcome.error):
            self.client.packing.record(self.endpoint, self.k, len(rows), failed)
        return again

    def resend(self, index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """What to call the client's ``extract`` with for a row sent again alone."""
        return self.rows[index].messages(), (
            {**self.kwargs, "evidence": True} if self.evidence else self.kwargs
        )

    def resent(self, index: int, outcome: Outcome) -> None:
        """The outcome of a row sent again alone, added to its share of the pack."""
        part = self._parts.pop(index)
        usage = Usage(
            part.usage.prompt_tokens + outcome.usage.prompt_tokens,
            part.usage.completion_tokens + outcome.usage.completion_tokens,
        )
        self._settled(
            index,
            Outcome(
                outcome.value,
                outcome.error,
                outcome.completion,
                part.attempts + outcome.attempts,
                usage,
                part.latency_s + outcome.latency_s,
            ),
        )

    def _settled(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        if self._on_done is not None:
            self._on_done(index, outcome)
        for follower in self._followers.pop(index, []):
            # the same row, sent once: its value, no tokens of its own
            copy = Outcome(outcome.value, outcome.error, outcome.completion, outcome.attempts)
            copy.latency_s = outcome.latency_s
            self.outcomes[follower] = copy
            if self._on_done is not None:
                self._on_done(follower, copy)

    def results(self) -> list[Outcome]:
        missing = [i for i, o in enumerate(self.outcomes) if o is None]
        if missing:  # pragma: no cover - every row settles; a bug otherwise
            raise RuntimeError(f"rows {missing[:5]} never settled")
        return [o for o in self.outcomes if o is not None]


def share_prompt(tokens: int, rows: Sequence[PackRow]) -> list[int]:
    """A pack's prompt tokens shared among its rows: each its text (about 4 characters a
    token) and an equal part of the rest (the shared messages, the schema)."""
    overhead = max(tokens - sum(len(r.text) / 4 for r in rows), 0.0)
    return share(tokens, [len(r.text) / 4 + overhead / len(rows) for r in rows])


def _resend_alone(error: DbstructError | None) -> bool:
    """Whether a pack's failure is one its rows may not share alone, so that they are sent
    again one by one at once: an unusable answer, a 400 (the pack's shape), a 5xx other
    than 503 or a timeout or dropped connection (a row the endpoint fails on, a pack too
    long to answer in time). 429 and 503 say the endpoint is loaded: the pack is retried
    whole, as splitting it would only add requests. Auth errors fail every row."""
    if isinstance(error, (OutputError, BadRequestError, TransportError)):
        return True
    return isinstance(error, ServerError) and error.status != _OVERLOADED


def _exhausted(error: DbstructError, part: Outcome, endpoint: str) -> DbstructError:
    """A row whose packed answer failed and has no retry left."""
    return RetriesExhaustedError(
        f"{endpoint}: gave up after {part.attempts} attempt(s) (retries exhausted); "
        f"last error: {type(error).__name__}: {error}",
        attempts=part.attempts,
        last_error=error,
        last_raw=getattr(error, "raw", None),
        usage=part.usage,
        endpoint=endpoint,
    )


# ---------------------------------------------------------------- sending


def _trace(client: Any, many: ManyCall, pack: Pack) -> Any:
    """The trace of a pack's request (:mod:`dbstruct.tracing`), as of one ``create()``: its
    messages, attempts and answer; None when the client does not trace. A row sent again
    alone is traced by the client's own ``extract``."""
    return tracing.begin(client, many.model, pack.request["messages"], many.kwargs)


def run_many(client: Any, many: ManyCall) -> list[Outcome]:
    """Send every pack in turn with a blocking client (``StructuredClient``)."""
    for pack in many.packs():
        outcome = client._drive(pack.steps, _trace(client, many, pack))
        if pack.single:
            many.single_done(pack, outcome)
            continue
        for index, left in many.settle(pack, outcome):
            messages, kwargs = many.resend(index)
            alone = client.extract(many.model, messages, left, many.context, **kwargs)
            many.resent(index, alone)
    return many.results()


async def run_many_async(client: Any, many: ManyCall, gate: asyncio.Semaphore) -> None:
    """Send every pack of ``many`` at once, at most ``gate``'s count in flight."""
    await asyncio.gather(*(_run_pack(client, many, pack, gate) for pack in many.packs()))


async def _run_pack(client: Any, many: ManyCall, pack: Pack, gate: asyncio.Semaphore) -> None:
    async with gate:
        outcome = await client._drive(pack.steps, _trace(client, many, pack))
    if pack.single:
        many.single_done(pack, outcome)
        return
    again = many.settle(pack, outcome)
    if again:
        await asyncio.gather(*(_run_alone(client, many, i, left, gate) for i, left in again))


async def _run_alone(
    client: Any, many: ManyCall, index: int, left: int, gate: asyncio.Semaphore
) -> None:
    messages, kwargs = many.resend(index)
    async with gate:
        alone = await client.extract(many.model, messages, left, many.context, **kwargs)
    many.resent(index, alone)


class _Gate(asyncio.Semaphore):
    """A semaphore that tells its owner each time a slot frees."""

    def __init__(self, value: int, on_release: Callable[[], None]) -> None:
        super().__init__(value)
        self._on_release = on_release

    def release(self) -> None:
        super().release()
        self._on_release()


class PackCollector:
    """Rows arriving one at a time (``await extract(row)``), sent in packs of up to ``k``.

    A pack leaves as soon as ``k`` rows wait, or on the event loop's next turn with what has
    arrived by then, so rows handed over together (a Spark batch) share packs. While all
    ``concurrency`` request slots are busy a smaller pack would only wait for one, so the rows
    keep gathering until a slot frees: otherwise every row sent again alone, when it ends,
    frees room for one new row that would go alone too, and a run with faults drifts towards
    one row per request. A lone row waits for nothing when a slot is free.
    """

    def __init__(
        self,
        client: Any,
        response_model: type[BaseModel],
        k: int,
        concurrency: int,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.model = response_model
        self.k = k
        self.kwargs = dict(kwargs or {})
        self._gate = _Gate(concurrency, self._released)
        self._waiting: list[tuple[PackRow, asyncio.Future[Outcome]]] = []
        self._flush_soon = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def extract(self, row: PackRow) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if len(self._waiting) >= self.k:
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _released(self) -> None:
        if self._waiting and not self._flush_soon:
            self._flush_soon = True
            # two turns later: the rows of the request that just ended are answered in this
            # turn, and the rows that take their places arrive in the next
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if len(self._waiting) < self.k and self._gate.locked():
            return  # no free slot: keep gathering until one frees (_released)
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        futures = [f for _, f in waiting]

        def done(index: int, outcome: Outcome) -> None:
            if not futures[index].done():
                futures[index].set_result(outcome)

        try:
            many = ManyCall(
                self.client,
                self.model,
                [r for r, _ in waiting],
                self.k,
                None,
                None,
                self.kwargs,
                done,
            )
        except Exception as e:  # a bug, not a row failure: every waiting row gets it
            for future in futures:
                if not future.done():
                    future.set_exception(e)
            return
        task = asyncio.ensure_future(self._run(many, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, many: ManyCall, futures: list[asyncio.Future[Outcome]]) -> None:
        try:
            await run_many_async(self.client, many, self._gate)
        except BaseException as e:
            for future in futures:
                if not future.done():
                    future.set_exception(e)
            raise

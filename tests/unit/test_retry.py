"""The attempt loop itself (:func:`dbstruct._retry.attempts`), driven by hand: no client, no
HTTP, no clock but the loop's own. Each test feeds it canned answers (a completion or the
error a client translated) and reads what it asks for next: a :class:`Send` or a
:class:`Sleep`. The sync and async clients both drive this one generator; their end-to-end
behaviour against the emulator is in test_client.py and test_fault_matrix.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from dbstruct._retry import Outcome, RetryPolicy, Send, Sleep, attempts
from dbstruct.errors import (
    AuthenticationError,
    BadRequestError,
    DbstructError,
    EndpointNotFoundError,
    IncompleteOutputError,
    InvalidOutputError,
    PermissionDeniedError,
    RateLimitError,
    RefusalError,
    RetriesExhaustedError,
    ServerError,
    TransportError,
)
from dbstruct.modes import Mode, ResponseTarget, chat_request
from tests.corpus import UserExtract

ENDPOINT = "databricks-llama"
MESSAGES = [{"role": "user", "content": "Extract: jason is 25"}]
TARGET = ResponseTarget.of(UserExtract)


def completion(
    arguments: str, *, finish_reason: str = "tool_calls", refusal: str | None = None
) -> ChatCompletion:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "refusal": refusal,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "UserExtract", "arguments": arguments},
            }
        ],
    }
    return ChatCompletion.model_validate(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": ENDPOINT,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


GOOD = completion(json.dumps({"name": "Jason", "age": 25}))
BAD = completion(json.dumps({"name": "Jason"}))  # no age: the model rejects it


def loop(policy: RetryPolicy, **kw: Any) -> Any:
    request = chat_request(Mode.TOOLS, TARGET, MESSAGES, {}, ENDPOINT)
    return attempts(Mode.TOOLS, TARGET, request, policy, endpoint=ENDPOINT, **kw)


def drive(steps: Any, answers: list[Any]) -> tuple[list[Send | Sleep], Outcome]:
    """Run the loop: each Send gets the next answer, each Sleep nothing (no real wait)."""
    seen: list[Send | Sleep] = []
    step = next(steps)
    try:
        while True:
            seen.append(step)
            step = steps.send(answers.pop(0) if isinstance(step, Send) else None)
    except StopIteration as done:
        outcome: Outcome = done.value
        return seen, outcome


def sends(seen: list[Send | Sleep]) -> list[Send]:
    return [s for s in seen if isinstance(s, Send)]


def sleeps(seen: list[Send | Sleep]) -> list[float]:
    return [s.seconds for s in seen if isinstance(s, Sleep)]


def server_error() -> ServerError:
    return ServerError(f"{ENDPOINT}: 503 busy", endpoint=ENDPOINT, status=503)


# ---------------------------------------------------------------- success


def test_a_valid_first_answer_is_one_send_and_no_wait() -> None:
    seen, outcome = drive(loop(RetryPolicy()), [GOOD])
    assert len(seen) == 1 and isinstance(seen[0], Send)
    assert seen[0].request["model"] == ENDPOINT and seen[0].request["messages"] == MESSAGES
    assert outcome.ok and outcome.value == UserExtract(name="Jason", age=25)
    assert outcome.attempts == 1 and outcome.completion is GOOD


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("base", "cap", "retry", "low", "high"),
    [(0.5, 30.0, 1, 0.25, 0.5), (0.5, 30.0, 3, 1.0, 2.0), (10.0, 15.0, 3, 7.5, 15.0)],
)
def test_backoff_is_full_jitter_between_half_and_the_capped_ceiling(
    base: float, cap: float, retry: int, low: float, high: float
) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_max=cap)
    waits = [policy.backoff(retry) for _ in range(200)]
    assert all(low <= w <= high for w in waits)
    assert len(set(waits)) > 1  # jittered, so retries of many rows do not line up


def test_server_errors_back_off_exponentially_then_give_up_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=0.5, backoff_max=30.0)
    seen, outcome = drive(loop(policy), [server_error() for _ in range(4)])
    assert len(sends(seen)) == 4  # 1 + max_retries
    waits = sleeps(seen)
    assert len(waits) == 3
    for retry, wait in enumerate(waits, start=1):
        ceiling = 0.5 * 2 ** (retry - 1)
        assert ceiling / 2 <= wait <= ceiling
    error = outcome.error
    assert isinstance(error, RetriesExhaustedError)
    assert error.attempts == outcome.attempts == 4
    assert isinstance(error.last_error, ServerError)
    assert "retries exhausted" in str(error) and "ServerError" in str(error)


@pytest.mark.parametrize("max_retries", [0, 1, 2])
def test_max_retries_counts_attempts_after_the_first(max_retries: int) -> None:
    answers: list[Any] = [TransportError("dropped", endpoint=ENDPOINT)] * (max_retries + 1)
    seen, outcome = drive(loop(RetryPolicy(max_retries=max_retries)), answers)
    assert len(sends(seen)) == max_retries + 1
    assert isinstance(outcome.error, RetriesExhaustedError)
    assert outcome.attempts == max_retries + 1


def test_a_retry_that_succeeds_ends_the_loop() -> None:
    seen, outcome = drive(loop(RetryPolicy(max_retries=3)), [server_error(), GOOD])
    assert len(sends(seen)) == 2 and len(sleeps(seen)) == 1
    assert outcome.ok and outcome.attempts == 2


# ---------------------------------------------------------------- Retry-After


def test_retry_after_is_waited_exactly_instead_of_backoff() -> None:
    limited = RateLimitError("429", retry_after=7.5, endpoint=ENDPOINT, status=429)
    seen, outcome = drive(loop(RetryPolicy(max_retries=1)), [limited, GOOD])
    assert sleeps(seen) == [7.5]
    assert outcome.ok and outcome.attempts == 2


def test_a_429_without_retry_after_backs_off() -> None:
    limited = RateLimitError("429", endpoint=ENDPOINT, status=429)
    seen, _ = drive(loop(RetryPolicy(max_retries=1, backoff_base=0.5)), [limited, GOOD])
    (wait,) = sleeps(seen)
    assert 0.25 <= wait <= 0.5


# ---------------------------------------------------------------- the total deadline


def test_a_wait_past_the_deadline_is_not_taken() -> None:
    limited = RateLimitError("429", retry_after=60.0, endpoint=ENDPOINT, status=429)
    seen, outcome = drive(loop(RetryPolicy(max_retries=5, deadline=10.0)), [limited])
    assert len(sends(seen)) == 1 and sleeps(seen) == []
    error = outcome.error
    assert isinstance(error, RetriesExhaustedError) and "deadline exhausted" in str(error)
    assert error.last_error is limited and outcome.attempts == 1


def test_an_attempt_gets_what_is_left_of_the_deadline_as_its_timeout() -> None:
    (short,), _ = drive(loop(RetryPolicy(deadline=5.0, attempt_timeout=120.0)), [GOOD])
    assert isinstance(short, Send) and short.timeout is not None and 4.0 < short.timeout <= 5.0
    (own,), _ = drive(loop(RetryPolicy(deadline=600.0, attempt_timeout=30.0)), [GOOD])
    assert isinstance(own, Send) and own.timeout is None  # its own timeout ends first


# ---------------------------------------------------------------- re-asking


def test_an_invalid_answer_is_re_asked_at_once_with_the_errors() -> None:
    seen, outcome = drive(loop(RetryPolicy(max_retries=2)), [BAD, BAD, GOOD])
    assert sleeps(seen) == []  # the re-ask itself is the remedy: no wait
    first, second, third = (s.request["messages"] for s in sends(seen))
    assert first == MESSAGES
    assert second[: len(MESSAGES)] == MESSAGES
    assert [m["role"] for m in second[len(MESSAGES) :]] == ["assistant", "tool"]
    assert second[-1]["tool_call_id"] == "call_1" and "age" in second[-1]["content"]
    assert len(third) == len(second)  # each re-ask shows only the latest answer
    assert outcome.ok and outcome.attempts == 3
    assert MESSAGES == [{"role": "user", "content": "Extract: jason is 25"}]  # not mutated


def test_invalid_answers_use_up_the_retries_and_keep_the_last_raw_answer() -> None:
    seen, outcome = drive(loop(RetryPolicy(max_retries=1)), [BAD, BAD])
    assert len(sends(seen)) == 2
    error = outcome.error
    assert isinstance(error, RetriesExhaustedError)
    assert isinstance(error.last_error, InvalidOutputError)
    assert error.last_raw == json.dumps({"name": "Jason"})
    assert outcome.completion is BAD


def test_usage_is_summed_over_attempts_and_written_to_the_completion() -> None:
    good = completion(json.dumps({"name": "Jason", "age": 25}))
    _, outcome = drive(loop(RetryPolicy(max_retries=2)), [BAD, good])
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (20, 10)
    assert good.usage is not None and good.usage.total_tokens == 30


# ---------------------------------------------------------------- not retried


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("400", endpoint=ENDPOINT, status=400),
        AuthenticationError("401", endpoint=ENDPOINT, status=401),
        PermissionDeniedError("403", endpoint=ENDPOINT, status=403),
        EndpointNotFoundError("404", endpoint=ENDPOINT, status=404),
    ],
)
def test_non_retryable_errors_end_the_call_at_once(error: DbstructError) -> None:
    assert error.retryable is False
    seen, outcome = drive(loop(RetryPolicy(max_retries=5)), [error])
    assert len(seen) == 1
    assert outcome.error is error and outcome.attempts == 1


def test_a_refusal_known_before_sending_is_not_counted_as_an_attempt() -> None:
    unsent = AuthenticationError("not sent: 401", endpoint=ENDPOINT, status=401, sent=False)
    _, outcome = drive(loop(RetryPolicy()), [unsent])
    assert outcome.error is unsent and outcome.attempts == 0


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (completion("{}", refusal="I cannot help with that"), RefusalError),
        (completion('{"name": "Ja', finish_reason="length"), IncompleteOutputError),
    ],
)
def test_refusals_and_cut_off_answers_are_not_re_asked(
    answer: ChatCompletion, error_type: type[DbstructError]
) -> None:
    seen, outcome = drive(loop(RetryPolicy(max_retries=3)), [answer])
    assert len(seen) == 1
    assert isinstance(outcome.error, error_type) and outcome.attempts == 1


def test_retryable_is_declared_on_every_error() -> None:
    assert DbstructError.retryable is False
    assert ServerError.retryable and RateLimitError.retryable and TransportError.retryable
    assert InvalidOutputError.retryable  # re-asked
    assert not RetriesExhaustedError.retryable and not BadRequestError.retryable


# ---------------------------------------------------------------- a tool's strict flag


def test_a_strict_refusal_is_resent_once_without_the_flag_and_not_counted() -> None:
    target = ResponseTarget.of(UserExtract)
    request = chat_request(Mode.TOOLS_STRICT, target, MESSAGES, {}, ENDPOINT)
    learned: list[str] = []
    steps = attempts(
        Mode.TOOLS_STRICT,
        target,
        request,
        RetryPolicy(max_retries=0),
        endpoint=ENDPOINT,
        strict_refused=learned.append,
    )
    refused = BadRequestError(
        '400 {"message":"tools.0.custom.strict: Extra inputs are not permitted"}',
        endpoint=ENDPOINT,
        status=400,
    )
    seen, outcome = drive(steps, [refused, GOOD])
    flags = [s.request["tools"][0]["function"].get("strict") for s in sends(seen)]
    assert flags == [True, None] and sleeps(seen) == []
    assert learned == [ENDPOINT]
    assert outcome.ok and outcome.attempts == 1  # max_retries=0, and still answered

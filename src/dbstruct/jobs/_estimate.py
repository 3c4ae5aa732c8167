"""What a job's rows would take, offline: the requests built by the code that sends them, their
prompt tokens counted, and each answer's completion tokens estimated from the schema.

    est = RowEstimator(conf)                  # sends nothing
    est.prompt_tokens([("Refund", "I was charged twice."), ...])   # per row
    est.completion_tokens_per_row             # from dbstruct.answer_size

A row's requests are built as a job's Spark worker builds them: its prompt rendered by the
UDF's prompt, packed with its neighbours when ``rows_per_request > 1`` (the client's
:class:`dbstruct._many.ManyCall` plans the packs, cutting them by count, size and context as
it does when sending), the client's request defaults and mode applied. A pack's prompt tokens
are shared among its rows as the client shares the endpoint's count (by text length). Rows
whose text is null or blank are not sent and take 0.

The tokenizer is :func:`dbstruct.token_count.token_counter`'s choice for the endpoint; a job
whose answers come from the serving emulator is counted with the estimate, which is the
emulator's own rule (so on the emulator the count is exact).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Tuple  # noqa: UP035

from dbstruct._packing import PackRow
from dbstruct.answer_size import estimate_answer, estimate_packed_answer
from dbstruct.auth import Credentials
from dbstruct.token_count import TokenCounter, token_counter

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column

    from dbstruct.jobs.conf import JobConfig
    from dbstruct.spark import StructuredUDF

__all__ = ["RowEstimator", "estimate_column", "tokenizer_for"]

#: credentials for building requests only: nothing is sent
_OFFLINE = Credentials.from_token("https://plan.invalid/serving-endpoints", "plan-sends-nothing")


def tokenizer_for(conf: JobConfig, tokenizer: str = "auto") -> str:
    """``tokenizer``, or the estimate when the job's emulator answers (its counting rule)."""
    return "estimate" if conf.emulator is not None and tokenizer == "auto" else tokenizer


class RowEstimator:
    """Prompt and completion tokens of a job's rows, built as the job sends them."""

    def __init__(self, conf: JobConfig, tokenizer: str = "auto") -> None:
        from dbstruct.jobs.conf import build_udf

        self.conf = conf
        self.udf: StructuredUDF = build_udf(conf, _OFFLINE)
        self.counter: TokenCounter = token_counter(conf.model, tokenizer_for(conf, tokenizer))
        self.k = conf.rows_per_request

    @property
    def counter_name(self) -> str:
        return self.counter.name

    @cached_property
    def client(self) -> Any:
        return self.udf.spec.open_client(async_client=False)

    @cached_property
    def completion_tokens_per_row(self) -> float:
        """The expected completion tokens of one row's answer (its share of a full pack's)."""
        # what rows are asked for: the response model, with its quotes under evidence: true
        model, mode = self.udf.spec.request_model, self.conf.mode_enum
        if self.k > 1:
            return estimate_packed_answer(model, mode, self.k, self.counter).per_row
        return estimate_answer(model, mode, self.counter).tokens

    def arguments(self) -> list[str]:
        """The text columns in the order the prompt takes them (by name when it names them)."""
        columns = self.conf.source.text_columns
        names = getattr(self.udf.spec.prompt, "names", ())
        return list(names) if set(names) == set(columns) else list(columns)

    def prompt_tokens(self, rows: Sequence[Sequence[str | None]]) -> list[int]:
        """Prompt tokens per row (values in :meth:`arguments` order); 0 for a row not sent.
        Rows are packed in the order given, as a worker packs the rows it holds."""
        from dbstruct._many import ManyCall, share_prompt
        from dbstruct.spark._prompt import as_messages

        prompt, spec = self.udf.spec.prompt, self.udf.spec
        out = [0] * len(rows)
        packable: list[tuple[int, PackRow]] = []
        for i, values in enumerate(rows):
            texts = [v if isinstance(v, str) else None for v in values]
            if all(t is None or not t.strip() for t in texts):
                continue
            row = prompt.pack_row(texts) if self.k > 1 else None
            if row is not None:
                packable.append((i, row))
                continue
            call = self.client._begin(
                spec.request_model, as_messages(prompt.render(texts)), None, None, {}
            )
            if not hasattr(call, "request"):  # a row too large to send, or a cache hit
                continue
            call.steps.close()
            out[i] = self.counter.prompt(call.request)
        if packable:
            many = ManyCall(
                self.client, spec.request_model, [r for _, r in packable], self.k, None, None, {}
            )
            for members, request in many.first_requests():
                tokens = self.counter.prompt(request)
                parts = share_prompt(tokens, [many.rows[m] for m in members])
                for m, part in zip(members, parts, strict=True):
                    out[packable[m][0]] = part
        return out


def estimate_column(conf: JobConfig, tokenizer: str = "auto") -> Column:
    """A column of each row's estimated prompt tokens (a pandas UDF over the text columns)."""
    from pyspark.sql.pandas.functions import pandas_udf

    arguments = RowEstimator(conf, tokenizer).arguments()
    func = _count_function(conf.model_dump_json(), tokenizer, len(arguments))
    udf = pandas_udf(func, "long")  # type: ignore[call-overload]
    from pyspark.sql import functions as F

    return udf(*(F.col(c) for c in arguments))  # type: ignore[no-any-return]


def _count_function(payload: str, tokenizer: str, arity: int) -> Any:
    """The pandas UDF body; type hints make it a SCALAR_ITER UDF (as dbstruct.spark's)."""

    def count(batches: Iterator[Any]) -> Iterator[pd.Series]:
        import pandas as pd

        estimator = _executor_estimator(payload, tokenizer)
        for batch in batches:
            series = batch if isinstance(batch, tuple) else (batch,)
            rows = list(zip(*(s.tolist() for s in series), strict=True))
            yield pd.Series(estimator.prompt_tokens(rows), dtype="int64")

    import pandas as pd

    args: Any = pd.Series if arity == 1 else Tuple[(pd.Series,) * arity]  # noqa: UP006
    count.__annotations__ = {"batches": Iterator[args], "return": Iterator[pd.Series]}
    return count


_ESTIMATORS: dict[tuple[str, str], RowEstimator] = {}


def _executor_estimator(payload: str, tokenizer: str) -> RowEstimator:
    """One estimator per job and Python worker (building one compiles the schema)."""
    from dbstruct.jobs.conf import JobConfig

    key = (payload, tokenizer)
    if key not in _ESTIMATORS:
        _ESTIMATORS[key] = RowEstimator(JobConfig.model_validate_json(payload), tokenizer)
    return _ESTIMATORS[key]

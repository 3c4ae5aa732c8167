"""How one worker sends its requests: in flight, retries, timeouts, pacing, connections.

    settings = WorkerSettings(concurrency=32, max_retries=5, adaptive=True)

:class:`WorkerSettings` is the one statement of these settings, their defaults and their
rules. :func:`dbstruct.spark.structured_udf` builds one from its arguments (a job file's
``concurrency`` and ``max_retries`` are bounded by the same rules, see
:mod:`dbstruct.jobs.conf`), the UDF carries it to the executors, and each Python worker
(:mod:`dbstruct.spark._worker`) builds from it, once:

* the request window: ``concurrency`` requests in flight (each carrying up to
  ``rows_per_request`` rows), ``read_ahead_rows`` rows read
  ahead (:mod:`dbstruct.spark._request_window`);
* the async client: ``max_retries``, ``timeout``, ``total_timeout`` and a connection pool of
  ``pool_size`` (:func:`dbstruct.from_provider`);
* the limiter, when one is asked for: ``concurrency`` is its ceiling, ``max_qps`` and
  ``max_tokens_per_minute`` the job's caps, each worker taking ``1 / workers`` of them
  (:func:`dbstruct._rate_control.worker_limiter`).

Nothing here needs Spark or pandas; a bad value is a ``ConfigurationError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbstruct.errors import ConfigurationError

__all__ = [
    "CONCURRENCY_RANGE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOTAL_TIMEOUT",
    "MAX_RETRIES_RANGE",
    "ROWS_PER_REQUEST_RANGE",
    "WorkerSettings",
    "concurrency_problem",
    "read_ahead_rows",
    "rows_per_request_problem",
]

#: requests in flight per worker: the smallest and largest allowed
CONCURRENCY_RANGE = (1, 512)
#: attempts after the first: the fewest and most allowed
MAX_RETRIES_RANGE = (0, 20)
#: rows one request may carry (see :mod:`dbstruct._packing`): the fewest and most allowed.
#: Accuracy degrades as rows per prompt grow and collapses somewhere between 20 and 100
#: (Chen et al., ACL 2026, arXiv 2603.22608): 64 leaves room to measure, not to recommend.
ROWS_PER_REQUEST_RANGE = (1, 64)
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_RETRIES = 3
#: seconds one HTTP attempt may take
DEFAULT_TIMEOUT = 120.0
#: seconds one call may take, its retries and waits included
DEFAULT_TOTAL_TIMEOUT = 600.0
#: rows read ahead per request in flight, when ``buffer_rows`` is not given
_READ_AHEAD_PER_SLOT = 16


def concurrency_problem(value: object) -> str | None:
    """Why ``value`` is not a valid ``concurrency``; None when it is."""
    low, high = CONCURRENCY_RANGE
    if isinstance(value, int) and low <= value <= high:
        return None
    return f"concurrency must be an int from {low} to {high}, got {value!r}"


def rows_per_request_problem(value: object) -> str | None:
    """Why ``value`` is not a valid ``rows_per_request``; None when it is."""
    low, high = ROWS_PER_REQUEST_RANGE
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return None
    return f"rows_per_request must be an int from {low} to {high}, got {value!r}"


def read_ahead_rows(concurrency: int, buffer_rows: int | None) -> int:
    """Rows a request window holds at most: ``buffer_rows``, by default 16 per request slot."""
    return buffer_rows if buffer_rows is not None else _READ_AHEAD_PER_SLOT * concurrency


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's request settings, validated when built (see the module docstring).

    >>> WorkerSettings(concurrency=8).pool_size
    8
    """

    #: requests in flight at once per Python worker; also the limiter's ceiling
    concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    #: the HTTP connection pool; None: ``concurrency`` (in flight never exceeds it)
    max_connections: int | None = None
    #: rows held (read, not yet returned) at most; None: 16 x concurrency
    buffer_rows: int | None = None
    #: adapt the in-flight limit and the rate to the endpoint's rate-driven 429s and its 503s
    #: (:mod:`dbstruct._rate_control`); False: ``concurrency`` fixed, each row backs off alone
    adaptive: bool = True
    #: the whole job's caps, split evenly across ``workers``
    max_qps: float | None = None
    max_tokens_per_minute: float | None = None
    workers: int | None = None
    #: rows one request carries at most (1: a request per row); see :mod:`dbstruct._packing`
    rows_per_request: int = 1
    #: the share of rows whose calls are traced to MLflow, by a hash of their messages
    #: (failed rows too, whenever tracing is on); see :mod:`dbstruct.tracing`
    trace_sample_rate: float = 0.0

    def __post_init__(self) -> None:
        problem = concurrency_problem(self.concurrency)
        if problem is not None:
            raise ConfigurationError(problem)
        low, high = MAX_RETRIES_RANGE
        if not (isinstance(self.max_retries, int) and low <= self.max_retries <= high):
            raise ConfigurationError(
                f"max_retries must be an int from {low} to {high}, got {self.max_retries!r}"
            )
        for name in ("timeout", "total_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
        for name in ("max_connections", "buffer_rows"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ConfigurationError(f"{name} must be >= 1, got {value!r}")
        for name in ("max_qps", "max_tokens_per_minute"):
            cap = getattr(self, name)
            if cap is not None and not cap > 0:
                raise ConfigurationError(f"{name} must be > 0 or None, got {cap!r}")
        problem = rows_per_request_problem(self.rows_per_request)
        if problem is not None:
            raise ConfigurationError(problem)
        workers = self.workers
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigurationError(f"workers must be a positive int, got {workers!r}")
        rate = self.trace_sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ConfigurationError(f"trace_sample_rate must be from 0 to 1, got {rate!r}")

    @property
    def pool_size(self) -> int:
        """HTTP connections the worker's client keeps."""
        return self.max_connections or self.concurrency

    @property
    def read_ahead_rows(self) -> int:
        """Rows held at most (the window also holds two batches, whatever their size)."""
        return read_ahead_rows(self.concurrency, self.buffer_rows)

    @property
    def capped(self) -> bool:
        """Whether a job-wide cap is set (it needs ``workers`` to be split)."""
        return self.max_qps is not None or self.max_tokens_per_minute is not None

    @property
    def limited(self) -> bool:
        """Whether the worker needs a limiter (adaptive pacing or a cap)."""
        return self.adaptive or self.capped

    @property
    def qps_per_worker(self) -> float | None:
        return None if self.max_qps is None else self.max_qps / (self.workers or 1)

    @property
    def tpm_per_worker(self) -> float | None:
        tpm = self.max_tokens_per_minute
        return None if tpm is None else tpm / (self.workers or 1)

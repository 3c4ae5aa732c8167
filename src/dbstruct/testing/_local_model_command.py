"""``dbstruct local-model [--port 0] [--threads 1]``: serve the local model until interrupted.

The same function serves :class:`~dbstruct.testing.LocalModel`'s subprocess
(``python -m dbstruct.testing._local_model_command``). llama.cpp's server is started in this
process by xllamacpp, with ``/serving-endpoints`` as its API prefix, so the URL it prints is
a ``DATABRICKS_HOST``: dbstruct's client reaches ``<host>/serving-endpoints/chat/completions``
as it reaches a workspace.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from dbstruct.testing._local_model import (
    API_PREFIX,
    DEFAULT_TOKEN,
    MODEL_NAME,
    LocalModelUnavailable,
    free_port,
    require_installed,
)

__all__ = [
    "DESCRIPTION",
    "HELP",
    "PROG",
    "READY_PREFIX",
    "add_arguments",
    "main",
    "run",
    "serve_forever",
]

PROG = "dbstruct local-model"
HELP = "serve a real small model (SmolLM2-135M, llama.cpp) as a local serving endpoint"
DESCRIPTION = (
    "Serve SmolLM2-135M-Instruct with llama.cpp (xllamacpp) on this machine, as an "
    "OpenAI-compatible serving endpoint, until interrupted. Set DATABRICKS_HOST to the "
    "printed host and DATABRICKS_TOKEN to the token, and use the printed model name."
)
#: the first line printed once the server accepts connections
READY_PREFIX = "dbstruct local-model listening on "


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The command's options on ``parser``, whose ``func`` becomes :func:`run`."""
    p = parser
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: best on 2 shared cores)"
    )
    p.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token the server accepts")
    p.add_argument("--ctx", type=int, default=4096, help="context window in tokens")
    # LocalModel's subprocess stops when the process that started it is gone
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dbstruct.testing._local_model_command``: serve until interrupted."""
    parser = add_arguments(argparse.ArgumentParser(prog=PROG, description=DESCRIPTION))
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve what ``args`` ask for; 2 when the packages are missing or a setting is bad."""
    if args.threads < 1 or args.ctx < 256 or not 0 <= args.port <= 65535:
        print(f"{PROG}: --threads must be >= 1, --ctx >= 256, --port 0-65535", file=sys.stderr)
        return 2
    try:
        serve_forever(
            args.host, args.port, args.threads, args.token, args.ctx, parent_pid=args.parent_pid
        )
    except LocalModelUnavailable as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    return 0


def serve_forever(
    host: str, port: int, threads: int, token: str, ctx: int, *, parent_pid: int | None = None
) -> None:
    """Load the model, serve it on ``host:port`` (0: a free one), print where, and block
    until SIGINT or SIGTERM (or, with ``parent_pid``, until that process is gone)."""
    weights = require_installed()
    # OpenMP reads these when llama.cpp loads: busy-waiting threads make it 10x slower on
    # two shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    xllamacpp: Any = importlib.import_module("xllamacpp")  # no type stubs
    params = xllamacpp.CommonParams()
    params.model.path = str(weights)
    params.model_alias = {MODEL_NAME}
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_ctx = ctx
    params.hostnames = [host]
    params.port = port or free_port(host)
    params.api_prefix = API_PREFIX
    params.api_keys = [token]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    try:
        url = f"http://{host}:{params.port}"
        print(f"{READY_PREFIX}{url}", flush=True)
        print(
            f"{PROG}: DATABRICKS_HOST={url} DATABRICKS_TOKEN={token}, "
            f"model databricks/{MODEL_NAME} (base_url {url}{API_PREFIX})",
            flush=True,
        )
        while not stop.wait(0.5):
            if parent_pid is not None and os.getppid() != parent_pid:
                break  # orphaned: whoever started us died without stopping us
    finally:
        del server  # xllamacpp stops its server threads when the object goes


if __name__ == "__main__":
    sys.exit(main())

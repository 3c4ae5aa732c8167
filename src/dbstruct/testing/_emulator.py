"""``Emulator``: the server in a thread of this process, or in a subprocess.

Either way tests drive it through the same admin HTTP routes (``/_emulator/...``), so the
two modes behave alike; the subprocess keeps the server off the test process's GIL (Spark
drivers, benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from aiohttp import web

from dbstruct.testing._config import EmulatorConfig
from dbstruct.testing._scripted import to_wire
from dbstruct.testing._server import build_app
from dbstruct.testing._state import Stats

if TYPE_CHECKING:
    import openai

__all__ = ["READY_PREFIX", "Emulator", "endpoints_notice", "serve_forever", "start_site"]

#: the line a serving process prints (then flushes) once it accepts connections
READY_PREFIX = "dbstruct emulator listening on "


async def start_site(config: EmulatorConfig, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``config`` on ``host:port`` (0: a free port); the runner and the port."""
    runner = web.AppRunner(
        build_app(config),
        access_log=None,  # no per-request logging: it would bound throughput
        handler_cancellation=True,  # a client that goes away cancels its held request
        shutdown_timeout=0.5,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


def endpoints_notice(config: EmulatorConfig) -> str:
    """The line saying which endpoint names are served, printed when serving starts."""
    if config.endpoints is None:
        return (
            "dbstruct emulator: serving any endpoint name; pass --endpoint NAME to serve only "
            "those and answer 404 for others"
        )
    names = ", ".join(config.endpoints) or "(none)"
    return f"dbstruct emulator: serving only {names}; other endpoint names answer 404"


def serve_forever(config: EmulatorConfig, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM, after printing ``READY_PREFIX + url`` to stdout, then
    which endpoint names are served (:func:`endpoints_notice`)."""

    async def main() -> None:
        runner, bound = await start_site(config, host, port)
        print(f"{READY_PREFIX}http://{host}:{bound}", flush=True)
        print(endpoints_notice(config), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread / Windows
                pass
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


class Emulator:
    """A local Databricks model serving emulator (OpenAI-compatible chat completions).

        with Emulator(token="dapi-test") as emu:
            client = openai.OpenAI(base_url=emu.base_url, api_key=emu.token, max_retries=0)
            client.chat.completions.create(model="databricks-llama", messages=[...])

    ``settings`` are :class:`EmulatorConfig` fields (``qps=``, ``faults=``, ``seed=``,
    ``forbidden_tokens=``, ``token_ttl=``...); ``token`` is added to ``tokens``. Use it as a
    context manager, or :meth:`start` / :meth:`stop`; :meth:`spawn` runs it in a subprocess.
    """

    def __init__(
        self,
        token: str = "dapi-test",
        endpoints: Iterable[str] | None = None,
        latency: float = 0.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **settings: Any,
    ) -> None:
        self._config = EmulatorConfig()
        self._config.update(
            {
                **_with_token(token, settings),
                "endpoints": list(endpoints) if endpoints is not None else None,
                "latency": latency,
            }
        )
        self._constructed = self._config.copy()
        self._bind = (host, port)
        self._url: str | None = None
        self._control: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        """Serve from a daemon thread of this process (its own event loop)."""
        if self._url is not None:
            return self
        loop = asyncio.new_event_loop()
        ready: queue.Queue[tuple[int, BaseException | None]] = queue.Queue()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                runner, port = loop.run_until_complete(start_site(self._config, *self._bind))
            except BaseException as e:  # reported to start(), which re-raises it
                ready.put((0, e))
                return
            ready.put((port, None))
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=run, name="dbstruct-emulator", daemon=True)
        thread.start()
        port, error = ready.get(timeout=30)
        if error is not None:
            raise error
        self._thread, self._loop = thread, loop
        self._connect(f"http://{self._bind[0]}:{port}")
        return self

    @classmethod
    def spawn(
        cls,
        token: str = "dapi-test",
        endpoints: Iterable[str] | None = None,
        latency: float = 0.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        **settings: Any,
    ) -> Emulator:
        """An emulator serving from a subprocess (``python -m dbstruct.testing``), started."""
        emu = cls(token, endpoints, latency, host=host, port=port, **settings)
        emu._spawn(startup_timeout)
        return emu

    def _spawn(self, startup_timeout: float) -> None:
        host, port = self._bind
        command = [
            sys.executable, "-m", "dbstruct.testing",
            "--host", host, "--port", str(port),
            "--config", json.dumps(self._config.to_dict()),
        ]  # fmt: skip
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])  # .../src, so the child imports us
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        self._process = process
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=startup_timeout)
        except queue.Empty:
            self.stop()
            message = f"the emulator subprocess did not start in {startup_timeout}s"
            raise RuntimeError(message) from None
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"the emulator subprocess failed to start: {line!r}")
        self._connect(line[len(READY_PREFIX) :].strip())

    def _connect(self, url: str) -> None:
        self._url = url
        # trust_env=False: a proxy configured for the outside world must not see loopback.
        self._control = httpx.Client(base_url=url, timeout=30.0, trust_env=False)

    def stop(self) -> None:
        """Stop serving (held requests are cancelled); idempotent."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = self._thread = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
        self._url = None

    def __enter__(self) -> Emulator:
        return self.start() if self._url is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ where it is

    @property
    def host(self) -> str:
        """``http://127.0.0.1:PORT``: the workspace URL (``DATABRICKS_HOST``)."""
        if self._url is None:
            raise RuntimeError("the emulator is not running: use `with Emulator() as emu:`")
        return self._url

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        """The serving subprocess's id (:meth:`spawn`), None when serving in-process."""
        return self._process.pid if self._process is not None else None

    @property
    def base_url(self) -> str:
        """The OpenAI client's ``base_url``: ``host + "/serving-endpoints"``."""
        return self.host + "/serving-endpoints"

    @property
    def token(self) -> str:
        return self._config.tokens[0]

    @property
    def client_id(self) -> str:
        return self._config.client_id

    @property
    def client_secret(self) -> str:
        return self._config.client_secret

    def env(self) -> dict[str, str]:
        """``DATABRICKS_HOST`` and ``DATABRICKS_TOKEN`` for this emulator."""
        return {"DATABRICKS_HOST": self.host, "DATABRICKS_TOKEN": self.token}

    # ------------------------------------------------------------ control

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        if self._control is None:
            raise RuntimeError("the emulator is not running")
        response = self._control.request(method, path, json=payload)
        if response.status_code == 400:
            raise ValueError(response.json().get("error", response.text))
        response.raise_for_status()
        return response.json()

    def configure(self, **changes: Any) -> None:
        """Change settings at run time, e.g. ``configure(qps=5, faults={"500": 0.1}, seed=1)``.

        Any :class:`EmulatorConfig` field; ``reset()`` restores the starting settings.
        """
        if "endpoints" in changes and changes["endpoints"] is not None:
            changes["endpoints"] = list(changes["endpoints"])
        self._call("POST", "/_emulator/config", changes)

    def config(self) -> EmulatorConfig:
        return EmulatorConfig.from_dict(self._call("GET", "/_emulator/config"))

    def script(self, items: Iterable[Any], endpoint: str | None = None) -> None:
        """Queue answers: JSON values, raw strings, :class:`Reply` or :class:`Fault` items,
        used one per request in order (``endpoint``'s queue first, then the shared one)."""
        payload = {"items": [to_wire(i) for i in items], "endpoint": endpoint}
        self._call("POST", "/_emulator/script", payload)

    def stats(self) -> Stats:
        return Stats.from_dict(self._call("GET", "/_emulator/stats"))

    @property
    def records(self) -> list[dict[str, Any]]:
        """The recent chat requests, oldest first: ``{"endpoint", "status", "body"}``."""
        return list(self._call("GET", "/_emulator/requests"))

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The recent chat request bodies, oldest first."""
        return [r["body"] for r in self.records if r["body"] is not None]

    def reset(self) -> None:
        """Zero the counters, forget requests, scripts, attempt counts, issued OAuth tokens and
        rate buckets, and restore the settings the emulator started with."""
        self._call("POST", "/_emulator/reset")

    def start_from(self, token: str | None = None, **settings: Any) -> None:
        """:meth:`reset`, then serve as if constructed with ``settings`` too, from now on.

        What later resets restore, and what :attr:`token` and :meth:`env` give: one running
        emulator can stand in for ``Emulator(token=..., retry_after=0.05)``, say, then for
        another (``start_from()``: the settings it was constructed with).
        """
        initial = self._constructed.copy()
        if token is not None or "tokens" in settings:
            settings = _with_token(token or self._constructed.tokens[0], settings)
        initial.update(settings)
        self._call("POST", "/_emulator/reset", {"initial": initial.to_dict()})
        self._config = initial

    # ------------------------------------------------------------ clients

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` for this emulator (``max_retries=0`` unless given)."""
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.base_url, api_key=self.token, **kwargs)

    def async_openai_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.token, **kwargs)


def _with_token(token: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with ``token`` first in ``tokens`` (the one :attr:`Emulator.token` gives)."""
    extra = settings.get("tokens", [])
    extra = [extra] if isinstance(extra, str) else list(extra)
    return {**settings, "tokens": [token, *[t for t in extra if t != token]]}

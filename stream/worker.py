"""Start one worker process: check the services, create topics, start the scoring process,
run Faust.

Everything that can fail for a reason a person can fix (a wrong URL, an unreachable broker
or Redis, a missing or tampered checkpoint) fails here, before Faust starts, as a
`WorkerError` with one line; Faust itself would retry an unreachable broker forever.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import NoReturn

from stream.metrics import WorkerStats
from stream.services import (
    ServiceError,
    check_broker,
    check_redis,
    check_redis_writable,
    create_topics,
    free_port,
)
from stream.settings import Settings

EXIT_UNREADABLE = 3  # exit code of a worker that stopped on a record batch it cannot read


class WorkerError(RuntimeError):
    """The worker cannot start; one line a person can act on."""


def cpus() -> int:
    """Cores this process may run on: its affinity mask (a container's cpuset), not a CPU
    quota, which no count here can see: size containers with explicit settings."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def scoring_processes(settings: Settings) -> int:
    """One scoring process per core (at most 4): parse, checks, tokens and explanations are
    Python, so processes, not torch threads, are what spread a batch over the cores."""
    return settings.scoring_processes or min(4, cpus())


def torch_threads(settings: Settings) -> int:
    """Intra-op threads per scoring process: the cores shared among the processes."""
    return settings.torch_threads or max(1, cpus() // scoring_processes(settings))


def load_scorer(settings: Settings):  # -> model.scorer.Scorer (torch imported here)
    """The model on the configured device, its cross-claim checks kept in Redis."""
    import torch

    from model.checkpoint import CheckpointError
    from model.scorer import Scorer
    from stream.checkstate import RedisCheckState
    from stream.store import redis_client

    torch.set_num_threads(torch_threads(settings))
    state = RedisCheckState(redis_client(settings), settings.key_prefix, settings.check_ttl_s)
    try:
        return Scorer.load(settings.checkpoint, device=settings.device,
                           threshold=settings.threshold, check_state=state,
                           anomaly_fpr=settings.anomaly_fpr)
    except (CheckpointError, ValueError, OSError, RuntimeError) as e:
        # RuntimeError: weights that do not fit this code's model (an older checkpoint)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkerError(f"cannot load checkpoint {settings.checkpoint!r}: {first}") from None


def load_pipeline(settings: Settings, stats: WorkerStats):  # -> stream.pipeline.Pipeline
    """The scoring pipeline: scoring child processes, Kafka sinks, the Redis store."""
    from stream.pipeline import Pipeline
    from stream.scoring import ScoringError, ScoringPool
    from stream.sinks import KafkaSink
    from stream.store import ScoreStore

    scoring = ScoringPool(settings, scoring_processes(settings))
    try:
        scoring.start()
    except ScoringError as e:
        raise WorkerError(str(e)) from None
    stats.info.update(scoring.info)
    return Pipeline(settings, scoring, ScoreStore.from_settings(settings), KafkaSink(settings),
                    stats)


def prepare(settings: Settings, noop: bool = False) -> tuple[object, int]:
    """Check services, create topics, build the Faust app; return (app, web port)."""
    try:
        check_broker(settings)
        if not noop:
            check_redis(settings)
            check_redis_writable(settings)
        create_topics(settings, [settings.topic_claims + ".noop"] if noop else None)
        if noop:
            create_topics(settings, [settings.topic_claims])
    except ServiceError as e:
        raise WorkerError(str(e)) from None
    port = settings.web_port or free_port(settings.web_host)
    stats = WorkerStats(kind="noop" if noop else "pipeline")
    if noop:
        from stream.noop import create_noop_app

        return create_noop_app(settings, port, stats), port
    from stream.app import create_app

    return create_app(settings, port, load_pipeline(settings, stats)), port


def run_worker(settings: Settings, noop: bool = False) -> NoReturn:
    """Run a worker in this process until SIGTERM/SIGINT (Faust handles both)."""
    import faust

    app, port = prepare(settings, noop)
    print(f"claimscope worker pid {os.getpid()}: web port {port} "
          f"(http://{settings.web_host}:{port}/metrics), group {settings.app_id}, "
          f"topic {settings.topic_claims}, broker {settings.broker}", flush=True)
    quiet_repeats()
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False)
    try:
        worker.execute_from_commandline()  # exits (SystemExit) when the worker stops
    finally:
        if app.fatal is not None:  # stopped on a record batch it cannot read
            sys.exit(EXIT_UNREADABLE)


class Repeats(logging.Filter):
    """Let a message template through once per `every` seconds, then say how many were held.

    While the broker is unreachable aiokafka logs every reconnect attempt (~100 lines/s
    measured here, from five templates): an hour-long outage would write ~360,000 lines.
    With this filter each template shows once per `every` s, as "... (N similar
    suppressed)".
    """

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self.seen: dict[tuple[str, object], tuple[float, int]] = {}  # -> (last shown, held)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        key = (record.name, msg)
        now = time.monotonic()
        if len(self.seen) > 1000:  # templates are few; this only bounds the unexpected
            self.seen.clear()
        shown, held = self.seen.get(key, (-self.every, 0))
        if now - shown < self.every:
            self.seen[key] = (shown, held + 1)
            return False
        if held:
            record.msg, record.args = f"{record.getMessage()} ({held} similar suppressed)", None
        self.seen[key] = (now, 0)
        return True


def quiet_repeats(prefixes: tuple[str, ...] = ("aiokafka",), every: float = 10.0) -> None:
    """Attach one `Repeats` filter to every logger under `prefixes` that exists now (the
    Kafka client's modules are imported by then; a filter on a logger is not inherited)."""
    f = Repeats(every)
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in prefixes]
    for name in names:
        logging.getLogger(name).addFilter(f)

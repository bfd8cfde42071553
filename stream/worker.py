"""Start one worker process: check the services, create topics, start the scoring processes,
run Faust. The composition root: the one module that puts the worker's parts together.

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

import faust

from stream.app import create_app
from stream.metrics import WorkerStats
from stream.pipeline import Pipeline
from stream.preflight import (
    ServiceError,
    check_broker,
    check_redis,
    check_redis_writable,
    create_topics,
    free_port,
)
from stream.scoring import ScoringError, ScoringPool, scoring_processes
from stream.settings import Settings
from stream.sinks import KafkaSink
from stream.store import ScoreStore

EXIT_UNREADABLE = 3  # exit code of a worker that stopped on a record batch it cannot read


class WorkerError(RuntimeError):
    """The worker cannot start; one line a person can act on."""


def load_pipeline(settings: Settings, stats: WorkerStats) -> Pipeline:
    """The scoring pipeline: scoring processes, Kafka sinks, the Redis store."""
    scoring = ScoringPool(settings, scoring_processes(settings))
    try:
        scoring.start()
    except ScoringError as e:
        raise WorkerError(str(e)) from None
    stats.info.update(scoring.info)
    return Pipeline(settings, scoring, ScoreStore.from_settings(settings), KafkaSink(settings),
                    stats)


def prepare(settings: Settings) -> tuple[faust.App, int]:
    """Check services, create topics, build the Faust app; return (app, web port)."""
    try:
        check_broker(settings)
        check_redis(settings)
        check_redis_writable(settings)
        create_topics(settings)
    except ServiceError as e:
        raise WorkerError(str(e)) from None
    port = settings.web_port or free_port(settings.web_host)
    return create_app(settings, port, load_pipeline(settings, WorkerStats())), port


def run_worker(settings: Settings) -> NoReturn:
    """Run a scoring worker in this process until SIGTERM/SIGINT (Faust handles both)."""
    run_app(settings, *prepare(settings))


def run_app(settings: Settings, app: faust.App, port: int) -> NoReturn:
    """Run a prepared Faust app as this process's worker until it stops."""
    print(f"claimscope worker pid {os.getpid()}: web port {port} "
          f"(http://{settings.web_host}:{port}/metrics), group {settings.app_id}, "
          f"topics {', '.join(settings.input_topics)}, broker {settings.broker}", flush=True)
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

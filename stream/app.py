"""The Faust app: claims in, Scores out. App, topic, agent, in that order.

Run it with `claimscope worker` (which checks the broker and Redis, creates the topics,
starts the scoring process of `stream.scoring` and picks the web port first). Expect, per
batch of up to `max_batch` claims: one Score per valid claim on `claims.scored` and in
Redis, flagged ones on `claims.flagged`, and a dead letter per invalid message on
`claims.deadletter`.

Messages are read as raw bytes (value_serializer "raw"): decoding is the pipeline's job, so a
message that is not even JSON reaches it (and becomes a dead letter) instead of crashing a
Faust deserializer. `noack_take` hands over whole batches of events and leaves acking to
the agent, which acks only after the batch is on the output topics and in Redis.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import faust
import redis
from aiokafka.errors import KafkaError

from model.claims import Format
from stream.message import Message
from stream.metrics import WorkerStats, add_views
from stream.pipeline import Pipeline
from stream.ranking import START_S, RankingProcess
from stream.settings import Settings
from stream.transport import App

log = logging.getLogger("claimscope.worker")


def faust_app(settings: Settings, web_port: int, stats: WorkerStats, app_id: str | None = None,
              prepare: Callable[[faust.App], Awaitable[None]] | None = None) -> faust.App:
    """A Faust app configured from settings, with the worker's web views. `prepare`, if
    given, runs on every assignment before the worker reports ready."""
    def not_ready() -> None:
        stats.ready = False

    # Faust makes a directory for its tables on start, by default in the working directory;
    # ClaimScope keeps no Faust tables (its state is in Redis), so it is a private temporary
    # one, removed when the process exits, instead of litter wherever a worker was started
    datadir = tempfile.mkdtemp(prefix="claimscope-faust-")
    atexit.register(shutil.rmtree, datadir, ignore_errors=True)
    app = App(
        app_id or settings.app_id,
        datadir=datadir,
        fetch_wait_ms=round(settings.fetch_wait * 1000), on_fatal=not_ready,
        broker=[f"kafka://{h}" for h in settings.bootstrap_servers],
        broker_credentials=faust_credentials(settings),
        key_serializer="raw", value_serializer="raw",
        autodiscover=False, store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # a 10 MB message must still be fetched (and dead-lettered), never wedge a partition
        consumer_max_fetch_size=max(4 * 1024 * 1024, 2 * settings.max_message_bytes),
        stream_buffer_maxsize=max(4096, 4 * settings.max_batch),
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_session_timeout=settings.broker_session_timeout,
        broker_request_timeout=max(90.0, settings.broker_session_timeout + 10,
                                   settings.broker_rebalance_timeout + 10),
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout / 3),
        broker_commit_interval=1.0,
        web_enabled=True, web_port=web_port, web_bind=settings.web_host,
        web_host=settings.web_host,
    )
    add_views(app, stats)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set, **kwargs: Any) -> None:
        stats.assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
        if prepare is not None:
            await prepare(app)
        stats.ready = app.fatal is None  # a worker that is stopping stays unready

    @app.timer(5.0)
    async def measure_lag() -> None:
        """Messages behind the end of each partition this worker holds now (only those: a
        partition that moved to another worker after a rebalance is that worker's to
        report). Before its first batch from a partition, the fetch position stands in."""
        consumer = app.consumer
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            if "__assignor" in tp.topic:  # Faust's own leader-election topic
                continue
            key = f"{tp.topic}:{tp.partition}"
            end = consumer.highwater(tp)
            if end is None:
                continue
            done = stats.offsets.get(key)
            if done is None:
                try:
                    done = await consumer.position(tp) or 0
                except KafkaError:  # revoked meanwhile (a rebalance): next tick
                    continue
            lag[key] = max(0, end - done)
        stats.lag = lag

    return app


def create_app(settings: Settings, web_port: int, pipeline: Pipeline) -> faust.App:
    """The scoring worker: one agent on the input topics (`claims`, and `claims.fhir` and
    `claims.x12` when `input_formats` turns them on)."""
    ranking = RankingProcess(settings) if settings.provider_profiles else None

    async def start_ranking(app: faust.App) -> None:
        """The leader starts its ranking process before it reports ready, so its start
        (~1 s of CPU) is not taken from the first claims' scoring. It waits at most half
        the rebalance timeout, which the group's assignment is waiting on; a start that
        fails or takes longer is logged, never raised (it would crash the worker), and
        the first tick tries again."""
        if ranking is None or not app.is_leader():
            return
        try:
            await asyncio.to_thread(ranking.start, min(START_S,
                                                       settings.broker_rebalance_timeout / 2))
        except Exception as e:
            log.warning("the provider ranking's process did not start (next tick tries "
                        "again): %s: %s", type(e).__name__, e)
        note_ranking()

    def note_ranking() -> None:
        """`/stats` names the ranking's process (the bench counts its CPU apart)."""
        if ranking is not None and ranking.pid is not None:
            pipeline.stats.info["ranking_pid"] = ranking.pid
        else:
            pipeline.stats.info.pop("ranking_pid", None)

    app = faust_app(settings, web_port, pipeline.stats, prepare=start_ranking)
    claims = app.topic(*settings.input_topics, key_type=bytes, value_type=bytes,
                       partitions=settings.partitions)

    @app.agent(claims)
    async def score_claims(stream: faust.StreamT) -> None:
        """Batch -> pipeline (decode, score, send, Redis) -> ack. Never raises on bad input.

        Up to two batches are in flight while Faust collects a third: one being scored,
        the one before it being sent and stored (see `stream.pipeline`). Each waits for
        its predecessor before it sends, so batches are still acked in order.
        """
        await pipeline.start()
        in_flight: list[asyncio.Future] = []
        formats = settings.input_topics

        async def process_then_ack(events: list, before: asyncio.Future | None) -> None:
            await pipeline.process([message(e, formats) for e in events], before)
            for e in events:
                await stream.ack(e)

        try:
            async for events in stream.noack_take(settings.max_batch, settings.max_wait):
                if len(in_flight) == 2 and await finish(in_flight.pop(0)):
                    raise asyncio.CancelledError
                in_flight.append(asyncio.ensure_future(
                    process_then_ack(events, in_flight[-1] if in_flight else None)))
            # (the stream only ends when the worker stops)
        finally:
            for task in in_flight:
                await finish(task)
            await pipeline.stop()

    if ranking is not None:

        @app.timer(settings.provider_risk_s, on_leader=True)
        async def rank_providers() -> None:
            """Rank every provider against its peers (on one worker: the group's leader;
            in a process of its own, `stream.ranking`), and send the snapshots that
            changed to `providers.risk`, keyed by provider_id. A failure is logged and the
            next tick tries again (a ranking process that died is started afresh): the
            profiles are safe in Redis, and the ranking never stops the scoring."""
            if not pipeline.started:
                return
            try:
                snapshots = await ranking.run()
                note_ranking()
                futures = await pipeline.sink.send(settings.topic_provider_risk, snapshots)
                await asyncio.gather(*futures)
                ranking.sent()
            except (redis.RedisError, KafkaError) as e:
                log.warning("provider ranking failed (next in %.0f s): %s: %s",
                            settings.provider_risk_s, type(e).__name__, e)
            except (BrokenProcessPool, TimeoutError) as e:
                log.warning("the provider ranking's process died or did not start (%s); "
                            "starting another", type(e).__name__)
                await asyncio.to_thread(ranking.stop)
                note_ranking()
            except Exception:  # a bug in the ranking must not stop the scoring
                log.exception("provider ranking failed (next in %.0f s)",
                              settings.provider_risk_s)

        @app.on_before_shutdown.connect
        async def stop_ranking(sender: Any, **kwargs: Any) -> None:
            await asyncio.to_thread(ranking.stop)

    return app


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """SASL/SSL settings as Faust credentials (None for PLAINTEXT)."""
    security = settings.kafka_security()
    if not security:
        return None
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(security["ssl_context"])
    return faust.SASLCredentials(username=security["sasl_plain_username"],
                                 password=security["sasl_plain_password"],
                                 ssl_context=security.get("ssl_context"),
                                 mechanism=settings.sasl_mechanism)


def message(event: faust.EventT, formats: dict[str, Format]) -> Message:
    """The pipeline's Message for a Faust event; `formats`: input topic -> its format."""
    m = event.message
    ts = round(m.timestamp * 1000) if m.timestamp and m.timestamp > 0 else None
    return Message(m.value, m.key, m.topic, m.partition, m.offset, ts,
                   formats.get(m.topic, "claim"))


async def finish(work: Any) -> bool:
    """Await `work`; if the worker is stopped meanwhile, still finish it so the in-flight
    batch is stored and acked before exit. True when the caller was cancelled meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
        return False
    except asyncio.CancelledError:
        if not task.done():
            log.info("stopping: finishing the in-flight batch first")
            await task
        return True

"""The no-op pass-through worker `claimscope bench` compares the pipeline against.

Same Faust app, topic, batching and acking as `stream.app`, same batched sends, but no
decoding, scoring or Redis: each batch is forwarded as it came to `{claims topic}.noop`.
Its throughput is what Faust + the broker allow on this machine; the pipeline's share of it
is the bench's headline figure.
"""

from __future__ import annotations

import asyncio
import time

import faust
import numpy as np

from stream.app import faust_app, finish, message
from stream.metrics import WorkerStats
from stream.preflight import ServiceError, check_broker, create_topics, free_port
from stream.settings import Settings
from stream.sinks import KafkaSink
from stream.worker import WorkerError, run_app


def run_noop_worker(settings: Settings) -> None:
    """`claimscope worker --noop`: the pass-through worker, run like a scoring one."""
    try:
        check_broker(settings)
        create_topics(settings, [settings.topic_claims, settings.topic_claims + ".noop"])
    except ServiceError as e:
        raise WorkerError(str(e)) from None
    port = settings.web_port or free_port(settings.web_host)
    run_app(settings, create_noop_app(settings, port, WorkerStats(kind="noop")), port)


def create_noop_app(settings: Settings, web_port: int, stats: WorkerStats) -> faust.App:
    app = faust_app(settings, web_port, stats)
    claims = app.topic(settings.topic_claims, key_type=bytes, value_type=bytes,
                       partitions=settings.partitions)
    sink = KafkaSink(settings, client_id="claimscope-noop")
    out = settings.topic_claims + ".noop"
    formats = settings.input_topics

    async def forward(batch: list) -> None:
        futures = await sink.send(out, [(m.key, m.value or b"") for m in batch])
        await asyncio.gather(*futures)
        now_ms = time.time() * 1000
        e2e = np.asarray([now_ms - m.timestamp_ms for m in batch if m.timestamp_ms])
        stats.add("received", len(batch))
        stats.add("scored", len(batch))
        for m in batch:
            stats.consumed(m.topic, m.partition, m.offset)
        stats.batch_done(len(batch), e2e, None)

    @app.agent(claims)
    async def pass_through(stream: faust.StreamT) -> None:
        """Batch -> forward -> ack."""
        await sink.start([out])
        try:
            async for events in stream.noack_take(settings.max_batch, settings.max_wait):
                stopping = await finish(forward([message(e, formats) for e in events]))
                for e in events:
                    await stream.ack(e)
                if stopping:
                    raise asyncio.CancelledError
        finally:
            await sink.stop()

    return app

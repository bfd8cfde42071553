"""One batch of claims through the worker: score -> sinks. The agent's whole body.

    size check            null or oversize -> dead letters at once (never sent on)
    score (processes)     parse + validate + checks + model + Score JSON, in
                          `stream.scoring`'s processes, one core each; invalid -> dead letters
    -- wait for the previous batch to be stored and acked (while it was, this one scored) --
    send                  claims.scored (all), claims.flagged, claims.deadletter: whole
                          record batches per partition, futures not awaited yet
    Redis (executor)      one round trip, while the sends fly
    await the sends       then, and only then, the caller acks the batch's offsets

Two batches overlap: one is scored while the one before it is sent and written, so the
scoring processes do not sit idle during the sinks (measured: ~15% of a batch's time).
Scoring is one batch at a time and sinks run in batch order, so offsets are still acked in
order.

At-least-once: the offsets of a batch are acked (and later committed) only after every
Score is on `claims.scored` and in Redis. A crash in between redelivers the batch: Redis
writes are idempotent (same keys, same sorted-set members) and the topics get the Scores a
second time, which consumers dedupe by claim_id. Transient Redis and Kafka errors are
retried with backoff for as long as they last; a dead scoring process is restarted; the
batch is never acked half done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import redis
from aiokafka.errors import KafkaError

from stream.deadletter import Incoming, dead_letter, dead_letter_key
from stream.metrics import WorkerStats
from stream.scoring import FAILED, OK, Result, ScoringError, ScoringPool
from stream.settings import Settings
from stream.sinks import KafkaSink
from stream.store import Row, ScoreStore, record_bytes

log = logging.getLogger("claimscope.pipeline")
T = TypeVar("T")
BACKOFF_MAX_S = 5.0
CRASHES_BEFORE_SPLIT = 2  # a batch that kills the scorer twice is scored claim by claim


class Pipeline:
    """Scores batches and writes them to the topics and Redis."""

    def __init__(self, settings: Settings, scoring: ScoringPool, store: ScoreStore,
                 sink: KafkaSink, stats: WorkerStats) -> None:
        self.s = settings
        self.scoring, self.store, self.sink, self.stats = scoring, store, sink, stats
        self.executor: ThreadPoolExecutor | None = None
        self.scoring_turn = asyncio.Lock()  # one batch in the scoring processes at a time

    async def start(self) -> None:
        # Threads for the blocking calls, off the event loop: one batch's scoring pipes
        # and the previous batch's Redis write.
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="claimscope-io")
        await self.sink.start([self.s.topic_scored, self.s.topic_flagged,
                               self.s.topic_deadletter])

    async def stop(self) -> None:
        await self.sink.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.scoring.stop()

    async def process(self, batch: list[Incoming], after: Awaitable[None] | None = None
                      ) -> None:
        """Everything for one batch; returns once it is safe to ack every message in it.

        `after`: the previous batch's processing and ack; this batch is scored meanwhile
        but sent and stored only once that is done."""
        t_start = time.perf_counter()
        self.stats.add("received", len(batch))
        dead: list[tuple[Incoming, str]] = []
        todo: list[Incoming] = []
        for m in batch:
            if m.value is None:
                dead.append((m, "empty message (null value)"))
            elif len(m.value) > self.s.max_message_bytes:
                dead.append((m, f"payload too large: {len(m.value)} bytes > "
                                f"max_message_bytes {self.s.max_message_bytes}"))
            else:
                todo.append(m)
        async with self.scoring_turn:
            results = await self._score(todo) if todo else []
        ok: list[tuple[Incoming, Result]] = []
        for m, r in zip(todo, results, strict=True):
            if r.kind == OK:
                ok.append((m, r))
            else:
                dead.append((m, r.reason))
        t_scored = time.perf_counter()
        keyed = [(r.member_id.encode(), r.score_json) for _, r in ok]
        outputs = [(self.s.topic_scored, keyed),
                   (self.s.topic_flagged, [kv for kv, (_, r) in zip(keyed, ok, strict=True)
                                           if r.flagged]),
                   (self.s.topic_deadletter, [
                       (dead_letter_key(m.key), dead_letter(m, why,
                                                            raw_max=self.s.deadletter_raw_bytes))
                       for m, why in dead])]
        rows = [Row(r.claim_id, r.member_id, r.provider_id, r.flagged, r.scored_at,
                    record_bytes(r.score_json, m.value)) for m, r in ok]
        if after is not None:
            await after
        await self._sink(outputs, lambda: self.store.put_rows(rows))
        now_ms = time.time() * 1000
        e2e = np.asarray([now_ms - m.timestamp_ms for m, _ in ok if m.timestamp_ms],
                         dtype=float)
        self.stats.add("scored", len(ok))
        self.stats.add("flagged", sum(r.flagged for _, r in ok))
        self.stats.add("deadletters", len(dead))
        for m in batch:
            self.stats.consumed(m.topic, m.partition, m.offset)
        self.stats.batch_done(len(batch), e2e, (t_scored - t_start) * 1000 if todo else None)
        log.debug("batch %d: score %.1f ms, sinks %.1f ms", len(batch),
                  (t_scored - t_start) * 1000, (time.perf_counter() - t_scored) * 1000)

    # -- steps --------------------------------------------------------------------------
    async def _score(self, todo: list[Incoming]) -> list[Result]:
        """A Result per message. Redis away: wait and retry. Scorer died: restart it and
        retry; a batch that kills it twice is scored one claim at a time, and a claim that
        kills it alone becomes a dead letter."""
        crashes = 0
        while True:
            try:
                results = await self._retry("scoring", self._score_once, todo)
                return results
            except ScoringError as e:
                crashes += 1
                self.stats.add("retries")
                log.error("%s; restarting the scoring process", e)
                await self._restart()
                if crashes >= CRASHES_BEFORE_SPLIT and len(todo) > 1:
                    return [r for m in todo for r in await self._score_alone(m)]

    async def _score_alone(self, m: Incoming) -> list[Result]:
        try:
            return await self._retry("scoring", self._score_once, [m])
        except ScoringError:
            await self._restart()
            return [Result(FAILED, reason="scoring failed: the scoring process died on it")]

    def _score_once(self, todo: list[Incoming]) -> list[Result]:
        results = self.scoring.score([m.value or b"" for m in todo],
                                     [m.timestamp_ms for m in todo], [m.key for m in todo])
        if results is None:
            raise redis.ConnectionError("the scorer's cross-claim checks cannot reach Redis")
        return results

    async def _restart(self) -> None:
        """Restart the scoring child; keep trying (with backoff) while it cannot start."""
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            try:
                await loop.run_in_executor(self.executor, self._restart_sync)
                return
            except ScoringError as e:
                log.error("scoring process does not start (%s); retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _restart_sync(self) -> None:
        self.scoring.stop()
        self.scoring.start()

    async def _sink(self, outputs: list[tuple[str, list[tuple[bytes | None, bytes]]]],
                    write_redis: Callable[[], None]) -> None:
        """Send to every topic and write Redis concurrently; retry until both are done."""
        delay = 0.2
        redis_done = False
        while True:
            try:
                futures = [f for topic, items in outputs
                           for f in await self.sink.send(topic, items)]
                if not redis_done:
                    await self._retry("Redis write", write_redis)
                    redis_done = True
                await asyncio.gather(*futures)
                return
            except KafkaError as e:  # broker unreachable or send timed out: resend all
                self.stats.add("retries")
                log.warning("sending to Kafka failed (%s); resending the batch in %.1f s", e,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _retry(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """Run `fn` in the executor; on a Redis error back off (0.2 s doubling to 5 s) and
        run it again, for as long as Redis is away. Other errors propagate."""
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                return await loop.run_in_executor(self.executor, fn, *args)
            except redis.RedisError as e:
                self.stats.add("retries")
                log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(e).__name__, e,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

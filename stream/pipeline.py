"""One batch of claims through the worker: score -> sinks. The agent's whole body.

    size check            null or oversize -> dead letters at once (never sent on)
    score (processes)     parse (or convert FHIR / X12) + validate + checks + model + Score
                          JSON, in `stream.scoring`'s processes, one core each; every
                          invalid message or record -> a dead letter with its reason
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
retried with one backoff policy (`Pipeline._retry`, tenacity's) for as long as they last;
dead scoring processes are restarted; the batch is never acked half done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import redis
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from stream.deadletter import Incoming, dead_letter, dead_letter_key
from stream.metrics import WorkerStats
from stream.scoring import FAILED, OK, Result, ScoringError, ScoringPool
from stream.settings import Settings
from stream.sinks import KafkaSink
from stream.store import Row, ScoreStore, record_bytes

log = logging.getLogger("claimscope.pipeline")
T = TypeVar("T")
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 5.0
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
        # Threads for the blocking calls, off the event loop: the previous batch's Redis
        # write, and a restart of the scoring processes.
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
        for m, rs in zip(todo, results, strict=True):
            if not rs:
                dead.append((m, "no claim in the message"))
            for r in rs:
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
                    record_bytes(r.score_json, r.claim_json or m.value)) for m, r in ok]
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
    async def _score(self, todo: list[Incoming]) -> list[list[Result]]:
        """The Results of each message. Redis away: wait and retry. Scorer died: restart it
        and retry; a batch that kills it twice is scored one message at a time, and a
        message that kills it alone becomes a dead letter."""
        crashes = 0
        while True:
            try:
                return await self._retry("scoring", redis.RedisError, self._score_once, todo)
            except ScoringError as e:
                crashes += 1
                self.stats.add("retries")
                log.error("%s; restarting the scoring process", e)
                await self._restart()
                if crashes >= CRASHES_BEFORE_SPLIT and len(todo) > 1:
                    return [rs for m in todo for rs in await self._score_alone(m)]

    async def _score_alone(self, m: Incoming) -> list[list[Result]]:
        try:
            return await self._retry("scoring", redis.RedisError, self._score_once, [m])
        except ScoringError:
            await self._restart()
            return [[Result(FAILED, reason="scoring failed: the scoring process died on it")]]

    async def _score_once(self, todo: list[Incoming]) -> list[list[Result]]:
        formats = self.s.input_topics
        return await self.scoring.score([m.value or b"" for m in todo],
                                        [m.timestamp_ms for m in todo], [m.key for m in todo],
                                        [formats.get(m.topic, "claim") for m in todo])

    async def _restart(self) -> None:
        """Restart the scoring processes; keep trying while they cannot start."""
        def restart() -> None:
            self.scoring.stop()
            self.scoring.start()

        await self._retry("restarting the scoring processes", ScoringError,
                          self._in_thread, restart)

    async def _sink(self, outputs: list[tuple[str, list[tuple[bytes | None, bytes]]]],
                    write_redis: Callable[[], None]) -> None:
        """Send to every topic and write Redis while the sends fly; a Kafka error (broker
        away, a send timed out) resends them all. Redis is written once."""
        stored = False

        async def send_and_store() -> None:
            nonlocal stored
            futures = [f for topic, items in outputs
                       for f in await self.sink.send(topic, items)]
            if not stored:
                await self._retry("Redis write", redis.RedisError, self._in_thread,
                                  write_redis)
                stored = True
            await asyncio.gather(*futures)

        await self._retry("sending to Kafka", KafkaError, send_and_store)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _retry(self, what: str, errors: type[BaseException] | tuple,
                     fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """The one retry policy: on `errors`, back off (0.2 s doubling to 5 s) and run `fn`
        again, for as long as the cause lasts (Redis or the broker away: nothing is acked
        meanwhile, so nothing is lost). Other errors propagate."""
        def count_and_say(state: RetryCallState) -> None:
            self.stats.add("retries")
            e = state.outcome.exception() if state.outcome else None
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(e).__name__, e,
                        state.upcoming_sleep)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(errors), reraise=True, before_sleep=count_and_say,
            wait=wait_exponential(multiplier=BACKOFF_FIRST_S, min=BACKOFF_FIRST_S,
                                  max=BACKOFF_MAX_S))
        return await retrying(fn, *args)

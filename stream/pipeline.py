"""One batch of claims through the worker: score -> sinks. The agent's whole body.

Each step of `Pipeline.process` is a method, each claim a `stream.message.Message`:

    _screen         null or oversize -> REFUSED: a dead letter at once (never sent on)
    _score          parse (or convert FHIR / X12) + validate + checks + model + Score JSON,
                    in `stream.scoring`'s processes, one core each: a Verdict per claim
    sort_results    one Message per claim, in message order: SCORED, or a dead letter
                    with its reason (INVALID, FAILED, REFUSED)
    _outputs        the records for claims.scored (all), claims.flagged, claims.deadletter
                    and the rows for Redis
    -- wait for the previous batch to be stored and acked (while it was, this one scored) --
    _sink           send: whole record batches per partition, futures not awaited yet;
                    Redis (executor): one round trip, while the sends fly; await the sends
    _count          counters, offsets, latencies; then, and only then, the caller acks the
                    batch's offsets

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

from stream.deadletter import dead_letter, dead_letter_key
from stream.message import Message, Outcome, Verdict
from stream.metrics import WorkerStats
from stream.scoring import ScoringError, ScoringPool
from stream.settings import Settings
from stream.sinks import KafkaSink
from stream.store import Row, ScoreStore, record_bytes

log = logging.getLogger("claimscope.pipeline")
T = TypeVar("T")
Sends = list[tuple[str, list[tuple[bytes | None, bytes]]]]  # (topic, its (key, value)s)
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 5.0
CRASHES_BEFORE_SPLIT = 2  # a batch that kills the scorer twice is scored claim by claim
NO_CLAIM = Verdict(Outcome.INVALID, "no claim in the message")
DIED_ON_IT = Verdict(Outcome.FAILED, "scoring failed: the scoring process died on it")


class Pipeline:
    """Scores batches and writes them to the topics and Redis."""

    def __init__(self, settings: Settings, scoring: ScoringPool, store: ScoreStore,
                 sink: KafkaSink, stats: WorkerStats) -> None:
        self.s = settings
        self.scoring, self.store, self.sink, self.stats = scoring, store, sink, stats
        self.executor: ThreadPoolExecutor | None = None
        self.scoring_turn = asyncio.Lock()  # one batch in the scoring processes at a time
        self.started = False  # the sink is up: others (the provider ranking) may send

    async def start(self) -> None:
        # Threads for the blocking calls, off the event loop: the previous batch's Redis
        # write, and a restart of the scoring processes.
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="claimscope-io")
        await self.sink.start([self.s.topic_scored, self.s.topic_flagged,
                               self.s.topic_deadletter, self.s.topic_provider_risk])
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.sink.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.scoring.stop()

    async def process(self, batch: list[Message], after: Awaitable[None] | None = None
                      ) -> None:
        """Everything for one batch; returns once it is safe to ack every message in it.

        `after`: the previous batch's processing and ack; this batch is scored meanwhile
        but sent and stored only once that is done."""
        t_start = time.perf_counter()
        self.stats.add("received", len(batch))
        todo, refused = self._screen(batch)
        async with self.scoring_turn:
            verdicts = await self._score(todo) if todo else []
        t_scored = time.perf_counter()
        scored, dead = sort_results(refused, todo, verdicts)
        sends, rows = self._outputs(scored, dead)
        if after is not None:
            await after  # the previous batch is sent, stored and acked: acks stay in order
        await self._sink(sends, rows)
        self._count(batch, scored, dead, t_start, t_scored if todo else None)

    # -- steps --------------------------------------------------------------------------
    def _screen(self, batch: list[Message]) -> tuple[list[Message], list[Message]]:
        """(the messages to score, the REFUSED ones): null or over max_message_bytes are
        dead letters at once, never sent to the scoring processes."""
        todo: list[Message] = []
        refused: list[Message] = []
        for m in batch:
            if m.value is None:
                refused.append(m.judged(Verdict(Outcome.REFUSED, "empty message (null value)")))
            elif len(m.value) > self.s.max_message_bytes:
                refused.append(m.judged(Verdict(
                    Outcome.REFUSED, f"payload too large: {len(m.value)} bytes > "
                                     f"max_message_bytes {self.s.max_message_bytes}")))
            else:
                todo.append(m)
        return todo, refused

    async def _score(self, todo: list[Message]) -> list[list[Verdict]]:
        """The Verdicts of each message. Redis away: wait and retry. Scorer died: restart
        it and retry; a batch that kills it twice is scored one message at a time, and a
        message that kills it alone becomes a dead letter (FAILED)."""
        crashes = 0
        while True:
            try:
                return await self._retry("scoring", redis.RedisError, self.scoring.score, todo)
            except ScoringError as e:
                crashes += 1
                self.stats.add("retries")
                log.error("%s; restarting the scoring process", e)
                await self._restart()
                if crashes >= CRASHES_BEFORE_SPLIT and len(todo) > 1:
                    return [vs for m in todo for vs in await self._score_alone(m)]

    async def _score_alone(self, m: Message) -> list[list[Verdict]]:
        try:
            return await self._retry("scoring", redis.RedisError, self.scoring.score, [m])
        except ScoringError:
            await self._restart()
            return [[DIED_ON_IT]]

    async def _restart(self) -> None:
        """Restart the scoring processes; keep trying while they cannot start."""
        def restart() -> None:
            self.scoring.stop()
            self.scoring.start()

        await self._retry("restarting the scoring processes", ScoringError,
                          self._in_thread, restart)

    def _outputs(self, scored: list[Message], dead: list[Message]) -> tuple[Sends, list[Row]]:
        """What to send (claims.scored and claims.flagged keyed by member_id, the dead
        letters by their source key) and the Redis rows."""
        keyed = [(m.verdict.member_id.encode(), m.verdict.score_json) for m in scored]
        flagged = [kv for kv, m in zip(keyed, scored, strict=True) if m.verdict.flagged]
        letters = [(dead_letter_key(m.key), dead_letter(m, raw_max=self.s.deadletter_raw_bytes))
                   for m in dead]
        sends = [(self.s.topic_scored, keyed), (self.s.topic_flagged, flagged),
                 (self.s.topic_deadletter, letters)]
        return sends, [row(m) for m in scored]

    async def _sink(self, sends: Sends, rows: list[Row]) -> None:
        """Send to every topic and write Redis while the sends fly; a Kafka error (broker
        away, a send timed out) resends them all. Redis is written once."""
        stored = False

        async def send_and_store() -> None:
            nonlocal stored
            futures = [f for topic, items in sends for f in await self.sink.send(topic, items)]
            if not stored:
                await self._retry("Redis write", redis.RedisError, self._in_thread,
                                  self.store.put_rows, rows)
                stored = True
            await asyncio.gather(*futures)

        await self._retry("sending to Kafka", KafkaError, send_and_store)

    def _count(self, batch: list[Message], scored: list[Message], dead: list[Message],
               t_start: float, t_scored: float | None) -> None:
        """The batch's counters, offsets done and latencies: end to end (Kafka timestamp to
        stored) and scoring (None when nothing in the batch went to the scorer)."""
        scoring_ms = (t_scored - t_start) * 1000 if t_scored is not None else None
        log.debug("batch %d: score %.1f ms, sinks %.1f ms", len(batch), scoring_ms or 0.0,
                  (time.perf_counter() - (t_scored or t_start)) * 1000)
        now_ms = time.time() * 1000
        e2e = np.asarray([now_ms - m.timestamp_ms for m in scored if m.timestamp_ms],
                         dtype=float)
        self.stats.add("scored", len(scored))
        self.stats.add("flagged", sum(m.verdict.flagged for m in scored))
        self.stats.add("deadletters", len(dead))
        for m in batch:
            self.stats.consumed(m.topic, m.partition, m.offset)
        self.stats.batch_done(len(batch), e2e, scoring_ms)

    # -- plumbing -----------------------------------------------------------------------
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


def sort_results(refused: list[Message], todo: list[Message], verdicts: list[list[Verdict]]
                 ) -> tuple[list[Message], list[Message]]:
    """(SCORED, dead letters): one Message per claim, in message order; the REFUSED dead
    letters first, then those of scoring (a message with no claim in it is one, INVALID)."""
    judged = [m.judged(v) for m, vs in zip(todo, verdicts, strict=True) for v in vs or [NO_CLAIM]]
    scored = [m for m in judged if m.outcome is Outcome.SCORED]
    return scored, refused + [m for m in judged if m.outcome is not Outcome.SCORED]


def row(m: Message) -> Row:
    """A SCORED message's Redis row: the index fields and the record (Score + claim)."""
    v = m.verdict
    return Row(v.claim_id, v.member_id, v.provider_id, v.flagged, v.scored_at,
               record_bytes(v.score_json, v.claim_json or m.value))

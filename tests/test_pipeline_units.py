"""`Pipeline` on its own, with plain fakes for its collaborators (no broker, no Redis).

The scorer pool is `InlinePool`: the real `stream.scoring.score_share` (parse, validate,
Verdicts) run in this process, messages and Verdicts pickled both ways as the pool's pipes
would, around a `FakeScorer` that builds a Score from the claim's own fields. The Kafka
sink and the store record what they are given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import pickle
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from aiokafka.errors import KafkaTimeoutError

import stream.pipeline
import stream.scoring
from model.claims import Claim, parse_claim
from model.formats import to_fhir
from model.generator import ClaimGenerator
from model.score import Components, Explanation, Score
from stream.deadletter import KEY_MAX
from stream.message import Message, Outcome, Verdict
from stream.metrics import WorkerStats
from stream.pipeline import DIED_ON_IT, Pipeline, sort_results
from stream.scoring import ScoringError
from stream.settings import Settings
from stream.store import Row

SETTINGS = Settings(max_message_bytes=4096, deadletter_raw_bytes=256)
T0 = 1_800_000_000_000  # a Kafka timestamp (ms)


class FakeScorer:
    """Scores a claim 0.9 (flagged) when its claim_id ends in F, else 0.1; raises on
    claim_ids starting with BAD, as a model might on a claim it cannot handle."""

    def score(self, claims: list[Claim]) -> list[Score]:
        if any(c.claim_id.startswith("BAD") for c in claims):
            raise ValueError("the model cannot take it")
        return [Score(claim_id=c.claim_id, member_id=c.member_id, provider_id=c.provider_id,
                      score=0.9 if c.claim_id.endswith("F") else 0.1,
                      flagged=c.claim_id.endswith("F"), threshold=0.5,
                      components=Components(fraud_probability=0.1, anomaly=0.1),
                      explanation=Explanation(reason="test", top_pairs=[],
                                              field_importance={}, surprising_tokens=[]),
                      model_version="test", scored_at=dt.datetime.now(dt.UTC))
                for c in claims]


class InlinePool:
    """Stands in for `ScoringPool`: `score_share` in this process. A share holding a
    message with b"POISON" in it raises ScoringError, as a scoring process that died on
    it would. `gate`, when set, holds each scoring call until it is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # the offsets of each call, in call order
        self.starts = 0
        self.gate: asyncio.Event | None = None

    def start(self) -> None:
        self.starts += 1

    def stop(self) -> None:
        pass

    async def score(self, messages: list[Message]) -> list[list[Verdict]]:
        self.batches.append([m.offset for m in messages])
        if self.gate is not None:
            await self.gate.wait()
        if any(b"POISON" in (m.value or b"") for m in messages):
            raise ScoringError("a scoring process died: killed by a poison message")
        there = pickle.loads(pickle.dumps(messages))
        return pickle.loads(pickle.dumps(stream.scoring.score_share(there)))


class FakeSink:
    """Records every (topic, records) it is asked to send; `fail_sends` sends fail with
    KafkaTimeoutError (as an unreachable broker's would) before any succeeds."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[bytes | None, bytes]]]] = []
        self.fail_sends = 0

    async def start(self, topics: list[str]) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, items: list[tuple[bytes | None, bytes]]
                   ) -> list[asyncio.Future]:
        self.sent.append((topic, list(items)))
        if not items:
            return []
        done = asyncio.get_running_loop().create_future()
        if self.fail_sends:
            self.fail_sends -= 1
            done.set_exception(KafkaTimeoutError())
        else:
            done.set_result(None)
        return [done]

    def on(self, topic: str) -> list[tuple[bytes | None, bytes]]:
        return [kv for t, items in self.sent if t == topic for kv in items]


class FakeStore:
    """Records each batch of rows written; raises ConnectionError while `down`, and waits
    while `gate` is clear (it runs in the pipeline's thread, as Redis calls do)."""

    def __init__(self) -> None:
        self.writes: list[list[Row]] = []
        self.attempts = 0
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def put_rows(self, rows: list[Row]) -> None:
        self.attempts += 1
        self.gate.wait(10)
        if self.down:
            raise redis.ConnectionError("Redis is away")
        self.writes.append(list(rows))


@pytest.fixture(autouse=True)
def fake_scorer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(stream.scoring, "_scorer", FakeScorer())
    monkeypatch.setattr(stream.pipeline, "BACKOFF_FIRST_S", 0.001)
    monkeypatch.setattr(stream.pipeline, "BACKOFF_MAX_S", 0.01)
    yield


class Rig:
    """A Pipeline and the fakes it was built with."""

    def __init__(self) -> None:
        self.pool, self.store, self.sink = InlinePool(), FakeStore(), FakeSink()
        self.stats = WorkerStats()
        self.pipeline = Pipeline(SETTINGS, self.pool, self.store, self.sink, self.stats)


def claims(n: int, seed: int = 3) -> list[dict]:
    return [lc.claim for lc in ClaimGenerator(seed=seed, fraud_rate=0.0).generate(n)]


def msg(value: bytes | None, offset: int, key: bytes | None = b"M1", fmt: str = "claim"
        ) -> Message:
    return Message(value, key, SETTINGS.topic_claims, 0, offset, T0, fmt)


def claim_msg(claim: dict, offset: int, **fields: str) -> Message:
    c = {**claim, **fields}
    return msg(json.dumps(c).encode(), offset, c["member_id"].encode())


def run(pipeline: Pipeline, *batches: list[Message]) -> None:
    """Process the batches as the agent does: each after the one before it."""
    async def go() -> None:
        await pipeline.start()
        before: asyncio.Future | None = None
        for batch in batches:
            before = asyncio.ensure_future(pipeline.process(batch, before))
        await before
        await pipeline.stop()

    asyncio.run(go())


def ids(records: list[tuple[bytes | None, bytes]]) -> list[str]:
    return [json.loads(v)["claim_id"] for _, v in records]


def dead_letters(sink: FakeSink) -> dict[int, dict]:
    """Dead letters by the source offset they name."""
    return {d["offset"]: d for d in (json.loads(v) for _, v in sink.on(SETTINGS.topic_deadletter))}


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


# -- the happy path and the sinks' shape ---------------------------------------------------
def test_a_batch_is_scored_sent_and_stored_in_message_order() -> None:
    r = Rig()
    cs = claims(4)
    cs[2]["claim_id"] += "F"  # flagged by the fake scorer
    run(r.pipeline, [claim_msg(c, i) for i, c in enumerate(cs)])
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [c["claim_id"] for c in cs]
    assert ids(r.sink.on(SETTINGS.topic_flagged)) == [cs[2]["claim_id"]]
    assert all(k == json.loads(v)["member_id"].encode() for k, v in r.sink.sent[0][1])
    [rows] = r.store.writes
    assert [row.claim_id for row in rows] == [c["claim_id"] for c in cs]
    assert [row.flagged for row in rows] == [False, False, True, False]
    for row, (_, score) in zip(rows, r.sink.on(SETTINGS.topic_scored), strict=True):
        record = json.loads(row.record)  # the Score as sent, plus the claim as received
        assert record.pop("claim")["claim_id"] == row.claim_id
        assert record == json.loads(score)
        assert record["latency_ms"] == pytest.approx(row.scored_at * 1000 - T0, abs=1e-2)
    assert (r.stats.counts["scored"], r.stats.counts["flagged"], r.stats.counts["deadletters"]) \
        == (4, 1, 0)
    assert r.stats.offsets == {f"{SETTINGS.topic_claims}:0": 4}


def test_a_converted_claim_is_stored_as_contract_json_not_as_the_message() -> None:
    r = Rig()
    c = claims(1)[0]
    fhir = json.dumps(to_fhir(parse_claim(json.dumps(c).encode()))).encode()
    run(r.pipeline, [msg(fhir, 0, fmt="fhir")])
    [[row]] = r.store.writes
    stored = json.loads(row.record)["claim"]
    assert stored["claim_id"] == c["claim_id"] and "resourceType" not in stored
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [c["claim_id"]]


# -- dead-letter routing ------------------------------------------------------------------
def test_every_kind_of_bad_message_reaches_the_dead_letters_with_its_reason() -> None:
    r = Rig()
    good = claims(1)[0]
    long_key = b"k" * (KEY_MAX + 10)
    batch = [
        claim_msg(good, 0),
        msg(b"x" * 5000, 1, long_key),  # over max_message_bytes (4096)
        msg(None, 2),  # a tombstone
        msg(b"{not json", 3),
        msg(b'{"claim_id": "X1"}', 4),  # JSON, not a claim
        msg(b"\xff\xfe\x00", 5),
        msg(b'{"resourceType": "Patient"}', 6, fmt="fhir"),
    ]
    run(r.pipeline, batch)
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [good["claim_id"]]
    assert r.pool.batches == [[0, 3, 4, 5, 6]]  # refused ones never reach the scorer
    dead = dead_letters(r.sink)
    assert sorted(dead) == [1, 2, 3, 4, 5, 6]
    for offset, words in [(1, "payload too large: 5000 bytes > max_message_bytes 4096"),
                          (2, "empty message (null value)"), (3, "Invalid JSON"),
                          (4, "member_id: Field required"), (5, "not UTF-8 text"),
                          (6, "expected Claim, ExplanationOfBenefit or a Bundle")]:
        assert words in dead[offset]["error"], (offset, dead[offset]["error"])
        assert dead[offset]["topic"] == SETTINGS.topic_claims
    assert dead[1]["truncated"] and dead[1]["size"] == 5000 and len(dead[1]["raw"]) == 256
    assert dict(r.sink.on(SETTINGS.topic_deadletter))[long_key[:KEY_MAX]]  # key cut, kept
    # the refused first, then scoring's, each in message order
    assert [d["offset"] for d in dead.values()] == [1, 2, 3, 4, 5, 6]
    assert r.stats.counts["deadletters"] == 6 and r.stats.counts["received"] == 7
    assert [row.claim_id for row in r.store.writes[0]] == [good["claim_id"]]


def test_a_message_with_no_claim_in_it_is_a_dead_letter_in_order() -> None:
    refused = [msg(None, 0).judged(Verdict(Outcome.REFUSED, "empty"))]
    todo = [msg(b"a", 1), msg(b"b", 2), msg(b"c", 3)]
    scored = Verdict(Outcome.SCORED, claim_id="C")
    ok, dead = sort_results(refused, todo, [[scored, Verdict(Outcome.INVALID, "bad")], [],
                                            [scored]])
    assert [(m.offset, m.outcome) for m in ok] == [(1, Outcome.SCORED), (3, Outcome.SCORED)]
    assert [(m.offset, m.outcome, m.reason) for m in dead] == [
        (0, Outcome.REFUSED, "empty"), (1, Outcome.INVALID, "bad"),
        (2, Outcome.INVALID, "no claim in the message")]


def test_a_claim_the_model_raises_on_is_a_dead_letter_and_the_rest_are_scored() -> None:
    r = Rig()
    cs = claims(3)
    run(r.pipeline, [claim_msg(cs[0], 0), claim_msg(cs[1], 1, claim_id="BAD-1"),
                     claim_msg(cs[2], 2)])
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [cs[0]["claim_id"], cs[2]["claim_id"]]
    assert dead_letters(r.sink)[1]["error"] == \
        "scoring failed: ValueError: the model cannot take it"
    assert r.pool.starts == 0  # the process lived: no restart, no split


# -- the poison-message split -------------------------------------------------------------
def test_a_claim_that_kills_the_scorer_is_dead_lettered_alone_and_the_rest_scored() -> None:
    r = Rig()
    cs = claims(3)
    batch = [claim_msg(cs[0], 0), msg(b'{"claim_id": "POISON"}', 1), claim_msg(cs[1], 2),
             claim_msg(cs[2], 3)]
    run(r.pipeline, batch)
    split = stream.pipeline.CRASHES_BEFORE_SPLIT
    assert r.pool.batches == [[0, 1, 2, 3]] * split + [[0], [1], [2], [3]]
    assert r.pool.starts == split + 1  # restarted after each death, the last one alone
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [c["claim_id"] for c in cs]
    dead = dead_letters(r.sink)
    assert list(dead) == [1] and dead[1]["error"] == DIED_ON_IT.reason
    assert r.stats.counts["retries"] == split
    assert r.stats.offsets == {f"{SETTINGS.topic_claims}:0": 4}


def test_a_batch_that_kills_the_scorer_once_is_retried_whole() -> None:
    r = Rig()
    cs = claims(2)
    batch = [claim_msg(c, i) for i, c in enumerate(cs)]
    real = r.pool.score
    deaths = iter([True])

    async def dies_once(messages: list[Message]) -> list[list[Verdict]]:
        if next(deaths, False):
            r.pool.batches.append([m.offset for m in messages])
            raise ScoringError("a scoring process died: once")
        return await real(messages)

    r.pool.score = dies_once  # type: ignore[method-assign]
    run(r.pipeline, batch)
    assert r.pool.batches == [[0, 1], [0, 1]] and r.pool.starts == 1
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [c["claim_id"] for c in cs]


# -- two batches in flight ----------------------------------------------------------------
def test_the_next_batch_is_scored_while_the_one_before_is_stored_but_sent_after_it() -> None:
    r = Rig()
    cs = claims(4)
    first = [claim_msg(c, i) for i, c in enumerate(cs[:2])]
    second = [claim_msg(c, 2 + i) for i, c in enumerate(cs[2:])]

    async def go() -> None:
        await r.pipeline.start()
        r.store.gate.clear()  # the first batch's Redis write hangs until released
        a = asyncio.ensure_future(r.pipeline.process(first))
        await until(lambda: r.store.attempts == 1)
        b = asyncio.ensure_future(r.pipeline.process(second, a))
        await until(lambda: len(r.pool.batches) == 2)
        await asyncio.sleep(0.05)
        # the second batch is scored, but nothing of it is sent, stored or counted
        assert not a.done() and not b.done()
        assert {i for _, items in r.sink.sent for i in ids(items)} == {c["claim_id"]
                                                                   for c in cs[:2]}
        assert r.stats.offsets == {} and r.stats.counts["scored"] == 0
        r.store.gate.set()
        await b
        await r.pipeline.stop()

    asyncio.run(go())
    assert r.pool.batches == [[0, 1], [2, 3]]
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [c["claim_id"] for c in cs]
    assert [[row.claim_id for row in rows] for rows in r.store.writes] == [
        [c["claim_id"] for c in cs[:2]], [c["claim_id"] for c in cs[2:]]]
    assert r.stats.offsets == {f"{SETTINGS.topic_claims}:0": 4}


def test_one_batch_at_a_time_in_the_scorer() -> None:
    r = Rig()
    cs = claims(2)

    async def go() -> None:
        await r.pipeline.start()
        r.pool.gate = asyncio.Event()
        a = asyncio.ensure_future(r.pipeline.process([claim_msg(cs[0], 0)]))
        b = asyncio.ensure_future(r.pipeline.process([claim_msg(cs[1], 1)], a))
        await until(lambda: len(r.pool.batches) == 1)
        await asyncio.sleep(0.05)
        assert r.pool.batches == [[0]]  # the second waits its turn for the scorer
        r.pool.gate.set()
        await b
        await r.pipeline.stop()

    asyncio.run(go())
    assert r.pool.batches == [[0], [1]]


# -- commit only after the store ----------------------------------------------------------
def test_offsets_are_done_only_after_the_store_write_succeeded() -> None:
    r = Rig()
    cs = claims(3)

    async def go() -> None:
        await r.pipeline.start()
        r.store.down = True
        batch = [claim_msg(c, i) for i, c in enumerate(cs)]
        task = asyncio.ensure_future(r.pipeline.process(batch))
        await until(lambda: r.store.attempts >= 3)
        assert not task.done()  # the agent acks only once process returns
        assert r.stats.offsets == {} and r.stats.counts["scored"] == 0 and not r.store.writes
        r.store.down = False
        await task
        await r.pipeline.stop()

    asyncio.run(go())
    assert len(r.store.writes) == 1 and r.stats.counts["retries"] >= 2
    assert r.stats.offsets == {f"{SETTINGS.topic_claims}:0": 3}
    assert r.stats.counts["scored"] == 3


def test_a_failed_send_is_resent_but_redis_written_once() -> None:
    r = Rig()
    cs = claims(2)
    r.sink.fail_sends = 1  # the first send of the batch times out
    run(r.pipeline, [claim_msg(c, i) for i, c in enumerate(cs)])
    assert ids(r.sink.on(SETTINGS.topic_scored)) == [c["claim_id"] for c in cs] * 2
    assert len(r.store.writes) == 1 and r.store.attempts == 1  # the `stored` flag
    assert r.stats.counts["retries"] == 1
    assert r.stats.offsets == {f"{SETTINGS.topic_claims}:0": 2}


# -- the message crosses to the scoring processes -----------------------------------------
def test_messages_and_verdicts_survive_pickling_and_judging_unchanged() -> None:
    v = Verdict(Outcome.SCORED, claim_id="C1", member_id="M1", provider_id="P1", flagged=True,
                scored_at=1.5, score_json=b"{}", claim_json=b"{}")
    m = Message(b"{}", b"K", "claims.fhir", 3, 7, T0, "fhir")
    assert m.judged(v) == dataclasses.replace(m, verdict=v)  # judged keeps every field
    assert pickle.loads(pickle.dumps(m.judged(v))) == m.judged(v)
    assert pickle.loads(pickle.dumps(m.judged(v))).outcome is Outcome.SCORED


def test_a_model_that_cannot_run_a_pass_at_start_is_reported_in_one_line(monkeypatch) -> None:
    """A scoring process whose warm-up fails (a device out of memory) reports why, as a
    load error does, instead of breaking the pool with a traceback."""
    class Cold:
        def warm_up(self) -> int:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")

    monkeypatch.setattr(stream.scoring, "load_scorer", lambda settings: Cold())
    monkeypatch.setattr(stream.scoring, "exit_with", lambda worker_pid: None)
    monkeypatch.setattr(stream.scoring.signal, "signal", lambda *args: None)  # keep Ctrl-C
    monkeypatch.setattr(stream.scoring, "_scorer", None)
    monkeypatch.setattr(stream.scoring, "_failed", None)
    stream.scoring._load(SETTINGS, worker_pid=0)
    assert stream.scoring._ready() == ("the model could not run a pass: CUDA out of memory. "
                                       "Tried to allocate 2.00 GiB")

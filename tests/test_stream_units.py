"""Pure pieces of the stream package (no services): decoding, dead letters, records."""

from __future__ import annotations

import base64
import json

import pytest

from stream.deadletter import RAW_MAX, dead_letter, reason
from stream.message import Message, Outcome, Verdict
from stream.scoring import split_by_key
from stream.settings import mask_url, parse_broker_url
from stream.store import record_bytes


def msg(value: bytes | None, offset: int = 0, why: str = "why") -> Message:
    return Message(value, b"k", "claims", 3, offset, 1_800_000_000_000
                   ).judged(Verdict(Outcome.INVALID, why))


def test_reasons_name_the_problem() -> None:
    from pydantic import ValidationError

    from model.claims import parse_claim

    for raw, words in [(b"{", "Invalid JSON"), (b"\xc3\x28", "not UTF-8 text: invalid byte 0xc3"),
                       (b'{"claim_id": "A"}', "member_id: Field required")]:
        with pytest.raises(ValidationError) as e:
            parse_claim(raw)
        assert words in reason(raw, e.value)


def test_dead_letter_keeps_text_base64_or_a_marked_prefix() -> None:
    d = json.loads(dead_letter(msg("zoë\n\x00".encode(), 7)))
    assert (d["raw"], d["raw_encoding"], d["truncated"]) == ("zoë\n\x00", "utf-8", False)
    assert (d["topic"], d["partition"], d["offset"], d["error"]) == ("claims", 3, 7, "why")
    d = json.loads(dead_letter(msg(b"\xff\x00")))
    assert d["raw_encoding"] == "base64" and base64.b64decode(d["raw"]) == b"\xff\x00"
    big = "é" * RAW_MAX  # 2 bytes each: the cut lands inside a character
    d = json.loads(dead_letter(msg(big.encode(), why="too large")))
    assert d["truncated"] and d["size"] == 2 * RAW_MAX and d["raw_encoding"] == "utf-8"
    assert big.startswith(d["raw"]) and len(d["raw"]) == RAW_MAX // 2


def test_record_is_the_score_plus_the_claim() -> None:
    rec = json.loads(record_bytes(b'{"claim_id":"C1","score":0.5}', b' {"claim_id":"C1"}\n'))
    assert rec == {"claim_id": "C1", "score": 0.5, "claim": {"claim_id": "C1"}}


@pytest.mark.parametrize(("url", "hosts"), [
    ("kafka://a:9092", ["a:9092"]), ("kafka://a:1,b:2", ["a:1", "b:2"]),
    ("kafka://[::1]:9092", ["[::1]:9092"])])
def test_broker_urls(url: str, hosts: list[str]) -> None:
    assert parse_broker_url(url) == hosts


@pytest.mark.parametrize("url", ["a:9092", "kafka://", "kafka://a", "kafka://u:p@a:1",
                                 "kafka://a:99999", "redis://a:1"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)


def test_mask_url() -> None:
    assert mask_url("rediss://u:p@h:6380/2") == "rediss://u:****@h:6380/2"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_split_by_key_keeps_each_member_in_one_share_in_order() -> None:
    keys = [b"M1", b"M2", b"M1", None, b"M3", b"M1", None]
    values = [b"a", b"b", b"c", b"d", b"e", b"f", b"d"]
    messages = [Message(v, k, "claims", 0, i, None)
                for i, (k, v) in enumerate(zip(keys, values, strict=True))]
    shares = split_by_key(messages, 3)
    assert sorted(i for share in shares for i in share) == list(range(len(keys)))
    assert all(share == sorted(share) for share in shares)  # message order kept
    owner = {i: n for n, share in enumerate(shares) for i in share}
    assert owner[0] == owner[2] == owner[5]  # one member, one process
    assert owner[3] == owner[6]  # no key: the same bytes go the same way
    assert split_by_key(messages, 1) == [list(range(len(keys)))]

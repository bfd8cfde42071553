"""Dead letters: what arrived that is not a claim, and why.

A dead letter (topic `claims.deadletter`, JSON, same key as the source message) says what
arrived and why it is not a claim:

    {"error": "member_age: Input should be a valid integer; ...",
     "raw": "<the message as text>", "raw_encoding": "utf-8" | "base64",
     "size": 123, "truncated": false,
     "topic": "claims", "partition": 2, "offset": 41, "timestamp_ms": 1795674079096,
     "received_at": "2026-11-26T06:22:16.868562+00:00"}

`raw` is the message as UTF-8 text, or base64 when it is not valid UTF-8. Payloads above
`max_message_bytes` are not parsed at all (reason "payload too large"); any raw longer than
`RAW_MAX` bytes is cut to its first `RAW_MAX` bytes (`truncated: true`, `size` keeps the
full length) so a dead letter always fits a default Kafka message (1 MB). The source offset
names the full original, which stays on the claims topic for its retention time.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass

from pydantic import ValidationError

from model.claims import describe_errors

RAW_MAX = 64 * 1024  # bytes of raw payload kept in a dead letter (JSON-escaped <= 384 KiB)
MAX_REASONS = 20  # validation problems listed per message; the rest are counted


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed message: what the pipeline needs from a Faust event."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None  # producer's CreateTime (None when the broker gave none)


def reason(raw: bytes, err: ValidationError) -> str:
    """Why `raw` is not a claim, in one line (invalid UTF-8 named as such)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as u:
        return f"not UTF-8 text: invalid byte 0x{raw[u.start]:02x} at position {u.start}"
    problems = describe_errors(err)
    more = len(problems) - MAX_REASONS
    line = "; ".join(problems[:MAX_REASONS])
    return line + (f"; (and {more} more)" if more > 0 else "")


def dead_letter(m: Incoming, error: str, now: dt.datetime | None = None) -> bytes:
    """The dead-letter JSON for message `m` (see the module docstring for the shape)."""
    raw = m.value or b""
    kept = raw[:RAW_MAX]
    text = _utf8(kept, cut=len(raw) > RAW_MAX)
    doc = {
        "error": error,
        "raw": text if text is not None else base64.b64encode(kept).decode("ascii"),
        "raw_encoding": "utf-8" if text is not None else "base64",
        "size": len(raw),
        "truncated": len(raw) > RAW_MAX,
        "topic": m.topic, "partition": m.partition, "offset": m.offset,
        "timestamp_ms": m.timestamp_ms,
        "received_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
    }
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _utf8(data: bytes, cut: bool) -> str | None:
    """`data` as text, or None if not UTF-8; a cut may split the last character (<= 3 bytes)."""
    for trim in range(4 if cut else 1):
        try:
            return data[:len(data) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None

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
`deadletter_raw_bytes` (default `RAW_MAX`) is cut to that many bytes (`truncated: true`,
`size` keeps the full length), and a source key longer than `KEY_MAX` bytes is cut to
`KEY_MAX` (the key is only routing), so a dead letter always fits a default Kafka message
(1 MB): an oversized dead letter would be refused by the broker and retried forever,
wedging its partition. The source offset names the full original, which stays on the
claims topic for its retention time.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

from pydantic import ValidationError

from model.claims import describe_errors
from stream.message import Message

RAW_MAX = 64 * 1024  # bytes of raw payload kept in a dead letter (JSON-escaped <= 384 KiB)
KEY_MAX = 1024  # bytes of the source key kept as the dead letter's key
MAX_REASONS = 20  # validation problems listed per message; the rest are counted


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


def dead_letter(m: Message, now: dt.datetime | None = None, raw_max: int = RAW_MAX) -> bytes:
    """The dead-letter JSON for message `m`, its error `m.reason` (see the module docstring
    for the shape)."""
    raw = m.value or b""
    kept = raw[:raw_max]
    text = _utf8(kept, cut=len(raw) > raw_max)
    doc = {
        "error": m.reason,
        "raw": text if text is not None else base64.b64encode(kept).decode("ascii"),
        "raw_encoding": "utf-8" if text is not None else "base64",
        "size": len(raw),
        "truncated": len(raw) > raw_max,
        "topic": m.topic, "partition": m.partition, "offset": m.offset,
        "timestamp_ms": m.timestamp_ms,
        "received_at": (now or dt.datetime.now(dt.UTC)).isoformat(),
    }
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The source key, cut to KEY_MAX bytes."""
    return key[:KEY_MAX] if key is not None else None


def _utf8(data: bytes, cut: bool) -> str | None:
    """`data` as text, or None if not UTF-8; a cut may split the last character (<= 3 bytes)."""
    for trim in range(4 if cut else 1):
        try:
            return data[:len(data) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None

"""A claim's one shape in a worker, from the Kafka event to the sinks: `Message`.

    Kafka event       app.message()       Message, Outcome.PENDING
    size screening    stream.pipeline     REFUSED when null or over max_message_bytes
    scoring process   stream.scoring      a Verdict per claim inside: SCORED, INVALID, FAILED
    sinks             stream.pipeline     SCORED: claims.scored (+ claims.flagged) and Redis;
                                          any other outcome: a dead letter with its reason

A message of the contract holds one claim; a FHIR Bundle or an X12 interchange may hold
several, and becomes one Message per claim (the same source fields, a Verdict each).

Messages go to the scoring processes and Verdicts come back, pickled (local pipes, our own
processes). Both pickle as their class and field values (`_Fields.__reduce__`): a frozen
slots dataclass's own `__getstate__`/`__setstate__` take 1.5-3 µs an object longer each way
(timeit, this box), which the worker's event loop would pay once per message sent and once
per claim back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from model.claims import Format


class Outcome(enum.Enum):
    """What became of a claim; every outcome but SCORED (and PENDING) is a dead letter."""

    PENDING = "pending"  # consumed, not judged yet
    SCORED = "scored"  # on claims.scored (claims.flagged too when flagged) and in Redis
    REFUSED = "refused"  # null, or over max_message_bytes: never parsed
    INVALID = "invalid"  # not a claim: not JSON, not the contract, not FHIR/X12, none inside
    FAILED = "failed"  # a valid claim the scorer raised on, or whose process died on it


class _Fields:
    """Pickled as (class, field values in order): see the module docstring."""

    __slots__ = ()

    def __reduce__(self) -> tuple:
        return type(self), tuple([getattr(self, f) for f in self.__slots__])


@dataclass(frozen=True, slots=True)
class Verdict(_Fields):
    """One claim's outcome, as a scoring process sends it back: a SCORED claim's Score as
    the sinks need it (the fields Redis indexes, the bytes to send and store), or the
    reason it is a dead letter."""

    outcome: Outcome
    reason: str = ""  # why it is a dead letter: the dead letter's "error"
    claim_id: str = ""
    member_id: str = ""  # also the key on claims.scored and claims.flagged
    provider_id: str = ""
    flagged: bool = False
    scored_at: float = 0.0  # epoch seconds
    score_json: bytes = b""  # the Score, as sent and stored
    claim_json: bytes = b""  # the claim as contract JSON when converted (FHIR, X12), else b""


PENDING = Verdict(Outcome.PENDING)


@dataclass(frozen=True, slots=True)
class Message(_Fields):
    """One consumed message, and what became of the claim in it (`verdict`)."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None  # producer's CreateTime (None when the broker gave none)
    fmt: Format = "claim"  # the input format its topic carries
    verdict: Verdict = PENDING

    @property
    def outcome(self) -> Outcome:
        return self.verdict.outcome

    @property
    def reason(self) -> str:
        return self.verdict.reason

    def judged(self, verdict: Verdict) -> Message:
        """This message with `verdict`: for a message with several claims, one of them.
        (Built directly, once per claim: `dataclasses.replace` takes ~1 µs longer.)"""
        return Message(value=self.value, key=self.key, topic=self.topic,
                       partition=self.partition, offset=self.offset,
                       timestamp_ms=self.timestamp_ms, fmt=self.fmt, verdict=verdict)

"""Investigator feedback: a label on a scored claim, kept in Redis and published to a topic.

    in the store                  the latest Feedback (JSON), same TTL as the claim record
                                  (ScoreStore: put_feedback, feedback, all_feedback)
    topic `claims.feedback`       every Feedback as JSON, key = claim_id (contract:
                                  docs/console.md)

One label per claim: a second label overwrites the first in Redis (the investigator changed
their mind) and is published again; consumers keep the newest by `labelled_at`. The claim
itself travels with the label (when the store still has it), so a retraining job needs
nothing but the topic or the Redis keys.

    >>> Feedback.model_validate({"claim_id": "C-1", "label": "confirmed"}).label
    'fraud'
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import Any, Literal

from kafka import KafkaProducer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stream.preflight import create_topics
from stream.settings import Settings
from stream.store import ScoreStore

Label = Literal["fraud", "false_alarm"]
ALIASES = {"confirmed": "fraud", "confirmed_fraud": "fraud", "false-alarm": "false_alarm"}


class FeedbackIn(BaseModel):
    """What an investigator sends: `POST /api/claims/{id}/feedback`."""

    model_config = ConfigDict(extra="forbid")

    label: Label = Field(description='"fraud" (alias "confirmed") or "false_alarm"')
    note: str | None = Field(None, max_length=1000, description="free text, at most 1000 chars")

    @field_validator("label", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return ALIASES.get(v, v) if isinstance(v, str) else v


class Feedback(FeedbackIn):
    """What is stored and published: the label, the Score it answers, and the claim."""

    claim_id: str
    labelled_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    score: float | None = Field(None, description="the Score the investigator saw")
    flagged: bool | None = None
    model_version: str | None = None
    claim: dict | None = Field(None, description="the claim as received, for retraining")


class FeedbackSink:
    """Stores feedback in Redis and publishes it with kafka-python (producer made lazily).

    `put` waits for the broker's acknowledgement (up to `timeout` s), so a 200 answer to the
    investigator means the label is on the topic. Raises redis.RedisError or a
    kafka.errors.KafkaError when either service is down; the Redis write comes first.
    """

    def __init__(self, settings: Settings, store: ScoreStore, timeout: float = 10.0) -> None:
        self.settings, self.store, self.timeout = settings, store, timeout
        self.topic = settings.topic_feedback
        self._producer = None
        self._lock = threading.Lock()

    def get(self, claim_id: str) -> Feedback | None:
        raw = self.store.feedback(claim_id)
        return Feedback.model_validate_json(raw) if raw is not None else None

    def put(self, claim_id: str, given: FeedbackIn, record: dict | None) -> Feedback:
        record = record or {}
        fb = Feedback(claim_id=claim_id, label=given.label, note=given.note,
                      score=record.get("score"), flagged=record.get("flagged"),
                      model_version=record.get("model_version"), claim=record.get("claim"))
        body = fb.model_dump_json().encode()
        self.store.put_feedback(claim_id, body)
        self.producer().send(self.topic, key=claim_id.encode(), value=body).get(self.timeout)
        return fb

    def producer(self):
        with self._lock:
            if self._producer is None:


                with contextlib.suppress(Exception):  # an existing topic, or auto-create
                    create_topics(self.settings, [self.topic], partitions=1)
                self._producer = KafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                    compression_type=self.settings.compression_type,
                    client_id="claimscope-console", **self.settings.kafka_security())
            return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)

"""Member and provider reference data in Redis, for the workers: the stream–table join.

A payer's FHIR feed sends ExplanationOfBenefits whose patient is `Patient/1` and whose
provider is `Organization?identifier=…`, and ships those resources apart. `claimscope
reference load FILE…` reads them (`model.formats.References`: FHIR or CSV) and copies them
here; each scoring process looks a claim's references up here when the claim and its Bundle
do not carry them, and an X12 claim's provider taxonomy by NPI (and its member, without
DMG). A reference found nowhere still gives a claim, its member or provider unknown
(docs/formats.md, "Unknowns").

Keys, under the worker's key prefix:

    ref:res              hash: "Patient/1" (or a fullUrl) -> the resource's JSON
    ref:url              hash: fullUrl -> that key
    ref:id:<json>        set: the keys of the resources with identifier
                         [type, system or null, value]
    ref:keyids:<key>     set: the ref:id: keys a resource is indexed under
    ref:ids              set: every ref:id: and ref:keyids: key, so that `clear` needs
                         no SCAN

Loading adds and replaces resources by key; a reloaded resource leaves the identifier
entries it no longer carries (as the in-memory `References` does), so a claim never joins
a member through an identifier that has moved on. Loading is not atomic: while a load
runs, a worker sees part of it, and after `clear` none.

Cost: lookups are sequential round trips, made only for what a claim does not carry: a
FHIR reference not contained nor in its Bundle takes 2 (URL, then key), plus one per
provider type for an identifier; an X12 claim takes 3 for each NPI's taxonomy (rendering,
billing) and, without DMG, 3 more for the member. A worker asks whether any reference
data is loaded at most every 5 s and makes no lookups while none is (so a load reaches
the workers within 5 s). Not measured in the bench (which publishes contract JSON).
"""

from __future__ import annotations

import json
import time

import redis

from model.formats.references import References

CHUNK = 1_000  # resources a pipeline round trip
EMPTY_CHECK_S = 5.0  # how often a worker asks whether any reference data is loaded


class RedisReferences(References):
    """`References` whose storage is Redis: the same lookups, nothing held in memory.
    Filled with `store` (the in-memory `add` and `read_file` are not for this class)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        super().__init__()
        self.client, self.prefix = client, prefix
        self._checked_at, self._held = -EMPTY_CHECK_S, False

    def __bool__(self) -> bool:  # not len(): what is held is in Redis
        return True

    def _empty(self) -> bool:
        """Whether no reference data is loaded, asked at most every EMPTY_CHECK_S: a
        worker without reference data makes no lookups (an X12 claim would make 3-6)."""
        now = time.monotonic()
        if now >= self._checked_at + EMPTY_CHECK_S:
            self._checked_at = now
            self._held = bool(self.client.exists(f"{self.prefix}ref:res"))
        return not self._held

    def _resource(self, key: str) -> dict | None:
        if self._empty():
            return None
        raw = self.client.hget(f"{self.prefix}ref:res", key)
        return json.loads(raw) if raw else None

    def _keys(self, ident: tuple[str, str | None, str]) -> set[str]:
        if self._empty():
            return set()
        return {k.decode() for k in self.client.smembers(self._ident_key(ident))}

    def _url_key(self, url: str) -> str | None:
        if self._empty():
            return None
        raw = self.client.hget(f"{self.prefix}ref:url", url)
        return raw.decode() if raw else None

    def _ident_key(self, ident: tuple[str, str | None, str]) -> str:
        return f"{self.prefix}ref:id:{json.dumps(list(ident), separators=(',', ':'))}"

    def store(self, refs: References) -> int:
        """Copy `refs` in, two pipelines per CHUNK resources (read what each key was indexed
        under, then write); how many resources."""
        entries = list(refs.entries())
        registry = f"{self.prefix}ref:ids"
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start:start + CHUNK]
            read = self.client.pipeline(transaction=False)
            for key, _, _ in chunk:
                read.smembers(self._key_ids(key))
            before = read.execute()
            pipe = self.client.pipeline(transaction=False)
            for (key, res, idents), old in zip(chunk, before, strict=True):
                new = {self._ident_key(i) for i in idents}
                for gone in {k.decode() for k in old} - new:
                    pipe.srem(gone, key)
                pipe.delete(self._key_ids(key))
                pipe.hset(f"{self.prefix}ref:res", key, json.dumps(res, separators=(",", ":")))
                for ident in new:
                    pipe.sadd(ident, key)
                if new:
                    pipe.sadd(self._key_ids(key), *new)
                    pipe.sadd(registry, self._key_ids(key), *new)
            pipe.execute()
        urls = refs.urls()
        if urls:
            self.client.hset(f"{self.prefix}ref:url", mapping=urls)
        return len(entries)

    def _key_ids(self, key: str) -> str:
        return f"{self.prefix}ref:keyids:{key}"

    def count(self) -> int:
        """Resources held (a CSV provider counts once per provider type it answers to)."""
        return int(self.client.hlen(f"{self.prefix}ref:res"))

    def clear(self) -> int:
        """Remove all reference data; how many keys were removed."""
        ids = f"{self.prefix}ref:ids"
        keys = [f"{self.prefix}ref:res", f"{self.prefix}ref:url",
                *(k.decode() for k in self.client.sscan_iter(ids, count=CHUNK)), ids]
        removed = 0
        for i in range(0, len(keys), CHUNK):  # UNLINK: a big hash is freed off the main thread
            removed += int(self.client.unlink(*keys[i:i + CHUNK]))
        return removed

"""Member and provider reference data in Redis, for the workers: the stream–table join.

A payer's FHIR feed sends ExplanationOfBenefits whose patient is `Patient/1` and whose
provider is `Organization?identifier=…`, and ships those resources apart. `claimscope
reference load FILE…` reads them (`model.formats.References`: FHIR or CSV) and copies them
here; each scoring process looks a claim's references up here when the claim and its Bundle
do not carry them. A reference found nowhere still gives a claim, its member or provider
unknown (docs/formats.md, "Unknowns").

Keys, under the worker's key prefix:

    ref:res              hash: "Patient/1" (or a fullUrl) -> the resource's JSON
    ref:url              hash: fullUrl -> that key
    ref:id:<json>        set: the keys of the resources with identifier
                         [type, system or null, value]
    ref:ids              set: every ref:id: key, so that `clear` needs no SCAN

Loading adds and replaces resources by key. An identifier a reloaded resource no longer
carries still points at its key (which now holds the new resource): `reference clear`,
then load, to start afresh. Lookups are one round trip each, and happen only for a
reference the claim does not resolve itself (about 0.1 ms a claim on a local Redis).
"""

from __future__ import annotations

import json

import redis

from model.formats.references import References

CHUNK = 1_000  # resources a pipeline round trip


class RedisReferences(References):
    """`References` whose storage is Redis: the same lookups, nothing held in memory."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        super().__init__()
        self.client, self.prefix = client, prefix

    def _resource(self, key: str) -> dict | None:
        raw = self.client.hget(f"{self.prefix}ref:res", key)
        return json.loads(raw) if raw else None

    def _keys(self, ident: tuple[str, str | None, str]) -> set[str]:
        return {k.decode() for k in self.client.smembers(self._ident_key(ident))}

    def _url_key(self, url: str) -> str | None:
        raw = self.client.hget(f"{self.prefix}ref:url", url)
        return raw.decode() if raw else None

    def _ident_key(self, ident: tuple[str, str | None, str]) -> str:
        return f"{self.prefix}ref:id:{json.dumps(list(ident), separators=(',', ':'))}"

    def store(self, refs: References) -> int:
        """Copy `refs` in, a pipeline per CHUNK resources; how many resources."""
        n = 0
        pipe = self.client.pipeline(transaction=False)
        for key, res, idents in refs.entries():
            pipe.hset(f"{self.prefix}ref:res", key, json.dumps(res, separators=(",", ":")))
            for ident in idents:
                pipe.sadd(self._ident_key(ident), key)
                pipe.sadd(f"{self.prefix}ref:ids", self._ident_key(ident))
            n += 1
            if n % CHUNK == 0:
                pipe.execute()
        for url, key in refs.urls().items():
            pipe.hset(f"{self.prefix}ref:url", url, key)
        pipe.execute()
        return n

    def count(self) -> int:
        """Resources held (a CSV provider counts once per provider type it answers to)."""
        return int(self.client.hlen(f"{self.prefix}ref:res"))

    def clear(self) -> int:
        """Remove all reference data; how many keys were removed."""
        ids = f"{self.prefix}ref:ids"
        keys = [f"{self.prefix}ref:res", f"{self.prefix}ref:url", ids,
                *(k.decode() for k in self.client.smembers(ids))]
        removed = 0
        for i in range(0, len(keys), CHUNK):
            removed += int(self.client.delete(*keys[i:i + CHUNK]))
        return removed

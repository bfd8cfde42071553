"""ScoreStore: Scores in Redis, in the key layout other teams read (docs/reliability.md).

    {prefix}claim:{claim_id}      the Score as JSON (+ "claim": the claim as received), TTL
    {prefix}recent, {prefix}flagged    sorted sets of claim ids by scored_at, trimmed
    {prefix}member:{member_id}, {prefix}provider:{provider_id}   same, trimmed, with a TTL
    {prefix}feedback:{claim_id}   the console's latest label (JSON, `stream.feedback`), TTL

This class is the only code that knows the layout: workers, consoles, the CLI and the
feedback sink go through its methods, never through the Redis client or the key names.

Writes are one server-side Lua script per batch (one round trip; redis-py would otherwise
spend ~15 µs of Python per command on ~5 commands per claim), its arguments joined
(`stream.lua`), and idempotent: re-processing a claim after a crash rewrites the same key
and re-adds the same sorted-set member, so nothing is ever counted twice. The script names
its keys in ARGV, not KEYS: fine on one Redis (primary/replica, Sentinel), not on Redis
Cluster.
Reads return `Score` objects; `record()` and `flagged_records()` return the stored records
(the Score's fields plus "claim") for consoles.

    >>> from stream.dev.services import Services
    >>> with Services.start(broker=False) as svc:
    ...     ScoreStore.from_settings(svc.settings).flagged(5)
    []
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import redis

from model.score import Score
from stream.lua import SPLIT, joined
from stream.settings import Settings


def redis_client(settings: Settings, timeout: float | None = 10.0) -> redis.Redis:
    """A redis-py client for `settings.redis_url` (TLS CA from settings for rediss://)."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                              "health_check_interval": 30}
    if settings.redis_url.startswith("rediss://") and settings.redis_ca_file:
        kwargs["ssl_ca_certs"] = str(settings.redis_ca_file)
    return redis.Redis.from_url(settings.redis_url, **kwargs)

# ARGV: prefix, claim ttl, recent bound, index bound, index ttl, then per batch: claim_ids,
#       scored_at (epoch s), member_ids, provider_ids (each newline-joined), flags ("0110..."),
#       record lengths (comma-joined) and the records back to back
PUT_SCRIPT = SPLIT + """
local p = ARGV[1]
local ttl, rmax = tonumber(ARGV[2]), tonumber(ARGV[3])
local imax, ittl = tonumber(ARGV[4]), tonumber(ARGV[5])
local ids, times = split(ARGV[6]), split(ARGV[7])
local members, providers = split(ARGV[8]), split(ARGV[9])
local flags, records = ARGV[10], ARGV[12]
local indexes, flagged = {}, false
local i, at = 0, 1
for length in string.gmatch(ARGV[11], '%d+') do
  i = i + 1
  local id, ts, stop = ids[i], times[i], at + tonumber(length)
  redis.call('SET', p .. 'claim:' .. id, string.sub(records, at, stop - 1), 'EX', ttl)
  at = stop
  redis.call('ZADD', p .. 'recent', ts, id)
  if string.byte(flags, i) == 49 then  -- "1"
    redis.call('ZADD', p .. 'flagged', ts, id)
    flagged = true
  end
  for _, key in ipairs({p .. 'member:' .. members[i], p .. 'provider:' .. providers[i]}) do
    redis.call('ZADD', key, ts, id)
    indexes[key] = true
  end
end
redis.call('ZREMRANGEBYRANK', p .. 'recent', 0, -rmax - 1)
if flagged then redis.call('ZREMRANGEBYRANK', p .. 'flagged', 0, -rmax - 1) end
for key in pairs(indexes) do
  redis.call('ZREMRANGEBYRANK', key, 0, -imax - 1)
  redis.call('EXPIRE', key, ittl)
end
return #ARGV
"""


class Row(NamedTuple):
    """One record to store: the index fields and the record JSON (Score [+ claim])."""

    claim_id: str
    member_id: str
    provider_id: str
    flagged: bool
    scored_at: float  # epoch seconds
    record: bytes


class ScoreStore:
    """Scores in Redis: batch writes for workers, small reads for users and consoles."""

    def __init__(self, client: redis.Redis, prefix: str = "cs:", *, claim_ttl_s: int = 7 * 86400,
                 recent_max: int = 10_000, index_max: int = 1_000,
                 index_ttl_s: int = 30 * 86400) -> None:
        self._r = client
        self._prefix = prefix
        self.claim_ttl_s, self.index_ttl_s = claim_ttl_s, index_ttl_s
        self.recent_max, self.index_max = recent_max, index_max
        self._put = client.register_script(PUT_SCRIPT)

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoreStore:
        return cls(redis_client(settings), settings.key_prefix, claim_ttl_s=settings.claim_ttl_s,
                   recent_max=settings.recent_max, index_max=settings.index_max,
                   index_ttl_s=settings.index_ttl_s)

    # -- keys (private: the layout is this class's alone) ---------------------------------
    def _key(self, kind: str, ident: str = "") -> str:
        return f"{self._prefix}{kind}:{ident}" if ident else f"{self._prefix}{kind}"

    def _claim_key(self, claim_id: str) -> str:
        return self._key("claim", claim_id)

    # -- writes -------------------------------------------------------------------------
    def put_many(self, scores: Sequence[Score], payloads: Sequence[bytes] | None = None,
                 claims: Sequence[bytes | None] | None = None) -> None:
        """Write Scores and their indexes in one round trip (one server-side script): for
        Scores computed outside a worker (a batch re-score, a test fixture), in the layout
        the worker writes.

        `payloads` are the Scores already serialised; `claims` the raw claim JSON stored
        beside each Score. Raises redis.RedisError when Redis cannot be reached; writing
        again is safe.
        """
        payloads = payloads or [s.model_dump_json().encode() for s in scores]
        claims = claims or [None] * len(scores)
        self.put_rows([Row(s.claim_id, s.member_id, s.provider_id, s.flagged,
                           s.scored_at.timestamp(), record_bytes(p, c))
                       for s, p, c in zip(scores, payloads, claims, strict=True)])

    def put_rows(self, rows: Sequence[Row]) -> None:
        """`put_many` for callers that already hold the fields and the record bytes."""
        if not rows:
            return
        self._put(keys=[], args=[
            self._prefix, self.claim_ttl_s, self.recent_max, self.index_max, self.index_ttl_s,
            joined(r.claim_id for r in rows), joined(repr(r.scored_at) for r in rows),
            joined(r.member_id for r in rows), joined(r.provider_id for r in rows),
            "".join("1" if r.flagged else "0" for r in rows),
            ",".join(str(len(r.record)) for r in rows), b"".join(r.record for r in rows)])

    # -- reads --------------------------------------------------------------------------
    def record(self, claim_id: str) -> dict | None:
        """The stored record as a dict: the Score's fields plus "claim" when stored."""
        raw = self._r.get(self._claim_key(claim_id))
        return json.loads(raw) if raw is not None else None

    def get(self, claim_id: str) -> Score | None:
        """The Score of one claim, or None (never scored, or expired after claim_ttl_s)."""
        raw = self._r.get(self._claim_key(claim_id))
        return parse_record(raw) if raw is not None else None

    def recent(self, n: int = 20) -> list[Score]:
        """The n most recently scored claims, newest first."""
        return self._index(self._key("recent"), n)

    def flagged(self, n: int = 20) -> list[Score]:
        """The n most recently flagged claims, newest first."""
        return self._index(self._key("flagged"), n)

    def flagged_records(self, n: int = 20) -> list[dict[str, Any]]:
        """`flagged`, as stored records: the Score's fields plus "claim" when stored (for
        consoles that filter on the claim)."""
        return [json.loads(raw) for raw in self._index_raw(self._key("flagged"), n)]

    def by_member(self, member_id: str, n: int = 20) -> list[Score]:
        return self._index(self._key("member", member_id), n)

    def by_provider(self, provider_id: str, n: int = 20) -> list[Score]:
        return self._index(self._key("provider", provider_id), n)

    def _index(self, key: str, n: int) -> list[Score]:
        return [parse_record(raw) for raw in self._index_raw(key, n)]

    def _index_raw(self, key: str, n: int) -> list[bytes]:
        """Two round trips: ids from the index, then MGET; expired records are skipped."""
        if n <= 0:
            return []
        ids = [i.decode() for i in self._r.zrevrange(key, 0, n - 1)]
        if not ids:
            return []
        raws = self._r.mget([self._claim_key(i) for i in ids])
        return [raw for raw in raws if raw is not None]

    # -- feedback (the console's labels; the Feedback model is stream.feedback's) -------
    def put_feedback(self, claim_id: str, feedback: bytes) -> None:
        """Store a claim's label (Feedback JSON) with the claim record's TTL; a new label
        for the same claim replaces the old one."""
        self._r.set(self._key("feedback", claim_id), feedback, ex=self.claim_ttl_s)

    def feedback(self, claim_id: str) -> bytes | None:
        """The claim's latest label as stored (Feedback JSON), or None."""
        return self._r.get(self._key("feedback", claim_id))

    def all_feedback(self, chunk: int = 1000) -> Iterator[bytes]:
        """Every stored label (Feedback JSON), in no particular order: SCAN, then one MGET
        per `chunk` keys; a label that expires in between is skipped."""
        keys = list(self._r.scan_iter(match=self._key("feedback", "*"), count=chunk))
        for i in range(0, len(keys), chunk):
            yield from (raw for raw in self._r.mget(keys[i:i + chunk]) if raw is not None)

    # -- housekeeping -------------------------------------------------------------------
    def count(self, chunk: int = 1000) -> int:
        """How many claim records are stored now (a SCAN of the keys: for checks and
        operators counting what arrived, never for the stream's own path). A SCAN may
        return a key twice while Redis resizes its table, so the keys are counted once."""
        return len(set(self._r.scan_iter(match=self._claim_key("*"), count=chunk)))

    def purge(self, chunk: int = 1000) -> int:
        """Delete every key under this store's prefix (records, indexes, labels, and the
        cross-claim checks' state, which shares the prefix): for throwaway namespaces such
        as a benchmark run's. Returns how many keys were deleted."""
        keys = list(self._r.scan_iter(match=self._prefix + "*", count=chunk))
        for i in range(0, len(keys), chunk):
            self._r.unlink(*keys[i:i + chunk])
        return len(keys)

    def close(self) -> None:
        self._r.close()


def record_bytes(score_json: bytes, claim_json: bytes | None) -> bytes:
    """The Score JSON object with `"claim": <claim JSON>` appended, without re-serialising.

    The claim bytes were validated as one JSON object, so splicing keeps the record valid
    JSON; Score fields stay at top level for readers that ignore "claim".
    """
    if claim_json is None:
        return score_json
    return score_json[:-1] + b',"claim":' + claim_json.strip() + b"}"


def parse_record(raw: bytes | str) -> Score:
    data = json.loads(raw)
    data.pop("claim", None)
    return Score.model_validate(data)

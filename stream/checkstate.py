"""Cross-claim check state in Redis, so duplicate billing and member velocity survive worker
restarts and rebalances (a claim's member may move to another worker's partition).

Keys (under `{prefix}check:`, each with a TTL refreshed on write):

    {prefix}check:line:{member}|{provider}|{date}|{code}   first claim_id billing that line
    {prefix}check:member:{member}                          zset claim_id -> service day

Each `CheckState` call is one Lua script (one round trip per batch, no per-command
Python cost; keys named in ARGV, so one Redis, not Redis Cluster). Both are idempotent per
claim_id: `SET NX GET` keeps the first owner of a line, so a redelivered claim finds itself
and is not its own duplicate; the member zset is keyed by claim_id, so it counts once.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

MEMBER_BOUND = 512  # claims remembered per member: far more than any velocity window needs


# ARGV: base, ttl, then (line key, claim_id) pairs -> the first claim_id of each line
LINES_SCRIPT = """
local out = {}
for i = 3, #ARGV, 2 do
  local old = redis.call('SET', ARGV[1] .. 'line:' .. ARGV[i], ARGV[i + 1], 'NX', 'GET',
                         'EX', ARGV[2])
  out[#out + 1] = old or ARGV[i + 1]
end
return out
"""

# ARGV: base, ttl, bound, then (member, claim_id, day) triples
#   -> per distinct member, in first-seen order: [claim_id, day, claim_id, day, ...]
MEMBERS_SCRIPT = """
local seen, order = {}, {}
for i = 4, #ARGV, 3 do
  local key = ARGV[1] .. 'member:' .. ARGV[i]
  redis.call('ZADD', key, ARGV[i + 2], ARGV[i + 1])
  if not seen[key] then
    seen[key] = true
    order[#order + 1] = key
  end
end
local out = {}
for _, key in ipairs(order) do
  redis.call('ZREMRANGEBYRANK', key, 0, -tonumber(ARGV[3]) - 1)
  redis.call('EXPIRE', key, ARGV[2])
  out[#out + 1] = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
end
return out
"""


class RedisCheckState:
    """`model.checks.CheckState` over Redis (needs Redis >= 7.0 for SET NX GET)."""

    def __init__(self, client: redis.Redis, prefix: str = "cs:", ttl_s: int = 90 * 86400
                 ) -> None:
        self.r = client
        self.base = f"{prefix}check:"
        self.ttl_s = ttl_s
        self._lines = client.register_script(LINES_SCRIPT)
        self._members = client.register_script(MEMBERS_SCRIPT)

    def claim_lines(self, keys: Sequence[str], claim_ids: Sequence[str]) -> list[str | None]:
        """Record `keys[i] -> claim_ids[i]` where absent; return the id each key had first.

        Lines repeated within the batch: the script runs in order, so the later ones see
        the earlier owner.
        """
        if not keys:
            return []
        args: list[str | int] = [self.base, self.ttl_s]
        for key, cid in zip(keys, claim_ids, strict=True):
            args += [key, cid]
        return [o.decode() for o in self._lines(keys=[], args=args)]

    def member_days(self, members: Sequence[str], claim_ids: Sequence[str],
                    days: Sequence[int]) -> list[dict[str, int]]:
        """Record each (member, claim_id, day); return each member's claim_id -> day."""
        if not members:
            return []
        args: list[str | int] = [self.base, self.ttl_s, MEMBER_BOUND]
        for m, cid, day in zip(members, claim_ids, days, strict=True):
            args += [m, cid, day]
        unique = list(dict.fromkeys(members))
        rows = self._members(keys=[], args=args)
        seen = {m: {cid.decode(): int(day) for cid, day in zip(row[::2], row[1::2],
                                                               strict=True)}
                for m, row in zip(unique, rows, strict=True)}
        return [seen[m] for m in members]  # shared per member: the checks only read them

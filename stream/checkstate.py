"""Cross-claim check state in Redis, so duplicate billing and member velocity survive worker
restarts and rebalances (a claim's member may move to another worker's partition).

Keys (under `{prefix}check:`, each with a TTL refreshed on write):

    {prefix}check:line:{member}|{provider}|{date}|{code}   first claim_id billing that line
    {prefix}check:member:{member}                          zset "claim_id kind" -> service day
    {prefix}check:day:{member}|{provider}|{date}           hash claim_id -> its service lines
                                                           (the payer edits' day: model.edits)

Each `CheckState` call is one Lua script: one round trip per batch, its inputs as a few
joined strings (`stream.lua`) and its answer as one string. (Returning each member's
history for Python to count was ~15,000 replies to parse per 1,000 claims in the bench's
stream, the scoring processes' largest cost after the model.) Keys are named in ARGV: one
Redis, not Redis Cluster. Both calls are idempotent per claim_id: `SET NX GET` keeps the
first owner of a line, so a redelivered claim finds itself and is not its own duplicate;
the member zset and the day hash are keyed by claim_id, so a claim counts once.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from stream.lua import SPLIT, joined

MEMBER_BOUND = 512  # claims remembered per member: far more than any velocity window needs

# ARGV: base, ttl, line keys, claim_ids -> the first claim_id of each line, newline-joined
LINES_SCRIPT = SPLIT + """
local keys, ids = split(ARGV[3]), split(ARGV[4])
local out = {}
for i = 1, #keys do
  local old = redis.call('SET', ARGV[1] .. 'line:' .. keys[i], ids[i], 'NX', 'GET',
                         'EX', ARGV[2])
  out[i] = old or ids[i]
end
return table.concat(out, '\\n')
"""

# ARGV: base, ttl, bound, window, members, claim_ids, days, kinds -> per claim (newline-
# joined), space-joined "kind=n": how many of its member's claims of each kind lie within
# `window` days, later claims of the batch excluded. A zset member is "claim_id kind".
MEMBERS_SCRIPT = SPLIT + """
local members, ids, days, kinds = split(ARGV[5]), split(ARGV[6]), split(ARGV[7]), split(ARGV[8])
local ttl, bound, window = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local keys, touched = {}, {}
for i = 1, #members do
  keys[i] = ARGV[1] .. 'member:' .. members[i]
  redis.call('ZADD', keys[i], days[i], ids[i] .. ' ' .. kinds[i])
  touched[keys[i]] = true
end
for key in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', key, 0, -bound - 1)
  redis.call('EXPIRE', key, ttl)
end
local later, near = {}, {}
for i = #members, 1, -1 do
  local day = tonumber(days[i])
  local after = later[keys[i]] or {}
  later[keys[i]] = after
  local counts, order = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', keys[i], day - window + 1, day + window - 1,
                                'BYSCORE')) do
    if not after[m] then
      local k = string.sub(m, string.find(m, ' ', 1, true) + 1)
      if not counts[k] then order[#order + 1] = k; counts[k] = 0 end
      counts[k] = counts[k] + 1
    end
  end
  after[ids[i] .. ' ' .. kinds[i]] = true
  local parts = {}
  for _, k in ipairs(order) do parts[#parts + 1] = k .. '=' .. counts[k] end
  near[i] = table.concat(parts, ' ')
end
return table.concat(near, '\\n')
"""


# ARGV: base, ttl, days, claim_ids, lines -> per entry (newline-joined) the lines of the
# other claims under its day, tab-joined, other claims later in the batch excluded
DAY_SCRIPT = SPLIT + """
local days, ids, lines = split(ARGV[3]), split(ARGV[4]), split(ARGV[5])
for i = 1, #days do
  local key = ARGV[1] .. 'day:' .. days[i]
  redis.call('HSET', key, ids[i], lines[i])
  redis.call('EXPIRE', key, ARGV[2])
end
local later, out = {}, {}
for i = #days, 1, -1 do
  local after = later[days[i]] or {}
  later[days[i]] = after
  local all, mine = redis.call('HGETALL', ARGV[1] .. 'day:' .. days[i]), {}
  for j = 1, #all, 2 do
    if all[j] ~= ids[i] and not after[all[j]] then mine[#mine + 1] = all[j + 1] end
  end
  after[ids[i]] = true
  out[i] = table.concat(mine, '\\t')
end
return table.concat(out, '\\n')
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
        self._day = client.register_script(DAY_SCRIPT)

    def claim_lines(self, keys: Sequence[str], claim_ids: Sequence[str]) -> list[str | None]:
        """Record `keys[i] -> claim_ids[i]` where absent; return the id each key had first.

        Lines repeated within the batch: the script runs in order, so the later ones see
        the earlier owner.
        """
        if not keys:
            return []
        reply = self._lines(keys=[], args=[self.base, self.ttl_s, joined(keys),
                                            joined(claim_ids)])
        return reply.decode().split("\n")

    def member_near(self, members: Sequence[str], claim_ids: Sequence[str],
                    days: Sequence[int], kinds: Sequence[str], window: int
                    ) -> list[dict[str, int]]:
        """See `model.checks.CheckState.member_near`; the counting runs in Redis."""
        if not members:
            return []
        reply = self._members(keys=[], args=[
            self.base, self.ttl_s, MEMBER_BOUND, window, joined(members), joined(claim_ids),
            joined(days), joined(kinds)])
        return [{k: int(n) for k, n in (kv.split("=") for kv in line.split())}
                for line in reply.decode().split("\n")]

    def day_lines(self, days: Sequence[str], claim_ids: Sequence[str], lines: Sequence[str]
                  ) -> list[list[str]]:
        """See `model.checks.CheckState.day_lines`; one round trip."""
        if not days:
            return []
        reply = self._day(keys=[], args=[self.base, self.ttl_s, joined(days),
                                          joined(claim_ids), joined(lines)])
        return [[t for t in entry.split("\t") if t] for entry in reply.decode().split("\n")]

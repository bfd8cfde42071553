"""Provider profiles and their risk in Redis: kept by the scoring processes as claims are
scored, ranked by the leader worker, read by the CLI and the console.

Keys (under `{prefix}profile:`; each profile key's TTL is refreshed on write):

    {prefix}profile:p:{provider}        hash "group" -> "specialty|place" (model.peers),
                                        "w|{week}" -> 1 for each week it has counts in
    {prefix}profile:w:{provider}:{week} hash "measure|stratum|n" and "...|k" -> the week's
                                        counts (one small hash a week, ~13 fields on the
                                        bench's claims: Redis scans a small hash for each
                                        count, and a provider's weeks together pass a
                                        hundred fields); its TTL runs from its last count,
                                        so the TTL must outlive the risk window
    {prefix}profile:seen:{provider}:{week}  set of the week's claim_ids counted: a claim
                                        counts once (expires with the window)
    {prefix}profile:visited:{provider}  zset member -> newest day it billed them a visit
    {prefix}profile:minutes:{provider}  hash service day -> timed minutes billed (`long_days`)
    {prefix}profile:members:{provider}  zset member -> newest service day
    {prefix}profile:all                 set of every provider with a profile
    {prefix}profile:clock               the newest service week seen, never past the week
                                        after today's (a mistyped year must not empty
                                        every window)
    {prefix}profile:counted             claims counted so far: the ranking skips a run
                                        when it has not moved
    {prefix}profile:risk                zset provider -> risk, the latest ranking (expires
                                        with its snapshots)
    {prefix}profile:risk:{provider}     its ProviderRisk JSON, the latest ranking's

Why Redis rather than a Faust table: the profiles are written where the claims are scored
(the scoring processes, which already hold a Redis connection for the cross-claim checks,
and which a Faust table's changelog cannot reach), a provider's claims arrive on every
partition (claims are keyed by member), and the ranking needs every provider at once. One
Lua script per share of a batch keeps a claim's rows, its visit and its day atomic and
idempotent by claim_id: a batch retried after a crash, or a claim a killed worker scored
whose offset was never committed, is not counted twice (`model.peers.ProfileBook` keeps the
same rules in memory; tests hold them to each other).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import redis

from model.peers import (
    LONG_DAY,
    SHORT_WEEKS,
    WINDOW_WEEKS,
    Contribution,
    Profile,
    ProviderRisk,
    window,
)
from stream.lua import SPLIT, joined
from stream.settings import Settings
from stream.store import redis_client

# ARGV: base, ttl, long day (minutes), newest week the clock may reach, then newline-joined
# per claim: providers, groups, claim_ids, members, days, rows (space-joined "field count"
# pairs, the field "measure|stratum|n" or "...|k", "-" for none), visits ("1"/"0"),
# services (the unseen stratum, "-" for none), minutes -> claims counted (new)
#
# A share's counts are summed per provider and week in the script, then written with one
# HINCRBY a field: a share of 250 claims adds ~1,700 counts to ~1,200 fields. The visit
# and day state (ZSCORE, the minutes hash) stays per claim, in order: a claim's visit
# changes what the next one reads.
ADD_SCRIPT = SPLIT + """
local base, ttl, long, horizon = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local providers, groups, ids, members = split(ARGV[5]), split(ARGV[6]), split(ARGV[7]),
  split(ARGV[8])
local days, rows, visits = split(ARGV[9]), split(ARGV[10]), split(ARGV[11])
local services, minutes = split(ARGV[12]), split(ARGV[13])
local clock = tonumber(redis.call('GET', base .. 'clock') or '0')
local counted, touched, sums, weeks, expiring = 0, {}, {}, {}, {}
for i = 1, #providers do
  local p, day = providers[i], tonumber(days[i])
  local week = math.floor(day / 7)
  local seen = base .. 'seen:' .. p .. ':' .. week
  if redis.call('SADD', seen, ids[i]) == 1 then
    expiring[seen] = true
    counted = counted + 1
    if week > clock and week <= horizon then clock = week end
    -- the provider's latest group, as model.peers.ProfileBook: a known specialty is not
    -- replaced by an unknown one (a claim without PRV)
    if touched[p] == nil or string.sub(groups[i], 1, 8) ~= 'unknown|' then
      touched[p] = groups[i]
    end
    local key = base .. 'w:' .. p .. ':' .. week
    local sum = sums[key]
    if sum == nil then
      sum = {}
      sums[key] = sum
      weeks[p] = weeks[p] or {}
      weeks[p][#weeks[p] + 1] = 'w|' .. week
    end
    local function bump(measure, stratum, n, k)
      local field = measure .. '|' .. stratum
      if n ~= 0 then sum[field .. '|n'] = (sum[field .. '|n'] or 0) + n end
      if k ~= 0 then sum[field .. '|k'] = (sum[field .. '|k'] or 0) + k end
    end
    for field, n in string.gmatch(rows[i], '(%S+) (%S+)') do
      sum[field] = (sum[field] or 0) + tonumber(n)
    end
    local visited = base .. 'visited:' .. p
    if services[i] ~= '-' then
      local unseen = 0
      if visits[i] == '0' and not redis.call('ZSCORE', visited, members[i]) then
        unseen = 1
      end
      bump('unseen', services[i], 1, unseen)
    end
    if visits[i] == '1' then redis.call('ZADD', visited, 'GT', day, members[i]) end
    local add = tonumber(minutes[i])
    if add > 0 then
      local before = redis.call('HINCRBY', base .. 'minutes:' .. p, days[i], add) - add
      local first, long_now = 0, 0
      if before == 0 then first = 1 end
      if before <= long and long < before + add then long_now = 1 end
      bump('long_days', 'all', first, long_now)
    end
    redis.call('ZADD', base .. 'members:' .. p, 'GT', day, members[i])
  end
end
for seen in pairs(expiring) do redis.call('EXPIRE', seen, ttl) end
for key, sum in pairs(sums) do
  for field, n in pairs(sum) do redis.call('HINCRBY', key, field, n) end
  redis.call('EXPIRE', key, ttl)
end
for p, group in pairs(touched) do
  local key = base .. 'p:' .. p
  if string.sub(group, 1, 8) == 'unknown|' then
    redis.call('HSETNX', key, 'group', group)
  else
    redis.call('HSET', key, 'group', group)
  end
  local marks = {}
  for _, w in ipairs(weeks[p]) do marks[#marks + 1] = w; marks[#marks + 1] = 1 end
  redis.call('HSET', key, unpack(marks))
  redis.call('SADD', base .. 'all', p)
  for _, kind in ipairs({'p:', 'members:', 'visited:', 'minutes:'}) do
    redis.call('EXPIRE', base .. kind .. p, ttl)
  end
end
redis.call('SET', base .. 'clock', clock)
if counted > 0 then redis.call('INCRBY', base .. 'counted', counted) end
return counted
"""


# KEYS none; ARGV: base, ttl, provider -> the weeks it moved counts to. Counts an earlier
# version kept in the provider's hash ("week|measure|stratum|n") move to their week's hash,
# each once (moved and deleted in one script): a rolling deploy has old workers writing
# them while new ones read
MOVE_SCRIPT = """
local key, out, seen = ARGV[1] .. 'p:' .. ARGV[3], {}, {}
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local week, rest = string.match(all[i], '^(%d+)|(.+|.+|[nk])$')
  if week then
    local wkey = ARGV[1] .. 'w:' .. ARGV[3] .. ':' .. week
    redis.call('HINCRBY', wkey, rest, all[i + 1])
    redis.call('EXPIRE', wkey, ARGV[2])
    redis.call('HSET', key, 'w|' .. week, 1)
    redis.call('HDEL', key, all[i])
    if not seen[week] then seen[week] = true; out[#out + 1] = week end
  end
end
return out
"""


# KEYS none; ARGV: a provider's minutes hash, the window's first day: drop earlier days
TRIM_DAYS = """
local old = {}
for _, day in ipairs(redis.call('HKEYS', ARGV[1])) do
  if tonumber(day) < tonumber(ARGV[2]) then old[#old + 1] = day end
end
if #old > 0 then redis.call('HDEL', ARGV[1], unpack(old)) end
return #old
"""


def count_fields(c: Contribution) -> str:
    """A claim's rows as ADD_SCRIPT reads them: "field count" pairs, each field its week
    hash's ("measure|stratum|n" or "...|k"), zero counts left out; "-" for none."""
    return " ".join(f"{m}|{s}|{nk} {x}" for m, s, n, k in c.rows
                    for nk, x in (("n", n), ("k", k)) if x) or "-"


class ProfileStore:
    """Provider profiles and risk in Redis (module docstring for the keys)."""

    def __init__(self, client: redis.Redis, prefix: str = "cs:", ttl_s: int = 120 * 86400
                 ) -> None:
        if ttl_s < (WINDOW_WEEKS + 2) * 7 * 86400:
            # a week's hash lives ttl_s from its last count: it must outlive the window
            raise ValueError(f"profile TTL {ttl_s} s is shorter than the {WINDOW_WEEKS}-week "
                             "risk window and two weeks more")
        self.r = client
        self.base = f"{prefix}profile:"
        self.ttl_s = ttl_s
        self._add = client.register_script(ADD_SCRIPT)
        self._move = client.register_script(MOVE_SCRIPT)
        self._trim_days = client.register_script(TRIM_DAYS)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProfileStore:
        """The profiles of the deployment `settings` names (its Redis and key prefix)."""
        return cls(redis_client(settings), settings.key_prefix)

    # -- writes (scoring processes) -----------------------------------------------------
    def add(self, contributions: Sequence[Contribution]) -> int:
        """Count each claim's rows once (by claim_id); the number newly counted. One round
        trip; raises redis.RedisError (adding again is safe)."""
        if not contributions:
            return 0
        cs = contributions
        horizon = (dt.date.today() + dt.timedelta(days=7)).toordinal() // 7
        return int(self._add(keys=[], args=[
            self.base, self.ttl_s, LONG_DAY, horizon,
            joined(c.provider_id for c in cs), joined(c.group for c in cs),
            joined(c.claim_id for c in cs), joined(c.member_id for c in cs),
            joined(c.day for c in cs),
            joined(count_fields(c) for c in cs),
            joined("1" if c.visit else "0" for c in cs),
            joined(c.services or "-" for c in cs), joined(c.minutes for c in cs)]))

    # -- reads (the ranking) ------------------------------------------------------------
    def counted(self) -> int:
        """Claims counted so far, over every provider: unchanged, the profiles are too (the
        clock moves only with a count)."""
        return int(self.r.get(self.base + "counted") or 0)

    def profiles(self, weeks: Sequence[int] = (WINDOW_WEEKS, SHORT_WEEKS)
                 ) -> list[dict[str, Profile]]:
        """Every provider's profile over each window of `weeks` weeks up to the clock.
        What lies before the longest window (weeks of counts, days of minutes, members,
        visits) is deleted as it is read, and so is a week's mark whose hash expired: the
        keys of an active provider stay bounded. Counts a version before the weekly hashes
        kept in the provider's hash move to their weeks first (MOVE_SCRIPT)."""
        clock = int(self.r.get(self.base + "clock") or 0)
        first = clock - max(weeks) + 1  # the longest window's first week
        providers = sorted(p.decode() for p in self.r.smembers(self.base + "all"))
        pipe = self.r.pipeline(transaction=False)
        for p in providers:
            pipe.hgetall(self.base + "p:" + p)
            for w in weeks:
                pipe.zcount(self.base + "members:" + p, (clock - w + 1) * 7, "+inf")
        replies = pipe.execute()
        stale = self.r.pipeline(transaction=False)
        step = 1 + len(weeks)
        heads: dict[str, tuple[str, list[int], list[int]]] = {}
        for i, p in enumerate(providers):
            raw, counts = replies[i * step], replies[i * step + 1:(i + 1) * step]
            if not raw:
                stale.srem(self.base + "all", p)  # expired
                continue
            group = raw.pop(b"group", b"|").decode()
            held = {int(f[2:]) for f in raw if f.startswith(b"w|")}
            if len(held) < len(raw):  # an earlier version's counts: to their weeks first
                held |= {int(w) for w in self._move(keys=[], args=[self.base, self.ttl_s, p])}
            old = sorted(w for w in held if w < first)
            if old:
                stale.hdel(self.base + "p:" + p, *(b"w|%d" % w for w in old))
                stale.delete(*(f"{self.base}w:{p}:{w}" for w in old))
            heads[p] = group, sorted(w for w in held if w >= first), [int(c) for c in counts]
        pipe = self.r.pipeline(transaction=False)
        for p, (_, held, _) in heads.items():
            for w in held:
                pipe.hgetall(f"{self.base}w:{p}:{w}")
        replies = iter(pipe.execute())
        out: list[dict[str, Profile]] = [{} for _ in weeks]
        for p, (group, held, counts) in heads.items():
            rows: dict[tuple[int, str, str], list[float]] = {}
            for w in held:
                fields = next(replies)
                if not fields:  # expired (a clock that stood still for months)
                    stale.hdel(self.base + "p:" + p, b"w|%d" % w)
                for field, value in fields.items():
                    measure, stratum, nk = field.decode().split("|")
                    rows.setdefault((w, measure, stratum), [0.0, 0.0])[nk == "k"] += float(
                        value)
            start = first * 7  # the window's first day
            for kind in ("members:", "visited:"):
                stale.zremrangebyscore(self.base + kind + p, "-inf", f"({start}")
            self._trim_days(keys=[], args=[self.base + "minutes:" + p, start], client=stale)
            for j, w in enumerate(weeks):
                out[j][p] = window(p, group, rows.items(), clock, w, counts[j])
        stale.execute()
        return out

    # -- the ranking's results ----------------------------------------------------------
    def put_risk(self, ranked: Sequence[ProviderRisk]) -> None:
        """Replace the ranking: the zset of providers with a reason (a measure at
        REASON_SURPRISE or more: the list an investigator works), and every provider's
        snapshot (which lives as long as the profiles)."""
        zset, tmp = self.base + "risk", self.base + "risk:next"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        scored = {r.provider_id: r.risk for r in ranked if r.reasons}
        if scored:
            pipe.zadd(tmp, scored)
        for r in ranked:
            pipe.set(self.base + "risk:" + r.provider_id, r.model_dump_json(), ex=self.ttl_s)
        if scored:
            pipe.rename(tmp, zset)
            pipe.expire(zset, self.ttl_s)  # as long as the snapshots it lists
        else:
            pipe.delete(zset)
        pipe.execute()

    def top(self, n: int = 20, specialty: str | None = None) -> list[ProviderRisk]:
        """The n providers of highest risk (of `specialty` only, if given), highest first."""
        ids = [p.decode() for p in self.r.zrevrange(self.base + "risk", 0, -1)]
        out: list[ProviderRisk] = []
        for i in range(0, len(ids), 500):
            raws = self.r.mget([self.base + "risk:" + p for p in ids[i:i + 500]])
            for raw in raws:
                if raw is None:
                    continue
                r = ProviderRisk.model_validate(json.loads(raw))
                if specialty is None or r.specialty == specialty:
                    out.append(r)
                    if len(out) >= n:
                        return out
        return out

    def risk(self, provider_id: str) -> ProviderRisk | None:
        """The provider's snapshot from the latest ranking, or None."""
        raw = self.r.get(self.base + "risk:" + provider_id)
        return ProviderRisk.model_validate(json.loads(raw)) if raw is not None else None


"""The provider ranking: every profile -> `model.peers.rank` -> Redis, in a process of its
own at low priority, on the leader worker.

Why a process: a ranking is CPU-bound Python (measured on an AMD EPYC, 636 providers:
0.21-0.25 s to read and parse the profiles, 0.27-0.4 s to rank). In a thread of the worker
it held the GIL the event loop needs: claims/s fell by a fifth and the p99 latency at 500
claims/s went from ~110 ms to ~500-600 ms (docs/providers.md). In a process niced by
RANK_NICE it takes what CPU the stream leaves. One process, ~110 MB without torch (the
bench's `resident_mb.ranking`), started when a worker is made the group's leader, before it
reports ready (`stream.app`; followers never pay for it): its start is ~1 s of CPU, which
on a busy 2-core machine took a tenth of the cores in the seconds after it
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from model.peers import MEASURES, REASON_SURPRISE, ProviderRisk, rank
from stream.pools import Insides, shut, watched
from stream.profiles import ProfileStore
from stream.scoring import exit_with
from stream.settings import Settings

RANK_NICE = 10  # below the scoring processes and the worker
# The most of one core the ranking takes, on average: a run that cost c seconds of CPU is
# followed by none for c / RANK_SHARE seconds. A ranking costs ~0.45 ms of CPU a provider
# (0.5 s for the bench's 1,132 providers on a Xeon, docs/providers.md), so every
# `provider_risk_s` (5 s) it would take ~10% of a core while claims stream in; a book of 50
# providers still ranks every 5 s.
RANK_SHARE = 0.05
# A run ranks at least this often, counted claims or not: counts that moved without the
# counter (workers of a version before it, during a rolling deploy) and profiles that
# expired after a quiet spell reach the ranking within this long
STALE_S = 600.0
# The most a start may take (a spawn and its imports: ~1-2 s) before the process is killed
# and the next tick tries again. The leader's start at assignment waits at most half the
# rebalance timeout (`stream.app`): the group waits for it
START_S = 30.0
# Ticks missed (the timer runs on the group's leader only) after which the topic is taken
# to hold another leader's snapshots
AWAY_TICKS = 3


class Ranking:
    """Rank every provider and store the ranking; return the snapshots for
    `providers.risk`: those whose risk (to a tenth) or reasons (the measures behind them)
    changed since the snapshots that reached the topic.

    What the topic holds is known only from what this ranking sent and was told was
    delivered. So the first ranking after a start, or after `forget` (another worker was
    the leader meanwhile), sends every provider; and when the caller says the last
    snapshots were not delivered (`delivered`), the run returns them again, and once it
    ranks, sends those providers whatever their value now (a send that failed may still
    have written some of them).

    A run does not rank (and returns no snapshot but the undelivered) when no claim was
    counted since the last ranking (`ProfileStore.counted`: an idle worker re-ranked
    unchanged profiles every 5 s, ~7% of a core) and that ranking is younger than
    STALE_S, or before `due`, so that the ranking takes at most `share` of a core (its own
    process's CPU; the Redis reads it makes are not counted). Nothing is lost by waiting:
    the next run compares with what was sent. A run that fails is tried again on the next
    tick."""

    def __init__(self, store: ProfileStore, share: float = RANK_SHARE) -> None:
        self.store, self.share = store, share
        self.forget()

    def forget(self) -> None:
        """Know nothing of the topic: the next ranking sends every provider."""
        # provider -> (risk to a tenth, scored measures behind its reasons): as the topic
        # has it, and as the last run returned it (the topic's once delivered)
        self.sent: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.last: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.returned: list[ProviderRisk] = []  # the last run's snapshots
        self.everyone = True  # the next ranking sends every provider
        self.counted: int | None = None  # the store's count the last ranking ranked
        self.ranked_at = 0.0  # time.monotonic() of the last ranking
        self.due = 0.0  # time.monotonic() before which no run ranks

    def run(self, delivered: bool = True) -> list[ProviderRisk]:
        if delivered:
            self.sent, unsent = self.last, []
        else:  # the last snapshots went nowhere: they go again, ranked anew if due
            unsent = self.returned
        # the count is read first: claims counted during this run make the next one rank
        counted, start = self.store.counted(), time.monotonic()
        if start < self.due or (counted == self.counted and start - self.ranked_at < STALE_S):
            self.last = {**self.sent, **{r.provider_id: _shown(r) for r in unsent}}
            self.returned = unsent
            return unsent
        cpu = time.process_time()
        long, short = self.store.profiles()
        ranked = rank(long, short)
        self.store.put_risk(ranked)
        unknown = {r.provider_id for r in unsent}  # the topic may hold either value
        changed, last = [], dict(self.sent)
        for r in ranked:
            key, before = _shown(r), self.sent.get(r.provider_id)
            if (self.everyone or r.provider_id in unknown
                    or (key != before and (r.risk > 0 or before is not None))):
                changed.append(r)
            last[r.provider_id] = key
        self.last, self.returned, self.everyone = last, changed, False
        self.counted, self.ranked_at = counted, start
        self.due = start + (time.process_time() - cpu) / self.share
        return changed


def _shown(r: ProviderRisk) -> tuple[float, tuple[str, ...]]:
    """What a snapshot on the topic shows of a provider: its risk to a tenth and the
    scored measures behind its reasons (a change in either is sent)."""
    return (round(r.risk, 1), tuple(v.measure for v in r.measures
                                    if MEASURES[v.measure].scored
                                    and v.surprise >= REASON_SURPRISE))


class RankingProcess:
    """`Ranking` in one spawned process at RANK_NICE; `run` returns the changed snapshots
    as (key, value) records for the topic, and the caller calls `sent` once they are on
    it (until then the next run takes them back and sends them again). Raises what the
    ranking raised (a redis.RedisError: the next tick tries again). `pid`: the
    process's, once started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executor: ProcessPoolExecutor | None = None
        self.pid: int | None = None
        # the leader's assignment, the timer's ticks and the worker's stop all start or
        # stop the process, from threads of their own
        self.lock = threading.RLock()
        self.delivered = True  # whether the last run's snapshots reached the topic
        self.ticked = 0.0  # time.monotonic() of the last run

    def start(self, timeout: float = START_S) -> int:
        """Start the process unless it runs, wait until it has loaded (imports: ~1 s of
        CPU), and return its pid. Blocks: call it in a thread. A process that has not
        loaded within `timeout` is killed and TimeoutError raised; one that died,
        BrokenProcessPool. Either way the next call starts afresh."""
        with self.lock:
            if self.pid is not None:  # started (a failed start leaves neither pid nor pool)
                return self.pid
            self.executor = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                initargs=(self.settings, os.getpid()))
            try:
                self.pid = self.executor.submit(os.getpid).result(timeout)
            except BaseException:
                Insides.of(self.executor).break_()  # a slow start is not waited for
                self.stop()
                raise
            return self.pid

    async def run(self) -> list[tuple[bytes, bytes]]:
        await asyncio.to_thread(self.start)
        with self.lock:
            executor = self.executor
        assert executor is not None
        # ticks stop while another worker leads: back from such a gap, the topic holds
        # what that leader sent, so the ranking forgets what it sent itself
        now = time.monotonic()
        away, self.ticked = now - self.ticked > AWAY_TICKS * self.settings.provider_risk_s, now
        out = await watched(executor, asyncio.get_running_loop().run_in_executor(
            executor, _rank, self.delivered, away))
        self.delivered = False  # until `sent`
        return out

    def sent(self) -> None:
        """The snapshots the last `run` returned are on the topic."""
        self.delivered = True

    def stop(self) -> None:
        with self.lock:
            if self.executor is not None:
                shut(self.executor)
                self.executor, self.pid = None, None


_ranking: Ranking | None = None


def _start(settings: Settings, worker_pid: int) -> None:
    global _ranking
    threading.Thread(target=exit_with, args=(worker_pid,), daemon=True,
                     name="claimscope-orphan-watch").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker stops it (stream.scoring)
    os.nice(RANK_NICE)
    _ranking = Ranking(ProfileStore.from_settings(settings))


def _rank(delivered: bool, away: bool) -> list[tuple[bytes, bytes]]:
    assert _ranking is not None
    if away:
        _ranking.forget()
    return [(r.provider_id.encode(), r.model_dump_json().encode())
            for r in _ranking.run(delivered)]

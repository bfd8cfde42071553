"""The provider ranking: every profile -> `model.peers.rank` -> Redis, in a process of its
own at low priority, on the leader worker.

Why a process: a ranking is CPU-bound Python (measured on an AMD EPYC, 636 providers:
0.21-0.25 s to read and parse the profiles, 0.27-0.4 s to rank). In a thread of the worker
it held the GIL the event loop needs: claims/s fell by a fifth and the p99 latency at 500
claims/s went from ~110 ms to ~500-600 ms (docs/providers.md). In a process niced by
RANK_NICE it takes what CPU the stream leaves. One process, started on the first tick of
the leader (followers never pay for it), ~90 MB without torch (measured by the bench).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor

from model.peers import MEASURES, REASON_SURPRISE, ProviderRisk, rank
from stream.profiles import ProfileStore
from stream.scoring import exit_with
from stream.settings import Settings
from stream.store import redis_client

RANK_NICE = 10  # below the scoring processes and the worker


class Ranking:
    """Rank every provider and store the ranking; return the snapshots whose risk (to a
    tenth) or reasons (the measures behind them) changed since its last run, for
    `providers.risk` (after a restart, every provider with any risk once more)."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store
        self.last: dict[str, tuple[float, tuple[str, ...]]] = {}

    def run(self) -> list[ProviderRisk]:
        long, short = self.store.profiles()
        ranked = rank(long, short)
        self.store.put_risk(ranked)
        changed = []
        for r in ranked:
            key = (round(r.risk, 1), tuple(v.measure for v in r.measures
                                           if MEASURES[v.measure].scored
                                           and v.surprise >= REASON_SURPRISE))
            before = self.last.get(r.provider_id)
            if key != before and (r.risk > 0 or before is not None):
                changed.append(r)
            self.last[r.provider_id] = key
        return changed


class RankingProcess:
    """`Ranking` in one spawned process at RANK_NICE; `run` returns the changed snapshots
    as (key, value) records for the topic. Raises what the ranking raised (a
    redis.RedisError: the next tick tries again)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executor: ProcessPoolExecutor | None = None

    async def run(self) -> list[tuple[bytes, bytes]]:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                initargs=(self.settings, os.getpid()))
        return await asyncio.get_running_loop().run_in_executor(self.executor, _rank)

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


_ranking: Ranking | None = None


def _start(settings: Settings, worker_pid: int) -> None:
    global _ranking
    threading.Thread(target=exit_with, args=(worker_pid,), daemon=True,
                     name="claimscope-orphan-watch").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker stops it (stream.scoring)
    os.nice(RANK_NICE)
    _ranking = Ranking(ProfileStore(redis_client(settings), settings.key_prefix))


def _rank() -> list[tuple[bytes, bytes]]:
    assert _ranking is not None
    return [(r.provider_id.encode(), r.model_dump_json().encode()) for r in _ranking.run()]

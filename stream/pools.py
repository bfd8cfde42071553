"""Process pools that notice a dead process: the scoring processes and the provider ranking.

The standard library's `ProcessPoolExecutor` fails the work of a process that dies with
`BrokenProcessPool`, except when the process dies while it is sending a result. It then
holds the result pipe's lock and leaves half a message behind: the executor's own thread
waits for the rest of the message, and every other process waits for the lock, forever
(CPython 3.11; reproduced in `tests/test_pools.py`). A worker would stall silently: its
batch is never acked, so nothing is lost, but nothing is scored again either, and its
`/ready` stays green; `shutdown(wait=True)` would never return either. A scoring share's
verdicts are a megabyte or so, so an OOM kill lands inside that write often enough to
matter (the fault test that kills a scoring process hit it once in a CI run).

`watched` waits for work as `await` would, and `shut` shuts a pool down as
`shutdown(wait=True)` would. Both break a pool whose process has been dead for
`DEAD_GRACE_S` while the executor's thread still runs (it notices an ordinary death within
milliseconds): they kill the pool's processes and close this side's end of the result
pipe. The executor's thread then reads end-of-file, fails the pending work with
`BrokenProcessPool` and exits, and callers restart the pool as for any dead process. No
public API exposes a pool's processes, its result pipe or its thread: `_processes`,
`_result_queue` and `_executor_manager_thread` are the executor's own attributes (CPython
3.8 to 3.13), read while the pool runs (`shutdown` drops them), and the tests hold them to
it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

T = TypeVar("T")
DEAD_GRACE_S = 2.0  # the executor notices a dead process in milliseconds; past this, never
LOOK_EVERY_S = 0.25
JOIN_S = 1.0  # a SIGKILLed process is reaped in milliseconds


@dataclass(frozen=True)
class Insides:
    """What a running pool is made of, read before `shutdown` drops it."""

    processes: list[BaseProcess]
    result_queue: Any  # multiprocessing SimpleQueue, or None once shut down
    thread: threading.Thread | None  # the executor's manager thread

    @classmethod
    def of(cls, executor: ProcessPoolExecutor) -> Insides:
        processes = getattr(executor, "_processes", None) or {}
        return cls(list(processes.values()), getattr(executor, "_result_queue", None),
                   getattr(executor, "_executor_manager_thread", None))

    def exit_codes(self) -> list[int]:
        """Non-zero exit codes of the processes that have exited: deaths (a process leaves
        with 0 only when the pool shuts down)."""
        return [p.exitcode for p in self.processes if p.exitcode not in (None, 0)]

    def break_(self) -> None:
        """Kill every process and close this side's end of the result pipe, so the
        executor's thread reads end-of-file, fails what is pending and exits."""
        for p in self.processes:
            p.kill()
        for p in self.processes:
            p.join(JOIN_S)
        if self.result_queue is not None:
            self.result_queue._writer.close()


class Deaths:
    """How long a pool has had a dead process: `stuck()` once it is `DEAD_GRACE_S`."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.codes: list[int] = []

    def stuck(self, insides: Insides) -> bool:
        self.codes = insides.exit_codes()
        if not self.codes:
            self.since = None
            return False
        self.since = self.since or time.monotonic()
        return time.monotonic() - self.since >= DEAD_GRACE_S


async def watched(executor: ProcessPoolExecutor, work: Awaitable[T]) -> T:
    """`await work` (futures of `executor`), or `BrokenProcessPool` when one of the pool's
    processes died and the pool stuck: it is broken then, and the caller restarts it as
    for any dead process."""
    task = asyncio.ensure_future(work)
    deaths, broken_at = Deaths(), None
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=LOOK_EVERY_S)
            if done:
                return task.result()  # the executor's own BrokenProcessPool, after a break
            insides = Insides.of(executor)
            if broken_at is None and deaths.stuck(insides):
                insides.break_()
                broken_at = time.monotonic()
            elif broken_at is not None and time.monotonic() - broken_at >= DEAD_GRACE_S:
                raise BrokenProcessPool(  # its thread did not fail the work: say so anyway
                    f"a process died (exit code {deaths.codes[0]}) and the pool stuck")
    except BaseException:
        if not task.done():
            if broken_at is None:  # cancelled from outside: the work is not wanted
                task.cancel()
            task.add_done_callback(_retrieved)
        raise


def _retrieved(task: asyncio.Future) -> None:
    """Read an abandoned task's outcome, so that asyncio does not log it as never read."""
    if not task.cancelled():
        task.exception()


def shut(executor: ProcessPoolExecutor) -> None:
    """`executor.shutdown(wait=True, cancel_futures=True)`: returns once the work its
    processes are on is done, except that a pool stuck on a dead process, on which that
    would wait forever, is broken first."""
    insides, deaths = Insides.of(executor), Deaths()
    executor.shutdown(wait=False, cancel_futures=True)
    while insides.thread is not None and insides.thread.is_alive():
        insides.thread.join(LOOK_EVERY_S)
        if deaths.stuck(insides):
            insides.break_()
            deaths = Deaths()
    for p in insides.processes:
        p.join()
    if insides.result_queue is not None:
        insides.result_queue.close()  # as shutdown(wait=True) does: no pipe left open

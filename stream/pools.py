"""Process pools that notice a dead process: the scoring processes and the provider ranking.

The standard library's `ProcessPoolExecutor` fails the work of a process that dies with
`BrokenProcessPool`, except when the process dies while it is sending a result. It then
holds the result pipe's lock and leaves half a message behind: the executor's own thread
waits for the rest of the message, and every other process waits for the lock, forever
(CPython 3.11; reproduced in `tests/test_pools.py`). A worker would stall silently: its
batch is never acked, so nothing is lost, but nothing is scored again either, and its
`/ready` stays green. A scoring share's verdicts are a megabyte or so, so an OOM kill
lands inside that write often enough to matter (the fault test that kills a scoring
process hit it once in a CI run).

`watched` waits for work as `await` would, and breaks a pool whose process has been dead
for `DEAD_GRACE_S` without the executor noticing, which it otherwise does within
milliseconds. It kills the pool's processes and closes this side's end of the result pipe.
The executor's thread then reads end-of-file, fails the pending work with
`BrokenProcessPool` and exits, so `shutdown()` returns and callers restart the pool as they
do for any dead process. No public API exposes a pool's processes or its result pipe:
`_processes` and `_result_queue` are the executor's own attributes (CPython 3.8 to 3.13),
and the tests hold them to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
DEAD_GRACE_S = 2.0  # the executor notices a dead process in milliseconds; past this, never
LOOK_EVERY_S = 0.25
JOIN_S = 5.0


def exit_codes(executor: ProcessPoolExecutor) -> list[int]:
    """Exit codes of the pool's processes that have exited (they exit only when the pool
    shuts down, so during work an exit is a death)."""
    processes = getattr(executor, "_processes", None) or {}
    return [p.exitcode for p in list(processes.values()) if p.exitcode is not None]


def break_pool(executor: ProcessPoolExecutor) -> None:
    """Kill every process of a stuck pool and close this side's end of its result pipe, so
    the executor's thread reads end-of-file, fails what is pending and exits."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for p in processes:
        p.kill()
    for p in processes:
        p.join(JOIN_S)
    executor._result_queue._writer.close()  # type: ignore[attr-defined]


async def watched(executor: ProcessPoolExecutor, work: Awaitable[T]) -> T:
    """`await work` (futures of `executor`), or `BrokenProcessPool` once one of the pool's
    processes has been dead for `DEAD_GRACE_S` and the pool has not noticed: it is then
    broken (`break_pool`), and the caller restarts it as for any dead process."""
    task = asyncio.ensure_future(work)
    dead_since: float | None = None
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=LOOK_EVERY_S)
            if done:
                return task.result()
            codes = exit_codes(executor)
            if not codes:
                dead_since = None
                continue
            dead_since = dead_since or time.monotonic()
            if time.monotonic() - dead_since >= DEAD_GRACE_S:
                break_pool(executor)
                raise BrokenProcessPool(
                    f"a process died (exit code {codes[0]}) while sending its result, and "
                    "the pool stuck; its processes were stopped")
    finally:
        if not task.done():  # nothing is left waiting on a broken pool, nor complaining
            task.cancel()
            task.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Future) -> None:
    """Read a cancelled task's outcome, so that asyncio does not log it as never read."""
    if not task.cancelled():
        task.exception()

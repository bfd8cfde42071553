"""`stream.pools`: a process that dies while sending its result leaves the standard pool
stuck forever; `watched` breaks it, so callers restart it as for any dead process.

The helpers below run in spawned pool processes, which import this module by name."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.queues import SimpleQueue

import pytest

from stream import pools


def die_while_sending() -> None:
    """Die as a process killed in the middle of sending its result: holding the result
    pipe's lock, half a message written."""
    queue = next(o for o in gc.get_objects() if isinstance(o, SimpleQueue))
    queue._wlock.acquire()
    os.write(queue._writer.fileno(), struct.pack("!i", 1_000_000) + b"half a result")
    os._exit(9)


def die_at_once() -> None:
    os._exit(9)


def answer(x: int, wait_s: float = 0.0) -> int:
    time.sleep(wait_s)
    return x


@pytest.fixture
def executor() -> Iterator[ProcessPoolExecutor]:
    ex = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    yield ex
    assert shut_within(ex, 30), "the pool's shutdown hung"


def shut_within(ex: ProcessPoolExecutor, seconds: float) -> bool:
    """`pools.shut` returned within `seconds` (else the pool is broken by hand, so a failed
    test cannot leave a stuck pool to hang the interpreter's exit)."""
    insides = pools.Insides.of(ex)
    stopping = threading.Thread(target=pools.shut, args=(ex,), daemon=True)
    stopping.start()
    stopping.join(seconds)
    if stopping.is_alive():
        insides.break_()
        stopping.join(seconds)
        return False
    return True


async def both(ex: ProcessPoolExecutor, *calls: tuple) -> list:
    loop = asyncio.get_running_loop()
    return await pools.watched(ex, asyncio.gather(*(
        loop.run_in_executor(ex, *call) for call in calls)))


def test_the_standard_pool_hangs_when_a_process_dies_while_sending(executor) -> None:
    """Why `watched` exists: the death is never reported, and the other process's
    finished work never arrives."""
    futures = [executor.submit(die_while_sending), executor.submit(answer, 1, 0.5)]
    done, pending = wait(futures, timeout=5)
    assert len(pending) == 2 and pools.Insides.of(executor).exit_codes() == [9]
    pools.Insides.of(executor).break_()
    done, pending = wait(futures, timeout=10)
    assert not pending and all(isinstance(f.exception(), BrokenProcessPool) for f in done)


def test_shut_returns_from_a_stuck_pool(executor) -> None:
    """shutdown(wait=True) would wait forever on it; the worker's stop and restart call
    this."""
    futures = [executor.submit(die_while_sending), executor.submit(answer, 1, 0.5)]
    wait(futures, timeout=3)
    started = time.monotonic()
    assert shut_within(executor, pools.DEAD_GRACE_S + 10)
    assert time.monotonic() - started < pools.DEAD_GRACE_S + 10
    assert all(isinstance(f.exception(0), BrokenProcessPool) for f in futures)


def test_watched_breaks_a_stuck_pool_so_the_caller_can_restart_it(executor) -> None:
    started = time.monotonic()
    with pytest.raises(BrokenProcessPool):  # not TimeoutError: the pool was broken
        asyncio.run(asyncio.wait_for(both(executor, (die_while_sending,), (answer, 1, 0.5)),
                                     pools.DEAD_GRACE_S + 10))
    assert time.monotonic() - started < pools.DEAD_GRACE_S + 10
    assert all(p.exitcode is not None for p in executor._processes.values())


def test_watched_cancelled_from_outside_cancels_its_work(executor) -> None:
    async def cancel_soon() -> None:
        loop = asyncio.get_running_loop()
        slow = loop.run_in_executor(executor, answer, 1, 30)
        watching = asyncio.ensure_future(pools.watched(executor, slow))
        await asyncio.sleep(1)
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
        assert slow.cancelled()

    asyncio.run(cancel_soon())
    pools.Insides.of(executor).break_()  # the process still sleeps: do not wait 30 s


def test_watched_passes_a_death_the_pool_reports_and_results_it_returns(executor) -> None:
    assert asyncio.run(both(executor, (answer, 1), (answer, 2, 0.3))) == [1, 2]
    started = time.monotonic()
    with pytest.raises(BrokenProcessPool):
        asyncio.run(both(executor, (die_at_once,), (answer, 3, 0.3)))
    assert time.monotonic() - started < pools.DEAD_GRACE_S  # the pool's own report

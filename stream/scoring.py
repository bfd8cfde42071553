"""Scoring in a process pool: parse, checks, model, explanations and Score JSON run beside
the worker's event loop instead of sharing its GIL.

Why processes: in one process the Faust intake, the Kafka sends and the scorer's Python
(tokens, explanations, pydantic) take turns on one GIL, and a 2-core worker topped out at
~1,150 claims/s with the scoring thread the critical path. docs/operations.md ("Where the
scoring runs") has the three layouts measured against each other; this one won.

The pool is the standard library's `ProcessPoolExecutor` with a spawn context (forking a
process that runs Faust's event loop and its threads is unsafe) and an initializer that
loads the scorer once per process. Shares of a batch and their Results cross between our
own processes the executor's way (pickle, local pipes); nothing here is on the wire.

A batch is split by message key (the member_id, by the topic contract) and each share is
one task. Splitting by member keeps the cross-claim checks exact: all of a member's claims
in a batch, and so its duplicate lines and velocity window, are checked by one process in
their order, and batches enter the pool one at a time (`stream.pipeline`), so no two
processes race on one member's state. (A message without a key goes by its bytes' hash:
still scored, but a member's unkeyed claims may then be checked in another order.)

Failures reach the caller as what they are: a Redis error in a process arrives as that
`redis.RedisError` (retry the batch: the checks are idempotent per claim_id), and a process
that dies breaks the pool, which arrives as `ScoringError` (restart the pool, retry).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from pydantic import ValidationError

from model.claims import Claim, parse_claim
from stream.checkstate import RedisCheckState
from stream.deadletter import reason
from stream.settings import Settings
from stream.store import redis_client

if TYPE_CHECKING:
    from model.scorer import Scorer

OK, INVALID, FAILED = 0, 1, 2
START_TIMEOUT_S = 120.0  # loading the model in every process at once, on a slow machine


class ScoringError(RuntimeError):
    """The scoring processes could not start or one died; one line a person can act on."""


@dataclass(frozen=True, slots=True)
class Result:
    kind: int  # OK, INVALID or FAILED
    reason: str = ""
    claim_id: str = ""
    member_id: str = ""
    provider_id: str = ""
    flagged: bool = False
    scored_at: float = 0.0  # epoch seconds
    score_json: bytes = b""
    claim_json: bytes = b""  # the claim as contract JSON, when the message was not one


def cpus() -> int:
    """Cores this process may run on: its affinity mask (a container's cpuset), not a CPU
    quota, which no count here can see: size containers with explicit settings."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def scoring_processes(settings: Settings) -> int:
    """One scoring process per core (at most 4): parse, checks, tokens and explanations are
    Python, so processes, not torch threads, are what spread a batch over the cores."""
    return settings.scoring_processes or min(4, cpus())


def torch_threads(settings: Settings) -> int:
    """Intra-op threads per scoring process: the cores shared among the processes."""
    return settings.torch_threads or max(1, cpus() // scoring_processes(settings))


def load_scorer(settings: Settings) -> Scorer:
    """The model on the configured device, its cross-claim checks kept in Redis."""
    # Imported here, in the scoring processes only: torch adds ~200 MB and ~1 s to a
    # process, and the worker's event loop never runs the model.
    import torch

    from model.checkpoint import CheckpointError
    from model.scorer import Scorer

    torch.set_num_threads(torch_threads(settings))
    state = RedisCheckState(redis_client(settings), settings.key_prefix, settings.check_ttl_s)
    try:
        return Scorer.load(settings.checkpoint, device=settings.device,
                           threshold=settings.threshold, check_state=state,
                           anomaly_fpr=settings.anomaly_fpr)
    except (CheckpointError, ValueError, OSError, RuntimeError) as e:
        # RuntimeError: weights that do not fit this code's model (an older checkpoint)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScoringError(f"cannot load checkpoint {settings.checkpoint!r}: {first}") from None


class ScoringPool:
    """`processes` scoring processes working on one batch at once, one core each."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings, self.processes = settings, processes
        self.executor: ProcessPoolExecutor | None = None
        self.info: dict[str, str] = {}

    def start(self) -> None:
        """Start every process and wait until each has loaded the model (seconds); a
        ScoringError with the reason if they cannot, with the pool stopped again."""
        self.executor = ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_load, initargs=(self.settings, os.getpid()))
        # Each of the first `processes` submissions starts a process of its own.
        ready = [self.executor.submit(_ready) for _ in range(self.processes)]
        try:
            answers = [f.result(START_TIMEOUT_S) for f in ready]
        except (BrokenProcessPool, TimeoutError) as e:
            self.stop()
            raise ScoringError(f"the scoring processes did not start: {e or type(e).__name__}"
                               ) from None
        failed = [a for a in answers if isinstance(a, str)]
        if failed:
            self.stop()
            raise ScoringError(failed[0])
        self.info = {**answers[0], "scoring_processes": str(self.processes)}

    def stop(self) -> None:
        """Stop the processes after the task they are on (they ignore SIGINT)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    async def score(self, values: Sequence[bytes], timestamps: Sequence[int | None],
                    keys: Sequence[bytes | None], formats: Sequence[str]
                    ) -> list[list[Result]]:
        """The Results of each message, in order: one for a contract claim, one per claim
        inside a FHIR Bundle or an X12 interchange. Raises the `redis.RedisError` a process
        met, or ScoringError if a process died (the pool is broken then: restart it)."""
        if self.executor is None:
            raise ScoringError("the scoring processes are not running")
        loop = asyncio.get_running_loop()
        shares = [idx for idx in split_by_key(keys, values, self.processes) if idx]
        try:
            answers = await asyncio.gather(*(
                loop.run_in_executor(self.executor, score_share,
                                     [(timestamps[i], values[i], formats[i]) for i in idx])
                for idx in shares))
        except BrokenProcessPool as e:
            raise ScoringError(f"a scoring process died: {e}") from None
        results: list[list[Result]] = [[] for _ in values]
        for idx, share in zip(shares, answers, strict=True):
            for i, r in zip(idx, share, strict=True):
                results[i] = r
        return results


def split_by_key(keys: Sequence[bytes | None], values: Sequence[bytes], n: int
                 ) -> list[list[int]]:
    """Message positions for each of n processes, in message order: by the key's CRC-32
    (the value's for a message without a key), so one key always lands in one share.

    >>> split_by_key([b"m1", b"m2", b"m1", None], [b"a", b"b", b"c", b"d"], 1)
    [[0, 1, 2, 3]]
    >>> shares = split_by_key([b"m1", b"m2", b"m1"], [b"a", b"b", b"c"], 2)
    >>> [0, 2] in shares or [[0, 1, 2]] == [s for s in shares if s]
    True
    """
    shares: list[list[int]] = [[] for _ in range(n)]
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        shares[zlib.crc32(k if k is not None else v) % n].append(i)
    return shares


# -- in each scoring process -------------------------------------------------------------
_scorer: Scorer | None = None
_failed: str | None = None  # why the model did not load, for the pool's start to report


def _load(settings: Settings, worker_pid: int) -> None:
    """Initializer: load the scorer once. A load error is kept and reported by `_ready`,
    as one line, instead of breaking the pool with a traceback."""
    global _scorer, _failed
    threading.Thread(target=_exit_with, args=(worker_pid,), daemon=True,
                     name="claimscope-orphan-watch").start()
    # The worker owns this process and stops it through the pool. A terminal's Ctrl-C
    # reaches the whole process group and must not kill it under the batch the worker
    # finishes before it exits. SIGTERM keeps its default: the pool itself terminates its
    # processes with it when one of them died (a process that ignored it would block the
    # restart forever). Under systemd, use KillMode=mixed (docs/operations.md).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _scorer = load_scorer(settings)
    except ScoringError as e:
        _failed = str(e)
        return
    # The model, vocabulary and modules live as long as the process: freezing them keeps the
    # cyclic GC from rescanning them every few batches (measured here: ~25% of scoring time).
    # A batch then makes tens of thousands of short-lived objects (tokens, Scores) and no
    # cycles worth collecting early: collecting every 50,000 allocations rather than every
    # 700 cut scoring CPU by another ~10% (370 vs 403 us a claim, shares of 500, here).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _exit_with(worker_pid: int, every_s: float = 1.0) -> None:
    """Exit once the worker is gone. A pool process holds both ends of its task pipe, so a
    worker killed with SIGKILL would otherwise leave it waiting for work forever."""
    while os.getppid() == worker_pid:
        time.sleep(every_s)
    os._exit(0)


def _ready() -> dict[str, str] | str:
    """What the loaded scorer is (device, model version, threshold), or why it is not."""
    if _scorer is None:
        return _failed or "the scorer did not load"
    return {"device": str(_scorer.device), "model_version": _scorer.model_version,
            "threshold": str(_scorer.threshold)}


def score_share(items: list[tuple[int | None, bytes, str]]) -> list[list[Result]]:
    """The Results of each (Kafka timestamp ms, raw message, format): parse or convert,
    score the valid claims together, serialise. A Redis error propagates (the whole share
    is retried)."""
    scorer = _scorer
    if scorer is None:
        raise ScoringError(_failed or "the scorer did not load")
    results: list[list[Result]] = []
    valid: list[tuple[int, int, int | None, Claim, bytes]] = []  # message, record, ts, ...
    for i, (ts, raw, fmt) in enumerate(items):
        records = [parse(raw)] if fmt == "claim" else converted(fmt, raw)
        results.append([Result(INVALID)] * len(records))
        for j, rec in enumerate(records):
            if isinstance(rec, str):
                results[i][j] = Result(INVALID, reason=rec)
            else:
                claim, kept = rec
                valid.append((i, j, ts, claim, kept))
    try:
        pairs = list(zip(valid, scorer.score([v[3] for v in valid]), strict=True))
    except redis.RedisError:
        raise
    except Exception:
        pairs = []  # one bad claim must not sink the batch: score one by one
        for item in valid:
            try:
                pairs.append((item, scorer.score([item[3]])[0]))
            except redis.RedisError:
                raise
            except Exception as one:
                results[item[0]][item[1]] = Result(
                    FAILED, reason=f"scoring failed: {type(one).__name__}: {one}")
    for (i, j, ts, _, kept), s in pairs:
        at = s.scored_at.timestamp()
        if ts is not None:
            s.latency_ms = round(at * 1000 - ts, 3)
        results[i][j] = Result(OK, claim_id=s.claim_id, member_id=s.member_id,
                               provider_id=s.provider_id, flagged=s.flagged, scored_at=at,
                               score_json=s.model_dump_json().encode(), claim_json=kept)
    return results


def parse(raw: bytes) -> tuple[Claim, bytes] | str:
    """A contract claim and b"" (the message itself is stored), or why it is not one."""
    try:
        return parse_claim(raw), b""
    except ValidationError as e:
        return reason(raw, e)
    except (ValueError, RecursionError) as e:
        return f"claim: {type(e).__name__}: {e}"


def converted(fmt: str, raw: bytes) -> list[tuple[Claim, bytes] | str]:
    """Each claim of a FHIR or X12 message with its contract JSON (stored beside its Score
    in place of the message), or the error that names its record and path."""
    # fhir.resources and x12sdk: imported by the scoring processes of workers that read
    # those topics only (~0.4 s and tens of MB a process)
    from model.formats import claim_json, convert

    return [(r, claim_json(r).encode()) if isinstance(r, Claim) else str(r)
            for r in convert(fmt, raw)]

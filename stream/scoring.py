"""Scoring in a process pool: parse, checks, model, explanations and Score JSON run beside
the worker's event loop instead of sharing its GIL.

Why processes: in one process the Faust intake, the Kafka sends and the scorer's Python
(tokens, explanations, pydantic) take turns on one GIL, and a 2-core worker topped out at
~1,150 claims/s with the scoring thread the critical path. docs/operations.md ("Where the
scoring runs") has the three layouts measured against each other; this one won.

The pool is the standard library's `ProcessPoolExecutor` with a spawn context (forking a
process that runs Faust's event loop and its threads is unsafe) and an initializer that
loads the scorer once per process. Shares of a batch (`stream.message.Message`s) and their
Verdicts cross between our own processes the executor's way (pickle, local pipes); nothing
here is on the wire.

A batch is split by message key (the member_id, by the topic contract) and each share is
one task. Splitting by member keeps the cross-claim checks exact: all of a member's claims
in a batch, and so its duplicate lines and velocity window, are checked by one process in
their order, and batches enter the pool one at a time (`stream.pipeline`), so no two
processes race on one member's state. (A message without a key goes by its bytes' hash:
still scored, but a member's unkeyed claims may then be checked in another order.)

Failures reach the caller as what they are: a Redis error in a process arrives as that
`redis.RedisError` (retry the batch: the checks are idempotent per claim_id), and a process
that dies breaks the pool, which arrives as `ScoringError` (restart the pool, retry), even
when it dies while sending its verdicts, which leaves the standard pool stuck
(`stream.pools`).
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
from model.peers import contribution
from stream.checkstate import RedisCheckState
from stream.deadletter import reason
from stream.message import PENDING, Message, Outcome, Verdict
from stream.pools import shut, watched
from stream.profiles import ProfileStore
from stream.references import RedisReferences
from stream.settings import Settings
from stream.store import redis_client

if TYPE_CHECKING:
    from model.score import Score
    from model.scorer import Scorer

START_TIMEOUT_S = 120.0  # loading the model in every process at once, on a slow machine


class ScoringError(RuntimeError):
    """The scoring processes could not start or one died; one line a person can act on."""


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
                           anomaly_fpr=settings.anomaly_fpr, precision=settings.precision)
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
            shut(self.executor)
            self.executor = None

    async def score(self, messages: Sequence[Message]) -> list[list[Verdict]]:
        """The Verdicts of each message, in order: one for a contract claim, one per claim
        inside a FHIR Bundle or an X12 interchange (none when it holds none). Raises the
        `redis.RedisError` a process met, or ScoringError if a process died (the pool is
        broken then: restart it)."""
        if self.executor is None:
            raise ScoringError("the scoring processes are not running")
        loop = asyncio.get_running_loop()
        shares = [idx for idx in split_by_key(messages, self.processes) if idx]
        try:
            answers = await watched(self.executor, asyncio.gather(*(
                loop.run_in_executor(self.executor, score_share, [messages[i] for i in idx])
                for idx in shares)))
        except BrokenProcessPool as e:
            raise ScoringError(f"a scoring process died: {e}") from None
        verdicts: list[list[Verdict]] = [[] for _ in messages]
        for idx, share in zip(shares, answers, strict=True):
            for i, vs in zip(idx, share, strict=True):
                verdicts[i] = vs
        return verdicts


def split_by_key(messages: Sequence[Message], n: int) -> list[list[int]]:
    """Message positions for each of n processes, in message order: by the key's CRC-32
    (the value's for a message without a key), so one key always lands in one share.

    >>> ms = [Message(v, k, "claims", 0, i, None)
    ...       for i, (k, v) in enumerate([(b"m1", b"a"), (b"m2", b"b"), (b"m1", b"c")])]
    >>> split_by_key(ms, 1)
    [[0, 1, 2]]
    >>> shares = split_by_key(ms, 2)
    >>> [0, 2] in shares or [[0, 1, 2]] == [s for s in shares if s]
    True
    """
    shares: list[list[int]] = [[] for _ in range(n)]
    for i, m in enumerate(messages):
        shares[zlib.crc32(m.key if m.key is not None else m.value or b"") % n].append(i)
    return shares


# -- in each scoring process -------------------------------------------------------------
_scorer: Scorer | None = None
_profiles: ProfileStore | None = None  # provider profiles (settings.provider_profiles)
_references: RedisReferences | None = None  # members and providers (`reference load`)
_failed: str | None = None  # why the model did not load, for the pool's start to report


def _load(settings: Settings, worker_pid: int) -> None:
    """Initializer: load the scorer once. A load error is kept and reported by `_ready`,
    as one line, instead of breaking the pool with a traceback."""
    global _scorer, _profiles, _references, _failed
    threading.Thread(target=exit_with, args=(worker_pid,), daemon=True,
                     name="claimscope-orphan-watch").start()
    # The worker owns this process and stops it through the pool. A terminal's Ctrl-C
    # reaches the whole process group and must not kill it under the batch the worker
    # finishes before it exits. SIGTERM keeps its default: the pool itself terminates its
    # processes with it when one of them died (a process that ignored it would block the
    # restart forever). Under systemd, use KillMode=mixed (docs/operations.md).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _scorer = load_scorer(settings)
        # every pass shape built now, before the worker reports ready, not under the
        # first claims (Scorer.warm_up)
        _scorer.warm_up()
    except ScoringError as e:
        _failed = str(e)
        return
    except RuntimeError as e:  # a device that cannot run a pass (out of memory...)
        _scorer, _failed = None, f"the model could not run a pass: {e}".splitlines()[0]
        return
    if settings.provider_profiles:
        _profiles = ProfileStore.from_settings(settings)
    _references = RedisReferences(redis_client(settings), settings.key_prefix)
    # The model, vocabulary and modules live as long as the process: freezing them keeps the
    # cyclic GC from rescanning them every few batches (measured here: ~25% of scoring time).
    # A batch then makes tens of thousands of short-lived objects (tokens, Scores) and no
    # cycles worth collecting early: collecting every 50,000 allocations rather than every
    # 700 cut scoring CPU by another ~10% (370 vs 403 us a claim, shares of 500, here).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def exit_with(worker_pid: int, every_s: float = 1.0) -> None:
    """Exit once the worker is gone. A pool process holds both ends of its task pipe, so a
    worker killed with SIGKILL would otherwise leave it waiting for work forever."""
    while os.getppid() == worker_pid:
        time.sleep(every_s)
    os._exit(0)


def _ready() -> dict[str, str] | str:
    """What the loaded scorer is (device, precision, path, model version, threshold), or
    why it is not."""
    if _scorer is None:
        return _failed or "the scorer did not load"
    return {"device": str(_scorer.device), "precision": _scorer.precision,
            "path": _scorer.path, "model_version": _scorer.model_version,
            "threshold": str(_scorer.threshold)}


@dataclass(slots=True)
class Parsed:
    """One claim read from a message in a scoring process: the claim, or (claim None) the
    INVALID verdict that says why it is not one; SCORED or FAILED once scored."""

    message: Message
    claim: Claim | None = None
    claim_json: bytes = b""  # the converted claim's contract JSON (FHIR, X12), else b""
    verdict: Verdict = PENDING


def score_share(messages: list[Message]) -> list[list[Verdict]]:
    """The Verdicts of each message: read (parse, or convert FHIR / X12), score the valid
    claims together, serialise. A Redis error propagates (the whole share is retried)."""
    scorer = _scorer
    if scorer is None:
        raise ScoringError(_failed or "the scorer did not load")
    parsed = [read(m) for m in messages]
    scored = score_parsed(scorer, [p for ps in parsed for p in ps if p.claim is not None])
    if _profiles is not None:
        _profiles.add([contribution(c, s.flagged_by, scorer.vocab) for c, s in scored])
    return [[p.verdict for p in ps] for ps in parsed]


def read(m: Message) -> list[Parsed]:
    """The claims of message `m`: one for a contract claim (stored as the message itself),
    one per claim of a FHIR or X12 message (stored as contract JSON); or, for each record
    that is not a claim, why (for a converted one, the error names its record and path)."""
    raw = m.value or b""
    if m.fmt == "claim":
        try:
            return [Parsed(m, parse_claim(raw))]
        except ValidationError as e:
            return [Parsed(m, verdict=Verdict(Outcome.INVALID, reason(raw, e)))]
        except (ValueError, RecursionError) as e:
            why = f"claim: {type(e).__name__}: {e}"
            return [Parsed(m, verdict=Verdict(Outcome.INVALID, why))]
    # fhir.resources and x12sdk: imported by the scoring processes of workers that read
    # those topics only (~0.4 s and tens of MB a process)
    from model.formats import claim_json, convert

    # a FHIR claim's Patient and provider, when it does not carry them: the reference data
    # in Redis (a Redis error propagates: the share is retried)
    return [Parsed(m, c, claim_json(c).encode()) if isinstance(c, Claim)
            else Parsed(m, verdict=Verdict(Outcome.INVALID, str(c)))
            for c in convert(m.fmt, raw, _references)]


def score_parsed(scorer: Scorer, parsed: list[Parsed]) -> list[tuple[Claim, Score]]:
    """Score the claims of `parsed` together, set each verdict, and return the scored
    (claim, Score) pairs. If the scorer raises, score them one by one, so one bad claim
    fails alone (FAILED) and does not sink the batch. A Redis error propagates."""
    try:
        pairs = list(zip(parsed, scorer.score([p.claim for p in parsed]), strict=True))
    except redis.RedisError:
        raise
    except Exception:
        pairs = []
        for p in parsed:
            try:
                pairs.append((p, scorer.score([p.claim])[0]))
            except redis.RedisError:
                raise
            except Exception as one:
                p.verdict = Verdict(Outcome.FAILED,
                                    f"scoring failed: {type(one).__name__}: {one}")
    for p, s in pairs:
        p.verdict = scored(s, p.message.timestamp_ms, p.claim_json)
    return [(p.claim, s) for p, s in pairs if p.claim is not None]


def scored(s: Score, timestamp_ms: int | None, claim_json: bytes) -> Verdict:
    """The SCORED verdict of Score `s`, its latency from the Kafka timestamp filled in."""
    at = s.scored_at.timestamp()
    if timestamp_ms is not None:
        s.latency_ms = round(at * 1000 - timestamp_ms, 3)
    return Verdict(Outcome.SCORED, claim_id=s.claim_id, member_id=s.member_id,
                   provider_id=s.provider_id, flagged=s.flagged, scored_at=at,
                   score_json=s.model_dump_json().encode(), claim_json=claim_json)

"""Scoring in child processes: parse, checks, model, explanations and Score JSON run beside
the worker's event loop instead of sharing its GIL.

Why processes: in one process the Faust intake, the Kafka sends and the scorer's Python
(tokens, explanations, pydantic) take turns on one GIL, and a 2-core worker topped out at
~1,150 claims/s with the scoring thread the critical path. A `ScoringPool` runs one child
per core and splits each batch among them by member.

Protocol on the child's stdin/stdout (little-endian, no pickle; claims travel as the raw
bytes the producer sent):

    ready   child -> "ready <device> <model_version> <threshold>\\n" once, after loading
    request u32 frame length, u32 n, then n x (i64 kafka timestamp ms or -1, u32 length,
            bytes)
    reply   u32 frame length, u8 batch status (0 ok, 1 Redis unavailable: retry the batch),
            u32 n, then n x (u8 kind, u32 length, bytes):
              kind 0  header "claim_id\\x1fmember_id\\x1fprovider_id\\x1fflagged\\x1fscored_at"
                      + "\\n" + the Score JSON
              kind 1  not a valid claim: the reason (UTF-8)
              kind 2  valid, but the model failed on it: the reason

IDs cannot contain \\x1f or \\n (the contract's charset), so the header needs no escaping.
Each side reads a whole frame with one call and parses it in memory, and the pipes are
widened to 1 MiB where Linux allows: with per-item reads and 64 KiB pipes a child sat
blocked on its reply while the worker's GIL-sharing reader thread caught up.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from stream.settings import Settings

HEAD = struct.Struct("<I")
PIPE_BYTES = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size
ITEM_IN = struct.Struct("<qI")
ITEM_OUT = struct.Struct("<BI")
OK, INVALID, FAILED = 0, 1, 2
RETRY = 1
log = logging.getLogger("claimscope.scoring")


class ScoringError(RuntimeError):
    """The scoring process could not start or died; one line a person can act on."""


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


def read_frame(f: BinaryIO) -> bytes:
    """One length-prefixed frame."""
    (n,) = HEAD.unpack(read_exact(f, HEAD.size))
    return read_exact(f, n)


def frame(parts: list[bytes]) -> bytes:
    body = b"".join(parts)
    return HEAD.pack(len(body)) + body


def widen(pipe: BinaryIO) -> None:
    """Ask for a PIPE_BYTES pipe buffer (Linux only; elsewhere the default stays)."""
    with contextlib.suppress(AttributeError, OSError):
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise EOFError("scoring process closed its pipe")
    return data


class ScoringProcess:
    """The parent's handle: start the child, score batches, restart it if it dies.

    `score` blocks on pipes (call it from an executor thread; the GIL is free meanwhile).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, str] = {}
        self.last_words: deque[str] = deque(maxlen=20)  # the child's latest stderr lines
        self._stderr: threading.Thread | None = None
        self._started = False

    def start(self, timeout: float = 120.0) -> None:
        """Start the child and wait for its ready line; ScoringError with its last words."""
        from stream.procs import settings_env

        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMSCOPE_")}
        env.update(settings_env(self.settings))
        self.proc = subprocess.Popen([sys.executable, "-m", "stream.scoring"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        widen(self.proc.stdin)
        widen(self.proc.stdout)
        # Drain stderr all the time: a pipe nobody reads fills up (64 KiB) and the child
        # blocks on its next warning, e.g. after an hour of "Redis unavailable" lines.
        self.last_words.clear()
        self._started = False  # lines before "ready" only go to last_words (the error line)
        self._stderr = threading.Thread(target=self._drain, args=(self.proc.stderr,),
                                        name="claimscope-scoring-stderr", daemon=True)
        self._stderr.start()
        line = self.proc.stdout.readline().decode("utf-8", "replace").split()
        if not line or line[0] != "ready":
            self.proc.wait()
            self._stderr.join(5)
            self.stop()
            raise ScoringError(self.last_words[-1] if self.last_words
                               else "the scoring process exited")
        self.info = {"device": line[1], "model_version": line[2], "threshold": line[3]}
        self._started = True

    def _drain(self, pipe: BinaryIO) -> None:
        """Log each line the child writes to stderr (it ends when the child exits)."""
        with contextlib.suppress(OSError, ValueError):
            for raw in pipe:
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    self.last_words.append(text)
                    if self._started:
                        log.warning("scoring process: %s", text)

    def send(self, values: Sequence[bytes], timestamps: Sequence[int | None]) -> None:
        """Hand the child a batch; `receive` gets the answer. Raises ScoringError if the
        child died (the caller restarts it and retries)."""
        if self.proc is None or self.proc.poll() is not None:
            raise ScoringError("the scoring process is not running")
        out = [HEAD.pack(len(values))]
        for v, ts in zip(values, timestamps, strict=True):
            out += [ITEM_IN.pack(ts if ts is not None else -1, len(v)), v]
        try:
            self.proc.stdin.write(frame(out))
            self.proc.stdin.flush()
        except (OSError, ValueError) as e:
            raise ScoringError(f"scoring process failed: {e}") from None

    def receive(self) -> list[Result] | None:
        """One Result per value sent, in order; None when Redis is away (retry later)."""
        try:
            reply = read_frame(self.proc.stdout)
            status = reply[0]
            (n,) = HEAD.unpack_from(reply, 1)
            pos = 1 + HEAD.size
            results = []
            for _ in range(n):
                kind, length = ITEM_OUT.unpack_from(reply, pos)
                pos += ITEM_OUT.size
                results.append(_result(kind, reply[pos:pos + length]))
                pos += length
        except (OSError, EOFError, ValueError, AttributeError, struct.error) as e:
            raise ScoringError(f"scoring process failed: {e}") from None
        return None if status == RETRY else results

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: the child exits by itself
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._stderr is not None:
            self._stderr.join(5)  # EOF once the child is gone
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()
        self.proc = None


class ScoringPool:
    """Several scoring processes working on one batch at once, one core each.

    A batch is split by message key (the member_id, by the topic contract), each share is
    scored by its own process in parallel, and the Results are put back in message order.
    Splitting by member keeps the cross-claim checks exact: all of a member's claims, and so
    its duplicate lines and velocity window, go to the same process in their order, so no two
    processes race on one member's state. (A message without a key goes by its bytes'
    hash: still scored, but a member's unkeyed claims may then be checked in another order.)

    `score` blocks on pipes (call it from an executor thread; the GIL is free meanwhile).
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        self.procs = [ScoringProcess(settings) for _ in range(processes)]

    @property
    def info(self) -> dict[str, str]:
        return {**self.procs[0].info, "scoring_processes": str(len(self.procs))}

    def start(self) -> None:
        """Start every process at once (each loads the model: seconds); ScoringError if one
        cannot start, with the others stopped again."""
        with ThreadPoolExecutor(len(self.procs)) as ex:
            errors = [f.exception() for f in [ex.submit(p.start) for p in self.procs]]
        failed = [e for e in errors if e is not None]
        if failed:
            self.stop()
            raise failed[0]

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def score(self, values: Sequence[bytes], timestamps: Sequence[int | None],
              keys: Sequence[bytes | None]) -> list[Result] | None:
        """One Result per value, in order; None when Redis is away (retry the batch: the
        checks are idempotent per claim_id, so a share scored twice counts once).

        Raises ScoringError if a process died (the caller restarts the pool and retries).
        """
        shares = split_by_key(keys, values, len(self.procs))
        busy = [(p, idx) for p, idx in zip(self.procs, shares, strict=True) if idx]
        for p, idx in busy:  # each child reads its whole request before it starts
            p.send([values[i] for i in idx], [timestamps[i] for i in idx])
        results: list[Result] = [None] * len(values)  # type: ignore[list-item]
        retry = False
        for p, idx in busy:
            share = p.receive()
            if share is None:
                retry = True
                continue
            for i, r in zip(idx, share, strict=True):
                results[i] = r
        return None if retry else results


def split_by_key(keys: Sequence[bytes | None], values: Sequence[bytes], n: int
                 ) -> list[list[int]]:
    """Message positions for each of n processes, in message order: by the key's CRC-32
    (the value's for a message without a key), so one key always lands in one share."""
    shares: list[list[int]] = [[] for _ in range(n)]
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        shares[zlib.crc32(k if k is not None else v) % n].append(i)
    return shares


def _result(kind: int, body: bytes) -> Result:
    if kind != OK:
        return Result(kind, reason=body.decode("utf-8", "replace"))
    head, _, score = body.partition(b"\n")
    cid, member, provider, flagged, at = head.decode().split("\x1f")
    return Result(OK, claim_id=cid, member_id=member, provider_id=provider,
                  flagged=flagged == "1", scored_at=float(at), score_json=score)


# -- the child ---------------------------------------------------------------------------
def main() -> None:
    """Child: load the scorer, then answer requests until stdin closes."""
    import redis

    # The worker owns this process and stops it by closing its stdin. A Ctrl-C or SIGTERM
    # sent to the whole process group (a terminal, systemd) must not kill it under the
    # batch the worker finishes before it exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from stream.worker import load_scorer

    settings = Settings()
    try:
        scorer = load_scorer(settings)
    except Exception as e:
        print(str(e), file=sys.stderr)
        sys.exit(2)
    # The model, vocabulary and modules live as long as the process: freezing them keeps the
    # cyclic GC from rescanning them every few batches (measured here: ~25% of scoring time).
    gc.freeze()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(f"ready {scorer.device} {scorer.model_version} {scorer.threshold}\n".encode())
    stdout.flush()
    while True:
        try:
            request = read_frame(stdin)
        except EOFError:
            return
        (n,) = HEAD.unpack_from(request)
        pos, items = HEAD.size, []
        for _ in range(n):
            ts, length = ITEM_IN.unpack_from(request, pos)
            pos += ITEM_IN.size
            items.append((ts if ts >= 0 else None, request[pos:pos + length]))
            pos += length
        try:
            replies = score_batch(scorer, items)
            status = 0
        except redis.RedisError as e:
            print(f"checks: Redis unavailable ({e}); the worker retries", file=sys.stderr)
            replies, status = [], RETRY
        out = [bytes([status]), HEAD.pack(len(replies))]
        for kind, body in replies:
            out += [ITEM_OUT.pack(kind, len(body)), body]
        stdout.write(frame(out))
        stdout.flush()


def score_batch(scorer, items: list[tuple[int | None, bytes]]) -> list[tuple[int, bytes]]:
    """(kind, body) per item: parse, score the valid ones together, serialise."""
    from pydantic import ValidationError

    from model.claims import parse_claim
    from stream.deadletter import reason

    replies: list[tuple[int, bytes]] = [(INVALID, b"")] * len(items)
    valid = []
    for i, (ts, raw) in enumerate(items):
        try:
            valid.append((i, ts, parse_claim(raw)))
        except ValidationError as e:
            replies[i] = (INVALID, reason(raw, e).encode())
        except (ValueError, RecursionError) as e:
            replies[i] = (INVALID, f"claim: {type(e).__name__}: {e}".encode())
    try:
        scores = scorer.score([c for _, _, c in valid])
        pairs = list(zip(valid, scores, strict=True))
    except Exception as e:
        import redis

        if isinstance(e, redis.RedisError):
            raise
        pairs = []  # one bad claim must not sink the batch: score one by one
        for item in valid:
            try:
                pairs.append((item, scorer.score([item[2]])[0]))
            except redis.RedisError:
                raise
            except Exception as one:
                replies[item[0]] = (FAILED, f"scoring failed: {type(one).__name__}: {one}"
                                    .encode())
    for (i, ts, _), s in pairs:
        at = s.scored_at.timestamp()
        if ts is not None:
            s.latency_ms = round(at * 1000 - ts, 3)
        head = "\x1f".join((s.claim_id, s.member_id, s.provider_id, "1" if s.flagged else "0",
                            repr(at)))
        replies[i] = (OK, head.encode() + b"\n" + s.model_dump_json().encode())
    return replies


if __name__ == "__main__":
    main()

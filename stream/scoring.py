"""Scoring in a child process: parse, checks, model, explanations and Score JSON run beside
the worker's event loop instead of sharing its GIL.

Why a process: in one process the Faust intake, the Kafka sends and the scorer's Python
(tokens, explanations, pydantic) take turns on one GIL, and a 2-core worker topped out at
~1,150 claims/s with the scoring thread the critical path. The child gets its own core.

Protocol on the child's stdin/stdout (little-endian, no pickle; claims travel as the raw
bytes the producer sent):

    ready   child -> "ready <device> <model_version> <threshold>\\n" once, after loading
    request u32 n, then n x (i64 kafka timestamp ms or -1, u32 length, bytes)
    reply   u8 batch status (0 ok, 1 Redis unavailable: retry the batch), u32 n, then
            n x (u8 kind, u32 length, bytes):
              kind 0  header "claim_id\\x1fmember_id\\x1fprovider_id\\x1fflagged\\x1fscored_at"
                      + "\\n" + the Score JSON
              kind 1  not a valid claim: the reason (UTF-8)
              kind 2  valid, but the model failed on it: the reason

IDs cannot contain \\x1f or \\n (the contract's charset), so the header needs no escaping.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from stream.settings import Settings

HEAD = struct.Struct("<I")
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

    def score(self, values: Sequence[bytes], timestamps: Sequence[int | None]
              ) -> list[Result] | None:
        """One Result per value, in order; None when Redis is away (retry later).

        Raises ScoringError if the child died (the caller restarts it and retries).
        """
        if self.proc is None or self.proc.poll() is not None:
            raise ScoringError("the scoring process is not running")
        out = [HEAD.pack(len(values))]
        for v, ts in zip(values, timestamps, strict=True):
            out += [ITEM_IN.pack(ts if ts is not None else -1, len(v)), v]
        try:
            self.proc.stdin.write(b"".join(out))
            self.proc.stdin.flush()
            f = self.proc.stdout
            status = read_exact(f, 1)[0]
            (n,) = HEAD.unpack(read_exact(f, HEAD.size))
            results = []
            for _ in range(n):
                kind, length = ITEM_OUT.unpack(read_exact(f, ITEM_OUT.size))
                results.append(_result(kind, read_exact(f, length)))
        except (OSError, EOFError, ValueError) as e:
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
            (n,) = HEAD.unpack(read_exact(stdin, HEAD.size))
        except EOFError:
            return
        items = []
        for _ in range(n):
            ts, length = ITEM_IN.unpack(read_exact(stdin, ITEM_IN.size))
            items.append((ts if ts >= 0 else None, read_exact(stdin, length)))
        try:
            replies = score_batch(scorer, items)
            status = 0
        except redis.RedisError as e:
            print(f"checks: Redis unavailable ({e}); the worker retries", file=sys.stderr)
            replies, status = [], RETRY
        stdout.write(bytes([status]) + HEAD.pack(len(replies)) + b"".join(
            ITEM_OUT.pack(kind, len(body)) + body for kind, body in replies))
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

"""`claimscope bench`: end-to-end throughput and latency, pipeline vs no-op, one broker.

Three runs, each with its own topics (the pipeline and the no-op never share an input):

1. **no-op**: W pass-through workers (`stream.dev.noop`); publish `count` claims as fast as the
   broker takes them; throughput = count / (first publish -> last batch forwarded).
2. **pipeline**: W scoring workers; the same, to the last Score written to Redis.
3. **at rate**: the same pipeline workers, claims offered at `rate`/s for `rate_seconds`;
   latency p50/p95/p99 from each message's Kafka timestamp (set when published) to its
   Redis write, exact (every sample, from the workers' `/stats?since=K`).

Everything is namespaced by a run id (topics `bench-<id>...`, consumer groups, Redis prefix
`csbench:<id>:`, removed afterwards), so a bench can run beside live workers. Without
CLAIMSCOPE_BROKER / CLAIMSCOPE_REDIS_URL it starts its own Tansu and redis-server.
Workers use a 6 s rebalance timeout so they join in ~3 s on Tansu; nothing else differs
from `claimscope worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil

from model.claims import parse_claim
from model.formats import convert, to_fhir, to_x12
from model.generator import ClaimGenerator
from model.parity import Parity
from model.parity import parity as model_parity
from stream.dev.procs import WorkerProcess, stop_all
from stream.dev.services import Services
from stream.metrics import percentiles
from stream.preflight import admin_client, create_topics
from stream.settings import Settings
from stream.sinks import KafkaSink
from stream.store import ScoreStore, redis_client

CONVERSION_CLAIMS = 1_000  # claims converted from each input format for its cost
PARITY_CLAIMS = 5_000  # claims scored on the workers' path and on fp32 eager, for parity


class BenchError(RuntimeError):
    """A bench run that could not finish; one line."""


def configured(settings: Settings, field: str) -> bool:
    """True when `field` came from the environment or a config file, not the default."""
    return field in settings.model_fields_set


def bench_settings(settings: Settings, run: str, kind: str) -> Settings:
    base = f"bench-{run}-{kind}"
    return settings.model_copy(update={
        "topic_claims": f"{base}.claims", "topic_scored": f"{base}.scored",
        "topic_flagged": f"{base}.flagged", "topic_deadletter": f"{base}.deadletter",
        "topic_provider_risk": f"{base}.providers.risk",
        "app_id": f"claimscope-{base}", "key_prefix": f"csbench:{run}:",
        "broker_rebalance_timeout": 6.0, "broker_session_timeout": 10.0, "web_port": 0,
    })


def make_claims(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, value) for n generated claims (5% fraud), claim ids unique within the run."""
    gen = ClaimGenerator(seed=seed, fraud_rate=0.05, size=max(n, 20_000))
    return [(item.claim["member_id"].encode(), json.dumps(item.claim).encode())
            for item in gen.generate(n)]


def run_bench(settings: Settings, *, count: int = 20_000, rate: float = 500.0,
              rate_seconds: float = 10.0, workers: int = 1, log: Any = None) -> dict[str, Any]:
    """Run the three measurements; return the JSON-ready result (see issue 4's shape)."""
    def say(msg: str) -> None:
        if log is not None:
            log.print(msg, highlight=False)

    run = uuid.uuid4().hex[:8]
    rated = int(rate * rate_seconds)
    say(f"bench {run}: generating {2 * count + rated} claims")
    claims = make_claims(2 * count + rated)
    tmp = Path(tempfile.mkdtemp(prefix=f"claimscope-bench-{run}-"))
    svc = Services.start(settings, broker=not configured(settings, "broker"),
                         redis=not configured(settings, "redis_url"), log_dir=tmp)
    noop_s = bench_settings(svc.settings, run, "noop")
    pipe_s = bench_settings(svc.settings, run, "pipeline")
    pool: list[WorkerProcess] = []
    try:
        create_topics(noop_s, [noop_s.topic_claims, noop_s.topic_claims + ".noop"])
        create_topics(pipe_s)
        say(f"no-op: {workers} worker(s), {count} claims")
        noop_workers = start_workers(noop_s, workers, True, tmp, pool)
        noop = throughput(noop_s, noop_workers, claims[:count])
        stop_all(noop_workers)
        say(f"no-op: {noop['claims_per_s']:.0f} claims/s; pipeline: {workers} worker(s)")
        pipe_workers = start_workers(pipe_s, workers, False, tmp, pool)
        pipe = throughput(pipe_s, pipe_workers, claims[count:2 * count])
        say(f"pipeline: {pipe['claims_per_s']:.0f} claims/s; latency at {rate:.0f}/s for "
            f"{rate_seconds:.0f} s")
        at_rate = offered(pipe_s, pipe_workers, claims[2 * count:], rate)
        info = pipe_workers[0].stats() or {}
        memory = resident_mb(pipe_workers)
        stop_all(pool)
        say("conversion: FHIR and X12 to contract claims")
        conversion = conversion_cost(claims[:CONVERSION_CLAIMS])
        say(f"parity: {PARITY_CLAIMS} claims on the workers' path and on fp32 eager")
        same = parity(settings, claims[count:count + PARITY_CLAIMS])
    finally:
        stop_all(pool)
        cleanup(pipe_s, [noop_s, pipe_s])
        svc.stop()
    return {
        "pipeline": pipe, "noop": noop,
        "ratio": round(pipe["claims_per_s"] / noop["claims_per_s"], 3),
        "cpu_per_claim_us": pipe["cpu_per_claim_us"],
        "resident_mb": memory,
        "conversion_cpu_per_claim_us": conversion,
        "at_rate": at_rate, "workers": workers, "device": info.get("device", "?"),
        "cpu_bf16": cpu_bf16(), "precision": info.get("precision", "?"),
        "path": info.get("path", "?"), "parity": same.share_changed,
        "parity_detail": same.to_json(),
        "count": count, "model_version": info.get("model_version"),
        "max_batch": settings.max_batch, "max_wait_s": settings.max_wait,
        "partitions": settings.partitions,
        "broker": "embedded Tansu" if not configured(settings, "broker") else settings.broker,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
    }


def processes(ws: list[WorkerProcess], ranking: Collection[int]) -> dict[str, list[psutil.Process]]:
    """The pipeline's processes by kind: "worker" (the workers, with multiprocessing's
    resource tracker), "scoring" (the pool's processes) and "ranking" (the leader's
    provider ranking: `ranking`, the pids the workers' /stats name)."""
    workers = [psutil.Process(w.pid) for w in ws if w.pid is not None]
    out: dict[str, list[psutil.Process]] = {"worker": list(workers), "scoring": [],
                                            "ranking": []}
    for c in (c for w in workers for c in w.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            kind = ("ranking" if c.pid in ranking else
                    "scoring" if any("spawn_main" in a for a in c.cmdline()) else "worker")
            out[kind].append(c)
    return out


def ranking_pids(stats: list[dict[str, Any]]) -> set[int]:
    """The ranking processes the workers' /stats name (the leader's, when it has one)."""
    return {s["ranking_pid"] for s in stats if "ranking_pid" in s}


def resident_mb(ws: list[WorkerProcess]) -> dict[str, float]:
    """Resident memory (MiB) of the pipeline's worker, of its scoring processes together
    and of the ranking's process, after the measured runs: the model, the vocabulary and
    the public tables it loads."""
    kinds = processes(ws, ranking_pids(totals(ws)))

    def rss(procs: list[psutil.Process]) -> float:
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):  # (a process that just ended)
                total += p.memory_info().rss
        return round(total / 2**20, 1)

    return {"worker": rss(kinds["worker"]), "scoring": rss(kinds["scoring"]),
            "scoring_processes": float(len(kinds["scoring"])),
            "ranking": rss(kinds["ranking"])}


def conversion_cost(claims: list[tuple[bytes, bytes]]) -> dict[str, float]:
    """CPU µs per claim to read FHIR NDJSON and an X12 837P interchange into contract claims
    (`model.formats.convert`, in this process): what a scoring process adds for a claim that
    comes on `claims.fhir` or `claims.x12` instead of `claims`."""
    parsed = [parse_claim(v) for _, v in claims]
    inputs = {"fhir": "\n".join(json.dumps(to_fhir(c)) for c in parsed), "x12": to_x12(parsed)}
    out = {}
    for fmt, data in inputs.items():
        t = time.process_time()
        got = convert(fmt, data)
        spent = time.process_time() - t
        if got != parsed:
            raise BenchError(f"{fmt}: {len(got)} records read back, not the {len(parsed)} claims")
        out[fmt] = round(spent / len(parsed) * 1e6, 1)
    return out


def cpu_bf16() -> bool:
    """Whether this CPU has native bf16 (AVX512-BF16 or AMX): what the targets of issue
    "fast CPU" split CPUs by. Not what picks the path: auto runs bf16 only with AMX
    (`model.scorer.resolve_precision`). Imported here, so torch loads only when needed."""
    from model.scorer import cpu_has_bf16

    return cpu_has_bf16()


def parity(settings: Settings, claims: list[tuple[bytes, bytes]]) -> Parity:
    """How far the workers' path (their precision, passes of like length) moves decisions
    against the fp32 eager reference (`model.parity`): the same claims scored by both in
    this process, on the workers' device, without the cross-claim checks (their state
    depends on arrival order, not on the path)."""
    from model.scorer import Scorer

    parsed = [parse_claim(v) for _, v in claims]
    common = {"device": settings.device, "threshold": settings.threshold,
              "anomaly_fpr": settings.anomaly_fpr}
    ref = Scorer.load(settings.checkpoint, precision="fp32", **common)
    run = Scorer.load(settings.checkpoint, precision=settings.precision, **common)
    a, b = ref.score(parsed), run.score(parsed)
    return model_parity(run.precision, np.array([s.score for s in a]),
                        np.array([s.flagged for s in a]), np.array([s.score for s in b]),
                        np.array([s.flagged for s in b]))


def local_listeners(addresses: list[tuple[str | None, int]]) -> list[psutil.Process]:
    """The processes of this machine listening on any of `addresses` (loopback hosts only:
    a remote Redis or broker is not this machine's CPU)."""
    ports = {port for host, port in addresses if host in ("127.0.0.1", "localhost", "::1")}
    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid}
    return [psutil.Process(pid) for pid in sorted(pids)]


def start_workers(settings: Settings, n: int, noop: bool, tmp: Path,
                  pool: list[WorkerProcess]) -> list[WorkerProcess]:
    kind = "noop" if noop else "pipeline"
    ws = [WorkerProcess(settings, noop=noop, log=tmp / f"{kind}-{i}.log",
                        name=f"{kind} worker {i}").start() for i in range(n)]
    pool.extend(ws)
    try:
        for w in ws:
            w.wait_ready(timeout=120)
        # with several workers, wait until the group settled: every partition owned once
        deadline = time.monotonic() + 60
        while n > 1 and time.monotonic() < deadline:
            owned = [p for w in ws for p in (w.stats() or {}).get("assigned", [])
                     if p.startswith(settings.topic_claims + ":")]
            if len(owned) == settings.partitions == len(set(owned)):
                break
            time.sleep(0.2)
        # and until the leader's ranking process is up: it starts before the leader reports
        # ready, unless its start took longer than the group could wait, and then on the
        # first tick; the measured runs are of the running stream, not of that start
        deadline = time.monotonic() + 60
        while (not noop and settings.provider_profiles and time.monotonic() < deadline
               and not ranking_pids([w.stats() or {} for w in ws])):
            time.sleep(0.2)
    except RuntimeError as e:
        raise BenchError(str(e)) from None
    return ws


def totals(ws: list[WorkerProcess]) -> list[dict[str, Any]]:
    out = []
    for w in ws:
        s = w.stats()
        if s is None:
            raise BenchError(f"{w.name} stopped answering: {w.last_log_line()}")
        out.append(s)
    return out


def wait_done(ws: list[WorkerProcess], expected: int, before: list[dict], timeout: float
              ) -> list[dict]:
    """Poll until the workers handled `expected` more messages than in `before`.

    Every 0.2 s: the end time is each worker's own `last_done_at`, so polling faster buys
    no precision, and each `/stats` answer costs the measured worker's event loop time."""
    deadline = time.monotonic() + timeout
    base = sum(s["received"] for s in before)
    while True:
        now = totals(ws)
        done = sum(s["scored"] + s["deadletters"] for s in now) - sum(
            s["scored"] + s["deadletters"] for s in before)
        if done >= expected:
            return now
        if time.monotonic() > deadline:
            got = sum(s["received"] for s in now) - base
            raise BenchError(f"workers finished {done} of {expected} claims in {timeout:.0f} s "
                             f"(received {got})")
        time.sleep(0.2)


def samples(ws: list[WorkerProcess], before: list[dict]) -> np.ndarray:
    vals: list[float] = []
    for w, b in zip(ws, before, strict=True):
        s = w.stats(since=b["n_samples"], timeout=10)
        if s is None:
            raise BenchError(f"{w.name} stopped answering")
        vals += s["samples"]
    return np.asarray(vals, dtype=float)


def throughput(settings: Settings, ws: list[WorkerProcess], claims: list[tuple[bytes, bytes]]
               ) -> dict[str, Any]:
    before = totals(ws)
    meter = CpuMeter(ws, settings, ranking_pids(before))
    t0 = time.time()
    asyncio.run(publish(settings, claims))
    published = time.time()
    after = wait_done(ws, len(claims), before, timeout=max(120.0, len(claims) / 100))
    end = max(s["last_done_at"] for s in after)
    cpu = meter.per_claim_us(len(claims))
    lat = percentiles(samples(ws, before))
    return {"claims_per_s": round(len(claims) / (end - t0), 1),
            "publish_per_s": round(len(claims) / (published - t0), 1),
            "seconds": round(end - t0, 3), "p50_ms": lat["p50"], "p95_ms": lat["p95"],
            "p99_ms": lat["p99"], "cpu_per_claim_us": cpu}


class CpuMeter:
    """CPU time (user + system) each kind of process spends per claim between its creation
    and `per_claim_us`: the workers' event loops ("worker"), their scoring processes
    ("scoring"), the leader's provider ranking ("ranking"), and redis-server ("redis") and
    the broker ("broker") when they run on this machine (started by this run, or found
    listening on the configured local port).

    Wall-clock throughput differs ~2x between machines of one kind; CPU per claim does not
    depend on what else the machine runs, so it compares across machines and runs.
    """

    def __init__(self, ws: list[WorkerProcess], settings: Settings,
                 ranking: Collection[int]) -> None:
        redis_at = urlsplit(settings.redis_url)
        kinds = {**processes(ws, ranking),
                 "redis": local_listeners([(redis_at.hostname, redis_at.port or 6379)]),
                 "broker": local_listeners([(h.rpartition(":")[0], int(h.rpartition(":")[2]))
                                            for h in settings.bootstrap_servers])}
        self.kinds = {k: procs for k, procs in kinds.items() if procs}
        self.start = self.read()

    def read(self) -> dict[str, float]:
        out = {}
        for kind, procs in self.kinds.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                except psutil.NoSuchProcess:  # a scoring process that was restarted
                    continue
                total += t.user + t.system
            out[kind] = total
        return out

    def per_claim_us(self, claims: int) -> dict[str, float]:
        now = self.read()
        return {k: round((now[k] - self.start[k]) / claims * 1e6, 1) for k in self.kinds}


def offered(settings: Settings, ws: list[WorkerProcess], claims: list[tuple[bytes, bytes]],
            rate: float) -> dict[str, Any]:
    before = totals(ws)
    t0 = time.time()
    asyncio.run(publish(settings, claims, rate=rate))
    after = wait_done(ws, len(claims), before, timeout=60 + len(claims) / rate)
    end = max(s["last_done_at"] for s in after)
    lat = percentiles(samples(ws, before))
    return {"offered_per_s": rate, "achieved_per_s": round(len(claims) / (end - t0), 1),
            "count": len(claims), "p50_ms": lat["p50"], "p95_ms": lat["p95"],
            "p99_ms": lat["p99"]}


async def publish(settings: Settings, claims: list[tuple[bytes, bytes]],
                  rate: float | None = None, tick: float = 0.01) -> None:
    """Publish all claims at once (rate None) or paced at `rate`/s in `tick`-second steps.

    Each message's Kafka timestamp is its publish time: the start of its latency.
    """
    sink = KafkaSink(settings, client_id="claimscope-bench")
    await sink.start()
    try:
        topic = settings.topic_claims
        if rate is None:
            await asyncio.gather(*await sink.send(topic, claims))
            return
        futures: list[asyncio.Future] = []
        start = time.monotonic()
        sent = 0
        while sent < len(claims):
            due = min(len(claims), int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                futures += await sink.send(topic, claims[sent:due])
                sent = due
            await asyncio.sleep(tick)
        await asyncio.gather(*futures)
    finally:
        await sink.stop()


def cleanup(settings: Settings, runs: list[Settings]) -> None:
    """Remove the run's Redis keys and (where the broker allows) its topics."""


    with contextlib.suppress(Exception):
        store = ScoreStore(redis_client(settings, timeout=5), settings.key_prefix)
        store.purge()
        store.close()
    with contextlib.suppress(Exception):
        admin = admin_client(settings, timeout=5)
        try:
            names = [t for s in runs for t in [*s.topics.values(), s.topic_claims + ".noop"]]
            existing = set(admin.list_topics())
            admin.delete_topics([n for n in names if n in existing])
        finally:
            admin.close()

"""What a worker is doing, on its web port: `/health`, `/ready`, `/metrics`, `/stats`.

- `/health` 200 while the process runs (liveness).
- `/ready` 200 once the worker holds a partition assignment, 503 before (readiness).
- `/metrics` Prometheus text: claims in/scored/flagged/dead-lettered, batches and their
  sizes, inference and end-to-end latency histograms, consumer lag per partition.
- `/stats` JSON for `claimscope up` and `bench`: the same counters, p50/p95/p99 of the last
  `WINDOW` end-to-end latencies, and (`?since=K`) the raw latencies from sample K on, so a
  benchmark computes exact percentiles over exactly its own claims.

End-to-end latency = the Kafka message timestamp (set by the producer at send) to the moment
the Score is in Redis; the no-op agent ends it at its send instead.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WINDOW = 5_000  # latencies behind the p50/p99 that `/stats` and `claimscope up` show
KEEP = 200_000  # latencies kept for `/stats?since=K` (a bench run's worth)
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
COUNTERS = ("received", "scored", "flagged", "deadletters", "batches", "retries")
HELP = {
    "received": "messages taken from the claims topic",
    "scored": "claims scored and stored (Redis + claims.scored)",
    "flagged": "claims flagged (also on claims.flagged)",
    "deadletters": "messages dead-lettered as invalid",
    "batches": "batches processed",
    "retries": "sink or scoring attempts retried after a Redis/Kafka error",
}


class Histogram:
    """Cumulative-bucket histogram in milliseconds (Prometheus `le` semantics)."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_MS) -> None:
        self.bounds = np.asarray(bounds, dtype=float)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last = +Inf
        self.sum = 0.0

    def observe_many(self, values_ms: np.ndarray) -> None:
        if values_ms.size:
            idx = np.searchsorted(self.bounds, values_ms, side="left")
            self.counts += np.bincount(idx, minlength=len(self.counts))
            self.sum += float(values_ms.sum())

    def prometheus(self, name: str, help_: str) -> list[str]:
        out = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        cum = np.cumsum(self.counts)
        for b, c in zip(self.bounds, cum[:-1], strict=True):
            out.append(f'{name}_bucket{{le="{b / 1000:g}"}} {int(c)}')
        out += [f'{name}_bucket{{le="+Inf"}} {int(cum[-1])}', f"{name}_sum {self.sum / 1000:.6f}",
                f"{name}_count {int(cum[-1])}"]
        return out


@dataclass
class WorkerStats:
    """Counters and latency samples of one worker process (one event loop: no locks)."""

    kind: str = "pipeline"  # or "noop"
    started_at: float = field(default_factory=time.time)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    e2e: Histogram = field(default_factory=Histogram)
    inference: Histogram = field(default_factory=Histogram)
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(
        (1, 10, 50, 100, 250, 500, 1000, 5000)))
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))
    n_samples: int = 0  # samples ever recorded; samples[-1] is number n_samples - 1
    last_done_at: float = 0.0  # wall clock of the last finished batch
    ready: bool = False
    assigned: list[str] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset
    info: dict[str, Any] = field(default_factory=dict)  # device, model_version, threshold

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        key = f"{topic}:{partition}"
        if offset + 1 > self.offsets.get(key, 0):
            self.offsets[key] = offset + 1

    def batch_done(self, size: int, e2e_ms: np.ndarray, inference_ms: float | None) -> None:
        """Record one finished batch: its size and each message's end-to-end latency."""
        self.counts["batches"] += 1
        self.batch_sizes.observe_many(np.asarray([size], dtype=float))
        self.e2e.observe_many(e2e_ms)
        if inference_ms is not None:
            self.inference.observe_many(np.asarray([inference_ms]))
        self.samples.extend(e2e_ms.tolist())
        self.n_samples += int(e2e_ms.size)
        self.last_done_at = time.time()

    def snapshot(self, since: int | None = None) -> dict[str, Any]:
        """JSON for `/stats`: counters, recent percentiles, raw samples from `since` on."""
        recent = np.fromiter((self.samples[i] for i in range(
            max(0, len(self.samples) - WINDOW), len(self.samples))), dtype=float)
        out: dict[str, Any] = {
            "pid": os.getpid(), "kind": self.kind, "ready": self.ready, **self.info,
            "assigned": self.assigned, "uptime_s": round(time.time() - self.started_at, 3),
            **self.counts, "lag": self.lag, "last_done_at": self.last_done_at,
            "n_samples": self.n_samples,
            "latency_ms": percentiles(recent),
        }
        if since is not None:
            first = self.n_samples - len(self.samples)  # oldest sample still kept
            start = max(since, first)
            out["samples_from"] = start
            out["samples"] = [round(self.samples[i - first], 3)
                              for i in range(start, self.n_samples)]
        return out

    def prometheus(self) -> str:
        lines: list[str] = []
        for name in COUNTERS:
            metric = f"claimscope_{name}_total"
            lines += [f"# HELP {metric} {HELP[name]}", f"# TYPE {metric} counter",
                      f"{metric} {self.counts[name]}"]
        lines += self.e2e.prometheus("claimscope_e2e_latency_seconds",
                                     "Kafka message timestamp to Score stored, per claim")
        lines += self.inference.prometheus("claimscope_inference_seconds",
                                           "scoring time of one batch (checks + model)")
        lines += ["# HELP claimscope_batch_size messages per batch",
                  "# TYPE claimscope_batch_size histogram"]
        cum = np.cumsum(self.batch_sizes.counts)
        for b, c in zip(self.batch_sizes.bounds, cum[:-1], strict=True):
            lines.append(f'claimscope_batch_size_bucket{{le="{b:g}"}} {int(c)}')
        lines += [f'claimscope_batch_size_bucket{{le="+Inf"}} {int(cum[-1])}',
                  f"claimscope_batch_size_sum {self.batch_sizes.sum:g}",
                  f"claimscope_batch_size_count {int(cum[-1])}"]
        lines += ["# HELP claimscope_consumer_lag messages behind the end of each assigned "
                  "partition", "# TYPE claimscope_consumer_lag gauge"]
        for tp, lag in sorted(self.lag.items()):
            topic, _, part = tp.rpartition(":")
            lines.append(f'claimscope_consumer_lag{{topic="{topic}",partition="{part}"}} {lag}')
        lines += ["# HELP claimscope_ready 1 once the worker holds a partition assignment",
                  "# TYPE claimscope_ready gauge", f"claimscope_ready {int(self.ready)}"]
        return "\n".join(lines) + "\n"


def add_views(app: Any, stats: WorkerStats) -> None:
    """Register /health, /ready, /metrics and /stats on a Faust app's web server."""

    @app.page("/health")
    async def health(self: Any, request: Any) -> Any:
        return self.json({"status": "ok", "pid": os.getpid()})

    @app.page("/ready")
    async def ready(self: Any, request: Any) -> Any:
        body = {"ready": stats.ready, "assigned": stats.assigned}
        return self.json(body, status=200 if stats.ready else 503)

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return self.text(stats.prometheus(), content_type="text/plain; version=0.0.4")

    @app.page("/stats")
    async def stats_view(self: Any, request: Any) -> Any:
        since = request.query.get("since")
        return self.json(stats.snapshot(int(since) if since and since.isdigit() else None))


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99 in ms (None without samples)."""
    if not values.size:
        return {"p50": None, "p95": None, "p99": None}
    p = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p[0]), 2), "p95": round(float(p[1]), 2),
            "p99": round(float(p[2]), 2)}

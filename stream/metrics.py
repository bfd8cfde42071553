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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

WINDOW = 5_000  # latencies behind the p50/p99 that `/stats` and `claimscope up` show
KEEP = 200_000  # latencies kept for `/stats?since=K` (a bench run's worth)
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
# text format 0.0.4, what `generate_latest` writes; aiohttp adds the charset itself
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.rpartition(";")[0]
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
    """Bucket counts of many values at once (numpy, one call per batch); exported through
    prometheus_client as a histogram in seconds (`le` semantics: value <= bound)."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_MS, scale: float = 1e-3) -> None:
        self.bounds = np.asarray(bounds, dtype=float)
        self.scale = scale  # exported unit per observed unit (ms -> s)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last = +Inf
        self.sum = 0.0

    def observe_many(self, values: np.ndarray) -> None:
        if values.size:
            idx = np.searchsorted(self.bounds, values, side="left")
            self.counts += np.bincount(idx, minlength=len(self.counts))
            self.sum += float(values.sum())

    def family(self, name: str, help_: str) -> HistogramMetricFamily:
        cum = np.cumsum(self.counts)
        buckets = [(f"{b * self.scale:g}", int(c)) for b, c in zip(self.bounds, cum[:-1],
                                                                  strict=True)]
        return HistogramMetricFamily(name, help_, buckets=[*buckets, ("+Inf", int(cum[-1]))],
                                     sum_value=self.sum * self.scale)


@dataclass(eq=False)  # compared by identity: it is registered as a Prometheus collector
class WorkerStats:
    """Counters and latency samples of one worker process (one event loop: no locks)."""

    kind: str = "pipeline"  # or "noop"
    started_at: float = field(default_factory=time.time)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    e2e: Histogram = field(default_factory=Histogram)
    inference: Histogram = field(default_factory=Histogram)
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(
        (1, 10, 50, 100, 250, 500, 1000, 5000), scale=1.0))
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))
    n_samples: int = 0  # samples ever recorded; samples[-1] is number n_samples - 1
    last_done_at: float = 0.0  # wall clock of the last finished batch
    ready: bool = False
    assigned: list[str] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset
    info: dict[str, Any] = field(default_factory=dict)  # device, model_version, threshold

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

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

    def collect(self) -> Iterator[Metric]:
        """The Prometheus view of these counters, read when `/metrics` is scraped (the
        prometheus_client custom-collector way: one source of truth, the library's text)."""
        for name in COUNTERS:
            yield CounterMetricFamily(f"claimscope_{name}", HELP[name], value=self.counts[name])
        yield self.e2e.family("claimscope_e2e_latency_seconds",
                              "Kafka message timestamp to Score stored, per claim")
        yield self.inference.family("claimscope_inference_seconds",
                                    "scoring time of one batch (checks + model)")
        yield self.batch_sizes.family("claimscope_batch_size", "messages per batch")
        lag = GaugeMetricFamily("claimscope_consumer_lag",
                                "messages behind the end of each assigned partition",
                                labels=["topic", "partition"])
        for tp, n in sorted(self.lag.items()):
            topic, _, part = tp.rpartition(":")
            lag.add_metric([topic, part], n)
        yield lag
        yield GaugeMetricFamily("claimscope_ready",
                                "1 once the worker holds a partition assignment",
                                value=int(self.ready))

    def prometheus(self) -> bytes:
        """`/metrics`: the Prometheus text exposition format."""
        return generate_latest(self.registry)


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
        return self.text(stats.prometheus().decode(), content_type=CONTENT_TYPE)

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

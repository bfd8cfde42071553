"""`claimscope up`: the whole system on one machine, with a live view, until Ctrl-C.

Starts Tansu and redis-server on free ports (unless CLAIMSCOPE_BROKER / CLAIMSCOPE_REDIS_URL
name running ones), W worker processes, and a synthetic feed (`model.generator`) at R
claims/s; shows published, scored, flagged, dead letters, p50/p99 latency, per worker and in
total. Ctrl-C, SIGTERM or `--duration` stop the feed, then the workers (SIGTERM: each
finishes its batch), then the services it started: nothing is left running.

Workers here use a 10 s session timeout unless one is configured: on Tansu a worker waits
about half of it to join the group, so the demo starts scoring in seconds, not 30.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream.bench import configured
from stream.procs import WorkerProcess, stop_all
from stream.services import Services, create_topics
from stream.settings import Settings


class Feed(threading.Thread):
    """Publishes generated claims at `rate`/s with ClaimPublisher until stopped."""

    def __init__(self, settings: Settings, rate: float, fraud_rate: float) -> None:
        super().__init__(name="claimscope-feed", daemon=True)
        self.settings, self.rate, self.fraud_rate = settings, rate, fraud_rate
        self.published = 0
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        from model.generator import ClaimGenerator
        from stream.client import ClaimPublisher

        try:
            gen = iter(ClaimGenerator(seed=int(time.time()), fraud_rate=self.fraud_rate))
            pub = ClaimPublisher(self.settings)
            try:
                start = time.monotonic()
                while not self._halt.is_set():
                    due = int((time.monotonic() - start) * self.rate)
                    if due > self.published:
                        batch = [next(gen).claim for _ in range(due - self.published)]
                        self.published += pub.publish(batch).sent
                    self._halt.wait(0.02)
            finally:
                pub.close(timeout=5)  # bounded: `up` stops the broker right after
        except Exception as e:  # shown in the table; `up` keeps running the rest
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def run_up(settings: Settings, *, workers: int = 1, rate: float = 200.0,
           fraud_rate: float = 0.05, duration: float | None = None,
           console: Console | None = None) -> int:
    """Run everything until Ctrl-C/SIGTERM (KeyboardInterrupt) or `duration`; 0 if clean."""
    console = console or Console()
    tmp = Path(tempfile.mkdtemp(prefix="claimscope-up-"))
    svc = Services.start(settings, broker=not configured(settings, "broker"),
                         redis=not configured(settings, "redis_url"), log_dir=tmp)
    s = svc.settings
    if not configured(settings, "broker_session_timeout"):
        s = s.model_copy(update={"broker_session_timeout": 10.0})
    pool: list[WorkerProcess] = []
    feed: Feed | None = None
    ui = None  # the investigator console (stream/console), on a free port
    code = 0
    try:
        create_topics(s)
        console.print(f"broker {s.broker} | redis {s.display()['redis_url']} | logs {tmp}",
                      highlight=False, soft_wrap=True)
        pool += [WorkerProcess(s, log=tmp / f"worker-{i}.log", name=f"worker {i}").start()
                 for i in range(workers)]
        for w in pool:
            console.print(f"{w.name}: pid {w.pid}, web port {w.port} (/metrics, /stats)",
                          highlight=False, soft_wrap=True)
        from stream.console.server import ConsoleServer
        ui = ConsoleServer(s).start()
        console.print(ui.banner(), highlight=False, soft_wrap=True)
        if rate > 0:
            feed = Feed(s, rate, fraud_rate)
            feed.start()
        deadline = time.monotonic() + duration if duration is not None else None
        with Live(view(pool, feed, s), console=console, refresh_per_second=2,
                  transient=False) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
                live.update(view(pool, feed, s))
                if not any(w.alive() for w in pool):
                    console.print("every worker exited; see " + str(tmp), highlight=False)
                    code = 1
                    break
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping: feed, workers, services", highlight=False)
        try:
            if ui is not None:
                ui.stop()
            if feed is not None:
                feed.stop()
        finally:
            try:
                stop_all(pool)
            finally:
                svc.stop()
    last = [w.last_stats or {} for w in pool]
    console.print(f"up: {feed.published if feed else 0} published, "
                  f"{sum(st.get('scored', 0) for st in last)} scored, "
                  f"{sum(st.get('flagged', 0) for st in last)} flagged, "
                  f"{sum(st.get('deadletters', 0) for st in last)} dead letters; "
                  f"workers and services stopped", highlight=False, soft_wrap=True)
    return code


def view(pool: list[WorkerProcess], feed: Feed | None, settings: Settings) -> Table:
    """The live table: one row per worker, then the totals."""
    published = feed.published if feed else 0
    title = f"ClaimScope up: {published} published to {settings.topic_claims}"
    if feed and feed.error:
        title += f" (feed stopped: {feed.error})"
    table = Table("worker", "pid", "web", "state", "partitions", "scored", "flagged",
                  "dead letters", "p50 ms", "p99 ms", title=title, title_justify="left")
    tot = {"scored": 0, "flagged": 0, "deadletters": 0}
    for w in pool:
        st = w.stats(timeout=0.5) or w.last_stats
        if st is None:
            state = "starting" if w.alive() else "stopped"
            table.add_row(w.name, str(w.pid), str(w.port), state, "", "", "", "", "", "")
            continue
        for k in tot:
            tot[k] += st[k]
        parts = [p.rsplit(":", 1)[1] for p in st["assigned"]
                 if p.startswith(settings.topic_claims + ":")]
        lat = st["latency_ms"]
        state = ("ready" if st["ready"] else "joining") if w.alive() else "stopped"
        table.add_row(w.name, str(w.pid), str(w.port), state,
                      ",".join(parts), str(st["scored"]), str(st["flagged"]),
                      str(st["deadletters"]), _ms(lat["p50"]), _ms(lat["p99"]))
    table.add_row("total", "", "", "", "", str(tot["scored"]), str(tot["flagged"]),
                  str(tot["deadletters"]), "", "", style="bold")
    return table


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.0f}"

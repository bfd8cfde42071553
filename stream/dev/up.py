"""`claimscope up`: the whole system on one machine, with a live view, until Ctrl-C.

Starts Tansu and redis-server on free ports (unless CLAIMSCOPE_BROKER / CLAIMSCOPE_REDIS_URL
name running ones), W worker processes, and a synthetic feed (`model.generator`) at R
claims/s; shows published, scored, flagged, dead letters, p50/p99 latency, per worker and in
total: a live table on a terminal, a plain progress line every `PROGRESS_EVERY_S` seconds
otherwise (`claimscope up | tee up.log`). Ctrl-C, SIGTERM or `--duration` stop the feed,
then the workers (SIGTERM: each finishes its batch), then the services it started: nothing
is left running.

Bounds, so that `up` can run for a day (each printed at start-up):

- the embedded **Redis** gets `maxmemory` (`--redis-maxmemory-mb`) with `volatile-ttl`
  eviction: the oldest claim records go first; the recent/flagged indexes (no TTL, trimmed
  to `recent_max`) stay, so the console's views keep working on what is still stored;
- the embedded **broker** keeps every message in memory and Tansu has no retention (nor
  DeleteRecords; measured: `retention.ms` is ignored, deleting a topic frees its memory). So
  when it holds `--broker-max-mb`, `up` rolls over to a fresh one: a new Tansu with new
  workers starts beside the old, the feed and the console move to it, the old workers finish
  what the old broker holds, and the old broker and workers stop. Scores and cross-claim
  state live in Redis, which stays.

Workers here use a 10 s session timeout unless one is configured: on Tansu a worker waits
about half of it to join the group, so the demo starts scoring in seconds, not 30.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from model.generator import CLAIMS_PER_MEMBER_YEAR, ClaimGenerator
from stream.client import ClaimPublisher
from stream.console.server import ConsoleServer
from stream.dev.bench import configured
from stream.dev.procs import WorkerProcess, stop_all
from stream.dev.services import Process, Services, start_tansu
from stream.preflight import create_topics
from stream.settings import Settings

PROGRESS_EVERY_S = 5.0  # plain progress lines when stdout is not a terminal
ROLL_CHECK_S = 5.0  # how often the embedded broker's memory is read
DRAIN_TIMEOUT_S = 120.0  # the most a rolled-over generation may take to finish its claims
SIM_YEAR_S = 900.0  # feed seconds per simulated year of service dates (members scale with rate)
MAX_LAG_S = 0.25  # the most a stalled feed catches up at once: its rate holds, bursts do not


class Pacer:
    """Claims due at a steady `rate`: a feed that fell behind (the generator or the broker
    stalled) catches up at most `max_lag_s` of claims at once and drops the rest of its debt,
    so it never publishes in bursts above its rate."""

    def __init__(self, rate: float, start: float, max_lag_s: float = MAX_LAG_S) -> None:
        self.rate, self.max_lag = rate, max(1, round(rate * max_lag_s))
        self.start, self.sent = start, 0

    def due(self, now: float) -> int:
        """Claims to publish at `now` (then report them with `done`)."""
        behind = int((now - self.start) * self.rate) - self.sent
        if behind > self.max_lag:  # forgive the debt beyond max_lag: the schedule moves on
            self.start += (behind - self.max_lag) / self.rate
            behind = self.max_lag
        return max(0, behind)

    def done(self, n: int) -> None:
        self.sent += n


class Feed(threading.Thread):
    """Publishes generated claims at `rate`/s with ClaimPublisher until stopped; `switch`
    moves it to another broker (the claims sent so far are flushed to the old one first)."""

    def __init__(self, settings: Settings, rate: float, fraud_rate: float) -> None:
        super().__init__(name="claimscope-feed", daemon=True)
        self.settings, self.rate, self.fraud_rate = settings, rate, fraud_rate
        self.published = 0
        self.by_broker: Counter[str] = Counter()  # claims delivered to each broker
        self.error: str | None = None
        self._halt = threading.Event()
        self._switched = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:

        try:
            # members at realistic care rates whatever the feed rate: the service-date clock
            # runs a year per SIM_YEAR_S of feed, so a faster feed has more members
            members = max(500, int(self.rate * SIM_YEAR_S / CLAIMS_PER_MEMBER_YEAR))
            gen = iter(ClaimGenerator(seed=int(time.time()), fraud_rate=self.fraud_rate,
                                      members=members))
            target = self.settings
            pub = ClaimPublisher(target)
            try:
                pace = Pacer(self.rate, time.monotonic())
                while not self._halt.is_set():
                    if self.settings is not target:
                        pub.close(timeout=10)  # every claim sent so far is on the old broker
                        target, pub = self.settings, ClaimPublisher(self.settings)
                        self._switched.set()
                    if due := pace.due(time.monotonic()):
                        batch = [next(gen).claim for _ in range(due)]
                        sent = pub.publish(batch).sent
                        pace.done(due)  # an invalid claim (none are) still takes its slot
                        self.published += sent
                        self.by_broker[target.broker] += sent
                    self._halt.wait(0.02)
            finally:
                pub.close(timeout=5)  # bounded: `up` stops the broker right after
        except Exception as e:  # shown in the view; `up` keeps running the rest
            self.error = f"{type(e).__name__}: {e}"

    def switch(self, settings: Settings, timeout: float = 30.0) -> None:
        """Publish to `settings`' broker from now on; returns once the old one has all."""
        with self._lock:  # one switch at a time
            self._switched.clear()
            self.settings = settings
            if self.is_alive() and not self._switched.wait(timeout):
                raise RuntimeError("the feed did not move to the new broker")

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@dataclass
class Generation:
    """A broker (embedded, or the configured one) and the workers reading it."""

    settings: Settings
    workers: list[WorkerProcess]
    broker: Process | None = None  # the embedded Tansu; None for a configured broker
    number: int = 0  # 0, then one more at each roll-over
    carried: Counter[str] = field(default_factory=Counter)  # totals of earlier generations

    def broker_mb(self) -> float | None:
        return rss_mb(self.broker.proc.pid) if self.broker is not None else None

    def done(self) -> int:
        return sum(st.get("scored", 0) + st.get("deadletters", 0)
                   for st in (w.stats() or w.last_stats or {} for w in self.workers))

    def totals(self) -> Counter[str]:
        out = Counter(self.carried)
        for w in self.workers:
            for k in ("scored", "flagged", "deadletters"):
                out[k] += (w.last_stats or {}).get(k, 0)
        return out

    def stop(self) -> None:
        try:
            stop_all(self.workers)
        finally:
            if self.broker is not None:
                self.broker.stop()


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (Linux /proc), None where it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")),
              None)
    return int(kb) / 1024 if kb else None


def start_generation(base: Settings, workers: int, tmp: Path, number: int,
                     embedded_broker: bool) -> Generation:
    """A broker (a new Tansu when embedded) with the topics and `workers` workers on it."""
    broker = None
    s = base
    if embedded_broker:
        broker = start_tansu(log=tmp / f"tansu-{number}.log")
        s = base.model_copy(update={"broker": f"kafka://127.0.0.1:{broker.port}"})
    try:
        create_topics(s)
        suffix = f"-{number}" if number else ""
        pool = [WorkerProcess(s, log=tmp / f"worker-{i}{suffix}.log", name=f"worker {i}")
                .start() for i in range(workers)]
    except BaseException:
        if broker is not None:
            broker.stop()
        raise
    return Generation(s, pool, broker, number)


def run_up(settings: Settings, *, workers: int = 1, rate: float = 200.0,
           fraud_rate: float = 0.05, duration: float | None = None,
           redis_maxmemory_mb: int = 512, broker_max_mb: int = 512,
           console: Console | None = None) -> int:
    """Run everything until Ctrl-C/SIGTERM (KeyboardInterrupt) or `duration`; 0 if clean."""
    console = console or Console()

    def say(msg: str) -> None:
        console.print(msg, highlight=False, soft_wrap=True)

    tmp = Path(tempfile.mkdtemp(prefix="claimscope-up-"))
    embedded_broker = not configured(settings, "broker")
    svc = Services.start(settings, broker=False, redis=not configured(settings, "redis_url"),
                         log_dir=tmp, redis_maxmemory_mb=redis_maxmemory_mb)
    s = svc.settings
    if not configured(settings, "broker_session_timeout"):
        s = s.model_copy(update={"broker_session_timeout": 10.0})
    gen: Generation | None = None
    feed: Feed | None = None
    ui = None  # the investigator console (stream/console), on a free port
    code = 0
    try:
        gen = start_generation(s, workers, tmp, 0, embedded_broker)
        say(f"broker {gen.settings.broker} | redis {s.display()['redis_url']} | logs {tmp}")
        say(bounds_line(s, svc, embedded_broker, redis_maxmemory_mb, broker_max_mb))
        for w in gen.workers:
            say(f"{w.name}: pid {w.pid}, web port {w.port} (/metrics, /stats)")
        ui = ConsoleServer(gen.settings).start()
        say(ui.banner())
        if rate > 0:
            feed = Feed(gen.settings, rate, fraud_rate)
            feed.start()
        started = time.monotonic()
        deadline = started + duration if duration is not None else None
        next_check = started + ROLL_CHECK_S
        with progress_view(console) as show:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
                show(view(gen, feed), lambda g=gen: progress_line(g, feed, started))
                if not any(w.alive() for w in gen.workers):
                    say("every worker exited; see " + str(tmp))
                    code = 1
                    break
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + ROLL_CHECK_S
                    held = gen.broker_mb()
                    if held is not None and held >= broker_max_mb:
                        say(f"the embedded broker holds {held:.0f} MB (bound {broker_max_mb} "
                            f"MB): rolling over to a fresh broker and workers")
                        try:
                            gen, ui = roll_over(gen, feed, ui, workers, tmp, say)
                        except (RuntimeError, OSError) as e:  # ServiceError included
                            say(f"roll-over failed ({e}); keeping the current broker, "
                                f"trying again in {ROLL_CHECK_S:.0f} s")
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping: feed, workers, services")
        try:
            if ui is not None:
                ui.stop()
            if feed is not None:
                feed.stop()
        finally:
            try:
                if gen is not None:
                    gen.stop()
            finally:
                svc.stop()
    tot = gen.totals() if gen is not None else Counter()
    say(f"up: {feed.published if feed else 0} published, {tot['scored']} scored, "
        f"{tot['flagged']} flagged, {tot['deadletters']} dead letters; "
        f"workers and services stopped")
    return code


def bounds_line(s: Settings, svc: Services, embedded_broker: bool, redis_mb: int,
                broker_mb: int) -> str:
    redis = (f"{svc.started[0].proc.args[0]} maxmemory {redis_mb} MB, volatile-ttl (oldest "
             f"claim records evicted first; recent/flagged indexes kept, {s.recent_max:,} "
             f"each)" if svc.started else "Redis configured: its own bounds")
    broker = (f"embedded broker in memory, no retention in Tansu: rolled over to a fresh "
              f"broker and workers at {broker_mb} MB" if embedded_broker
              else "broker configured: its own retention")
    return f"bounds: {redis}; {broker}; claim records expire after {s.claim_ttl_s:,} s"


def roll_over(old: Generation, feed: Feed | None, ui, workers: int, tmp: Path, say
              ) -> tuple[Generation, object]:
    """Start the next generation, move the feed and the console to it, let the old one finish
    what its broker holds, then stop it."""
    new = start_generation(old.settings, workers, tmp, old.number + 1, True)
    try:
        for w in new.workers:
            w.wait_ready(timeout=120)
        if feed is not None:
            feed.switch(new.settings)
    except BaseException:
        new.stop()  # nothing moved yet (or the feed is back): the old generation goes on
        if feed is not None and feed.settings is new.settings:
            feed.switch(old.settings)
        raise
    port = ui.port
    ui.stop()
    ui = ConsoleServer(new.settings, port=port).start()
    sent = feed.by_broker[old.settings.broker] if feed is not None else 0
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while old.done() < sent and time.monotonic() < deadline:
        time.sleep(0.5)
    finished = old.done()
    if finished < sent:
        say(f"the old generation finished {finished} of {sent} claims in "
            f"{DRAIN_TIMEOUT_S:.0f} s; stopping it anyway (the rest stay unscored)")
    old.stop()
    new.carried = old.totals()
    say(f"rolled over: broker {new.settings.broker}, workers "
        + ", ".join(f"pid {w.pid} web {w.port}" for w in new.workers)
        + f"; the old generation finished {finished} of the {sent} claims it was sent")
    return new, ui


@contextmanager
def progress_view(console: Console) -> Iterator[Callable[[Table, Callable[[], str]], None]]:
    """`show(table, line)`: a live table on a terminal, else `line()` every few seconds."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            yield lambda table, line: live.update(table)
        return
    due = time.monotonic() + PROGRESS_EVERY_S

    def show(table: Table, line: Callable[[], str]) -> None:
        nonlocal due
        if time.monotonic() >= due:
            due = time.monotonic() + PROGRESS_EVERY_S
            console.print(line(), highlight=False, soft_wrap=True)

    yield show


def progress_line(gen: Generation, feed: Feed | None, started: float) -> str:
    """One plain line: `up 35 s: 7000 published, 6980 scored, ...`."""
    tot = gen.totals()
    lat = [st["latency_ms"] for st in (w.last_stats for w in gen.workers) if st]
    p99 = max((x["p99"] for x in lat if x["p99"] is not None), default=None)
    p50 = max((x["p50"] for x in lat if x["p50"] is not None), default=None)
    held = gen.broker_mb()
    return (f"up {time.monotonic() - started:.0f} s: {feed.published if feed else 0} "
            f"published, {tot['scored']} scored, {tot['flagged']} flagged, "
            f"{tot['deadletters']} dead letters, p50 {_ms(p50) or '-'} ms, p99 "
            f"{_ms(p99) or '-'} ms" + (f", broker {held:.0f} MB" if held is not None else ""))


def view(gen: Generation, feed: Feed | None) -> Table:
    """The live table: one row per worker, then the totals (earlier generations included)."""
    settings = gen.settings
    published = feed.published if feed else 0
    title = f"ClaimScope up: {published} published to {settings.topic_claims}"
    if feed and feed.error:
        title += f" (feed stopped: {feed.error})"
    table = Table("worker", "pid", "web", "state", "partitions", "scored", "flagged",
                  "dead letters", "p50 ms", "p99 ms", title=title, title_justify="left")
    for w in gen.workers:
        st = w.stats(timeout=0.5) or w.last_stats
        if st is None:
            state = "starting" if w.alive() else "stopped"
            table.add_row(w.name, str(w.pid), str(w.port), state, "", "", "", "", "", "")
            continue
        parts = [p.rsplit(":", 1)[1] for p in st["assigned"]
                 if p.startswith(settings.topic_claims + ":")]
        lat = st["latency_ms"]
        state = ("ready" if st["ready"] else "joining") if w.alive() else "stopped"
        table.add_row(w.name, str(w.pid), str(w.port), state,
                      ",".join(parts), str(st["scored"]), str(st["flagged"]),
                      str(st["deadletters"]), _ms(lat["p50"]), _ms(lat["p99"]))
    tot = gen.totals()
    table.add_row("total", "", "", "", "", str(tot["scored"]), str(tot["flagged"]),
                  str(tot["deadletters"]), "", "", style="bold")
    return table


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:.0f}"

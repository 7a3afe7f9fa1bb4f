"""The console over HTTP: pages, the token and CSRF rules, escaping, payload privacy, the
shared stats cache, the Host check and the security headers."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.consoles import TOKEN, Served, fail_all

XSS_ID = "<script>alert(1)</script>"
VENDOR = Path(__file__).resolve().parents[2] / "ferricflowd" / "console" / "static" / "vendor"


def failed_flow(app: Served, flow_id: str = "f-1") -> None:
    app.client.create(flow_id, "job", "queued", b"payload")
    assert fail_all(app.client, "job") == 1
    assert app.client.get(flow_id).state == "failed"


def test_overview_names_every_type_and_flow_page_shows_state_and_history(
        console_app) -> None:
    app = console_app()
    app.client.create("a-1", "alpha", "queued")
    app.client.create("b-1", "beta", "waiting")
    failed_flow(app)
    home = app.get("/")
    assert home.status == 200 and home.headers["content-type"].startswith("text/html")
    for name in ("alpha", "beta", "job"):
        assert f'id="type-{name}"' in home.body
    assert 'href="/types/beta/waiting"' in home.body
    page = app.get("/flows/f-1")
    assert page.status == 200
    assert 'id="flow-state">failed<' in page.body
    events = re.findall(r'class="ev ev-([a-z_]+)"', page.body)
    assert events == ["created", "claimed", "failed"]
    assert "boom" in page.body  # the failure's error text
    assert app.get("/flows/nope").status == 404


def test_requeue_needs_the_token_and_bearer_works(console_app) -> None:
    app = console_app()
    failed_flow(app)
    version = app.client.get("f-1").version
    refused = app.post("/flows/f-1/requeue", {"state": "queued"})
    assert refused.status == 401 and "www-authenticate" not in refused.headers  # a browser
    assert app.post("/flows/f-1/requeue", {"state": "queued"},
                    Authorization="Bearer nope").status == 403
    record = app.client.get("f-1")
    assert (record.state, record.version) == ("failed", version)  # nothing changed
    ok = app.post("/flows/f-1/requeue", {"state": "queued"}, Authorization=f"Bearer {TOKEN}")
    assert ok.status == 200, ok.body
    assert '"state":"queued"' in ok.body.replace(" ", "")
    record = app.client.get("f-1")
    assert record.state == "queued" and record.version > version
    assert app.client.history("f-1")[-1].event == "rewound"


def test_read_only_console_refuses_every_action(console_app) -> None:
    app = console_app(token="")
    failed_flow(app)
    for auth in ("", "Bearer ", "Bearer anything"):
        headers = {"Authorization": auth} if auth else {}
        reply = app.post("/flows/f-1/cancel", {}, **headers)
        assert reply.status in (401, 403), (auth, reply.status)
    assert app.post("/login", {"token": ""}).status == 403
    assert "read-only" in app.get("/flows/f-1").body
    assert app.client.get("f-1").state == "failed"


def test_forms_need_their_csrf_token(console_app) -> None:
    app = console_app()
    failed_flow(app)
    session = app.login()
    cookie = session["cookie"]
    for fields in ({"state": "queued"}, {"state": "queued", "csrf": "0" * 64}):
        reply = app.post("/flows/f-1/requeue", fields, Cookie=cookie)
        assert reply.status == 403 and "CSRF" in reply.body
    # a page of another site posting with the victim's cookie (a browser sends Origin)
    evil = app.post("/flows/f-1/requeue", {"state": "queued", "csrf": session["csrf"]},
                    Cookie=cookie, Origin="http://evil.example")
    assert evil.status == 403
    assert app.client.get("f-1").state == "failed"
    ok = app.post("/flows/f-1/requeue", {"state": "queued", "csrf": session["csrf"]},
                  Cookie=cookie, Origin=app.url)
    assert ok.status == 303 and ok.headers["location"] == "/flows/f-1?done=requeued"
    assert app.client.get("f-1").state == "queued"
    # the form on the page carries that same token
    assert f'name="csrf" value="{session["csrf"]}"' in app.get("/flows/f-1", Cookie=cookie).body
    # a forged or stale session cookie is no session
    assert app.post("/flows/f-1/cancel", {"csrf": session["csrf"]},
                    Cookie=cookie[:-4] + "0000").status == 401


def test_wrong_login_is_refused(console_app) -> None:
    app = console_app()
    reply = app.post("/login", {"token": "wrong", "next": "/"})
    assert reply.status == 403 and "ffconsole" not in reply.cookies
    assert app.post("/login", {"token": TOKEN, "next": "//evil.example/"}).headers[
        "location"] == "/"  # no open redirect


def test_a_flow_id_with_markup_renders_as_text(console_app) -> None:
    app = console_app()
    app.client.create(XSS_ID, "job", "queued", b"x")
    fail_all(app.client, "job", b"<img src=x onerror=alert(2)>")
    pages = [app.get(f"/flows/{quote(XSS_ID, safe='')}"), app.get("/types/job/failed"),
             app.get("/failed"), app.get("/")]
    for page in pages:
        assert page.status == 200
        assert "<script>alert(1)" not in page.body and "<img src=x" not in page.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].body
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[0].body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1].body
    # the link to it round-trips
    link = re.search(r'href="(/flows/[^"]+)"', pages[1].body.split("<tbody>", 1)[1]).group(1)
    assert app.get(link.replace("&amp;", "&")).status == 200


def test_payload_and_value_bytes_are_not_shown_by_default(console_app) -> None:
    app = console_app()
    app.client.create("p-1", "job", "queued", b"SECRET-PAYLOAD <b>", values={"card": b"4111-x"})
    page = app.get("/flows/p-1")
    assert "SECRET-PAYLOAD" not in page.body and "4111" not in page.body
    assert "18 B" in page.body and "card" in page.body  # sizes and names only
    asked = app.get("/flows/p-1?show=payload")
    assert "SECRET-PAYLOAD" not in asked.body and "Log in" in asked.body
    shown = app.get("/flows/p-1?show=payload", Authorization=f"Bearer {TOKEN}")
    assert "SECRET-PAYLOAD &lt;b&gt;" in shown.body
    value = app.get("/flows/p-1?show=value:card", Cookie=app.login()["cookie"])
    assert "4111-x" in value.body


def test_many_tabs_cost_one_stats_read_per_refresh(console_app) -> None:
    app = console_app(refresh="30s")
    app.client.create("a-1", "alpha", "queued")
    statuses: list[int] = []

    def tab() -> None:
        for _ in range(5):
            statuses.append(app.get("/", HX_Request="true").status)

    threads = [threading.Thread(target=tab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 40
    assert app.get("/api/overview").status == 200
    assert app.console.overview.reads == 1


def test_the_overview_counts_throughput_per_minute(console_app) -> None:
    app = console_app(refresh="1s")
    for i in range(3):
        app.client.create(f"f-{i}", "job", "queued")
    fail_all(app.client, "job")
    doc = app.get("/api/overview")
    import json

    data = json.loads(doc.body)
    assert data["types"]["job"]["failed_per_min"] == 3
    assert data["types"]["job"]["counts"]["failed"] == 3
    series = data["throughput"]
    assert len(series["t"]) == 60 and series["failed"][-1] == 3  # the hour, filled in


def test_host_header_must_be_loopback(console_app) -> None:
    app = console_app()
    assert app.get("/", Host="evil.example").status == 400
    assert app.get("/", Host=f"localhost:{app.port}").status == 200
    assert app.get("/", Host=f"[::1]:{app.port}").status == 200


def test_security_headers(console_app) -> None:
    app = console_app()
    reply = app.get("/")
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["cache-control"] == "no-store"


def test_bulk_requeue_of_a_selection_confirms_the_count(console_app) -> None:
    app = console_app()
    for i in range(3):
        app.client.create(f"f-{i}", "job", "queued")
    fail_all(app.client, "job")
    session = app.login()
    fields = [("csrf", session["csrf"]), ("action", "requeue"), ("scope", "selected"),
              ("to_state", "queued"), ("ids", "f-0"), ("ids", "f-2")]
    confirm = app.post("/types/job/failed/bulk", fields, Cookie=session["cookie"])
    assert confirm.status == 200 and '<b id="count">2</b>' in confirm.body
    assert [app.client.get(f"f-{i}").state for i in range(3)] == ["failed"] * 3
    done = app.post("/types/job/failed/bulk", [*fields, ("confirm", "yes")],
                    Cookie=session["cookie"])
    assert done.status == 200 and "2 done" in done.body
    assert [app.client.get(f"f-{i}").state for i in range(3)] == ["queued", "failed", "queued"]


def test_bulk_purge_of_every_match_runs_as_a_job(console_app) -> None:
    app = console_app()
    for i in range(5):
        app.client.create(f"f-{i}", "job", "queued")
    fail_all(app.client, "job")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    started = app.post("/types/job/failed/bulk", {"action": "purge", "scope": "all"}, **bearer)
    assert started.status == 202, started.body
    import json

    job = app.console.jobs.get(json.loads(started.body)["job"])
    assert job is not None and job.matched == 5
    deadline = time.monotonic() + 10
    while job.running:
        assert time.monotonic() < deadline, "the bulk job did not finish"
        time.sleep(0.02)
    assert job.result.done == 5 and job.error is None
    assert app.client.get("f-0") is None
    assert "finished" in app.get(f"/jobs/{job.id}").body
    # purge is for finished Flows, and never on a selection
    assert app.post("/types/job/queued/bulk", {"action": "purge", "scope": "all"},
                    **bearer).status == 400


def test_flows_page_pages_with_a_cursor_and_filters(console_app) -> None:
    app = console_app()
    for i in range(25):
        app.client.create(f"q-{i:02d}", "job", "queued")
    first = app.get("/types/job/queued?limit=20")
    assert first.status == 200 and '<span class="muted" id="total">25 Flows' in first.body
    ids = re.findall(r'name="ids" value="([^"]+)"', first.body)
    assert len(ids) == 20
    nxt = re.search(r'rel="next" href="([^"]+)"', first.body).group(1).replace("&amp;", "&")
    second = app.get(nxt)
    rest = re.findall(r'name="ids" value="([^"]+)"', second.body)
    assert len(rest) == 5 and not set(rest) & set(ids)
    assert 'rel="next"' not in second.body
    assert app.get("/types/job/queued?attempts=x").status == 400
    found = app.get("/types/job/queued?id=q-03")
    assert found.status == 303 and found.headers["location"] == "/flows/q-03"


@pytest.mark.parametrize("name", ["htmx-2.0.11.min.js", "uPlot-1.6.32.iife.min.js",
                                  "uPlot-1.6.32.min.css"])
def test_vendored_files_match_their_recorded_hashes(name: str) -> None:
    table = (VENDOR / "README.md").read_text()
    digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
    assert f"| {name} |" in table and digest in table.split(f"| {name} |", 1)[1].split("\n")[0]


def test_schedules_pages_and_actions(console_app) -> None:
    from ferricflowd.flow.schedule_spec import Schedule

    app = console_app()
    app.client.schedules.create(Schedule(name="tick", type="job", every_ms=60_000))
    listing = app.get("/schedules")
    assert listing.status == 200 and 'id="schedule-tick"' in listing.body
    assert "every 1m00s" in listing.body and "active" in listing.body
    assert app.post("/schedules/tick/pause").status == 401
    assert not app.client.schedules.get("tick").paused
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert app.post("/schedules/tick/pause", **bearer).status == 200
    assert app.client.schedules.get("tick").paused
    session = app.login()
    resumed = app.post("/schedules/tick/resume", {"csrf": session["csrf"]},
                       Cookie=session["cookie"])
    assert resumed.status == 303 and resumed.headers["location"] == "/schedules/tick?done=resume"
    assert not app.client.schedules.get("tick").paused
    fired = app.post("/schedules/tick/trigger", **bearer)
    import json

    flow_id = json.loads(fired.body)["flows"][0]
    assert flow_id.startswith("tick:") and app.client.get(flow_id).state == "queued"
    page = app.get("/schedules/tick")
    assert page.status == 200 and "triggered" in page.body and flow_id in page.body
    assert app.get("/schedules/nope").status == 404

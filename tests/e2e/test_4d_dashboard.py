"""The admins' dashboard (monitor.metrics): Prometheus's console of the cluster, behind the
hub's login at /services/prometheus/. Headless Chromium (test_8_browser's) logs in as the
hub's admin through the proxy, sees the console's graphs drawn and keeps a screenshot; a
student who is not an admin gets the hub's 403; nobody logged in gets the login; the
dashboard's port answers neither from outside nor from a student's kernel."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from swarmhub.ports import DASHBOARD_PORT
from tests.cli import ROOT
from tests.e2e.conftest import ADDRESSES, HUB, NODE_LIST, PROXY, PROXY_URL, SETTINGS, student
from tests.e2e.test_4c_metrics import wait_for_value
from tests.e2e.test_7b_isolation import REACH
from tests.e2e.test_8_browser import browser, log_in  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.e2e

DASHBOARD = f"{PROXY_URL}/services/prometheus/"
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
ADMIN = sorted(SETTINGS.admin_users)[0]
USERS = ("dash-ann", "dash-bob")  # servers running, so that the graphs have something
GRAPHS = ("servers", "starts", "waiting", "failures", "memory", "cpu", "topmem", "disk")


@pytest.fixture(scope="module")
def servers(cluster: Path):
    started = [student(name) for name in USERS]
    for one in started:
        one.login()
        one.start_server()
    # Their memory in Prometheus (swarmhub-server-metrics' round, then the scrape), so that
    # the console's table, made when the page is, names them.
    wanted = "|".join(USERS)
    wait_for_value(cluster, f'count(swarmhub_server_memory_bytes{{user=~"{wanted}"}})', 2, 120)
    yield started
    for one in started:
        one.stop_server()


def test_an_admin_sees_the_dashboard_in_a_real_browser(
    browser: Browser,  # noqa: F811
    servers: list,
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        page.goto(DASHBOARD)
        assert "/hub/login" in page.url, page.url  # the hub asks first
        log_in(page, ADMIN)
        page.wait_for_url("**/services/prometheus/consoles/swarmhub.html**")
        assert page.locator("h1").inner_text() == "swarmhub: the cluster"
        # Every graph drawn by Prometheus's console library (Rickshaw: an SVG with a path).
        for graph in GRAPHS:
            page.locator(f"#{graph} svg path").first.wait_for(state="attached")
        # The right-hand table, made by Prometheus from its queries: our servers are in it.
        table = page.locator(".prom_console_rhs").inner_text()
        assert "Servers running" in table
        assert all(name in table for name in USERS), table
    finally:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        context.close()
    assert SCREENSHOT.stat().st_size > 50_000  # graphs, not a blank page


def test_a_student_gets_no_dashboard(cluster: Path) -> None:
    ann = student("dash-carl")
    ann.login()
    answer = ann.http.get(DASHBOARD + "api/v1/query?query=up", timeout=60)
    assert answer.status_code == 403, (answer.status_code, answer.url, answer.text[:300])
    assert "/hub/api/oauth2/authorize" in answer.url  # the hub said no, not Prometheus
    assert "swarmhub_server_memory_bytes" not in answer.text


def test_nobody_logged_in_gets_the_login(cluster: Path) -> None:
    nobody = student("nobody")
    answer = nobody.http.get(DASHBOARD + "api/v1/query?query=up", timeout=60)
    assert answer.status_code == 200 and "/hub/login" in answer.url, answer.url
    assert '"resultType"' not in answer.text


def test_the_dashboards_port_answers_neither_outside_nor_a_kernel(cluster: Path) -> None:
    for host in (PROXY, HUB, *NODE_LIST):
        with pytest.raises(OSError):
            socket.create_connection((ADDRESSES[host], DASHBOARD_PORT), timeout=3).close()
    kernel = student("dash-kim")
    kernel.login()
    kernel.start_server()
    try:
        targets = [
            (f"{host}:{DASHBOARD_PORT}", ADDRESSES[host], DASHBOARD_PORT)
            for host in (HUB, PROXY, *NODE_LIST)
        ]
        found = json.loads(kernel.run_code(f"TARGETS = {targets!r}\n" + REACH))
        assert set(found.values()) == {"blocked"}, found
    finally:
        kernel.stop_server()

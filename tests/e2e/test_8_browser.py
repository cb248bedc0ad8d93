"""A real browser on the sandbox: headless Chromium (Debian's package, driven by Playwright
through its executable: no browser download) logs in through the proxy over HTTPS, JupyterLab
loads, a new notebook runs a cell and shows its output; the screenshot is kept."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.cli import ROOT, run
from tests.e2e.conftest import CERT_FILE, PASSWORD, PROXY_URL, student
from tests.e2e.course_material import notebook, publish

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "test-artifacts" / "browser-jupyterlab.png"
INTERACT_SCREENSHOT = ROOT / "test-artifacts" / "browser-interact.png"
USER = "dora"
NEWCOMER = "emil"  # no server yet: the link logs him in, spawns, pulls, opens
# Two cores shared with the sandbox: a spawn on a busy node and JupyterLab's first load
# take time.
SPAWN_TIMEOUT_MS = 300_000
UI_TIMEOUT_MS = 120_000


def spki_pin(cert_file: Path) -> str:
    """The base64 SHA-256 of the certificate's public key, as Chromium's
    --ignore-certificate-errors-spki-list takes it: this certificate, and only it, is trusted."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(cluster: Path) -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium)")
    args = [f"--ignore-certificate-errors-spki-list={spki_pin(CERT_FILE)}"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=args, timeout=120_000)
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(page: Page, name: str) -> None:
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORD)
    page.click("#login_submit")


def test_jupyterlab_in_a_real_browser(browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(f"{PROXY_URL}/hub/login")
        assert page.url.startswith("https://")
        log_in(page, USER)
        # The hub spawns the server on a node and sends the browser on to JupyterLab.
        page.wait_for_url(f"**/user/{USER}/lab**", timeout=SPAWN_TIMEOUT_MS)
        page.goto(f"{PROXY_URL}/user/{USER}/lab?reset")  # the launcher, not a restored layout
        # A new notebook starts a kernel; a cell run before its websocket answers is lost.
        with page.expect_websocket(lambda ws: "/api/kernels/" in ws.url) as kernel:
            page.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
        kernel.value.wait_for_event("framereceived")
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()
        editor = panel.locator(".jp-Cell .cm-content").first
        editor.click()
        page.keyboard.type("print(6*7)")
        page.keyboard.press("Shift+Enter")
        output = panel.locator(".jp-OutputArea-output").first
        output.wait_for()
        assert output.inner_text().strip() == "42"
    finally:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        context.close()
    assert SCREENSHOT.stat().st_size > 20_000  # a rendered page, not a blank one
    dora = student(USER)
    dora.login()
    dora.stop_server()


def test_an_interact_link_in_a_real_browser(
    browser: Browser, cluster: Path, tmp_path: Path
) -> None:
    """A new student follows an interact link: log in, wait for the server, nbgitpuller's page
    pulls (its own script), and JupyterLab opens the notebook."""
    material = tmp_path / "material"
    material.mkdir()
    (material / "lesson.ipynb").write_text(notebook("answer = None", 'print("from the course")'))
    url, _ = publish(cluster, "browser-course", material)
    made = run("invoke", "interact.link", "--repo", url, "--path", "lesson.ipynb", env_file=cluster)
    assert made.returncode == 0, made.stderr
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(made.stdout.strip())
        assert "/hub/login" in page.url  # not logged in yet: the hub asks first
        log_in(page, NEWCOMER)
        page.wait_for_url(
            f"**/user/{NEWCOMER}/lab/tree/browser-course/lesson.ipynb", timeout=SPAWN_TIMEOUT_MS
        )
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        expect(panel.locator(".jp-Cell").nth(3)).to_contain_text(
            'print("from the course")', timeout=UI_TIMEOUT_MS
        )
        current_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
        expect(current_tab).to_contain_text("lesson.ipynb")
    finally:
        INTERACT_SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(INTERACT_SCREENSHOT))
        context.close()
    emil = student(NEWCOMER)
    emil.login()
    emil.stop_server()

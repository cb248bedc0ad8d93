"""nginx in front of a class start (proxy.configure): its connection limits, and the page a
student sees when what is behind it does not answer.

No part of the cluster is stopped: a route of chp's own to an address where nothing listens
stands for a hub or server out of reach (chp answers 503 for it, as for a hub that is
restarting), added through chp's API from the hub's container (whose environment holds
chp's token) and removed at the end. About 10 s.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from swarmhub.steps import proxy
from tests.cli import run
from tests.e2e.conftest import CERT_FILE, PROXY, PROXY_URL, on_hub

pytestmark = pytest.mark.e2e

DEAD = "/user/nobody-listens"  # chp routes it to a port where nothing listens


def chp_routes(sandbox: Path, method: str, target: str = "") -> None:
    """Add (POST) or remove (DELETE) chp's route DEAD, with chp's token from the hub's env."""
    body = json.dumps({"target": target}) if target else ""
    code = (
        "import os, urllib.request as u; "
        f"r = u.Request('http://chp-internal:8001/api/routes{DEAD}', method='{method}', "
        f"data={body.encode()!r} or None); "
        "r.add_header('Authorization', 'token ' + os.environ['CONFIGPROXY_AUTH_TOKEN']); "
        "print(u.urlopen(r, timeout=10).status)"
    )
    on_hub(sandbox, f"docker exec jupyterhub python3 -c {shlex.quote(code)}")


@pytest.fixture
def dead_route(cluster: Path) -> Iterator[str]:
    chp_routes(cluster, "POST", "http://127.0.0.1:9")
    try:
        yield DEAD
    finally:
        chp_routes(cluster, "DELETE")


def test_nginx_holds_a_class(cluster: Path) -> None:
    shown = run("fab", "-H", PROXY, "--", "sudo nginx -T 2>/dev/null", env_file=cluster).stdout
    assert f"worker_connections {proxy.WORKER_CONNECTIONS};" in shown
    assert f"worker_rlimit_nofile {proxy.RLIMIT_NOFILE};" in shown
    assert f"keepalive_timeout {proxy.UPSTREAM_KEEPALIVE_TIMEOUT};" in shown
    limits = run(
        "fab",
        "-H",
        PROXY,
        "--",
        'sudo sh -c \'grep "open files" /proc/$(pgrep -f "nginx: worker" | head -n1)/limits\'',
        env_file=cluster,
    ).stdout
    assert str(proxy.RLIMIT_NOFILE) in limits, limits


def test_a_student_out_of_reach_gets_a_page_that_retries(dead_route: str) -> None:
    page = requests.get(f"{PROXY_URL}{dead_route}/lab", verify=str(CERT_FILE), timeout=30)
    assert page.status_code == 503
    assert page.headers["Refresh"] == str(proxy.WAIT_RETRY)
    assert page.headers["Retry-After"] == str(proxy.WAIT_RETRY)
    assert f'<meta http-equiv="refresh" content="{proxy.WAIT_RETRY}">' in page.text
    assert "Please wait a moment" in page.text and "tries again by itself" in page.text


def test_an_api_error_passes_as_it_is(dead_route: str) -> None:
    answer = requests.get(f"{PROXY_URL}{dead_route}/api/status", verify=str(CERT_FILE), timeout=30)
    assert answer.status_code in (502, 503)
    assert "Please wait a moment" not in answer.text

"""The admins' dashboard (monitor.metrics, swarmhub/hubside/dashboard.py): the hub's
`prometheus` service routed by chp and allowed to admins only, its front (JupyterHub's real
HubOAuth, the version the hub image pins) forwarding to Prometheus, Prometheus's external URL
under /services/prometheus/, our console filled in, and the one firewall opening."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from swarmhub import settings
from swarmhub.hubside import DASHBOARD_MODULE
from swarmhub.ports import DASHBOARD_PORT
from swarmhub.steps import firewall, hub, metrics
from tests.unit.test_hubside import HUB_IMAGE_PACKAGES, hub_env


def course(tmp_path: Path, extra: str = "") -> settings.Settings:
    env_file = tmp_path / "course.env"
    env_file.write_text("HUB_HOST=hub\nNODE_HOSTS=n1,n2\nPROXY_HOST=proxy\n" + extra)
    return settings.load(str(env_file))


# --- the hub's side: the service, its route, the admins' role ---


def test_the_hub_routes_the_service_to_the_front_and_lets_admins_in(
    tmp_path: Path, load_hub_config: Callable[[str], Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.gethostbyname
    monkeypatch.setattr(
        socket,
        "gethostbyname",
        lambda name: "172.17.0.1" if name == "swarmhub-host" else real(name),
    )
    env = hub_env(tmp_path / "homes") + "METRICS_API_TOKEN=m\nADMIN_USERS=ann,bo\n"
    config = load_hub_config(env + f"DASHBOARD_PORT={DASHBOARD_PORT}\n")
    service = next(s for s in config.JupyterHub.services if s["name"] == "prometheus")
    assert service == {
        "name": "prometheus",
        "api_token": "m",
        "url": f"http://172.17.0.1:{DASHBOARD_PORT}",
        "oauth_no_confirm": True,
    }
    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    assert roles["dashboard"]["scopes"] == ["access:services!service=prometheus"]
    assert roles["dashboard"]["users"] == ["ann", "bo"]
    assert roles["prometheus"]["scopes"] == ["read:metrics"]  # the scrape's, unchanged


def test_without_the_dashboard_the_service_only_scrapes(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(hub_env(tmp_path / "homes") + "METRICS_API_TOKEN=m\n")
    service = next(s for s in config.JupyterHub.services if s["name"] == "prometheus")
    assert "url" not in service
    assert "dashboard" not in {role["name"] for role in config.JupyterHub.load_roles}


def test_hub_env_and_compose_follow_metrics(tmp_path: Path) -> None:
    on = course(tmp_path)
    assert f"DASHBOARD_PORT={DASHBOARD_PORT}\n" in hub.hub_settings_env(on)
    assert '- "swarmhub-host:host-gateway"' in hub.render_compose(on)
    off = course(tmp_path, "METRICS=off\n")
    assert "DASHBOARD_PORT" not in hub.hub_settings_env(off)
    assert "host-gateway" not in hub.render_compose(off)


# --- the front ---


def test_the_front_imports_only_what_the_hub_image_has() -> None:
    tree = ast.parse(DASHBOARD_MODULE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) <= HUB_IMAGE_PACKAGES


@pytest.fixture
def front(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The front's module, loaded as the unit runs it (its environment)."""
    token = tmp_path / "token"
    token.write_text("service-token\n")
    for key, value in {
        "SWARMHUB_TOKEN_FILE": str(token),
        "JUPYTERHUB_API_URL": "http://127.0.0.1:8000/hub/api",
        "JUPYTERHUB_SERVICE_NAME": "prometheus",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/prometheus/",
        "JUPYTERHUB_CLIENT_ID": "service-prometheus",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/prometheus/oauth_callback",
        "JUPYTERHUB_BASE_URL": "/",
    }.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("swarmhub_dashboard", DASHBOARD_MODULE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakePrometheus(web.RequestHandler):
    def get(self, path: str) -> None:
        if path == "":
            self.redirect("/services/prometheus/graph")  # as its external URL makes it
            return
        self.set_header("Content-Type", "application/json")
        self.write({"path": path, "query": self.get_argument("query", "")})


async def serve(front, monkeypatch: pytest.MonkeyPatch, *, logged_in: bool) -> dict:
    prometheus = web.Application([(r"/(.*)", FakePrometheus)])
    server = prometheus.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    monkeypatch.setattr(front, "PROMETHEUS", f"http://127.0.0.1:{port}")
    if logged_in:  # what HubOAuth says of a user the hub let in (the hub checked the role)
        monkeypatch.setattr(front.Forward, "get_current_user", lambda self: {"name": "ann"})
    prefix = "/services/prometheus/"
    app = web.Application(
        [
            (prefix + front.STATIC + "(.*)", front.Static),
            (prefix + "(.*)", front.Forward),
        ],
        cookie_secret="x",
        login_url="/hub/login",
    )
    with open(front.os.environ["SWARMHUB_TOKEN_FILE"]) as f:
        front.os.environ["JUPYTERHUB_API_TOKEN"] = f.read().strip()
    listening = app.listen(0, "127.0.0.1")
    front_port = next(iter(listening._sockets.values())).getsockname()[1]
    client = AsyncHTTPClient()
    answers = {}
    try:
        for path in (
            "api/v1/query?query=up",
            "",
            "x",
            "classic/static/js/prom_console.js",
            "classic/static/%2e%2e/api/v1/query?query=up",
        ):
            answer = await client.fetch(
                f"http://127.0.0.1:{front_port}{prefix}{path}",
                raise_error=False,
                follow_redirects=False,
            )
            answers[path] = answer
    finally:
        server.stop()
        listening.stop()
    return answers


def test_nobody_logged_in_is_sent_to_the_hubs_login(front, monkeypatch) -> None:
    answers = asyncio.run(serve(front, monkeypatch, logged_in=False))
    answer = answers["api/v1/query?query=up"]
    assert answer.code == 302
    location = urlparse(answer.headers["Location"])
    assert location.path == "/hub/api/oauth2/authorize"  # the real HubOAuth's redirect
    assert parse_qs(location.query)["client_id"] == ["service-prometheus"]
    assert b"path" not in answer.body  # nothing of Prometheus's


def test_static_files_pass_without_login_and_lead_nowhere_else(front, monkeypatch) -> None:
    answers = asyncio.run(serve(front, monkeypatch, logged_in=False))
    static = answers["classic/static/js/prom_console.js"]
    assert static.code == 200  # fonts are fetched in CORS mode, without the _xsrf header
    assert b'"path": "classic/static/js/prom_console.js"' in static.body
    assert answers["classic/static/%2e%2e/api/v1/query?query=up"].code == 404


def test_a_user_let_in_reaches_prometheus_below_the_prefix(front, monkeypatch) -> None:
    answers = asyncio.run(serve(front, monkeypatch, logged_in=True))
    query = answers["api/v1/query?query=up"]
    assert query.code == 200
    assert query.headers["Content-Type"].startswith("application/json")
    assert query.body == b'{"path": "api/v1/query", "query": "up"}'
    assert answers[""].headers["Location"] == "/services/prometheus/consoles/swarmhub.html"
    assert answers["x"].code == 200


# --- Prometheus and the files of monitor.metrics ---


def test_prometheus_knows_its_public_address_and_keeps_its_routes(tmp_path: Path) -> None:
    args = metrics.prometheus_args(course(tmp_path, "DOMAIN=hub.example.edu\n"))
    assert "--web.external-url=https://hub.example.edu/services/prometheus/ " in args
    assert "--web.route-prefix=/ " in args  # invoke metrics and the scrapes stay at /
    assert f"--web.console.templates={metrics.CONSOLES_DIR} " in args
    assert "--web.listen-address=127.0.0.1:9090 " in args


def test_the_console_names_the_hosts_and_disks(tmp_path: Path) -> None:
    # (a storage host apart backs up with restic itself: BACKUP_TARGET is then needed)
    extra = "STORAGE_HOST=store\nHOMES_DIR=/data/homes\nBACKUP_TARGET=sftp://vault/srv/restic\n"
    loaded = course(tmp_path, extra)
    text = metrics.console(loaded)
    assert "__" not in text.replace("__HUB_DISKS__", "")  # every placeholder filled
    assert "host='store',mountpoint=~'/|/data|/data/homes'" in text
    assert "host='hub',mountpoint=~'/|" in text
    for graph in ("servers", "starts", "waiting", "failures", "memory", "cpu", "topmem", "disk"):
        assert f'<div id="{graph}"' in text
    assert (
        metrics.mount_prefixes("/srv/swarmhub/homes") == "/|/srv|/srv/swarmhub|/srv/swarmhub/homes"
    )


def test_the_front_runs_from_the_hub_image_with_its_token_mounted(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    unit = metrics.render_dashboard_unit(loaded)
    assert f" {metrics.image_ref(loaded, 'hub')} python3 -u /srv/swarmhub-dashboard.py" in unit
    assert f"--volume {metrics.HUB_TOKEN}:/run/swarmhub-dashboard-token:ro" in unit
    assert "--network host" in unit and "swarmhub-host:host-gateway" in unit
    assert "--publish" not in unit and " -p " not in unit  # no port of its own


def test_metrics_off_stops_the_front(tmp_path: Path) -> None:
    from tests.unit.fakehost import answering, view_of

    host = view_of(answering("hub", ("hub",), {"systemctl": "enabled active"}, {}))
    changes = [c.message for c in metrics.apply_off(host)]
    assert f"stopped {metrics.DASHBOARD_UNIT} (METRICS=off)" in changes


# --- the firewall ---


def test_only_the_hubs_containers_reach_the_fronts_port(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    line = f"tcp dport {DASHBOARD_PORT} accept"
    hub_rules = firewall.render_rules(loaded, ("hub",), ["10.0.0.1"], ["10.0.0.2"])
    [rule] = [r for r in hub_rules.splitlines() if line in r]
    assert 'iifname { "docker0", "docker_gwbridge", "br-*" }' in rule  # containers, not outside
    # before the jump that closes the host to containers
    assert hub_rules.index(line) < hub_rules.index("jump from_containers")
    node_rules = firewall.render_rules(loaded, ("node",), ["10.0.0.1"], ["10.0.0.2"])
    assert str(DASHBOARD_PORT) not in node_rules
    off = course(tmp_path, "METRICS=off\n")
    assert str(DASHBOARD_PORT) not in firewall.render_rules(off, ("hub",), ["10.0.0.1"], [])

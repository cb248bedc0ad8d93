"""`invoke health`: a probe for cron or a monitor — a few seconds, one line, exit 0 or 1.

Four answers, asked at once: HTTPS through the proxy as a student's browser would ask it
(nginx, chp and the hub in a row), the hub's API on the hub itself (to tell a broken proxy
from a broken hub), the swarm's view of the nodes of NODE_HOSTS, and whether the backup
repository answers (with the age of the last snapshot).
"""

from __future__ import annotations

import http.client
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from swarmhub.errors import SwarmhubError
from swarmhub.observe import commands, parse
from swarmhub.observe.remote import open_host
from swarmhub.settings import Settings, check_local_files
from swarmhub.steps.proxy import CERT_PATH

CONNECT_TIMEOUT = 5  # seconds: SSH and HTTPS
COMMAND_TIMEOUT = 10


@dataclass(frozen=True)
class HubAnswer:
    """The hub's API code (None: no answer) and the swarm's nodes, or why they are unknown."""

    api_code: int | None = None
    api_error: str = ""
    nodes: tuple[parse.SwarmNode, ...] = ()
    nodes_error: str = ""
    backups: str = ""  # the backup script's check-repo line ('' when not asked)


def verdict(proxy_error: str, hub: HubAnswer, node_hosts: tuple[str, ...]) -> tuple[bool, str]:
    """The one line of `invoke health`, and whether all is well."""
    problems = []
    if proxy_error:
        problems.append(f"proxy https {proxy_error}")
    if hub.api_code != 200:
        problems.append(
            f"hub api {f'HTTP {hub.api_code}' if hub.api_code else hub.api_error or 'no answer'}"
        )
    ready = 0
    if hub.nodes_error:
        problems.append(f"nodes unknown ({hub.nodes_error})")
    else:
        by_name = {node.hostname: node for node in hub.nodes}
        for name in node_hosts:
            node = by_name.get(name)
            if node is None:
                problems.append(f"node {name} not in the swarm")
            elif not node.ready:
                problems.append(f"node {name} {node.status.lower()}")
            elif not node.active:
                problems.append(f"node {name} {node.availability.lower()}")
            else:
                ready += 1
    backups_ok, backups = parse.parse_backup_check(hub.backups)
    if backups_ok is False:
        problems.append(f"backups: {backups}")
    if problems:
        return False, "unhealthy: " + "; ".join(problems)
    line = f"healthy: proxy https ok, hub api ok, {ready}/{len(node_hosts)} nodes ready"
    if backups_ok:
        line += f", backups ok ({backups})"
    return True, line


def tls_context(settings: Settings, proxy_cert: str | None) -> ssl.SSLContext:
    """How the proxy's certificate is checked — always checked, never skipped.

    TLS_MODE=self-signed: against the certificate itself, read from the proxy over SSH (whose
    host key is checked), so the check still proves we talk to our nginx. TLS_MODE=files or acme:
    against the system's CAs, plus EXTRA_CA_BUNDLE (a campus CA) when set, as a browser would.
    """
    if settings.tls_mode == "self-signed":
        return ssl.create_default_context(cadata=proxy_cert)
    context = ssl.create_default_context()
    if settings.extra_ca_bundle:
        context.load_verify_locations(cafile=str(settings.extra_ca_bundle))
    return context


def get_status(url: str, context: ssl.SSLContext, timeout: float = CONNECT_TIMEOUT) -> int:
    """The HTTP status of GET ``url`` (no proxy from the environment: this is the real path)."""
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, timeout=timeout, context=context
    )
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status
    finally:
        connection.close()


def proxy_certificate(settings: Settings) -> str | None:
    """The proxy's self-signed certificate (PEM), read over SSH; None for TLS_MODE=provided."""
    if settings.tls_mode != "self-signed":
        return None
    proxy = open_host(settings, settings.proxy_host, CONNECT_TIMEOUT)
    try:
        return proxy.run(f"cat {CERT_PATH}", sudo=False, timeout=COMMAND_TIMEOUT).stdout
    finally:
        proxy.connection.close()


def check_proxy(settings: Settings) -> str:
    """GET /hub/api/ through the proxy over HTTPS: an empty string when it answers 200."""
    try:
        cert = proxy_certificate(settings)
        status = get_status(settings.public_url() + "hub/api/", tls_context(settings, cert))
    except SwarmhubError as error:
        return f"unknown ({error.reason})"
    except ssl.SSLError as error:
        return f"refused its certificate ({error.reason or error})"
    except (OSError, http.client.HTTPException) as error:
        return f"no answer ({error})"
    return "" if status == 200 else f"HTTP {status}"


def ask_hub(settings: Settings) -> HubAnswer:
    try:
        hub = open_host(settings, settings.hub_host, CONNECT_TIMEOUT)
    except SwarmhubError as error:
        reason = f"hub {error.reason}"
        return HubAnswer(api_error=reason, nodes_error="hub unreachable")
    try:
        script = commands.sectioned(commands.health_hub_sections())
        found = parse.split_sections(hub.run(script, check=False, timeout=COMMAND_TIMEOUT).stdout)
    except Exception as error:
        return HubAnswer(api_error=f"hub {error}", nodes_error="hub did not answer")
    finally:
        hub.connection.close()
    body, code = parse.split_http_code(found.get("hub_api", ""))
    try:
        nodes = tuple(parse.parse_node_ls(found.get("nodes", "")))
        nodes_error = ""
    except parse.ParseError as error:
        nodes, nodes_error = (), str(error)
    backups = found.get("backups", "").strip()
    return HubAnswer(code, "" if code else parse.first_line(body), nodes, nodes_error, backups)


def check(settings: Settings) -> tuple[bool, str]:
    """Ask the proxy and the hub at once; the verdict and its line."""
    check_local_files(settings)
    with ThreadPoolExecutor(max_workers=2) as pool:
        proxy = pool.submit(check_proxy, settings)
        hub = pool.submit(ask_hub, settings)
        return verdict(proxy.result(), hub.result(), settings.node_hosts)

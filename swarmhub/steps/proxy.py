"""proxy.configure: nginx on the public proxy host — TLS (self-signed for the sandbox, a
certificate from files, or ACME), HTTP to HTTPS, websockets, forwarding to the hub; reloaded
(never restarted) only when its configuration changed."""

from __future__ import annotations

import shlex

from swarmhub.ports import CHP_PORT
from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import (
    ensure_file,
    ensure_packages,
    file_differs,
    running,
    unit_state_command,
)
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.steps import acme
from swarmhub.templates import render

TLS_DIR = "/etc/swarmhub/tls"
CERT_PATH = f"{TLS_DIR}/fullchain.pem"
KEY_PATH = f"{TLS_DIR}/privkey.pem"
SITE_PATH = "/etc/nginx/sites-available/swarmhub"
SITE_LINK = "/etc/nginx/sites-enabled/swarmhub"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
BODY_SIZE = "512m"
NGINX_CONF = "/etc/nginx/nginx.conf"  # Debian's, replaced by ours (the same with our limits)
# The figures of a class start, each justified where the config uses it.
CONNECTIONS_A_STUDENT = 8  # ~4 to nginx (HTTP/2 page, websockets) and as many to chp
WORKER_CONNECTIONS = 8192
RLIMIT_NOFILE = 2 * WORKER_CONNECTIONS  # within the sandbox VMs' hard limit of 20000
PROXY_CORES = 2  # the figure the comment's student count assumes (worker_processes auto)
CLIENT_KEEPALIVE = "30s"
UPSTREAM_KEEPALIVE = 64
UPSTREAM_KEEPALIVE_TIMEOUT = "4s"  # below chp's (Node's) 5 s
WAIT_RETRY = 10  # seconds between the wait page's tries
# The page a student sees while the hub is busy or restarting: no single quote (it is an
# nginx string in single quotes), no $ (nginx would read a variable).
WAIT_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8>"
    f'<meta http-equiv="refresh" content="{WAIT_RETRY}">'
    "<title>Please wait: the hub is busy</title></head>"
    '<body style="font-family:sans-serif;max-width:36em;margin:3em auto">'
    "<h1>Please wait a moment</h1>"
    "<p>Many students are starting at once, or the hub is restarting. This page tries "
    f"again by itself every {WAIT_RETRY} seconds: keep it open, there is nothing to click.</p>"
    "<p>If it is still here after five minutes, tell your course staff.</p></body></html>"
)


def tls_paths(use_acme: bool) -> tuple[str, str]:
    """(certificate, key) for nginx: the ACME lineage's, or CERT_PATH and KEY_PATH."""
    if use_acme:
        return f"{acme.LIVE_DIR}/fullchain.pem", f"{acme.LIVE_DIR}/privkey.pem"
    return CERT_PATH, KEY_PATH


def served_cert_path(settings: Settings) -> str:
    """The certificate nginx serves: the ACME lineage's in acme mode, else CERT_PATH."""
    return tls_paths(settings.tls_mode == "acme")[0]


def render_site(settings: Settings, use_acme: bool = False) -> str:
    """The nginx site; ``use_acme``: serve the ACME certificate (once it exists; until then
    the self-signed one, so that nginx can answer the ACME server's challenge on port 80)."""
    cert_path, key_path = tls_paths(use_acme)
    return render(
        "proxy/nginx-site.conf.j2",
        hub_host=settings.hub_host,
        domain=settings.domain_name,
        cert_path=cert_path,
        key_path=key_path,
        acme_webroot=acme.WEBROOT,
        body_size=BODY_SIZE,
        chp_port=CHP_PORT,
        upstream_keepalive=UPSTREAM_KEEPALIVE,
        upstream_keepalive_timeout=UPSTREAM_KEEPALIVE_TIMEOUT,
        wait_retry=WAIT_RETRY,
        wait_page=WAIT_PAGE,
    )


def render_nginx_conf() -> str:
    """nginx's main file: Debian's, with the connection limits of a class start."""
    return render(
        "proxy/nginx.conf.j2",
        worker_connections=WORKER_CONNECTIONS,
        rlimit_nofile=RLIMIT_NOFILE,
        students_held=f"{WORKER_CONNECTIONS * PROXY_CORES // CONNECTIONS_A_STUDENT:,}",
        client_keepalive=CLIENT_KEEPALIVE,
    )


def self_signed_command(domain: str, address: str) -> str:
    """A self-signed certificate for ``domain`` (and its address), made on the proxy host."""
    names = f"DNS:{domain}" + (f",IP:{address}" if address else "")
    return (
        f"mkdir -p {TLS_DIR} && chmod 755 {TLS_DIR} && umask 077 && "
        f"openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN={shlex.quote(domain)} "
        f"-addext subjectAltName={shlex.quote(names)} -keyout {KEY_PATH} -out {CERT_PATH} "
        f"2>/dev/null && chmod 600 {KEY_PATH} && chmod 644 {CERT_PATH}"
    )


def ensure_certificate(ctx: StepContext, proxy: HostView) -> Steps:
    settings = ctx.settings
    if settings.tls_mode == "files":
        cert = yield from ensure_file(
            proxy, CERT_PATH, settings.tls_cert.read_text(), describe="TLS certificate"
        )
        key = settings.tls_key.read_text()
        key_changed = yield from ensure_file(proxy, KEY_PATH, key, mode="0600", describe="TLS key")
        return bool(cert or key_changed)
    subject = proxy.probe(f"openssl x509 -noout -subject -in {CERT_PATH} 2>/dev/null").stdout
    if f"CN = {settings.domain_name}" in subject or f"CN={settings.domain_name}" in subject:
        yield Ok(f"TLS certificate for {settings.domain_name}")
        return False
    address = proxy.probe("hostname -I", sudo=False).stdout.split()
    yield Change(
        f"self-signed TLS certificate for {settings.domain_name}",
        [self_signed_command(settings.domain_name, address[0] if address else "")],
    )
    return True


NGINX_TEST = "nginx -t 2>&1 || { echo 'nginx refuses the configuration (nginx -t)' >&2; exit 1; }"


def configure_nginx(
    proxy: HostView,
    settings: Settings,
    use_acme: bool,
    *,
    reload: bool = False,
    installed: bool = False,
) -> Steps:
    """The site written and enabled, nginx running; tested and reloaded (never restarted:
    open connections finish on the old workers) when anything changed, or with ``reload``
    (a new certificate). ``installed``: nginx was installed by this run (it then starts
    with the new site, in plan and in apply alike)."""
    site = render_site(settings, use_acme)
    files, commands, parts = [], [], []
    main = render_nginx_conf()
    if why := file_differs(proxy, NGINX_CONF, main, "0644", "root"):
        files.append(FileWrite.of(NGINX_CONF, main))
        parts.append(f"nginx.conf written ({why})")
    if why := file_differs(proxy, SITE_PATH, site, "0644", "root"):
        files.append(FileWrite.of(SITE_PATH, site))
        parts.append(f"nginx site written ({why})")
    if proxy.probe(f"test -e {DEFAULT_SITE}").ok:
        commands.append(f"rm -f {DEFAULT_SITE}")
        parts.append("nginx's default site disabled")
    if not proxy.probe(f'test "$(readlink {SITE_LINK})" = {SITE_PATH}').ok:
        commands.append(f"ln -sfn {SITE_PATH} {SITE_LINK}")
        parts.append("site enabled")
    active = running(proxy.probe(unit_state_command("nginx")).stdout.split())
    if installed or not active:
        commands += [NGINX_TEST, "systemctl enable nginx", "systemctl restart nginx"]
        parts.append("nginx started")
    elif parts or reload:
        commands += [NGINX_TEST, "systemctl reload nginx"]
        parts.append("nginx reloaded" + ("" if parts else " (new certificate)"))
    if not parts:
        yield Ok("nginx site enabled and up to date, nginx running")
        return False
    yield Change(", ".join(parts), commands, files=files)
    return True


def apply(ctx: StepContext, proxy: HostView) -> Steps:
    settings = ctx.settings
    installed = yield from ensure_packages(proxy, ["nginx"], "the public proxy")
    # In acme mode the self-signed certificate is the bootstrap one, until the first issue.
    cert_changed = yield from ensure_certificate(ctx, proxy)
    acme_mode = settings.tls_mode == "acme"
    issued = acme_mode and proxy.probe(f"test -s {acme.LIVE_DIR}/fullchain.pem").ok
    yield from configure_nginx(
        proxy, settings, issued, reload=cert_changed, installed=bool(installed)
    )
    if not acme_mode:
        yield from acme.ensure_no_acme_certificate(proxy)
        return
    if (yield from acme.ensure_acme_certificate(ctx, proxy)) and not issued:
        yield from configure_nginx(proxy, settings, True)


STEP = Step(
    name="proxy.configure",
    roles=frozenset({"proxy"}),
    apply=apply,
    summary="nginx with TLS in front of the hub",
)

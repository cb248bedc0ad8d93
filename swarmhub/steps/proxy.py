"""proxy.configure: nginx on the public proxy host — TLS (self-signed for the sandbox, a
certificate from files, or ACME), HTTP to HTTPS, websockets, forwarding to the hub; reloaded
(never restarted) only when its configuration changed."""

from __future__ import annotations

import shlex

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from swarmhub.errors import SwarmhubError
from swarmhub.ports import CHP_PORT
from swarmhub.runbook.ensure import ensure_file, ensure_packages, ensure_service_running
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step
from swarmhub.settings import PROJECT_ROOT, Settings
from swarmhub.steps import acme

TLS_DIR = "/etc/swarmhub/tls"
CERT_PATH = f"{TLS_DIR}/fullchain.pem"
KEY_PATH = f"{TLS_DIR}/privkey.pem"
SITE_PATH = "/etc/nginx/sites-available/swarmhub"
SITE_LINK = "/etc/nginx/sites-enabled/swarmhub"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
BODY_SIZE = "512m"


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
    environment = Environment(
        loader=FileSystemLoader(str(PROJECT_ROOT / "compose" / "proxy")),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    cert_path, key_path = tls_paths(use_acme)
    return environment.get_template("nginx-site.conf.j2").render(
        hub_host=settings.hub_host,
        chp_port=CHP_PORT,
        domain=settings.domain_name,
        cert_path=cert_path,
        key_path=key_path,
        acme_webroot=acme.WEBROOT,
        body_size=BODY_SIZE,
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


def ensure_certificate(session: Session, proxy: Host) -> bool:
    settings = session.settings
    if settings.tls_mode == "files":
        changed = ensure_file(
            proxy, CERT_PATH, settings.tls_cert.read_text(), describe="TLS certificate"
        )
        key = settings.tls_key.read_text()
        return ensure_file(proxy, KEY_PATH, key, mode="0600", describe="TLS key") or changed
    subject = proxy.probe(f"openssl x509 -noout -subject -in {CERT_PATH} 2>/dev/null").stdout
    if f"CN = {settings.domain_name}" in subject or f"CN={settings.domain_name}" in subject:
        return proxy.ok(f"TLS certificate for {settings.domain_name}")
    address = proxy.probe("hostname -I", sudo=False).stdout.split()
    return proxy.change(
        f"self-signed TLS certificate for {settings.domain_name}",
        self_signed_command(settings.domain_name, address[0] if address else ""),
    )


def configure_nginx(proxy: Host, settings: Settings, use_acme: bool) -> bool:
    """The site written and enabled, nginx running; reloaded when anything changed."""
    site = render_site(settings, use_acme)
    changed = ensure_file(proxy, SITE_PATH, site, describe="nginx site")
    if proxy.probe(f"test -e {DEFAULT_SITE}").ok:
        changed |= proxy.change("disabled nginx's default site", f"rm -f {DEFAULT_SITE}")
    if proxy.probe(f'test "$(readlink {SITE_LINK})" = {SITE_PATH}').ok:
        proxy.ok("nginx site enabled")
    else:
        changed |= proxy.change("enabled the nginx site", f"ln -sfn {SITE_PATH} {SITE_LINK}")
    started = ensure_service_running(proxy, "nginx")
    if proxy.plan:
        return changed
    test = proxy.probe("nginx -t 2>&1")
    if not test.ok:
        raise SwarmhubError(f"{proxy.name}: nginx refuses the configuration: {test.stdout.strip()}")
    if changed and not started:
        proxy.change("reloaded nginx", "systemctl reload nginx")
    return changed


def apply(session: Session, proxy: Host) -> None:
    settings = session.settings
    ensure_packages(proxy, ["nginx"], "the public proxy")
    # In acme mode the self-signed certificate is the bootstrap one, until the first issue.
    cert_changed = ensure_certificate(session, proxy)
    acme_mode = settings.tls_mode == "acme"
    issued = acme_mode and proxy.probe(f"test -s {acme.LIVE_DIR}/fullchain.pem").ok
    site_changed = configure_nginx(proxy, settings, issued)  # reloads nginx when changed
    if cert_changed and not site_changed and not proxy.plan:
        proxy.change("reloaded nginx (new certificate)", "systemctl reload nginx")
    if not acme_mode:
        acme.ensure_no_acme_certificate(proxy)
        return
    if acme.ensure_acme_certificate(session, proxy) and not issued and not proxy.plan:
        configure_nginx(proxy, settings, True)


STEP = Step(
    name="proxy.configure",
    roles=frozenset({"proxy"}),
    apply=apply,
    summary="nginx with TLS in front of the hub",
)

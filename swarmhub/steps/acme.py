"""TLS_MODE=acme on the proxy: certbot (Debian's package) gets the certificate over HTTP-01,
answered by nginx from a webroot, and renews it from Debian's certbot.timer; nginx is reloaded
(never restarted: open connections finish on the old workers) when a certificate is renewed.

Why certbot: Debian's package brings the renewal timer with it, keeps the account and
lineage under /etc/letsencrypt, honours REQUESTS_CA_BUNDLE (to trust a test ACME server such
as pebble) and its `--webroot` needs no port of its own, so nginx keeps serving during issue
and renewal.
"""

from __future__ import annotations

import shlex

from swarmhub.runbook.change import Change, Ok, Steps
from swarmhub.runbook.ensure import ensure_directory, ensure_file, ensure_packages
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import StepContext
from swarmhub.settings import Settings

CERT_NAME = "swarmhub"
LIVE_DIR = f"/etc/letsencrypt/live/{CERT_NAME}"
RENEWAL_CONF = f"/etc/letsencrypt/renewal/{CERT_NAME}.conf"
WEBROOT = "/var/lib/swarmhub/acme"
CA_BUNDLE_PATH = "/etc/swarmhub/acme-ca.pem"
TIMER = "certbot.timer"
SERVICE_DROPIN = "/etc/systemd/system/certbot.service.d/swarmhub.conf"
RELOAD_HOOK = "systemctl reload nginx"


def certbot_environment(settings: Settings) -> str:
    """Variables certbot needs: the extra CA that signs the ACME server's own HTTPS."""
    return f"REQUESTS_CA_BUNDLE={CA_BUNDLE_PATH} " if settings.acme_ca_bundle else ""


def issue_command(settings: Settings) -> str:
    """certbot certonly over HTTP-01 through nginx's webroot; the renewal keeps these options."""
    contact = (
        f"--email {shlex.quote(settings.acme_email)}"
        if settings.acme_email
        else "--register-unsafely-without-email"
    )
    return (
        f"{certbot_environment(settings)}certbot certonly --non-interactive --agree-tos "
        f"{contact} --server {shlex.quote(settings.acme_directory_url)} "
        f"--webroot -w {WEBROOT} --cert-name {CERT_NAME} -d {shlex.quote(settings.domain_name)} "
        f"--deploy-hook {shlex.quote(RELOAD_HOOK)} --quiet"
    )


def renew_command(settings: Settings, force: bool = False) -> str:
    # Without a terminal certbot sleeps up to 8 minutes first (to spread the timers' load).
    return f"{certbot_environment(settings)}certbot renew --no-random-sleep-on-renew --quiet" + (
        " --force-renewal" if force else ""
    )


def timer_dropin(settings: Settings) -> str:
    """certbot.service (run by certbot.timer) trusts the ACME server's CA too."""
    lines = ["# Written by swarmhub (proxy.configure, TLS_MODE=acme).", "[Service]"]
    if settings.acme_ca_bundle:
        lines.append(f"Environment=REQUESTS_CA_BUNDLE={CA_BUNDLE_PATH}")
    return "\n".join(lines) + "\n"


def lineage_matches(renewal_conf: str, settings: Settings) -> bool:
    """The lineage was issued by the configured server for the configured name."""
    return (
        f"server = {settings.acme_directory_url}" in renewal_conf
        and f"{settings.domain_name} = {WEBROOT}" in renewal_conf
    )


def ensure_acme_certificate(ctx: StepContext, proxy: HostView) -> Steps:
    """The ACME certificate exists (issued through nginx on port 80), and the timer renews it.
    Needs nginx serving the webroot on port 80 already. Returns whether anything changed."""
    settings = ctx.settings
    changed = bool((yield from ensure_packages(proxy, ["certbot"], "the ACME client")))
    changed |= bool((yield from ensure_directory(proxy, WEBROOT)))
    if settings.acme_ca_bundle:
        bundle = settings.acme_ca_bundle.read_text()
        changed |= bool(
            (yield from ensure_file(proxy, CA_BUNDLE_PATH, bundle, describe="ACME server's CA"))
        )
    changed |= bool(
        (
            yield from ensure_file(
                proxy,
                SERVICE_DROPIN,
                timer_dropin(settings),
                describe="certbot's settings",
                then=("systemctl daemon-reload",),
            )
        )
    )
    conf = proxy.read(RENEWAL_CONF)
    if not conf or not proxy.probe(f"test -s {LIVE_DIR}/cert.pem").ok:
        why = "none yet"
    elif not lineage_matches(conf, settings):
        why = "for another name or ACME server"
    else:
        why = ""
    if not why:
        yield Ok(f"ACME certificate for {settings.domain_name}")
    else:
        changed = True
        yield Change(
            f"ACME certificate for {settings.domain_name} from {settings.acme_directory_url} "
            f"(was: {why})",
            [issue_command(settings) + " --force-renewal"],
        )
    state = proxy.probe(f"systemctl is-enabled {TIMER}; systemctl is-active {TIMER}").stdout
    if state.split() == ["enabled", "active"]:
        yield Ok(f"{TIMER} renews the certificate")
    else:
        changed = True
        yield Change(f"{TIMER} renews the certificate", [f"systemctl enable --now {TIMER}"])
    return changed


def ensure_no_acme_certificate(proxy: HostView) -> Steps:
    """Outside acme mode, no lineage that the timer would keep renewing."""
    if not proxy.probe(f"test -e {RENEWAL_CONF}").ok:
        return False
    yield Change(
        "removed the ACME certificate (TLS_MODE is not acme)",
        [f"certbot delete --non-interactive --cert-name {CERT_NAME}"],
    )
    return True

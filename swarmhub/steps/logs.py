"""monitor.logs: every host's logs in its journal, shipped by rsyslog to SYSLOG_URL.

Docker writes the containers' lines to the journal (daemon.json's journald log driver, set
by docker.install; `docker logs` reads them back), journald's rate limit is raised so that a
login storm's lines are kept, and rsyslog (Debian's rsyslog and rsyslog-gnutls) reads the
journal (imjournal) and, on the proxy, nginx's log files (imfile), and forwards every line
over TLS, TCP or UDP with the host's and the program's names. Lines sent while the log
server is away wait in rsyslog's disk-assisted queue and go once it is back.

SYSLOG_URL empty: rsyslog forwards nothing (its configuration removed; the package stays).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import ensure_file, ensure_packages, ensure_service_running
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.templates import render

JOURNALD_CONF = "/etc/systemd/journald.conf.d/90-swarmhub.conf"
RSYSLOG_CONF = "/etc/rsyslog.d/60-swarmhub.conf"
SYSLOG_CA = "/etc/swarmhub/syslog-ca.pem"
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"
PACKAGES = ["rsyslog", "rsyslog-gnutls"]
# What the queue may keep on disk while the log server is away (then it drops the oldest).
QUEUE_DISK = "1g"
# Checks the whole configuration first: a file rsyslog rejects is never loaded.
RESTART_RSYSLOG = "rsyslogd -N1 >/dev/null && systemctl enable rsyslog && systemctl restart rsyslog"


def rsyslog_config(settings: Settings, hostname: str, roles: tuple[str, ...]) -> str:
    """/etc/rsyslog.d/60-swarmhub.conf for SYSLOG_URL (tls://, tcp:// or udp://HOST:PORT)."""
    url = urlsplit(settings.syslog_url)
    return render(
        "logs/rsyslog-swarmhub.conf.j2",
        scheme=url.scheme,
        target=url.hostname,
        port=url.port,
        hostname=hostname,
        ca_file=SYSLOG_CA if settings.syslog_ca_file else SYSTEM_CAS,
        nginx_logs="proxy" in roles,
        queue_disk=QUEUE_DISK,
    )


def apply(ctx: StepContext, host: HostView) -> Steps:
    settings = ctx.settings
    yield from ensure_file(
        host,
        JOURNALD_CONF,
        render("logs/journald-swarmhub.conf"),
        describe="journald's limits",
        then=("systemctl restart systemd-journald",),
    )
    if not settings.syslog_url:
        if host.probe(f"test -e {RSYSLOG_CONF}").ok:
            yield Change(
                "rsyslog forwards no more (SYSLOG_URL empty)",
                [
                    f"rm -f {RSYSLOG_CONF} {SYSLOG_CA}",
                    "systemctl try-restart rsyslog",
                ],
            )
        else:
            yield Ok("log shipping off (SYSLOG_URL empty)")
        return
    installed = yield from ensure_packages(host, PACKAGES, "log shipping")
    wanted = [FileWrite.of(RSYSLOG_CONF, rsyslog_config(settings, host.name, host.roles))]
    if settings.syslog_ca_file is not None:
        wanted.append(FileWrite.of(SYSLOG_CA, settings.syslog_ca_file.read_text()))
    files = [f for f in wanted if host.file_differs(f.path, f.content, f.mode, f.owner)]
    if files or installed:
        where = settings.syslog_url.split("://")[0]
        names = ", ".join(f.path for f in files) or "configuration kept"
        yield Change(
            f"rsyslog ships this host's logs over {where} ({names}): restarted",
            [RESTART_RSYSLOG],
            files=files,
        )
    else:
        yield from ensure_service_running(host, "rsyslog")


STEP = Step(
    name="monitor.logs",
    roles=frozenset({"hub", "node", "proxy"}),
    apply=apply,
    parallel=True,
    summary="logs in the journal, shipped by rsyslog to SYSLOG_URL (TLS, TCP, UDP)",
    on_node_add="node",
)

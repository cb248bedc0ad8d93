"""monitor.metrics: metrics over time and alerts, on Debian's Prometheus packages.

On every host a node exporter (prometheus-node-exporter, with its textfile collector reading
/var/lib/prometheus/node-exporter/); on the hub Prometheus, Alertmanager and the blackbox
exporter. Prometheus scrapes every SCRAPE_INTERVAL: the node exporters, the Docker engines
of the hub and the nodes (daemon.json's metrics-addr, written by docker.install), JupyterHub's
/hub/metrics (with a token of its own, scope read:metrics), chp's metrics, the proxy's TLS
port (up, and its certificate's end date) through the blackbox exporter, and itself and
Alertmanager. Its alert rules go to Alertmanager, which posts Slack-compatible notifications
to ALERT_WEBHOOK_URL, grouped by alert and host; a host that is down silences the other
alerts of that host (an inhibit rule).

Prometheus, Alertmanager and the blackbox exporter listen on the hub's loopback only (look
through SSH: `invoke metrics`); a node exporter and Docker's engine metrics listen on their
host, and the firewall opens their ports to cluster hosts only (never to users' containers,
never from outside).

A config or rules file is written beside its place first, checked there (promtool check
config, which checks the rules too; amtool check-config) and only then installed and
reloaded: a file they reject stops the run and the running config is kept.

The admins' dashboard: a console template of ours (templates/metrics/swarmhub.html) that
Prometheus serves, behind the hub's login: swarmhub-dashboard (swarmhub/hubside/dashboard.py,
run from the hub image on the host's network) is the hub's `prometheus` service, HubOAuth in
front of Prometheus; chp routes /services/prometheus/ to it, Prometheus's external URL is that
path (its own routes stay at / on the loopback). Only the hub's admins are let in (a role).

METRICS=off removes the packages' services from the runbook's care: they are stopped and
disabled (their data is kept, in /var/lib/prometheus).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from swarmhub.errors import SwarmhubError
from swarmhub.hubside import DASHBOARD_MODULE
from swarmhub.ports import (
    ALERTMANAGER_PORT,
    BLACKBOX_PORT,
    CHP_METRICS_PORT,
    CHP_PORT,
    DASHBOARD_PORT,
    DOCKER_METRICS_PORT,
    HUB_API,
    NODE_EXPORTER_PORT,
    PROMETHEUS_PORT,
)
from swarmhub.runbook.change import Change, FileWrite, Note, Ok, Steps
from swarmhub.runbook.ensure import (
    ensure_file,
    ensure_packages,
    ensure_unit,
    file_differs,
    running,
    unit_state_command,
)
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.steps.firewall import cluster_addresses
from swarmhub.steps.images import image_ref
from swarmhub.templates import TEMPLATES_DIR, render, serialize

SCRAPE_INTERVAL = "15s"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
# Written by the backup script on the storage host (and by the recovery's restic script).
BACKUP_METRIC = "swarmhub_backup_last_success_timestamp_seconds"
BACKUP_METRIC_FILE = f"{TEXTFILE_DIR}/swarmhub_backup.prom"
# Written by the swarmhub-agent on the nodes: OOM kills in users' servers, by user.
OOM_METRIC = "swarmhub_server_oom_kills_total"
OOM_LAST_METRIC = "swarmhub_server_last_oom_kill_timestamp_seconds"
OOM_METRIC_FILE = f"{TEXTFILE_DIR}/swarmhub_oom.prom"
# Written by swarmhub-server-metrics on the nodes: each student server's memory and CPU.
SERVER_METRICS_SOURCE = Path(__file__).resolve().parent.parent / "monitor" / "server_metrics.py"
SERVER_METRICS_PATH = "/usr/local/lib/swarmhub/swarmhub-server-metrics"
SERVER_METRICS_UNIT = "swarmhub-server-metrics.service"
SERVER_METRICS_FILE = f"{TEXTFILE_DIR}/swarmhub_servers.prom"

PROM_DIR = "/etc/prometheus"
STAGED_DIR = f"{PROM_DIR}/swarmhub-staged"  # checked here before they go into place
PROMETHEUS_CONFIG = f"{PROM_DIR}/prometheus.yml"
RULES_NAME = "swarmhub-rules.yml"  # relative to the config: the staged copy checks the staged
RULES = f"{PROM_DIR}/{RULES_NAME}"
ALERTMANAGER_CONFIG = f"{PROM_DIR}/alertmanager.yml"
BLACKBOX_CONFIG = f"{PROM_DIR}/blackbox.yml"
HUB_TOKEN = f"{PROM_DIR}/jupyterhub-metrics-token"
ALERT_CA = f"{PROM_DIR}/alert-ca.pem"

# The admins' dashboard (see the module's docstring).
DASHBOARD_SERVICE = "prometheus"  # the hub's service: its token scrapes /hub/metrics too
DASHBOARD_PREFIX = f"/services/{DASHBOARD_SERVICE}/"
DASHBOARD_UNIT = "swarmhub-dashboard.service"
DASHBOARD_PATH = "/usr/local/lib/swarmhub/swarmhub-dashboard.py"
CONSOLES_DIR = f"{PROM_DIR}/swarmhub-consoles"
CONSOLE = f"{CONSOLES_DIR}/swarmhub.html"
# Prometheus's console library, ours: Debian's package has it among its examples only.
CONSOLE_LIBRARIES = f"{PROM_DIR}/swarmhub-console-libraries"
CONSOLE_LIBRARY = f"{CONSOLE_LIBRARIES}/swarmhub.lib"
CONSOLE_TEMPLATE = TEMPLATES_DIR / "metrics" / "swarmhub.html"

NODE_EXPORTER = "prometheus-node-exporter"
PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
BLACKBOX = "prometheus-blackbox-exporter"
# promtool comes with prometheus (a dependency); amtool with prometheus-alertmanager.
HUB_PACKAGES = [PROMETHEUS, ALERTMANAGER, BLACKBOX, NODE_EXPORTER]
HUB_SERVICES = (NODE_EXPORTER, BLACKBOX, ALERTMANAGER, PROMETHEUS)

# Prometheus's own figure: about 1-2 bytes a sample once compacted. Measured on the sandbox:
# a host's node exporter gives about 1,400 series; JupyterHub, chp, Prometheus and
# Alertmanager about 1,700 together, and a few more per user.
BYTES_PER_SAMPLE = 1.5
SERIES_PER_HOST = 1500
SERIES_OF_THE_HUB = 1800
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}

# Alerts: name -> `for:` (how long a condition holds before it fires), said in the README.
HOST_DOWN_FOR = "1m"


def enabled(settings: Settings) -> bool:
    return settings.metrics == "on"


def seconds(duration: str) -> int:
    """A Prometheus duration of one unit (16w, 90d) in seconds."""
    return int(duration[:-1]) * DURATION_SECONDS[duration[-1]]


def disk_budget(settings: Settings) -> str:
    """What Prometheus's retention costs on the hub's disk, estimated (a Note)."""
    series = SERIES_PER_HOST * len(settings.hosts) + SERIES_OF_THE_HUB
    interval = seconds(SCRAPE_INTERVAL)
    size = series / interval * seconds(settings.metrics_retention) * BYTES_PER_SAMPLE
    return (
        f"Prometheus keeps {settings.metrics_retention} of metrics (METRICS_RETENTION): about "
        f"{size / 2**30:.1f} GiB on the hub's disk in /var/lib/prometheus for ~{series} series "
        f"scraped every {SCRAPE_INTERVAL} (an estimate; `invoke metrics` shows the real count)"
    )


# --- the files, from data ---


def node_exporter_args() -> str:
    return (
        f'ARGS="--web.listen-address=:{NODE_EXPORTER_PORT} '
        f'--collector.textfile.directory={TEXTFILE_DIR}"'
    )


def dashboard_url(settings: Settings) -> str:
    """The dashboard's public address: Prometheus's external URL (its pages' links, the
    alerts' links)."""
    return settings.public_url().rstrip("/") + DASHBOARD_PREFIX


def prometheus_args(settings: Settings) -> str:
    # --web.route-prefix=/: Prometheus answers at / on the loopback (invoke metrics, its
    # scrapes, Alertmanager), the dashboard's front strips the public prefix.
    return (
        f'ARGS="--config.file={PROMETHEUS_CONFIG} '
        "--storage.tsdb.path=/var/lib/prometheus/metrics2/ "
        f"--storage.tsdb.retention.time={settings.metrics_retention} "
        f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT} "
        f"--web.external-url={dashboard_url(settings)} --web.route-prefix=/ "
        f"--web.console.templates={CONSOLES_DIR} "
        f'--web.console.libraries={CONSOLE_LIBRARIES}"'
    )


def alertmanager_args() -> str:
    # No cluster of Alertmanagers: its gossip port is not opened at all.
    return (
        f'ARGS="--config.file={ALERTMANAGER_CONFIG} '
        f"--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT} "
        '--cluster.listen-address="'
    )


def blackbox_args() -> str:
    return f'ARGS="--config.file={BLACKBOX_CONFIG} --web.listen-address=127.0.0.1:{BLACKBOX_PORT}"'


def defaults_file(args: str) -> str:
    return (
        "# Written by swarmhub (monitor.metrics) from the env file: edit that, not this.\n"
        + args
        + "\n"
    )


def default_args(settings: Settings) -> dict[str, str]:
    """/etc/default/<service> of each service on the hub (node exporter: every host)."""
    return {
        NODE_EXPORTER: node_exporter_args(),
        BLACKBOX: blackbox_args(),
        ALERTMANAGER: alertmanager_args(),
        PROMETHEUS: prometheus_args(settings),
    }


def static(target: str, host: str) -> dict[str, Any]:
    return {"targets": [target], "labels": {"host": host}}


def prometheus_config(settings: Settings, addresses: dict[str, str]) -> dict[str, Any]:
    """prometheus.yml: ``addresses`` is each host's address in the cluster."""
    hub = settings.hub_host
    local = "127.0.0.1"
    docker_hosts = {hub, *settings.node_hosts}
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [RULES_NAME],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{local}:{ALERTMANAGER_PORT}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "node",
                "static_configs": [
                    static(f"{address}:{NODE_EXPORTER_PORT}", host)
                    for host, address in addresses.items()
                ],
            },
            {
                # Docker's engine metrics (daemon.json's metrics-addr, by docker.install):
                # the engine's own figures (containers, actions, swarm tasks), none per
                # container.
                "job_name": "docker",
                "static_configs": [
                    static(f"{address}:{DOCKER_METRICS_PORT}", host)
                    for host, address in addresses.items()
                    if host in docker_hosts
                ],
            },
            {
                "job_name": "jupyterhub",
                "metrics_path": "/hub/metrics",
                "authorization": {"type": "Bearer", "credentials_file": HUB_TOKEN},
                "static_configs": [static(f"{local}:{CHP_PORT}", hub)],
            },
            {"job_name": "chp", "static_configs": [static(f"{local}:{CHP_METRICS_PORT}", hub)]},
            {
                "job_name": "prometheus",
                "static_configs": [static(f"{local}:{PROMETHEUS_PORT}", hub)],
            },
            {
                "job_name": "alertmanager",
                "static_configs": [static(f"{local}:{ALERTMANAGER_PORT}", hub)],
            },
            {"job_name": "blackbox", "static_configs": [static(f"{local}:{BLACKBOX_PORT}", hub)]},
            {
                # The proxy's TLS port as students reach it, and its certificate's end date.
                "job_name": "proxy",
                "metrics_path": "/probe",
                "params": {"module": ["tls_connect"]},
                "static_configs": [
                    static(f"{addresses[settings.proxy_host]}:443", settings.proxy_host)
                ],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"{local}:{BLACKBOX_PORT}"},
                ],
            },
        ],
    }


def blackbox_config(settings: Settings) -> dict[str, Any]:
    # The certificate is not checked here (a self-signed one is fine): its end date is read
    # for the CertificateExpiresSoon alert; students' browsers check the rest.
    return {
        "modules": {
            "tls_connect": {
                "prober": "tcp",
                "timeout": "5s",
                "tcp": {
                    "tls": True,
                    "tls_config": {
                        "insecure_skip_verify": True,
                        "server_name": settings.domain_name,
                    },
                },
            }
        }
    }


def alert(name: str, expr: str, duration: str, summary: str, command: str, **labels: str) -> dict:
    """One alert rule: what is wrong (summary) and the first command to run."""
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration != "0s":
        rule["for"] = duration
    rule["labels"] = {"severity": "page", **labels}
    rule["annotations"] = {"summary": summary, "command": command}
    return rule


# File systems that are not a disk of the host (a FUSE mount of the homes is the storage
# host's disk, alerted there).
NOT_DISKS = "tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|autofs|fuse.*|nfs.*"


# Server starts that failed (errors, not refusals) in 10 minutes before StartsFailing fires:
# one may be a student's own doing (a broken file in their home); three are the cluster's.
START_ERRORS = 3
SPAWNS = "jupyterhub_server_spawn_duration_seconds_count"
# The refusals swarmhub makes on purpose (swarmhub_spawner.py's SpawnExceptions): the
# cluster has no room, or no node takes servers.
REFUSALS = "cluster_full|no_node"


def p95(histogram: str) -> str:
    """The 95th percentile of a histogram over the last 5 minutes, NaN without samples."""
    return f"histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket[5m])))"


def start_alerts(settings: Settings) -> list[dict]:
    """Server starts failing, refused, slow, or students waiting long in line. JupyterHub 6
    labels a refusal `status="failure"` with its reason and a failure `status="error"`;
    JupyterHub 5 called both `failure`: there, refusals are not told apart."""
    errors = 'status="error"' if settings.jupyterhub_series != "5.5" else 'status="failure"'
    rules = [
        alert(
            "StartsFailing",
            f"sum(increase({SPAWNS}{{{errors}}}[10m])) >= {START_ERRORS}",
            "0s",
            '{{ $value | printf "%.0f" }} server starts failed in 10 minutes (errors: '
            "refusals such as a full cluster are counted apart)",
            "invoke logs hub",
        ),
        alert(
            "StartsSlow",
            f"{p95('swarmhub_server_start_seconds')} > {settings.alert_start_seconds}",
            "5m",
            '95% of server starts took up to {{ $value | printf "%.0f" }} s, their wait in '
            f"line apart (over {settings.alert_start_seconds} s: ALERT_START_SECONDS)",
            "invoke status (then: invoke logs hub)",
        ),
        alert(
            "StudentsWaitLong",
            f"{p95('swarmhub_spawn_queue_wait_seconds')} > {settings.alert_wait_seconds}",
            "5m",
            'students waited up to {{ $value | printf "%.0f" }} s in line for a server (over '
            f"{settings.alert_wait_seconds} s: ALERT_WAIT_SECONDS): more nodes, or stagger",
            "invoke status (then: invoke plan)",
        ),
    ]
    if settings.jupyterhub_series != "5.5":
        rules.append(
            alert(
                "StudentsRefused",
                f'sum by (reason) (increase({SPAWNS}{{status="failure",reason=~"{REFUSALS}"}}'
                "[10m])) > 0",
                "0s",
                "students were refused a server in the last 10 minutes: {{ $labels.reason }} "
                "(the cluster has no room, or no node takes servers)",
                "invoke status (then: invoke plan, or invoke nodes.add)",
            )
        )
    return rules


def alert_rules(settings: Settings, backup_period: int) -> dict[str, Any]:
    """The alert rules; ``backup_period`` is BACKUP_SCHEDULE's period in seconds."""
    percent = settings.alert_disk_percent
    cert_seconds = settings.alert_cert_days * 86400
    backup_late = 2 * backup_period
    host = "{{ $labels.host }}"
    rules = [
        alert(
            "HostDown",
            'up{job="node"} == 0',
            HOST_DOWN_FOR,
            f"{host} does not answer: powered off, off the network, or its node exporter stopped",
            f"invoke status (then: fab -H {host} -- systemctl status {NODE_EXPORTER})",
        ),
        alert(
            "HubDown",
            'up{job="jupyterhub"} == 0',
            "1m",
            "JupyterHub does not answer on the hub (through chp): students cannot log in",
            "invoke logs hub",
        ),
        alert(
            "ProxyDown",
            'probe_success{job="proxy"} == 0',
            "2m",
            f"the proxy {host} does not answer TLS on port 443: the site is down for students",
            "invoke logs proxy",
        ),
        alert(
            "ExporterDown",
            'up{job!~"node|jupyterhub"} == 0',
            "5m",
            "{{ $labels.job }} on " + host + " does not answer Prometheus",
            f"invoke status (then: fab -H {host} -- journalctl -n 50 -u '*{{{{ $labels.job }}}}*')",
        ),
        alert(
            "DiskFull",
            f'100 * (1 - node_filesystem_avail_bytes{{fstype!~"{NOT_DISKS}"}} / '
            f'node_filesystem_size_bytes{{fstype!~"{NOT_DISKS}"}}) > {percent}',
            "5m",
            f'{host}: {{{{ $labels.mountpoint }}}} is {{{{ $value | printf "%.0f" }}}}% full '
            f"(over {percent}%: ALERT_DISK_PERCENT)",
            f"fab -H {host} -- sudo du -xh -d1 {{{{ $labels.mountpoint }}}}",
        ),
        # The agent posts this one itself at once, naming the memory limit and folding the
        # dead-kernel alert into it: Alertmanager keeps it silent (see its routes).
        alert(
            "ServerOOMKilled",
            f"time() - {OOM_LAST_METRIC} < 300",
            "0s",
            "{{ $labels.user }}'s server was OOM-killed on " + host + " (its memory limit)",
            "invoke logs user:{{ $labels.user }}",
            notified_by="swarmhub-agent",
        ),
        *start_alerts(settings),
        alert(
            "CertificateExpiresSoon",
            f'probe_ssl_earliest_cert_expiry{{job="proxy"}} - time() < {cert_seconds}',
            "10m",
            f"the proxy's certificate ends in less than {settings.alert_cert_days} days "
            "(ALERT_CERT_DAYS)",
            "invoke status (then: invoke proxy.configure to renew or install it)",
        ),
        alert(
            "BackupTooOld",
            f"time() - {BACKUP_METRIC} > {backup_late}",
            "10m",
            f"the last good backup on {host} is older than twice BACKUP_SCHEDULE "
            f"({settings.backup_schedule})",
            "invoke backup.list (then: invoke backup.run; journalctl -u swarmhub-backup on it)",
        ),
    ]
    return {"groups": [{"name": "swarmhub", "rules": rules}]}


SLACK_TITLE = (
    '[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}]'
    " {{ .CommonLabels.alertname }} {{ .CommonLabels.host }}"
)
SLACK_TEXT = (
    "{{ range .Alerts }}{{ .Annotations.summary }}\nFirst: {{ .Annotations.command }}\n{{ end }}"
)


def alertmanager_config(settings: Settings) -> dict[str, Any]:
    """alertmanager.yml: Slack-compatible notifications to ALERT_WEBHOOK_URL (none when it is
    empty: the alerts are then seen with `invoke metrics` only)."""
    receivers: list[dict[str, Any]] = [{"name": "none"}]
    receiver = "none"
    if settings.alert_webhook_url:
        slack: dict[str, Any] = {
            "api_url": settings.alert_webhook_url,
            "send_resolved": True,
            "title": SLACK_TITLE,
            "text": SLACK_TEXT,
        }
        if settings.alert_ca_file:
            slack["http_config"] = {"tls_config": {"ca_file": ALERT_CA}}
        receivers.append({"name": "webhook", "slack_configs": [slack]})
        receiver = "webhook"
    return {
        "route": {
            "receiver": receiver,
            "group_by": ["alertname", "host"],
            "group_wait": "30s",
            # ALERT_MIN_INTERVAL: the least time between two notifications of one group.
            "group_interval": f"{settings.alert_min_interval}s",
            "repeat_interval": "4h",
            "routes": [{"matchers": ['notified_by="swarmhub-agent"'], "receiver": "none"}],
        },
        "inhibit_rules": [
            {
                # A host down is one notification, not one per exporter or service on it.
                "source_matchers": ['alertname="HostDown"'],
                "target_matchers": ['alertname!="HostDown"'],
                "equal": ["host"],
            }
        ],
        "receivers": receivers,
    }


def mount_prefixes(path: str) -> str:
    """A regex of ``path``'s mount points that can hold it: itself and its parents."""
    parts = [p for p in path.split("/") if p]
    prefixes = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    return "|".join(prefixes)


def console(settings: Settings) -> str:
    """Our console template, its hosts and disks filled in (plain replacement: the file is a
    Go template, whose braces Jinja would take)."""
    hub_paths = (settings.hub_dir, "/var/lib/docker", "/var/lib/prometheus")
    hub_disks = "|".join(dict.fromkeys("|".join(map(mount_prefixes, hub_paths)).split("|")))
    values = {
        "__HUB__": settings.hub_host,
        "__STORAGE__": settings.storage_name,
        "__HUB_DISKS__": hub_disks,
        "__HOMES_DISKS__": mount_prefixes(settings.homes_dir),
    }
    text = CONSOLE_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def render_dashboard_unit(settings: Settings) -> str:
    return render(
        "systemd/swarmhub-dashboard.service.j2",
        image=image_ref(settings, "hub"),
        program=DASHBOARD_PATH,
        token=HUB_TOKEN,
        port=DASHBOARD_PORT,
        prefix=DASHBOARD_PREFIX,
        service=DASHBOARD_SERVICE,
        hub_api=HUB_API,
        prometheus=f"http://127.0.0.1:{PROMETHEUS_PORT}",
    )


def ensure_dashboard(settings: Settings, hub: HostView) -> Steps:
    """Our console in Prometheus's console directory, and the front that serves it to the
    hub's admins (restarted when its program, unit or the hub image changed)."""
    yield from ensure_file(
        hub, CONSOLE_LIBRARY, render("metrics/swarmhub.lib"), describe="the console library"
    )
    yield from ensure_file(hub, CONSOLE, console(settings), describe="the admins' dashboard")
    program = FileWrite.of(DASHBOARD_PATH, DASHBOARD_MODULE.read_text(), mode="0644")
    files = tuple(f for f in (program,) if file_differs(hub, f.path, f.content, f.mode, f.owner))
    yield from ensure_unit(hub, DASHBOARD_UNIT, render_dashboard_unit(settings), extra_files=files)


# --- probing ---


def schedule_period_command(schedule: str) -> str:
    """The next two times BACKUP_SCHEDULE elapses, as Unix times, one a line."""
    return (
        f"systemd-analyze calendar --iterations=2 {shlex.quote(schedule)} "
        "| sed -n 's/^ *\\(Next elapse\\|Iteration #2\\): *//p' "
        '| while read -r when; do date -d "$when" +%s; done'
    )


def parse_period(output: str, schedule: str) -> int:
    times = [int(word) for word in output.split() if word.isdigit()]
    if len(times) < 2 or times[1] <= times[0]:
        raise SwarmhubError(
            f"BACKUP_SCHEDULE={schedule}: systemd gives no period for it (does it repeat?)"
        )
    return times[1] - times[0]


def first_address(addresses: list[str]) -> str:
    return addresses[0]


def token_current_command(source: str) -> str:
    return (
        f"cmp -s {shlex.quote(source)} {HUB_TOKEN} && "
        f"[ \"$(stat -c '%a %U' {HUB_TOKEN})\" = '600 prometheus' ]"
    )


def token_copy_command(source: str) -> str:
    return f"install -m 0600 -o prometheus -g prometheus {shlex.quote(source)} {HUB_TOKEN}"


# --- the step ---


def ensure_defaults(host: HostView, service: str, args: str) -> Steps:
    """/etc/default/<service> holds our ARGS; the service restarts when they change."""
    changed = yield from ensure_file(
        host,
        f"/etc/default/{service}",
        defaults_file(args),
        describe=f"{service}'s settings",
        then=(f"systemctl restart {service}",),
    )
    return changed


def ensure_running(host: HostView, service: str) -> Steps:
    if running(host.probe(unit_state_command(service)).stdout.split()):
        yield Ok(f"{service} running")
        return
    yield Change(f"started {service}", [f"systemctl enable --now {service}"])


def checked_install(
    host: HostView,
    files: list[tuple[str, str, str, str]],
    check: str,
    reload: str,
    what: str,
) -> Steps:
    """Files (path, content, mode, group) written to STAGED_DIR, checked there with ``check``
    (its {} is the staged directory), and only then installed and ``reload`` run."""
    differing = [
        (path, content, mode, group)
        for path, content, mode, group in files
        if file_differs(host, path, content, mode, "root")
    ]
    if not differing:
        yield Ok(f"{what} up to date")
        return
    staged = [
        FileWrite(f"{STAGED_DIR}/{path.rsplit('/', 1)[-1]}", content.encode(), "0600", "root")
        for path, content, _, _ in files
    ]
    installs = [
        f"install -m {mode} -o root -g {group} {STAGED_DIR}/{path.rsplit('/', 1)[-1]} {path}"
        for path, _, mode, group in differing
    ]
    names = ", ".join(path.rsplit("/", 1)[-1] for path, _, _, _ in differing)
    yield Change(
        f"{what}: {names} checked and installed, reloaded",
        [check.format(STAGED_DIR), *installs, reload],
        files=staged,
    )


def render_server_metrics_unit() -> str:
    return render(
        "systemd/swarmhub-server-metrics.service.j2",
        every=seconds(SCRAPE_INTERVAL),
        textfile=SERVER_METRICS_FILE,
        program=SERVER_METRICS_PATH,
    )


def ensure_server_metrics(host: HostView) -> Steps:
    """On a node: swarmhub-server-metrics, restarted when its program or unit changed."""
    program = FileWrite.of(
        SERVER_METRICS_PATH, SERVER_METRICS_SOURCE.read_text(), mode="0755", owner="root"
    )
    files = tuple(f for f in (program,) if file_differs(host, f.path, f.content, f.mode, f.owner))
    yield from ensure_unit(
        host, SERVER_METRICS_UNIT, render_server_metrics_unit(), extra_files=files
    )


def apply_everywhere(host: HostView) -> Steps:
    yield from ensure_packages(host, [NODE_EXPORTER], "metrics of this host")
    yield from ensure_defaults(host, NODE_EXPORTER, node_exporter_args())
    yield from ensure_running(host, NODE_EXPORTER)
    if "node" in host.roles:
        yield from ensure_server_metrics(host)


def apply_hub(ctx: StepContext, hub: HostView) -> Steps:
    settings = ctx.settings
    yield from ensure_packages(hub, HUB_PACKAGES, "metrics and alerts")
    for service, args in default_args(settings).items():
        yield from ensure_defaults(hub, service, args)
    token = f"{settings.hub_dir}/secrets/metrics_token"
    if not hub.probe(f"test -s {shlex.quote(token)}").ok and not ctx.changes_pending:
        raise SwarmhubError(f"{hub.name}: no {token}: run hub.deploy (or cluster.all) first")
    if hub.probe(token_current_command(token)).ok:
        yield Ok(f"JupyterHub's metrics token for Prometheus ({HUB_TOKEN})")
    else:
        yield Change(
            f"JupyterHub's metrics token copied for Prometheus ({HUB_TOKEN}, 0600)",
            [token_copy_command(token)],
        )
    period = parse_period(
        hub.probe(schedule_period_command(settings.backup_schedule), sudo=False).stdout,
        settings.backup_schedule,
    )
    addresses = {name: first_address(found) for name, found in cluster_addresses(ctx).items()}
    if settings.alert_ca_file is not None:
        yield from ensure_file(
            hub, ALERT_CA, settings.alert_ca_file.read_text(), describe="the webhook's CA"
        )
    yield from checked_install(
        hub,
        [(BLACKBOX_CONFIG, serialize(blackbox_config(settings)), "0644", "root")],
        f"{BLACKBOX} --config.check --config.file={{}}/blackbox.yml",
        f"systemctl reload-or-restart {BLACKBOX}",
        "the blackbox exporter's modules",
    )
    yield from checked_install(
        hub,
        [(ALERTMANAGER_CONFIG, serialize(alertmanager_config(settings)), "0640", "prometheus")],
        "amtool check-config {}/alertmanager.yml",
        f"systemctl reload-or-restart {ALERTMANAGER}",
        "Alertmanager's routes",
    )
    yield from checked_install(
        hub,
        [
            (RULES, serialize(alert_rules(settings, period)), "0644", "root"),
            (PROMETHEUS_CONFIG, serialize(prometheus_config(settings, addresses)), "0644", "root"),
        ],
        "promtool check config {}/prometheus.yml",
        f"systemctl reload-or-restart {PROMETHEUS}",
        "Prometheus's scrapes and alert rules",
    )
    for service in HUB_SERVICES:
        yield from ensure_running(hub, service)
    yield from ensure_dashboard(settings, hub)
    if not settings.alert_webhook_url:
        yield Note("alerts are not sent anywhere (ALERT_WEBHOOK_URL empty): see invoke metrics")
    yield Note(disk_budget(settings))


def apply_off(host: HostView) -> Steps:
    services = (*HUB_SERVICES, DASHBOARD_UNIT) if "hub" in host.roles else (NODE_EXPORTER,)
    if "node" in host.roles:
        services = (*services, SERVER_METRICS_UNIT)
    for service in services:
        state = host.probe(unit_state_command(service)).stdout.split()
        if state[:1] == ["enabled"] or state[-1:] == ["active"]:
            yield Change(f"stopped {service} (METRICS=off)", [f"systemctl disable --now {service}"])
        else:
            yield Ok(f"{service} off (METRICS=off)")


def apply(ctx: StepContext, host: HostView) -> Steps:
    if not enabled(ctx.settings):
        yield from apply_off(host)
        return
    if "hub" in host.roles:
        yield from apply_hub(ctx, host)
    else:
        yield from apply_everywhere(host)


STEP = Step(
    name="monitor.metrics",
    # Every host Prometheus scrapes (settings.hosts) gets its node exporter: a storage host
    # of its own, and the recovery issue's backup host, too.
    roles=frozenset({"hub", "node", "proxy", "storage", "backup"}),
    apply=apply,
    parallel=True,
    summary="Prometheus, Alertmanager and node exporters (METRICS), or stopped when off",
    on_node_add="all",
)

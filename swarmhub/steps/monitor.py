"""monitor.deploy: the swarmhub-agent on every host — the alerts no packaged tool raises
(OOM kills naming the user and limit, dead kernels folded into them, failed starts naming the
user, 5xx bursts), to ALERT_WEBHOOK_URL, and the OOM kills counted for Prometheus; absent
(stopped and removed) when SYSLOG_URL and ALERT_WEBHOOK_URL are both empty.

Log shipping is rsyslog's now (monitor.logs); with SYSLOG_URL alone the agent still runs, so
that an OOM kill is named in the journal rsyslog ships and counted for Prometheus.

The agent (swarmhub/monitor/agent.py, Python's standard library only) runs as a systemd
service and reads what the host has: containers through the Docker socket, nginx's access
log, the swarm's nodes on the manager. It is restarted only when its program or its settings
change.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import ensure_unit, file_differs
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.templates import render

AGENT_SOURCE = Path(__file__).resolve().parent.parent / "monitor" / "agent.py"
AGENT_PATH = "/usr/local/lib/swarmhub/swarmhub-agent"
CONFIG_DIR = "/etc/swarmhub"
AGENT_ENV = f"{CONFIG_DIR}/agent.env"
# The agent shipped logs before rsyslog did: its CA file is removed with it.
SYSLOG_CA = f"{CONFIG_DIR}/agent-syslog-ca.pem"
ALERT_CA = f"{CONFIG_DIR}/agent-alert-ca.pem"
UNIT = "swarmhub-agent.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
FILES = (AGENT_PATH, AGENT_ENV, SYSLOG_CA, ALERT_CA, UNIT_PATH)


def enabled(settings: Settings) -> bool:
    """The agent runs when alerts are posted, or logs shipped (its OOM lines, its metric)."""
    return bool(settings.syslog_url or settings.alert_webhook_url)


def agent_env(settings: Settings, host: str, roles: tuple[str, ...]) -> str:
    """The agent's settings (0600 on the host: the webhook URL is a secret)."""
    values = {
        "SWARMHUB_HOST": host,
        "SWARMHUB_ROLES": ",".join(roles),
        "ALERT_WEBHOOK_URL": settings.alert_webhook_url,
        "ALERT_CA_FILE": ALERT_CA if settings.alert_ca_file else "",
        "ALERT_MIN_INTERVAL": str(settings.alert_min_interval),
        "ALERT_MAX_PER_MINUTE": str(settings.alert_max_per_minute),
        "ALERT_5XX_COUNT": str(settings.alert_5xx_count),
        "ALERT_5XX_WINDOW": str(settings.alert_5xx_window),
        # on: OOM kills counted for Prometheus; swarm nodes down left to its HostDown alert
        "METRICS": settings.metrics,
    }
    lines = ["# Written by swarmhub (monitor.deploy) from the env file: edit that, not this."]
    lines += [f"{key}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def render_unit() -> str:
    return render("systemd/swarmhub-agent.service.j2", agent_env=AGENT_ENV, agent_path=AGENT_PATH)


def remove_command() -> str:
    files = " ".join(shlex.quote(path) for path in FILES)
    return f"systemctl disable --now {UNIT} 2>/dev/null; rm -f {files}; systemctl daemon-reload"


def apply(ctx: StepContext, host: HostView) -> Steps:
    settings = ctx.settings
    if not enabled(settings):
        if host.probe(f"test -e {UNIT_PATH}").ok:
            yield Change(
                "removed the swarmhub-agent (log shipping and alerts are off)", [remove_command()]
            )
        else:
            yield Ok("log shipping and alerts off (SYSLOG_URL and ALERT_WEBHOOK_URL empty)")
        return
    wanted = [
        FileWrite.of(AGENT_PATH, AGENT_SOURCE.read_text(), mode="0755"),
        FileWrite.of(AGENT_ENV, agent_env(settings, host.name, host.roles), mode="0600"),
    ]
    if settings.alert_ca_file is not None:
        wanted.append(FileWrite.of(ALERT_CA, settings.alert_ca_file.read_text()))
    # The agent's program and settings change with the unit: one change restarts it once.
    files = tuple(f for f in wanted if file_differs(host, f.path, f.content, f.mode, f.owner))
    yield from ensure_unit(host, UNIT, render_unit(), extra_files=files)


STEP = Step(
    name="monitor.deploy",
    roles=frozenset({"hub", "node", "proxy"}),
    apply=apply,
    parallel=True,
    summary="log shipping and alerts (swarmhub-agent), or none when off",
    on_node_add="node",
)

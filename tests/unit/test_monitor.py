"""Log shipping and alerts without hosts: rsyslog's configuration, the agent's rules and rate
limits, the settings, the step's files, and OOM kills in status and logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.monitor import agent
from swarmhub.observe import commands, parse, report, sources
from swarmhub.steps import logs, monitor
from swarmhub.templates import render
from tests.unit.fakehost import answering, declared, view_of

NOW = datetime(2026, 11, 26, 1, 0, 0, tzinfo=UTC)
BASE = "HUB_HOST=h\nNODE_HOSTS=n1,n2\nPROXY_HOST=p\nAUTHENTICATOR=native\n"


def load(tmp_path: Path, extra: str = "") -> settings.Settings:
    path = tmp_path / "m.env"
    path.write_text(BASE + extra)
    return settings.load(str(path))


# --- the agent's pure parts ---


@pytest.mark.parametrize(
    "text",
    [
        "[E 2026-11-26 01:00:00.000 JupyterHub user:1013] Unhandled error starting alice's "
        "server: cluster full: no suitable node",
        "[E 2026-11-26 01:00:00.000 JupyterHub user:1007] Error starting alice's server: "
        "HTTP 500: cluster full",
        "[W 2026-11-26 01:00:00.000 JupyterHub user:998] alice's server failed to start in "
        "300 seconds, giving up.",
        "[E 2026-11-26 01:00:00.000 JupyterHub pages:370] Unhandled error starting server alice",
    ],
)
def test_a_failed_spawn_names_the_user(text: str) -> None:
    alert = agent.alert_for_line(agent.Line("jupyterhub", text), "sam-hub")
    assert alert is not None and alert.cause == "spawn-failed" and alert.subject == "alice"
    cleanup = "[E 2026] Failed to cleanup alice's server that failed to start"
    assert agent.alert_for_line(agent.Line("jupyterhub", cleanup), "sam-hub") is None


def test_a_restarting_kernel_is_a_dead_kernel_of_that_user() -> None:
    line = agent.Line(
        "jupyter-alice", "[W 01:00 ServerApp] KernelRestarter: restarting kernel (1/5)", "alice"
    )
    alert = agent.alert_for_line(line, "sam-node-1")
    assert alert == agent.Alert("kernel-died", "alice", alert.text if alert else "")
    assert agent.alert_for_line(agent.Line("cull", "[I] culling alice"), "h") is None


def test_an_oom_alert_names_user_limit_and_node() -> None:
    alert = agent.oom_alert("alice", "jupyter-alice", "sam-node-2", 512 * 2**20)
    assert alert.cause == "oom-kill" and alert.subject == "alice"
    assert "alice's server (jupyter-alice on sam-node-2)" in alert.text
    assert "memory limit of 512 MiB" in alert.text


def test_container_app_and_user() -> None:
    info = {
        "Name": "/jupyter-alice.1.abc",
        "Config": {
            "Labels": {agent.SERVICE_LABEL: "jupyter-alice"},
            "Env": ["PATH=/bin", "JUPYTERHUB_USER=alice"],
        },
    }
    assert agent.container_app_and_user(info) == ("jupyter-alice", "alice")
    assert agent.container_app_and_user({"Name": "/jupyterhub", "Config": {}}) == (
        "jupyterhub",
        "",
    )


def test_log_frames_are_split_into_lines() -> None:
    class Stream:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, size: int) -> bytes:
            chunk, self.data = self.data[:size], self.data[size:]
            return chunk

    def frame(payload: bytes) -> bytes:
        return bytes([1, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    stream = Stream(frame(b"one\ntw") + frame(b"o\nthree"))
    assert list(agent.split_lines(agent.demultiplex(stream, tty=False))) == ["one", "two", "three"]


def test_a_5xx_burst_fires_once_per_burst() -> None:
    counter = agent.BurstCounter(threshold=3, window=10)
    assert [counter.add(t) for t in (0, 1, 2, 3, 4)] == [False, False, True, False, False]
    assert counter.add(30) is False  # the window emptied: a new burst may fire again
    assert [counter.add(t) for t in (31, 32)] == [False, True]
    assert agent.status_of_access_line('1.2.3.4 - - [x] "GET / HTTP/1.1" 502 10 "-" "-"') == 502


def test_rate_limit_per_cause_and_subject_and_per_minute() -> None:
    limiter = agent.RateLimiter(min_interval=300, per_minute=2)
    a, b, c = (agent.Alert("oom-kill", u, "") for u in ("alice", "bob", "carol"))
    assert limiter.allow(a, 0) and not limiter.allow(a, 10)  # same cause and user
    assert limiter.allow(b, 11) and not limiter.allow(c, 12)  # two a minute at most
    assert limiter.take_held_back() == 2 and limiter.allow(c, 75)


def test_a_dead_kernel_after_an_oom_kill_is_one_alert() -> None:
    sent: list[str] = []
    alerter = agent.Alerter(sent.append, "n1", min_interval=300, per_minute=10)
    kernel = agent.Alert("kernel-died", "alice", "kernel died")
    alerter.raise_alert(kernel, now=0)  # the restart line came first: it waits
    alerter.raise_alert(agent.oom_alert("alice", "jupyter-alice", "n1", 0), now=1)
    alerter.raise_alert(kernel, now=2)
    alerter.flush(now=100)
    assert len(sent) == 1 and "OOM kill" in sent[0]
    alerter.raise_alert(agent.Alert("kernel-died", "bob", "bob's kernel died"), now=200)
    alerter.flush(now=201)
    assert len(sent) == 1  # still waiting for an OOM kill that may explain it
    alerter.flush(now=200 + agent.KERNEL_ALERT_DELAY)
    assert len(sent) == 2 and "bob's kernel died" in sent[1]


# --- settings ---


def test_monitoring_is_off_by_default(tmp_path: Path) -> None:
    env = load(tmp_path)
    assert not monitor.enabled(env)


@pytest.mark.parametrize("url", ["syslog.example.org:514", "http://x:1", "tls://host", "udp://:5"])
def test_a_bad_syslog_url_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(SwarmhubError, match=r"SYSLOG_URL=.*give udp://HOST:PORT"):
        load(tmp_path, f"SYSLOG_URL={url}\n")


def test_a_bad_webhook_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SwarmhubError, match="ALERT_WEBHOOK_URL"):
        load(tmp_path, "ALERT_WEBHOOK_URL=hooks.slack.com/x\n")


def test_agent_settings_hold_the_webhook_and_no_ca_paths_of_this_machine(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    env = load(
        tmp_path,
        f"SYSLOG_URL=tls://logs.example.org:6514\nSYSLOG_CA_FILE={ca}\n"
        "ALERT_WEBHOOK_URL=https://hooks.example.org/T/B/secret\n",
    )
    text = monitor.agent_env(env, "n1", ("node",))
    # shipping is rsyslog's (monitor.logs): the agent is not told where logs go
    assert "SWARMHUB_ROLES=node" in text and "SYSLOG" not in text
    assert "ALERT_WEBHOOK_URL=https://hooks.example.org/T/B/secret" in text
    assert "ALERT_CA_FILE=\n" in text and str(tmp_path) not in text
    assert "EnvironmentFile=/etc/swarmhub/agent.env" in monitor.render_unit()


def test_the_webhook_url_is_masked_in_a_diagnose_archive() -> None:
    from swarmhub import mask

    masked = mask.mask_secrets("ALERT_WEBHOOK_URL=https://hooks.example.org/T/B/secret\n")
    assert "secret" not in masked.replace("ALERT_WEBHOOK_URL", "")


# --- OOM kills in status and logs ---


def test_oom_events_are_counted_per_users_server() -> None:
    t = int(NOW.timestamp())
    text = f"{t - 60} jupyter-alice\n{t} jupyter-alice\n{t} \n{t} registry\n"
    kills = parse.parse_oom_events(text)
    assert kills == {"jupyter-alice": parse.OomKills(2, NOW)}
    merged = parse.merge_oom_kills(kills, {"jupyter-alice": parse.OomKills(1, NOW)})
    assert merged["jupyter-alice"].count == 3


def test_a_server_with_oom_kills_says_so_without_failing() -> None:
    server = parse.UserServer("alice", True, "", NOW - timedelta(minutes=10), None)
    tasks = {"jupyter-alice": parse.ServiceTask("jupyter-alice", "n1", "Running")}
    oom = {"jupyter-alice": parse.OomKills(1, NOW - timedelta(minutes=2))}
    (row,) = report.server_rows([server], tasks, NOW, commands.user_service, lambda s: s, oom)
    assert row.ok and row.values["oom_kills"] == 1
    assert row.note.startswith("OOM: killed once for going over its memory limit")


def test_oom_kills_before_the_server_started_are_not_its_own() -> None:
    server = parse.UserServer("alice", True, "", NOW - timedelta(minutes=1), None)
    tasks = {"jupyter-alice": parse.ServiceTask("jupyter-alice", "n1", "Running")}
    oom = {"jupyter-alice": parse.OomKills(1, NOW - timedelta(hours=2))}
    (row,) = report.server_rows([server], tasks, NOW, commands.user_service, lambda s: s, oom)
    assert row.values["oom_kills"] == 0 and not row.note


def test_logs_of_a_user_ask_every_node_for_oom_kills(tmp_path: Path) -> None:
    env = load(tmp_path, "USER_MEM_LIMIT=512M\n")
    found = sources.log_sources(env, "user:alice", 100, follow=False)
    assert [s.host for s in found] == ["h", "n1", "n2"]
    assert "--filter event=oom" in found[1].command and "--until" in found[1].command
    assert "memory limit of 512 MiB" in found[1].command
    followed = sources.log_sources(env, "user:alice", 100, follow=True)
    assert "--until" not in followed[1].command


def test_json_report_carries_oom_kills() -> None:
    server = parse.UserServer("alice", True, "", NOW, None)
    rows = report.server_rows([server], {}, NOW, commands.user_service, lambda s: s)
    section = report.servers_section()
    section.rows = rows
    document = json.loads(report.to_json(report.Report("e", NOW, [section])))
    assert document["servers"][0]["oom_kills"] == 0


# --- log shipping: rsyslog's configuration (monitor.logs) ---


def test_tls_shipping_checks_the_servers_name_with_the_given_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    env = load(tmp_path, f"SYSLOG_URL=tls://logs.example.org:6514\nSYSLOG_CA_FILE={ca}\n")
    text = logs.rsyslog_config(env, "n1", ("node",))
    assert 'target="logs.example.org" port="6514" protocol="tcp"' in text
    assert 'StreamDriver="gtls"' in text and 'StreamDriverAuthMode="x509/name"' in text
    assert 'StreamDriverPermittedPeers="logs.example.org"' in text
    assert f'StreamDriver.CAFile="{logs.SYSLOG_CA}"' in text and str(tmp_path) not in text
    # the host's name as the env file gives it; lines kept on disk while the server is away
    assert "%TIMESTAMP:::date-rfc3339% n1 %APP-NAME%" in text
    assert 'queue.filename="swarmhub-forward"' in text and 'action.resumeRetryCount="-1"' in text
    assert 'module(load="imjournal"' in text and "imfile" not in text


def test_udp_and_tcp_shipping_have_no_tls_and_the_proxy_ships_nginx_files(tmp_path: Path) -> None:
    udp = logs.rsyslog_config(load(tmp_path, "SYSLOG_URL=udp://10.0.0.5:514\n"), "p", ("proxy",))
    assert 'protocol="udp"' in udp and "gtls" not in udp
    assert 'File="/var/log/nginx/access.log" Tag="nginx-access:"' in udp
    tcp = logs.rsyslog_config(load(tmp_path, "SYSLOG_URL=tcp://10.0.0.5:514\n"), "h", ("hub",))
    assert 'protocol="tcp"' in tcp and "gtls" not in tcp
    system = logs.rsyslog_config(load(tmp_path, "SYSLOG_URL=tls://l.example.org:1\n"), "h", ())
    assert f'StreamDriver.CAFile="{logs.SYSTEM_CAS}"' in system


def test_journald_keeps_a_login_storms_lines() -> None:
    text = render("logs/journald-swarmhub.conf")
    assert "RateLimitBurst=100000" in text and "ForwardToSyslog=no" in text


def test_shipping_off_removes_rsyslogs_forwarding(tmp_path: Path) -> None:
    class Context:
        settings = load(tmp_path)

    node = answering("n1", ("node",), {f"test -e {logs.RSYSLOG_CONF}": ""}, {})
    node.files[logs.JOURNALD_CONF] = [""]
    items = declared(logs.apply(Context(), view_of(node)))  # type: ignore[arg-type]
    removal = [c for c in items if "forwards no more" in c.message]
    assert removal and any(logs.RSYSLOG_CONF in cmd for cmd in removal[0].commands)

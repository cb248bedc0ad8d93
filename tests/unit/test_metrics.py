"""monitor.metrics' decisions and `invoke metrics`' report, from data (the sandbox's e2e test,
tests/e2e/test_4c_metrics.py, runs them for real)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.monitor import agent
from swarmhub.observe import commands, figures
from swarmhub.steps import docker_engine, metrics, monitor
from tests.unit.fakehost import FakeHost, answering, declared, run_step, view_of

ENV = "HUB_HOST=h\nNODE_HOSTS=n1,n2\nPROXY_HOST=p\nAUTHENTICATOR=native\n"


def load(tmp_path: Path, extra: str = "") -> settings.Settings:
    path = tmp_path / "test.env"
    path.write_text(ENV + extra)
    return settings.load(str(path))


@pytest.mark.parametrize("value", ["16 weeks", "0w", "12", "1.5d", "w"])
def test_a_retention_that_is_not_a_duration_is_one_line(tmp_path: Path, value: str) -> None:
    with pytest.raises(SwarmhubError, match="METRICS_RETENTION") as error:
        load(tmp_path, f"METRICS_RETENTION={value}\n")
    assert "\n" not in str(error.value)


def test_thresholds_must_be_numbers(tmp_path: Path) -> None:
    with pytest.raises(SwarmhubError, match="ALERT_DISK_PERCENT"):
        load(tmp_path, "ALERT_DISK_PERCENT=ninety\n")
    with pytest.raises(SwarmhubError, match="ALERT_DISK_PERCENT"):
        load(tmp_path, "ALERT_DISK_PERCENT=150\n")


def test_the_disk_budget_grows_with_the_retention(tmp_path: Path) -> None:
    term = metrics.disk_budget(load(tmp_path))
    year = metrics.disk_budget(load(tmp_path, "METRICS_RETENTION=1y\n"))
    assert "16w" in term and "GiB" in term
    size = lambda text: float(text.split("about ")[1].split(" GiB")[0])  # noqa: E731
    assert size(year) > 3 * size(term)


def test_the_backup_period_comes_from_systemd() -> None:
    assert metrics.parse_period("1764633600\n1764720000\n", "daily") == 86400
    with pytest.raises(SwarmhubError, match="BACKUP_SCHEDULE"):
        metrics.parse_period("1764633600\n", "2026-12-01 03:00")


def test_prometheus_scrapes_every_host_and_the_hub_with_its_token(tmp_path: Path) -> None:
    env = load(tmp_path)
    addresses = {"h": "10.0.0.10", "n1": "10.0.0.21", "n2": "10.0.0.22", "p": "10.0.0.11"}
    config = metrics.prometheus_config(env, addresses)
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    nodes = jobs["node"]["static_configs"]
    assert [c["labels"]["host"] for c in nodes] == ["h", "n1", "n2", "p"]
    assert nodes[1]["targets"] == ["10.0.0.21:9100"]
    assert jobs["jupyterhub"]["authorization"]["credentials_file"] == metrics.HUB_TOKEN
    assert jobs["proxy"]["static_configs"][0]["targets"] == ["10.0.0.11:443"]
    # listening on the hub's loopback only
    args = metrics.prometheus_args(env)
    assert "--web.listen-address=127.0.0.1:9090" in args and "retention.time=16w" in args
    assert "--cluster.listen-address=" in metrics.alertmanager_args()


def test_every_alert_names_its_first_command(tmp_path: Path) -> None:
    rules = metrics.alert_rules(load(tmp_path), 86400)["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert names >= {
        "HostDown",
        "HubDown",
        "ProxyDown",
        "DiskFull",
        "ServerOOMKilled",
        "CertificateExpiresSoon",
        "BackupTooOld",
    }
    for rule in rules:
        assert rule["annotations"]["command"].startswith(("invoke ", "fab -H ")), rule
    backup = next(rule for rule in rules if rule["alert"] == "BackupTooOld")
    assert "> 172800" in backup["expr"]  # twice a daily schedule
    disk = next(rule for rule in rules if rule["alert"] == "DiskFull")
    assert disk["expr"].endswith("> 90")


def test_starts_failing_refused_slow_or_waiting_are_alerted_apart(tmp_path: Path) -> None:
    rules = {
        r["alert"]: r for r in metrics.alert_rules(load(tmp_path), 86400)["groups"][0]["rules"]
    }
    # JupyterHub 6: errors are status="error"; refusals (a full cluster) "failure" with a reason.
    assert 'status="error"' in rules["StartsFailing"]["expr"]
    assert rules["StartsFailing"]["expr"].endswith(">= 3")
    assert 'reason=~"cluster_full|no_node"' in rules["StudentsRefused"]["expr"]
    # The start itself and the wait in line, each with its own threshold.
    assert "swarmhub_server_start_seconds_bucket" in rules["StartsSlow"]["expr"]
    assert rules["StartsSlow"]["expr"].endswith("> 120")
    assert "swarmhub_spawn_queue_wait_seconds_bucket" in rules["StudentsWaitLong"]["expr"]
    assert rules["StudentsWaitLong"]["expr"].endswith("> 600")
    assert rules["StartsSlow"]["for"] == rules["StudentsWaitLong"]["for"] == "5m"


def test_on_jupyterhub_5_failed_starts_include_refusals(tmp_path: Path) -> None:
    env = load(tmp_path, "JUPYTERHUB_SERIES=5.5\nALERT_WAIT_SECONDS=300\n")
    rules = {r["alert"]: r for r in metrics.alert_rules(env, 86400)["groups"][0]["rules"]}
    assert 'status="failure"' in rules["StartsFailing"]["expr"]
    assert "StudentsRefused" not in rules  # JupyterHub 5 does not tell them apart
    assert rules["StudentsWaitLong"]["expr"].endswith("> 300")


def test_alertmanager_without_a_webhook_sends_nowhere(tmp_path: Path) -> None:
    config = metrics.alertmanager_config(load(tmp_path))
    assert config["route"]["receiver"] == "none"
    assert config["receivers"] == [{"name": "none"}]


def test_alertmanager_posts_slack_payloads_and_a_host_down_silences_its_others(
    tmp_path: Path,
) -> None:
    env = load(tmp_path, "ALERT_WEBHOOK_URL=https://hooks.example/x\nALERT_MIN_INTERVAL=60\n")
    config = metrics.alertmanager_config(env)
    assert config["route"]["receiver"] == "webhook"
    assert config["route"]["group_interval"] == "60s"
    slack = config["receivers"][1]["slack_configs"][0]
    assert slack["api_url"] == "https://hooks.example/x" and slack["send_resolved"]
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['alertname="HostDown"'] and inhibit["equal"] == ["host"]
    # the agent posts OOM kills itself: Alertmanager keeps that one silent
    assert config["route"]["routes"][0]["receiver"] == "none"


def test_the_agent_is_told_whether_prometheus_runs(tmp_path: Path) -> None:
    assert "METRICS=on" in monitor.agent_env(load(tmp_path), "n1", ("node",))
    off = monitor.agent_env(load(tmp_path, "METRICS=off\n"), "n1", ("node",))
    assert "METRICS=off" in off


def test_the_agents_oom_counts_are_a_textfile_metric() -> None:
    key = ("olga", "jupyter-olga")
    text = agent.oom_metric_text({key: 2}, {key: 1796138047.9})
    assert "# TYPE swarmhub_server_oom_kills_total counter" in text
    assert 'swarmhub_server_oom_kills_total{user="olga",service="jupyter-olga"} 2' in text
    assert f'{metrics.OOM_LAST_METRIC}{{user="olga",service="jupyter-olga"}} 1796138048' in text
    assert agent.OOM_METRIC_FILE == metrics.OOM_METRIC_FILE
    # a restarted agent goes on counting from what the last one wrote
    assert agent.parse_oom_metric_text(text) == ({key: 2}, {key: 1796138048.0})


def test_queries_reach_prometheus_on_the_hubs_loopback() -> None:
    command = commands.prometheus_query_command("up == 0")
    assert "http://127.0.0.1:9090/api/v1/query" in command
    assert "--data-urlencode 'query=up == 0'" in command


def vector(*samples: tuple[dict, float]) -> str:
    result = [{"metric": labels, "value": [0, str(value)]} for labels, value in samples]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def answers(alerts: list[dict]) -> dict[str, str]:
    found = {name: vector(({}, 3)) for name in figures.queries()}
    found["up"] = vector(({"job": "node", "host": "n1"}, 1), ({"job": "node", "host": "n2"}, 0))
    for name in ("memory", "cpu", "disk"):
        found[f"host_{name}"] = vector(({"host": "n1"}, 42.0))
        found[f"host_{name}_hour"] = vector(({"host": "n1"}, 55.0))
    found["alerts"] = json.dumps({"status": "success", "data": {"alerts": alerts}})
    return found


def test_the_report_names_firing_alerts_and_their_first_command() -> None:
    alert = {
        "state": "firing",
        "labels": {"alertname": "HostDown", "host": "n2"},
        "annotations": {"summary": "n2 does not answer", "command": "invoke status"},
    }
    found = figures.parse_answers(answers([alert, {"state": "pending", "labels": {}}]))
    assert not found.error and len(found.firing) == 1
    text = figures.render(found, ["n1", "n2"])
    assert "! HostDown n2: n2 does not answer" in text and "first: invoke status" in text
    assert "targets: 1 of 2 up; down: node@n2" in text
    assert "n1                   42%   42%     42%   (55%, 55%, 55%)" in text


def test_a_prometheus_that_does_not_answer_is_one_line() -> None:
    found = figures.parse_answers({"up": "curl: (7) Failed to connect to 127.0.0.1 port 9090"})
    assert found.error and "\n" not in figures.render(found, ["h"])


def test_a_config_is_checked_where_it_was_staged_before_it_is_installed() -> None:
    hub = answering("h", ("hub",), {}, {metrics.ALERTMANAGER_CONFIG: "content"})
    items = declared(
        metrics.checked_install(
            view_of(hub),
            [(metrics.ALERTMANAGER_CONFIG, "route: {}\n", "0640", "prometheus")],
            "amtool check-config {}/alertmanager.yml",
            "systemctl reload-or-restart prometheus-alertmanager",
            "Alertmanager's routes",
        )
    )
    (change,) = items
    # written to the staged directory only; the check first: when amtool rejects the file,
    # the commands stop there and the running config stays in place
    assert [f.path for f in change.files] == [f"{metrics.STAGED_DIR}/alertmanager.yml"]
    assert change.commands[0] == f"amtool check-config {metrics.STAGED_DIR}/alertmanager.yml"
    assert change.commands[1].startswith("install -m 0640 -o root -g prometheus ")
    assert change.commands[-1] == "systemctl reload-or-restart prometheus-alertmanager"


def test_a_config_as_wanted_is_left_alone() -> None:
    hub = answering("h", ("hub",), {}, {metrics.RULES: "", metrics.PROMETHEUS_CONFIG: ""})
    files = [(metrics.RULES, "a", "0644", "root"), (metrics.PROMETHEUS_CONFIG, "b", "0644", "root")]
    items = declared(metrics.checked_install(view_of(hub), files, "true", "true", "rules"))
    assert [type(item).__name__ for item in items] == ["Ok"]


def test_the_webhooks_ca_is_alertmanagers_too(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = load(tmp_path, f"ALERT_WEBHOOK_URL=https://hooks.example/x\nALERT_CA_FILE={ca}\n")
    slack = metrics.alertmanager_config(env)["receivers"][1]["slack_configs"][0]
    assert slack["http_config"] == {"tls_config": {"ca_file": metrics.ALERT_CA}}


def test_the_hours_highest_includes_now() -> None:
    found = figures.parse_answers(answers([]))
    found.values["now0"] = [({}, 5.0)]  # running servers now: its hour's subquery says 2
    found.values["hour0"] = [({}, 2.0)]
    row = next(line for line in figures.render(found, []).splitlines() if "running" in line)
    assert row.split()[-2:] == ["5", "5"]


def test_the_docker_engines_metrics_are_on_with_metrics_and_scraped_on_hub_and_nodes(
    tmp_path: Path,
) -> None:
    on, off = load(tmp_path), load(tmp_path, "METRICS=off\n")
    assert docker_engine.daemon_config(on, [])["metrics-addr"] == "0.0.0.0:9323"
    assert "metrics-addr" not in docker_engine.daemon_config(off, [])
    addresses = {"h": "10.0.0.10", "n1": "10.0.0.21", "n2": "10.0.0.22", "p": "10.0.0.11"}
    jobs = {
        job["job_name"]: job for job in metrics.prometheus_config(on, addresses)["scrape_configs"]
    }
    targets = {c["labels"]["host"]: c["targets"] for c in jobs["docker"]["static_configs"]}
    assert targets == {"h": ["10.0.0.10:9323"], "n1": ["10.0.0.21:9323"], "n2": ["10.0.0.22:9323"]}


def deployed_node(servers: str) -> dict[str, FakeHost]:
    """A node deployed before the engine's metrics (its daemon.json lacks metrics-addr),
    with ``servers`` running on it."""
    node = answering(
        "n1",
        ("node",),
        {"/etc/os-release": "debian trixie\n", "dpkg-query": "installed\n", "docker compose": "2"},
        {docker_engine.DAEMON_JSON: "content differs"},
    )
    hub = FakeHost("h", ("hub",), connection=None)
    hub.answers = {
        "docker node ps n1 --filter desired-state=running --format '{{.Name}}' 2>/dev/null": [
            (0, servers)
        ],
        "docker node inspect --format '{{.Spec.Availability}}' n1": [(0, "active\n")],
    }
    return {"h": hub, "n1": node, "n2": FakeHost("n2", ("node",), connection=None)}


def test_turning_the_engines_metrics_on_says_which_servers_stop_and_is_refused_where_they_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = load(tmp_path)
    hosts = deployed_node("jupyter-alice.1.x\n")
    plan = run_step(docker_engine.STEP, env, "n1", hosts, plan=True)
    assert plan.executed() == []
    assert "restarts Docker on n1: 1 server(s) stop" in capsys.readouterr().out
    with pytest.raises(SwarmhubError, match="--restart-nodes"):
        run_step(docker_engine.STEP, env, "n1", deployed_node("jupyter-alice.1.x\n"), plan=False)


def test_the_backup_alert_reads_what_the_backup_script_writes(tmp_path: Path) -> None:
    """The metric is shared with the recovery issue's restic script: one name, one file in
    the textfile collector's directory, whichever script writes it."""
    from swarmhub.steps import backup

    script = backup.render_script(load(tmp_path))
    assert metrics.BACKUP_METRIC == "swarmhub_backup_last_success_timestamp_seconds"
    assert metrics.BACKUP_METRIC in script
    assert metrics.TEXTFILE_DIR in script and "swarmhub_backup.prom" in script
    assert f"{metrics.TEXTFILE_DIR}/swarmhub_backup.prom" == metrics.BACKUP_METRIC_FILE
    rule = next(
        rule
        for rule in metrics.alert_rules(load(tmp_path), 3600)["groups"][0]["rules"]
        if rule["alert"] == "BackupTooOld"
    )
    assert rule["expr"] == f"time() - {metrics.BACKUP_METRIC} > 7200"


def test_the_report_lists_the_servers_using_the_most_memory() -> None:
    found = figures.parse_answers(answers([]))
    found.values["top_memory"] = [
        ({"user": "ann", "host": "n1"}, 100 * 2**20),
        ({"user": "bob", "host": "n2"}, 300 * 2**20),
    ]
    found.values["server_cpu"] = [({"user": "bob", "host": "n2"}, 12.4)]
    lines = figures.render(found, []).splitlines()
    at = lines.index(next(line for line in lines if line.startswith("SERVER (most memory)")))
    assert lines[at + 1].split() == ["bob", "n2", "300MB", "12%"]
    assert lines[at + 2].split() == ["ann", "n1", "100MB", "-"]
    found.values["top_memory"] = []
    assert "servers: none running" in figures.render(found, [])


def test_diagnose_keeps_the_key_figures_or_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swarmhub.observe import diagnose

    assert diagnose.key_figures(load(tmp_path, "METRICS=off\n")).startswith("METRICS=off")

    def unreachable(settings: settings.Settings) -> figures.Metrics:
        raise OSError("connection refused")

    monkeypatch.setattr(figures, "gather", unreachable)
    said = diagnose.key_figures(load(tmp_path))
    assert "did not answer: connection refused" in said
    monkeypatch.setattr(figures, "gather", lambda settings: figures.parse_answers(answers([])))
    assert "running servers" in diagnose.key_figures(load(tmp_path))

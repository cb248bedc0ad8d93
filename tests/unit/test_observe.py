"""Looking into the system, without hosts: the commands, their parsers, healthy or failing
rows, log sources, secret masking, and the archive."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from swarmhub import mask, settings
from swarmhub.errors import SwarmhubError
from swarmhub.observe import commands, diagnose, health, parse, report, sources, status
from swarmhub.observe.logs import PrefixedLines
from swarmhub.observe.remote import Reach
from tests.cli import run

NOW = datetime(2026, 11, 25, 23, 0, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path) -> settings.Settings:
    path = tmp_path / "s.env"
    path.write_text(
        "HUB_HOST=sam-hub\nNODE_HOSTS=sam-node-1,sam-node-2\nPROXY_HOST=sam-proxy\n"
        "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=sandbox\nSSH_CONFIG=.sandbox/ssh_config\n"
    )
    return settings.load(str(path))


def sh(script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=10, **kwargs
    )


# --- one round trip per host: sections ---


def test_a_sectioned_script_splits_back_into_its_sections() -> None:
    script = commands.sectioned(
        {"one": "echo first; echo second", "fails": "ls /no-such-dir", "last": "printf 200"}
    )
    found = parse.split_sections(sh(script).stdout)
    assert found["one"] == "first\nsecond"
    assert "no-such-dir" in found["fails"]  # stderr kept, and the next section still ran
    assert found["last"] == "200"  # no newline of its own: the next marker is not glued to it


def test_probes_follow_the_roles(env: settings.Settings) -> None:
    node = commands.host_probe_sections(env, ("node",))
    assert set(node) == {"now", "disk", "memory", "docker", "oom", "images"}
    proxy = commands.host_probe_sections(env, ("proxy",))
    assert {"nginx", "cert"} <= set(proxy) and "docker" not in proxy
    hub = commands.host_probe_sections(env, ("hub", "proxy"))
    assert {"nodes", "containers", "registry", "users", "tasks", "nginx"} <= set(hub)


def test_the_hub_token_never_appears_on_a_command_line(env: settings.Settings) -> None:
    command = commands.users_command(env)
    token_file = "/srv/swarmhub/secrets/culler_token"
    assert f"printf 'Authorization: token %s\\n' \"$(cat {token_file})\" | curl" in command
    assert "-H @-" in command  # curl reads the header from its stdin
    assert "state=active" in command and "limit=200" in command


def test_the_token_header_reaches_curl_on_stdin(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t\n")
    fake_curl = tmp_path / "curl"
    fake_curl.write_text("#!/bin/sh\nprintf 'args: %s\\n' \"$*\"; cat\n")
    fake_curl.chmod(0o755)
    command = commands.hub_api_command("http://hub/api/", str(token_file))
    result = sh(command, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    args, header = result.stdout.splitlines()[:2]
    assert "s3cr3t" not in args
    assert header == "Authorization: token s3cr3t"


@pytest.mark.parametrize(
    ("user", "escaped"), [("alice", "alice"), ("obs-alice", "obs-2dalice"), ("zoë", "zo-c3-ab")]
)
def test_a_users_service_is_named_as_dockerspawner_does(user: str, escaped: str) -> None:
    # The escaping itself: tests/unit/test_names.py.
    assert commands.user_service(user) == f"jupyter-{escaped}"


# --- parsers ---


def test_df() -> None:
    text = (
        "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
        "/dev/mapper/very-long-volume-name 264212084 38809552  67581360      37% /\n"
    )
    assert parse.parse_df(text) == parse.DiskUse(264212084, 38809552, 37)
    with pytest.raises(parse.ParseError, match="df: df: cannot access"):
        parse.parse_df("df: cannot access '/': Permission denied")


def test_meminfo() -> None:
    memory = parse.parse_meminfo("MemTotal:       1000 kB\nMemAvailable:    250 kB\n")
    assert memory == parse.Memory(1024000, 256000)
    assert memory.used_percent == 75
    with pytest.raises(parse.ParseError):
        parse.parse_meminfo("grep: /proc/meminfo: No such file")


def test_node_ls_prefers_the_ready_entry_of_a_node_that_joined_again() -> None:
    text = (
        "sam-hub|Ready|Active|Leader\n"
        "sam-node-1|Down|Active|\n"
        "sam-node-1|Ready|Active|\n"
        "sam-node-2|Down|Drain|\n"
    )
    nodes = {n.hostname: n for n in parse.parse_node_ls(text)}
    assert nodes["sam-node-1"].ready and nodes["sam-hub"].manager == "Leader"
    assert not nodes["sam-node-2"].ready and not nodes["sam-node-2"].active


def test_node_ls_error_is_a_parse_error() -> None:
    with pytest.raises(parse.ParseError, match="not a swarm manager"):
        parse.parse_node_ls(
            "Error response from daemon: This node is not a swarm manager. Use docker swarm init"
        )


def test_containers_missing_and_exited() -> None:
    text = (
        "/chp|running|2026-11-25T22:37:55.301406634Z|2|0\n"
        "/jupyterhub|exited|2026-11-25T22:56:12.324537116Z|0|143\n"
        "Error: No such object: cull\n"
    )
    chp, hub, cull = parse.parse_containers(text, ("chp", "jupyterhub", "cull"))
    assert chp.state == "running" and chp.restarts == 2
    assert chp.started_at == datetime(2026, 11, 25, 22, 37, 55, 301406, tzinfo=UTC)
    assert (hub.state, hub.exit_code) == ("exited", 143)
    assert cull.state == "missing"


def test_containers_when_docker_is_down() -> None:
    with pytest.raises(parse.ParseError, match="Cannot connect"):
        parse.parse_containers(
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", ("chp",)
        )


def test_service_tasks() -> None:
    tasks = parse.parse_service_tasks("jupyter-obs-2dalice.1|sam-node-2|Running 7 seconds ago\n")
    assert tasks == {
        "jupyter-obs-2dalice": parse.ServiceTask(
            "jupyter-obs-2dalice", "sam-node-2", "Running 7 seconds ago"
        )
    }
    assert parse.parse_service_tasks("") == {}


def test_http_code_after_the_body() -> None:
    assert parse.split_http_code('{"version": "5.5.4"}\n200') == ('{"version": "5.5.4"}', 200)
    assert parse.split_http_code("curl: (7) Failed to connect\n000") == (
        "curl: (7) Failed to connect\n000",
        None,
    )


def user_model(name: str, ready: bool = True, pending: str | None = None) -> dict:
    server = {
        "ready": ready,
        "pending": pending,
        "started": "2026-11-25T22:00:00.000000Z",
        "last_activity": "2026-11-25T22:50:00.123456Z",
    }
    return {"name": name, "last_activity": None, "servers": {"": server}}


def test_users_page_with_pagination() -> None:
    body = json.dumps(
        {
            "items": [user_model("alice"), user_model("bob", False, "spawn")],
            "_pagination": {"offset": 0, "limit": 2, "total": 3, "next": {"offset": 2}},
        }
    )
    servers, following = parse.parse_users_page(body)
    assert [s.user for s in servers] == ["alice", "bob"]
    assert servers[1].pending == "spawn" and not servers[1].ready
    assert servers[0].last_activity == datetime(2026, 11, 25, 22, 50, 0, 123456, tzinfo=UTC)
    assert following == 2
    assert parse.parse_users_page(json.dumps([user_model("carol")]))[1] is None


def test_certificate_end_date() -> None:
    assert parse.parse_cert_enddate("notAfter=Feb  7 22:20:45 2029 GMT") == datetime(
        2029, 2, 7, 22, 20, 45, tzinfo=UTC
    )
    with pytest.raises(parse.ParseError, match="Could not open file"):
        parse.parse_cert_enddate("Could not open file or uri for loading certificate")


def test_docker_zero_time_is_no_time() -> None:
    assert parse.parse_timestamp("0001-01-01T00:00:00Z") is None


# --- rows: healthy or failing ---


def test_host_rows() -> None:
    healthy = report.host_row(
        "sam-node-1",
        ("node",),
        disk=parse.DiskUse(100, 37, 37),
        memory=parse.Memory(100, 90),
        docker="active",
    )
    assert healthy.ok
    full = report.host_row(
        "sam-node-1",
        ("node",),
        disk=parse.DiskUse(100, 95, 95),
        memory=parse.Memory(100, 2),
        docker="inactive",
    )
    assert full.problem == (
        "Docker on sam-node-1 is inactive; disk / of sam-node-1 95% full; "
        "memory of sam-node-1 98% used"
    )
    down = report.host_row("sam-node-2", ("node",), unreachable="cannot reach it over SSH")
    assert down.problem == "host sam-node-2 unreachable: cannot reach it over SSH"
    assert down.values["ssh"] == "unreachable"


def test_swarm_rows() -> None:
    nodes = parse.parse_node_ls(
        "sam-hub|Ready|Active|Leader\nsam-node-1|Ready|Drain|\nold-node|Down|Active|\n"
    )
    tasks = {"jupyter-a": parse.ServiceTask("jupyter-a", "sam-node-1", "Running")}
    rows = {
        r.name: r for r in report.swarm_rows(nodes, "sam-hub", ("sam-node-1", "sam-node-2"), tasks)
    }
    assert rows["sam-hub"].ok and rows["sam-hub"].values["role"] == "manager"
    assert rows["sam-node-1"].problem == (
        "swarm node sam-node-1 drain: takes no new servers (invoke nodes.activate sam-node-1)"
    )
    assert rows["sam-node-1"].values["servers"] == 1
    assert rows["sam-node-2"].problem == "sam-node-2 is not in the swarm"
    assert rows["old-node"].ok
    assert rows["old-node"].note == (
        "not in NODE_HOSTS of the env file and down: invoke nodes.remove old-node"
    )
    down = report.swarm_rows(parse.parse_node_ls("n1|Down|Active|\n"), "hub", ("n1",))
    assert [r.problem for r in down] == ["hub is not in the swarm", "swarm node n1 down"]


def test_a_stopped_hub_container_fails_and_is_named() -> None:
    started = NOW - timedelta(hours=3)
    running = report.container_row(parse.Container("chp", "running", started, 1, 0), NOW)
    assert running.ok and running.values["uptime_seconds"] == 3 * 3600
    assert running.note == "restarted 1 time(s) by Docker"
    stopped = report.container_row(parse.Container("jupyterhub", "exited", started, 0, 0), NOW)
    assert stopped.problem == "container jupyterhub exited (exit 0)"


def test_hub_api_and_registry_rows() -> None:
    assert report.hub_api_row(200).ok
    assert report.hub_api_row(503).problem == "hub API: HTTP 503"
    assert report.hub_api_row(None, "curl: (7) refused").problem == (
        "hub API: no answer (curl: (7) refused)"
    )
    assert report.unit_row("docker-registry", "failed").problem == "service docker-registry failed"


def test_proxy_row_certificate_days() -> None:
    assert report.proxy_row("p", "active", NOW + timedelta(days=400), NOW).ok
    soon = report.proxy_row("p", "active", NOW + timedelta(days=5, hours=1), NOW)
    assert soon.problem == "certificate on p expires in 5 days"
    assert (
        "expired 2 days ago"
        in report.proxy_row("p", "active", NOW - timedelta(days=2), NOW).problem
    )
    assert report.proxy_row("p", "failed", NOW + timedelta(days=400), NOW).problem == (
        "nginx on p failed"
    )


def test_server_rows() -> None:
    servers = [
        parse.UserServer("alice", True, "", NOW - timedelta(hours=2), NOW - timedelta(minutes=5)),
        parse.UserServer("obs-bob", True, "", NOW - timedelta(minutes=1), None),
    ]
    tasks = {
        "jupyter-alice": parse.ServiceTask("jupyter-alice", "sam-node-1", "Running"),
        "jupyter-ghost": parse.ServiceTask("jupyter-ghost", "sam-node-2", "Running"),
    }
    rows = {
        r.name: r
        for r in report.server_rows(
            servers, tasks, NOW, commands.user_service, lambda s: s.removeprefix("jupyter-")
        )
    }
    assert rows["alice"].ok and rows["alice"].values["node"] == "sam-node-1"
    assert rows["alice"].values["idle_seconds"] == 300
    assert rows["obs-bob"].problem == "server of obs-bob has no running task in the swarm"
    assert rows["ghost"].ok and "no server in the hub" in rows["ghost"].note


def a_report(*problems: str) -> report.Report:
    hosts = report.hosts_section()
    hosts.rows.append(report.host_row("sam-hub", ("hub",), docker="active"))
    stack = report.stack_section()
    for problem in problems:
        stack.rows.append(report.Row("jupyterhub", {"state": "exited"}, problem=problem))
    return report.Report("env/sandbox.env", NOW, [hosts, stack, report.servers_section()])


def test_text_marks_failing_rows_and_ends_with_what_is_wrong() -> None:
    text = report.render_text(a_report("container jupyterhub exited (exit 0)"))
    failing = [line for line in text.splitlines() if line.startswith("!")]
    assert len(failing) == 1 and "jupyterhub" in failing[0]
    assert text.splitlines()[-1] == ("unhealthy (1 problem): container jupyterhub exited (exit 0)")
    assert "(none)" in text  # an empty section says so


def test_text_of_a_healthy_cluster() -> None:
    last = report.render_text(a_report()).splitlines()[-1]
    assert last.startswith("healthy: 1 host up,")
    assert "!" not in report.render_text(a_report())


def test_json_document() -> None:
    document = json.loads(report.to_json(a_report("container jupyterhub exited (exit 0)")))
    assert document["healthy"] is False
    assert document["problems"] == ["container jupyterhub exited (exit 0)"]
    assert document["hosts"][0]["name"] == "sam-hub" and document["hosts"][0]["ok"] is True
    assert document["stack"][0]["ok"] is False


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (5, "5s"),
        (125, "2m 5s"),
        (3 * 3600 + 720, "3h 12m"),
        (5 * 86400 + 7200, "5d 2h"),
    ],
)
def test_durations(seconds: float | None, shown: str) -> None:
    assert report.human_duration(seconds) == shown


# --- a whole status, from canned answers ---


class FakeHost:
    """A host that answers the probes with canned sections (no SSH)."""

    def __init__(self, name: str, roles: tuple[str, ...], sections: dict[str, str]) -> None:
        self.name, self.roles, self.sections = name, roles, sections

    def run(self, command: str, **_: object) -> SimpleNamespace:
        text = "".join(
            f"\n{commands.SECTION_MARK}{name}\n{out}" for name, out in self.sections.items()
        )
        return SimpleNamespace(stdout=text)


def machine(**extra: str) -> dict[str, str]:
    return {
        "now": str(int(NOW.timestamp())),
        "disk": "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
        "/dev/vda 100 37 63 37% /",
        "memory": "MemTotal: 1000 kB\nMemAvailable: 900 kB",
        **extra,
    }


def test_status_of_a_cluster_with_a_stopped_hub_and_a_node_down(env: settings.Settings) -> None:
    users = {"items": [user_model("obs-alice")], "_pagination": {"next": None}}
    hub = FakeHost(
        "sam-hub",
        ("hub",),
        machine(
            docker="active",
            nodes="sam-hub|Ready|Active|Leader\nsam-node-1|Ready|Active|\nsam-node-2|Down|Active|",
            containers=(
                "/chp|running|2026-11-25T20:00:00.5Z|0|0\n"
                "/jupyterhub|exited|2026-11-25T20:00:00Z|0|0\n"
                "/cull|running|2026-11-25T20:00:00Z|0|0"
            ),
            registry="active",
            hub_api="<html>503 Service Unavailable</html>\n503",
            tasks="jupyter-obs-2dalice.1|sam-node-1|Running 1 hour ago",
            users=json.dumps(users) + "\n200",
        ),
    )
    node = FakeHost("sam-node-1", ("node",), machine(docker="active"))
    proxy = FakeHost(
        "sam-proxy",
        ("proxy",),
        machine(nginx="active", cert="notAfter=Feb 27 22:20:45 2029 GMT"),
    )
    reached = Reach(
        hosts={"sam-hub": hub, "sam-node-1": node, "sam-proxy": proxy},  # type: ignore[dict-item]
        errors={"sam-node-2": "cannot reach it over SSH"},
    )
    state = status.collect(env, reached)
    assert state.problems == [
        "host sam-node-2 unreachable: cannot reach it over SSH",
        "swarm node sam-node-2 down",
        "container jupyterhub exited (exit 0)",
        "hub API: HTTP 503",
    ]
    text = report.render_text(state)
    assert text.splitlines()[-1].startswith("unhealthy (4 problems): host sam-node-2 unreachable")
    servers = {row.name: row for row in next(s for s in state.sections if s.key == "servers").rows}
    assert servers["obs-alice"].values["node"] == "sam-node-1"
    assert servers["obs-alice"].values["idle_seconds"] == pytest.approx(600 - 0.123456)
    proxy_row = next(s for s in state.sections if s.key == "proxy").rows[0]
    assert proxy_row.ok and proxy_row.values["cert_expires"] == "2029-02-27"


def test_status_when_the_hub_is_unreachable(env: settings.Settings) -> None:
    reached = Reach(
        hosts={"sam-proxy": FakeHost("sam-proxy", ("proxy",), machine(nginx="active"))},  # type: ignore[dict-item]
        errors={h: "cannot reach it" for h in ("sam-hub", "sam-node-1", "sam-node-2")},
    )
    state = status.collect(env, reached)
    document = json.loads(report.to_json(state))
    assert document["healthy"] is False
    assert "unknown: hub sam-hub unreachable" in document["problems"]
    assert document["proxy"][0]["problem"].startswith("certificate on sam-proxy: certificate: ")


# --- health ---


def nodes(text: str) -> tuple[parse.SwarmNode, ...]:
    return tuple(parse.parse_node_ls(text))


def test_health_line_when_healthy() -> None:
    hub = health.HubAnswer(200, "", nodes("sam-hub|Ready|Active|Leader\nn1|Ready|Active|\n"))
    assert health.verdict("", hub, ("n1",)) == (
        True,
        "healthy: proxy https ok, hub api ok, 1/1 nodes ready",
    )


def test_health_line_names_each_problem() -> None:
    hub = health.HubAnswer(503, "", nodes("n1|Down|Active|\nn2|Ready|Pause|\n"))
    healthy, line = health.verdict("HTTP 502", hub, ("n1", "n2", "n3"))
    assert not healthy
    assert line == (
        "unhealthy: proxy https HTTP 502; hub api HTTP 503; node n1 down; node n2 pause; "
        "node n3 not in the swarm"
    )
    assert "\n" not in line


def test_health_when_the_hub_is_unreachable() -> None:
    hub = health.HubAnswer(None, "hub sam-hub: cannot reach it", (), "hub unreachable")
    _, line = health.verdict("", hub, ("n1",))
    assert (
        line == "unhealthy: hub api hub sam-hub: cannot reach it; nodes unknown (hub unreachable)"
    )


# --- logs ---


def test_services_and_their_hosts(env: settings.Settings) -> None:
    (hub,) = sources.log_sources(env, "hub", 5, False)
    assert (hub.host, hub.command) == ("sam-hub", "docker logs --tail 5 jupyterhub 2>&1")
    docker = sources.log_sources(env, "docker", 100, True)
    assert [s.host for s in docker] == ["sam-hub", "sam-node-1", "sam-node-2"]
    assert docker[0].command == "journalctl -u docker -n 100 --no-pager --follow"
    proxy = sources.log_sources(env, "proxy", 10, True)
    assert {s.host for s in proxy} == {"sam-proxy"}
    assert [s.label for s in proxy] == ["nginx", "access.log", "error.log"]
    assert proxy[1].command == "tail -n 10 -F /var/log/nginx/access.log"
    (registry,) = sources.log_sources(env, "registry", 3, False)
    assert registry.command == "journalctl -u docker-registry -n 3 --no-pager"


def test_a_users_server_is_read_through_the_swarm(env: settings.Settings) -> None:
    user, *oom = sources.log_sources(env, "user:obs-alice", 20, True)
    assert [s.host for s in oom] == ["sam-node-1", "sam-node-2"]
    assert user.host == "sam-hub"
    assert user.command == (
        "docker service logs --tail 20 --follow --no-task-ids jupyter-obs-2dalice 2>&1"
    )
    assert user.requires == "docker service inspect jupyter-obs-2dalice"
    assert "obs-alice has no server" in user.missing


def test_an_unknown_service_lists_the_valid_ones(env: settings.Settings) -> None:
    with pytest.raises(SwarmhubError) as error:
        sources.log_sources(env, "jupyter", 100, False)
    assert error.value.reason == (
        "unknown service 'jupyter': give one of hub, cull, chp, proxy, registry, docker, agent, "
        "user:NAME"
    )
    with pytest.raises(SwarmhubError, match="give a user name after user:"):
        sources.log_sources(env, "user:", 100, False)


@pytest.mark.parametrize("text", ["0", "-3", "ten", ""])
def test_tail_must_be_a_positive_number(text: str) -> None:
    with pytest.raises(SwarmhubError, match="give a whole number of lines"):
        sources.parse_tail(text)


def test_prefixes(env: settings.Settings) -> None:
    assert sources.prefixes(sources.log_sources(env, "hub", 1, False)) == [""]
    assert sources.prefixes(sources.log_sources(env, "docker", 1, False)) == [
        "[sam-hub] ",
        "[sam-node-1] ",
        "[sam-node-2] ",
    ]
    assert sources.prefixes(sources.log_sources(env, "proxy", 1, False))[1] == (
        "[sam-proxy access.log] "
    )


def test_prefixed_lines_are_whole_and_prefixed() -> None:
    out = io.StringIO()
    stream = PrefixedLines("[h] ", out, threading.Lock())
    stream.write("one\ntw")
    stream.write("o\r\nthr")
    assert out.getvalue() == "[h] one\n[h] two\n"
    stream.close()
    assert out.getvalue() == "[h] one\n[h] two\n[h] thr\n"


def test_a_followed_command_ends_when_its_input_closes() -> None:
    started = time.monotonic()
    result = sh(sources.until_disconnected("sleep 30"), stdin=subprocess.DEVNULL)
    assert time.monotonic() - started < 5
    assert result.returncode != 0  # killed
    assert sh(sources.until_disconnected("echo hi"), stdin=subprocess.PIPE).stdout == "hi\n"


# --- secrets ---


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("CONFIGPROXY_AUTH_TOKEN=9f86d081884c7d659a2feaa0c55ad015", "CONFIGPROXY_AUTH_TOKEN=***"),
        ('export JPY_COOKIE_SECRET="a b c"', "export JPY_COOKIE_SECRET=***"),
        ("  password: hunter2", "  password: ***"),
        ('  "api_token": "deadbeef",', '  "api_token": ***'),
        ("JUPYTERHUB_CRYPT_KEY=abc", "JUPYTERHUB_CRYPT_KEY=***"),
        (
            "GET /hub/api/users?token=abc123&limit=1 200",
            "GET /hub/api/users?token=***&limit=1 200",
        ),
        ('curl -H "Authorization: token abc123" x', 'curl -H "Authorization: token ***" x'),
        (
            "docker swarm join --token SWMTKN-1-3pu6hszjas19xyp7-1awxwuwd3z9j 10.0.0.1:2377",
            "docker swarm join --token *** 10.0.0.1:2377",
        ),
        (
            "dockerd: config:&{NodeID:86fe BindPort:0 Keys:[[211 16 2] [176 246]] Buffer:1400}",
            "dockerd: config:&{NodeID:86fe BindPort:0 Keys:*** Buffer:1400}",
        ),
        (
            'level=info msg="x" secret_value="a b" module=node',
            'level=info msg="x" secret_value="***" module=node',
        ),
    ],
)
def test_secret_values_are_masked(line: str, masked: str) -> None:
    assert mask.mask_line(line) == masked


@pytest.mark.parametrize(
    "line",
    [
        "USER_IMAGE=sam-hub:5000/swarmhub/user:354d9e83d01c",
        "    ssl_certificate_key /etc/swarmhub/tls/privkey.pem;",
        "upstream: http://10.231.0.10:8000/hub/",
        "CONFIGPROXY_AUTH_TOKEN=***",
        "",
    ],
)
def test_other_lines_are_left_alone(line: str) -> None:
    assert mask.mask_line(line) == line


def test_the_secrets_directory_is_never_read(env: settings.Settings) -> None:
    for roles in (("hub",), ("node",), ("proxy",), ("hub", "proxy")):
        for path in diagnose.config_paths(env, roles):
            assert "/secrets" not in path
    with pytest.raises(SwarmhubError, match="never read"):
        mask.refuse_secrets_dir("/srv/swarmhub/data/../secrets/proxy_token", "/srv/swarmhub")
    assert mask.refuse_secrets_dir("/srv/swarmhub/hub.env", "/srv/swarmhub") == (
        "/srv/swarmhub/hub.env"
    )


def test_the_archive_holds_masked_text_only(tmp_path: Path) -> None:
    path = tmp_path / "d.tar.gz"
    diagnose.write_archive(
        path,
        "d",
        {"hosts/h/config/x.env": "A=1\nAPI_TOKEN=0123456789abcdef\n", "README.txt": "hi\n"},
    )
    assert path.stat().st_mode & 0o777 == 0o600
    with tarfile.open(path) as archive:
        assert archive.getnames() == ["d/hosts/h/config/x.env", "d/README.txt"]
        text = archive.extractfile("d/hosts/h/config/x.env").read().decode()  # type: ignore[union-attr]
    assert text == "A=1\nAPI_TOKEN=***\n"


def test_archive_name() -> None:
    assert diagnose.default_name(NOW) == "diagnose-20261125T230000Z.tar.gz"


# --- the command line ---


def test_an_unknown_log_service_is_one_error_line() -> None:
    result = run("invoke", "logs", "nginx")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown service 'nginx': give one of hub, cull, chp, proxy, registry, docker, "
        "agent, user:NAME"
    ]


def test_the_tasks_are_listed() -> None:
    listed = run("invoke", "--list").stdout
    for name in ("status", "logs", "health", "diagnose"):
        assert f"\n  {name} " in listed


def test_a_node_lacking_an_offered_image_fails_and_old_servers_are_noted() -> None:
    user, lab, old = "r:5000/swarmhub/user:aaa", "r:5000/swarmhub/user-course:bbb", "r/x:ccc"
    offered = {user: ["python"], lab: ["lab"]}
    held = {"n1": {user, lab}, "n2": {user}, "n3": None}
    rows = report.image_rows(offered, held, ("n1", "n2", "n3"))
    assert [(r.name, r.values["image"], r.values["nodes"]) for r in rows] == [
        ("python", "user:aaa", "2/3"),
        ("lab", "user-course:bbb", "1/3"),
    ]
    assert rows[0].ok and rows[0].note == "images of n3 unknown"
    assert rows[1].problem == "n2 lacks user-course:bbb: run `invoke images.distribute`"
    servers = [report.Row("alice", {"service": "jupyter-alice"}), report.Row("bob", {})]
    report.flag_image_servers(servers, {"jupyter-alice": old}, set(offered))
    assert servers[0].values["image"] == "x:ccc"
    assert "no longer offered: a new start gets the current one" in servers[0].note
    assert "image" not in servers[1].values and not servers[1].note

"""The session's own promises, on fake hosts: restarts where students' servers run are said,
refused or applied one node at a time; follow-ups a run cut short left owed are finished; a
dropped connection is one FAILED line."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import PENDING_DIR, Step, StepContext, pending_record
from tests.unit.fakehost import FakeHost, expected_execution, normalize, run_step

ENV = "HUB_HOST=hub\nNODE_HOSTS=node-1,node-2\nPROXY_HOST=proxy\n"
AVAILABILITY = "docker node inspect --format '{{.Spec.Availability}}' node-1"
SERVERS = "docker node ps node-1 --filter desired-state=running --format '{{.Name}}' 2>/dev/null"


@pytest.fixture
def settings(tmp_path: Path) -> env_settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV)
    return env_settings.load(str(path))


def restarting(ctx: StepContext, host: HostView) -> Steps:
    yield Change(
        "daemon.json changed: restarted docker", ["systemctl restart docker"], restarts="Docker"
    )


RESTART = Step("docker.install", frozenset({"node"}), restarting)


def cluster(settings: env_settings.Settings, servers: str) -> dict[str, FakeHost]:
    hosts = {n: FakeHost(n, r, connection=None) for n, r in settings.hosts.items()}
    hosts["hub"].answers = {
        SERVERS: [(0, servers)],
        AVAILABILITY: [(0, "active\n")],
    }
    return hosts


def test_a_restart_on_a_node_says_how_many_servers_stop(settings, capsys) -> None:
    hosts = cluster(settings, "jupyter-alice.1.x\njupyter-bob.1.y\n")
    run = run_step(RESTART, settings, "node-1", hosts, plan=True)
    assert run.executed() == []
    assert "restarts Docker on node-1: 2 server(s) stop" in capsys.readouterr().out


def test_a_restart_where_servers_run_is_refused_with_the_way_to_apply_it(settings) -> None:
    hosts = cluster(settings, "jupyter-alice.1.x\n")
    with pytest.raises(SwarmhubError) as caught:
        run_step(RESTART, settings, "node-1", hosts, plan=False)
    assert "where 1 student server(s) run (jupyter-alice)" in str(caught.value)
    assert "--restart-nodes" in str(caught.value)
    assert all(not h.executed for h in hosts.values())


def test_with_restart_nodes_the_node_takes_no_new_servers_meanwhile(settings) -> None:
    hosts = cluster(settings, "jupyter-alice.1.x\n")
    run = run_step(RESTART, settings, "node-1", hosts, plan=False, restart_nodes=True)
    assert run.executed() == expected_execution(run)
    assert run.executed() == [
        ("hub", "run", "docker node update --availability pause node-1 >/dev/null"),
        ("hub", "run", "docker node update --availability active node-1 >/dev/null"),
        ("node-1", "run", "systemctl restart docker"),
    ]  # per host; in time: pause, restart, active
    hub = [c for _, kind, c in run.executed() if kind == "run" and _ == "hub"]
    assert hub[0].endswith("pause node-1 >/dev/null")


def test_an_empty_node_restarts_without_asking(settings) -> None:
    hosts = cluster(settings, "")
    run = run_step(RESTART, settings, "node-1", hosts, plan=False)
    assert ("node-1", "run", "systemctl restart docker") in run.executed()


def writing(ctx: StepContext, host: HostView) -> Steps:
    if host.file_differs("/etc/x.conf", "x\n"):
        yield Change(
            "wrote x.conf, reloaded x",
            ["systemctl reload x"],
            files=[
                __import__("swarmhub.runbook.change", fromlist=["FileWrite"]).FileWrite.of(
                    "/etc/x.conf", "x\n"
                )
            ],
        )
    else:
        yield Ok("x.conf up to date")


WRITE = Step("x.configure", frozenset({"node"}), writing)


def test_a_change_with_files_and_commands_is_recorded_until_its_commands_ran(settings) -> None:
    hosts = cluster(settings, "")
    hosts["node-1"].files = {"/etc/x.conf": ["content"]}
    run = run_step(WRITE, settings, "node-1", hosts, plan=False)
    steps = [c for h, kind, c in run.executed() if h == "node-1"]
    assert steps[0].startswith(f"mkdir -p {PENDING_DIR} && echo ")  # the record first
    assert steps[1] == "/etc/x.conf" and steps[2] == "systemctl reload x"
    assert steps[3].startswith(f"rm -f {PENDING_DIR}/")  # cleared once the reload ran


def test_a_follow_up_a_run_cut_short_left_owed_runs_first(settings) -> None:
    hosts = cluster(settings, "")
    owed = Change("wrote x.conf, reloaded x", ["systemctl reload x"])
    hosts["node-1"].pending = [pending_record(owed, "x.configure")]
    hosts["node-1"].files = {"/etc/x.conf": [""]}  # the file made it before the cut
    run = run_step(WRITE, settings, "node-1", hosts, plan=False)
    assert [m for _, m in run.messages()] == [
        "finished what a run cut short left undone: wrote x.conf, reloaded x"
    ]
    record = pending_record(owed, "x.configure")
    replay = normalize(
        f"( systemctl reload x ); status=$?; rm -f {PENDING_DIR}/{record['id']}.json; exit $status"
    )
    assert run.executed() == [("node-1", "run", replay)]  # once, the record gone either way


class Dropping(FakeHost):
    def file_differs(self, path: str, content: bytes, mode: str, owner: str) -> str:
        raise EOFError("the connection closed")


def test_a_dropped_connection_is_one_failed_line_not_a_traceback(settings, capsys) -> None:
    hosts = cluster(settings, "")
    hosts["node-1"] = Dropping("node-1", ("node",), connection=None)
    with pytest.raises(SwarmhubError, match=r"the connection broke during x\.configure"):
        run_step(WRITE, settings, "node-1", hosts, plan=False)
    assert "[node-1] FAILED: node-1: the connection broke" in capsys.readouterr().out


def test_a_change_whose_result_is_a_fact_of_its_own_is_not_recorded(settings) -> None:
    def building(ctx: StepContext, host: HostView) -> Steps:
        yield Change(
            "built the image",
            ["docker build ."],
            files=[FileWrite.of("/srv/build/Dockerfile", "FROM x\n")],
            follow_up=False,
        )

    hosts = cluster(settings, "")
    run = run_step(
        Step("images.build", frozenset({"node"}), building), settings, "node-1", hosts, plan=False
    )
    assert [c for h, _, c in run.executed() if h == "node-1"] == [
        "/srv/build/Dockerfile",
        "docker build .",
    ]

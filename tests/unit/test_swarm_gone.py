"""swarm.join on a node of a swarm that is gone (recover.hub rebuilt the hub at its address):
it leaves, Docker restarts (the old swarm's gossip keys go with it), then it joins."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import swarm
from tests.unit.fakehost import answering, run_step

ENV = "HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\nAUTHENTICATOR=native\n"
ENV += "HUB_ADDRESS=10.0.0.10\n"


def test_a_node_of_a_gone_swarm_restarts_docker_between_leave_and_join(tmp_path: Path) -> None:
    env = tmp_path / "course.env"
    env.write_text(ENV)
    hosts = {
        "hub": answering(
            "hub",
            ("hub", "storage"),
            {
                "docker node ls --format '{{.ID}}'": "newnode1\n",
                "join-token": "SWMTKN-1-x\n",
                "docker node ls --format '{{.ID}} {{.Hostname}}": "",
            },
            {},
        ),
        "node-1": answering(
            "node-1",
            ("node",),
            {"LocalNodeState": "active false 10.0.0.10:2377\n", "NodeID": "oldnode1\n"},
            {},
        ),
        "proxy": answering("proxy", ("proxy",), {}, {}),
    }
    run = run_step(swarm.JOIN, settings.load(str(env)), "node-1", hosts, plan=False)
    [(host, change)] = run.declared
    assert host == "node-1"
    assert (
        change.message
        == "left a swarm that is gone (Docker restarted), joined the swarm of hub (10.0.0.10)"
    )
    [command] = change.commands
    leave, restart, join = (
        command.index("swarm leave"),
        command.index("systemctl restart docker"),
        command.index("swarm join"),
    )
    assert leave < restart < join
    # A node that is simply new joins without a restart.
    assert "restart" not in swarm.join_command("t", "10.0.0.10")


def test_a_manager_that_lists_no_node_restarts_nothing(tmp_path: Path) -> None:
    """A busy or restarting manager that answers no list is no proof of a gone swarm: leaving
    would restart Docker and stop every server on the node. One line, nothing declared."""
    env = tmp_path / "course.env"
    env.write_text(ENV)
    for hub_list, node_id in (("", "oldnode1\n"), ("newnode1\n", "")):
        hosts = {
            "hub": answering(
                "hub",
                ("hub", "storage"),
                {"docker node ls --format '{{.ID}}'": hub_list, "join-token": "SWMTKN-1-x\n"},
                {},
            ),
            "node-1": answering(
                "node-1",
                ("node",),
                {"LocalNodeState": "active false 10.0.0.10:2377\n", "NodeID": node_id},
                {},
            ),
            "proxy": answering("proxy", ("proxy",), {}, {}),
        }
        with pytest.raises(SwarmhubError, match="cannot tell whether it belongs to the swarm"):
            run_step(swarm.JOIN, settings.load(str(env)), "node-1", hosts, plan=False)

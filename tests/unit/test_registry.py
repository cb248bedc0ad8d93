"""One registry of the runbook (swarmhub/steps/registry.py): cluster.all, nodes.add, the task
collections and the README's step table follow it."""

from __future__ import annotations

import re

from invoke import Collection

from swarmhub.settings import PROJECT_ROOT
from swarmhub.steps import registry
from tasks import ns


def readme_step_table() -> list[str]:
    """The task names of the README's step table ("| `invoke NAME` | hosts | ... |")."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## The runbook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `invoke ([a-z._]+)` \|", section, re.M)


def test_the_readmes_table_lists_the_registrys_tasks_in_order() -> None:
    assert readme_step_table() == [*registry.table_rows(), "cluster.all"]


def task_names(collection: Collection, prefix: str = "") -> set[str]:
    names = {prefix + name for name in collection.tasks}
    for name, sub in collection.collections.items():
        names |= task_names(sub, f"{prefix}{name}.")
    return names


def test_every_step_and_group_is_a_task_with_plan_mode() -> None:
    names = task_names(ns)
    for name, steps in registry.tasks().items():
        assert name in names, name
        task = ns[name]
        assert "plan" in task.help, name
        # A step that may restart Docker or the homes mount on a node offers the way to do it.
        assert ("restart-nodes" in task.help) == any(s.restarts for s in steps), name


def test_steps_are_named_as_their_tasks_and_have_help() -> None:
    for step in registry.RUNBOOK:
        assert re.fullmatch(r"[a-z]+(\.[a-z]+)?", step.name), step.name
        assert registry.HELP[step.name].strip(), step.name
    assert len({s.name for s in registry.RUNBOOK}) == len(registry.RUNBOOK)


def test_nodes_add_runs_what_a_new_node_needs_and_opens_the_others_firewalls() -> None:
    names = [step.name for step in registry.node_add_steps()]
    assert names == [
        "profiles.check",
        "provision",
        "docker.install",
        "firewall.configure",
        "images.pull",  # before the join: the node takes servers from then on
        "swarm.join",
        "homes.mount",
        "monitor.logs",
        "monitor.deploy",
        "monitor.metrics",
    ]
    # Prometheus on the hub scrapes the new node: its config changes too.
    assert registry.node_add_everywhere() == {"firewall.configure", "monitor.metrics"}


def test_the_bootcamps_commands_are_tasks() -> None:
    text = (PROJECT_ROOT / "docs" / "bootcamp.md").read_text()
    used = set(re.findall(r"(?:invoke|fab -H \S+) ([a-z]+\.[a-z]+|provision)\b", text))
    assert used and used <= task_names(ns), sorted(used - task_names(ns))

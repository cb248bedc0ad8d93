"""The bootcamp document and its walkthrough: parsed, checked against the tasks, no sandbox."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swarmhub import walkthrough as guide
from swarmhub.errors import SwarmhubError
from swarmhub.settings import read_env_file, validate
from tasks import ns

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "bootcamp.md").read_text()
STEPS = guide.parse(DOC)
DIAGRAM_SOURCE = ROOT / "docs" / "architecture.dot"
DIAGRAM = ROOT / "docs" / "architecture.svg"


def settings(hub: str, proxy: str, nodes: str):
    raw = read_env_file(ROOT / "env" / "sandbox.env")
    raw.update(HUB_HOST=hub, PROXY_HOST=proxy, NODE_HOSTS=nodes)
    return validate(raw, ROOT / "env" / "sandbox.env")


def named_tasks(text: str) -> set[str]:
    """Every task the text runs or names: `invoke TASK …` and `fab -H HOSTS TASK`."""
    found = set(re.findall(r"\binvoke ([a-z][\w.]*)", text))
    found |= set(re.findall(r"\bfab -H \S+ ([a-z][\w.]*)", text))
    return found


def test_every_task_the_document_names_exists() -> None:
    names = named_tasks(DOC)
    assert {"plan", "cluster.all", "hub.deploy", "walkthrough", "sandbox.student"} <= names
    assert names <= set(ns.task_names), names - set(ns.task_names)


def test_the_document_follows_the_days_agenda() -> None:
    commands = "\n".join(step.command for step in STEPS)
    assert "plan --local --mem-per-user 0.5G" in commands
    assert "plan --students 527 --online 0.6 --mem-per-user 2G --node-mem 14G" in commands
    for task in (
        "provision", "docker.install", "swarm.manage", "swarm.join", "images.build",
        "images.distribute", "hub.deploy", "proxy.configure", "monitor.deploy",
    ):  # fmt: skip
        assert re.search(rf"^\.venv/bin/fab -H \S+ {re.escape(task)}$", commands, re.M), task
    assert "logs hub --follow --tail 100" in commands
    assert "fab -H sam-hub -- docker ps" in commands
    assert "logs user:ada" in commands and "bytearray(900 * 2**20)" in commands
    assert "(architecture.svg)" in DOC


def test_steps_carry_their_markers_and_explanations() -> None:
    by_command = {step.command.splitlines()[0]: step for step in STEPS}
    assert by_command[".venv/bin/invoke sandbox.ssh sam-node-1"].skip.startswith("an interactive")
    assert by_command[".venv/bin/invoke sandbox.down"].skip
    assert by_command[".venv/bin/invoke logs hub --follow --tail 100"].timeout == 10
    oom = next(step for step in STEPS if "bytearray" in step.command)
    assert oom.exit_code == 1 and oom.section.startswith("6.")
    assert "Or from the shell" in oom.explanation
    assert [step.number for step in STEPS] == list(range(1, len(STEPS) + 1))


def test_only_sh_blocks_are_steps_and_a_marker_needs_its_value() -> None:
    text = "# A\n\nSay hi.\n\n```sh\necho hi\n```\n\n```text\nhi\n```\n"
    (step,) = guide.parse(text)
    assert (step.section, step.explanation, step.command) == ("A", "Say hi.", "echo hi")
    (step,) = guide.parse(
        "# B\n\n```sh\nfirst\n```\n\nOne\nparagraph.\n\n![the cluster](arch.svg)\n\n"
        "- a bullet\n  going on\n- another\n\n```sh\nsecond\n```\n"
    )[1:]
    assert step.explanation == (
        "One paragraph.\n\n[picture: docs/arch.svg]\n\n- a bullet going on\n\n- another"
    )
    assert guide.explain("- " + "word " * 30).splitlines()[1].startswith("  word")
    with pytest.raises(SwarmhubError, match="needs a reason"):
        guide.parse("<!-- walkthrough: skip -->\n```sh\necho hi\n```\n")
    with pytest.raises(SwarmhubError, match="line 2: an empty sh block"):
        guide.parse("\n```sh\n```\n")


def test_host_names_are_mapped_by_role_and_whole_names_only() -> None:
    document = settings("sam-hub", "sam-proxy", "sam-node-1,sam-node-2")
    active = settings("t-hub", "t-proxy", "t-node-1,t-node-2")
    names = guide.host_map(document, active)
    assert (
        guide.rename_hosts(
            "fab -H sam-hub,sam-node-1,sam-node-2 x && fab -H sam-node-10 -- sam-hub.example", names
        )
        == "fab -H t-hub,t-node-1,t-node-2 x && fab -H sam-node-10 -- sam-hub.example"
    )
    assert guide.host_map(document, document) == {}
    with pytest.raises(SwarmhubError, match="list 2 nodes in NODE_HOSTS"):
        guide.host_map(document, settings("t-hub", "t-proxy", "t-node-1"))


def test_walk_runs_skips_and_stops_at_the_first_surprise() -> None:
    ran: list[str] = []
    said: list[str] = []

    def runner(step: guide.Step, command: str) -> int:
        ran.append(command)
        return 1 if "fails" in command else 0

    steps = guide.parse(
        "# S\n\n```sh\nfab -H sam-hub x\n```\n\n<!-- walkthrough: skip shell -->\n```sh\nssh\n```\n"
        "\n<!-- walkthrough: exit 1 -->\n```sh\nfails\n```\n\n```sh\nfails again\n```\n"
    )
    with pytest.raises(SwarmhubError, match=r"step 4 \(S\) exited 1, expected 0.*--start 4"):
        guide.walk(steps, {"sam-hub": "t-hub"}, None, say=said.append, runner=runner)
    assert ran == ["fab -H t-hub x", "fails", "fails again"]
    assert any("not run here: shell" in line for line in said)
    ran.clear()
    guide.walk(steps, {}, lambda prompt: "q", start=3, say=said.append, runner=runner)
    assert ran == [] and said[-1] == "Stopped. Resume with: invoke walkthrough --start 3"


def test_a_step_with_a_timeout_is_stopped_with_ctrl_c(tmp_path: Path) -> None:
    (step,) = guide.parse("<!-- walkthrough: timeout 0.5 -->\n```sh\nsleep 30\n```\n")
    assert guide.run_step(step, step.command, cwd=tmp_path) == 0
    (step,) = guide.parse("```sh\ntrue\nfalse\necho never\n```\n")
    assert guide.run_step(step, step.command, cwd=tmp_path) == 1  # set -e


def test_the_architecture_image_is_drawn_from_its_source() -> None:
    image = DIAGRAM.read_text()
    digest = hashlib.sha256(DIAGRAM_SOURCE.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in image, "docs/architecture.svg is stale: run scripts/diagram"
    readme = (ROOT / "README.md").read_text()
    assert "](docs/architecture.svg)" in readme
    drawn_by = re.search(r"Generated by graphviz version (\S+)", image)
    dot = shutil.which("dot")
    if dot is None or drawn_by is None:
        return
    version = subprocess.run([dot, "-V"], capture_output=True, text=True).stderr
    if drawn_by.group(1) in version:  # the same Graphviz draws the same bytes
        fresh = subprocess.run(
            [dot, "-Tsvg", str(DIAGRAM_SOURCE)], capture_output=True, text=True, check=True
        ).stdout
        assert image.replace(image.splitlines()[1] + "\n", "", 1) == fresh

"""The bootcamp walkthrough: the shell blocks of docs/bootcamp.md, read and run in order.

The document is the one source: ```sh blocks are the steps (```text blocks show output and
are never run), and the prose since the previous block is its explanation. An HTML
comment on the line before a block changes how it runs:

    <!-- walkthrough: skip REASON -->     shown, never run (an interactive shell, a teardown)
    <!-- walkthrough: timeout SECONDS --> run, then stopped with Ctrl-C after SECONDS (--follow)
    <!-- walkthrough: exit CODE -->       the exit code the step is expected to end with

The document is written for the default sandbox (env/sandbox.env: sam-hub, sam-node-1, …).
With another env file (SWARMHUB_ENV), its host names are put in place of those, so the
same commands run against that sandbox (the end-to-end tests' own, say).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarmhub.errors import SwarmhubError
from swarmhub.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "bootcamp.md"
DOCUMENT_ENV = ROOT / "env" / "sandbox.env"

WIDTH = 92  # explanations are wrapped to fit a terminal

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*walkthrough:\s*(skip|timeout|exit)\b\s*(.*?)\s*-->\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Step:
    """One shell block of the document and how to run it."""

    number: int
    section: str  # the heading it is under
    explanation: str  # the prose before it: paragraphs and bullets, a blank line apart
    command: str
    skip: str = ""  # why it is not run; empty: it is run
    timeout: float | None = None  # stop it with Ctrl-C after this many seconds
    exit_code: int = 0  # what it is expected to end with


def parse(text: str) -> list[Step]:
    """The ```sh blocks of a walkthrough document, in order, each with the prose since the
    previous block or heading as its explanation (paragraphs and bullets apart, an image as
    the path of its file)."""
    steps: list[Step] = []
    section = ""
    prose: list[str] = []  # paragraphs and bullets since the last block or heading
    current: list[str] = []  # the lines of the paragraph or bullet being read
    marker: tuple[str, str] | None = None

    def flush() -> None:
        if current:
            prose.append(" ".join(current))
            current.clear()

    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        fence = _FENCE.match(line)
        if fence:
            flush()
            opened = index
            body = []
            while index < len(lines) and not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            index += 1  # the closing fence
            if fence.group(1) == "sh":
                explanation = "\n\n".join(prose)
                steps.append(_step(len(steps) + 1, section, explanation, body, marker, opened))
            marker, prose = None, []
            continue
        heading = _HEADING.match(line)
        found = _MARKER.match(line)
        image = _IMAGE.fullmatch(line)
        if heading:
            current.clear()
            section, prose, marker = heading.group(2), [], None
        elif found:
            marker = (found.group(1), found.group(2))
        elif image:
            flush()
            prose.append(f"[picture: {DOCUMENT.parent.name}/{image.group(1)}]")
        elif not line:
            flush()
        else:
            if line.startswith("- "):
                flush()
            current.append(line)
    return steps


def _step(
    number: int,
    section: str,
    explanation: str,
    body: list[str],
    marker: tuple[str, str] | None,
    line: int,
) -> Step:
    command = "\n".join(body).strip()
    if not command:
        raise SwarmhubError(f"{DOCUMENT.name} line {line}: an empty sh block: remove it")
    kind, value = marker or ("", "")
    try:
        if kind == "skip":
            if not value:
                raise ValueError
            return Step(number, section, explanation, command, skip=value)
        if kind == "timeout":
            return Step(number, section, explanation, command, timeout=float(value))
        if kind == "exit":
            return Step(number, section, explanation, command, exit_code=int(value))
    except ValueError:
        raise SwarmhubError(
            f"{DOCUMENT.name} line {line - 1}: '<!-- walkthrough: {kind} {value} -->' needs "
            "a reason (skip), seconds (timeout) or an exit code (exit)"
        ) from None
    return Step(number, section, explanation, command)


def host_names(settings: Settings) -> list[str]:
    """The hosts of an env file in a fixed order: hub, proxy, then the nodes."""
    return [settings.hub_host, settings.proxy_host, *settings.node_hosts]


def host_map(document: Settings, active: Settings) -> dict[str, str]:
    """Each host name of the document's env file -> the active env file's host in its role."""
    if len(document.node_hosts) != len(active.node_hosts):
        raise SwarmhubError(
            f"{active.source.name} has {len(active.node_hosts)} nodes, the walkthrough is "
            f"written for {len(document.node_hosts)}: list {len(document.node_hosts)} nodes "
            "in NODE_HOSTS"
        )
    return {
        old: new
        for old, new in zip(host_names(document), host_names(active), strict=True)
        if old != new
    }


def rename_hosts(command: str, names: dict[str, str]) -> str:
    """``command`` with every whole host name of ``names`` replaced (sam-node-1, not -10)."""
    if not names:
        return command
    pattern = re.compile(
        r"(?<![\w.-])("
        + "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        + r")(?![\w-]|\.\w)"
    )
    return pattern.sub(lambda found: names[found.group(1)], command)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_step(step: Step, command: str, cwd: Path = ROOT) -> int:
    """Run a step's command with bash (``set -e``) and this terminal; its exit code.

    A step with a timeout is sent Ctrl-C (SIGINT, to its whole process group) when the time
    is up, as a student ends ``--follow``; being stopped that way counts as success.
    """
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=cwd,
        start_new_session=True,
        # Ctrl-C must reach the step even when this runs in the background (where SIGINT is
        # ignored, and children inherit that): Python would never raise KeyboardInterrupt.
        preexec_fn=_default_sigint,
    )
    try:
        return process.wait(timeout=step.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return step.exit_code
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGINT)
        process.wait()
        raise


def walk(
    steps: list[Step],
    names: dict[str, str],
    ask: Callable[[str], str] | None,
    start: int = 1,
    say: Callable[[str], None] = print,
    runner: Callable[[Step, str], int] = run_step,
) -> None:
    """Explain and run each step from ``start``; ``ask`` (None: run all) waits for Enter.

    Ends with a SwarmhubError naming the step that did not end as the document says, and
    how to resume after fixing it.
    """
    section = None
    for step in steps:
        if step.number < start:
            continue
        if step.section != section:
            section = step.section
            say(f"\n=== {section} ===")
        command = rename_hosts(step.command, names)
        if step.explanation:
            say("\n" + explain(step.explanation))
        say(f"\n[{step.number}/{len(steps)}] $ " + command.replace("\n", "\n  "))
        if step.skip:
            say(f"(not run here: {step.skip})")
            continue
        if ask is not None:
            answer = ask("Enter: run it, s: skip, q: quit > ").strip().lower()
            if answer == "q":
                say(f"Stopped. Resume with: invoke walkthrough --start {step.number}")
                return
            if answer == "s":
                continue
        if step.timeout:
            say(f"(stopped with Ctrl-C after {step.timeout:g} s)")
        code = runner(step, command)
        if code != step.exit_code:
            raise SwarmhubError(
                f"step {step.number} ({step.section}) exited {code}, expected {step.exit_code}: "
                f"fix what it printed, then resume with: invoke walkthrough --start {step.number}"
            )
    say("\nThe walkthrough is done.")


def explain(explanation: str) -> str:
    """An explanation wrapped for a terminal; a bullet's lines indented under its text."""
    return "\n\n".join(
        textwrap.fill(
            item,
            WIDTH,
            subsequent_indent="  " if item.startswith("- ") else "",
            break_on_hyphens=False,
        )
        for item in explanation.split("\n\n")
    )


def load_steps(path: Path = DOCUMENT) -> list[Step]:
    """The steps of the walkthrough document."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SwarmhubError(f"cannot read {path}: {error.strerror}") from None

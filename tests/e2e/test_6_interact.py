"""Interact links on the sandbox: a repository served inside the sandbox (git://, no internet),
a link through the proxy that clones it into alice's home and opens JupyterLab, and a second
visit after alice's edit and an upstream change that keeps both (nbgitpuller's merge)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import NODE_LIST, PROXY_URL, node_of, recap, student
from tests.e2e.course_material import notebook, publish

pytestmark = pytest.mark.e2e

REPO = "course"
NOTEBOOK = "lesson.ipynb"
CLONE = f"/home/jovyan/{REPO}"
ALICE_ANSWER = "answer = 42  # alice's answer"


def follow(alice: Student, link: str) -> str:
    """Follow the link as alice's browser does; return the URL JupyterLab was opened at."""
    opened, _ = alice.follow_link(link)
    lab = alice.http.get(opened, timeout=60)
    assert lab.status_code == 200, lab.status_code
    assert "<title>JupyterLab</title>" in lab.text and "jupyter-config-data" in lab.text
    return lab.url


def cell_sources(alice: Student) -> dict[str, str]:
    code = (
        "import json\n"
        f"nb = json.load(open('{CLONE}/{NOTEBOOK}'))\n"
        "print(json.dumps({c['id']: ''.join(c['source']) for c in nb['cells']}))\n"
    )
    return json.loads(alice.run_code(code))


def test_interact_link_clones_then_merges_keeping_alices_edits(
    cluster: Path, tmp_path: Path
) -> None:
    material = tmp_path / "material"
    material.mkdir()
    (material / NOTEBOOK).write_text(notebook("answer = None  # your answer here", 'print("v1")'))
    url, _ = publish(cluster, REPO, material)
    assert re.fullmatch(rf"git://\d+\.\d+\.\d+\.\d+/{REPO}", url), url
    # Publishing the same material again changes nothing.
    _, again = publish(cluster, REPO, material)
    assert "already holds" in again and all(c == 0 for _, c, _ in recap(again).values())

    made = run("invoke", "interact.link", "--repo", url, "--path", NOTEBOOK, env_file=cluster)
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{PROXY_URL}/hub/user-redirect/git-pull?repo=git%3A%2F%2F")

    alice = student("alice")
    alice.login()
    alice.start_server()
    assert node_of(cluster, "alice") in NODE_LIST
    # Her container, on a node, reaches the sandbox's git server by address.
    assert "refs/heads/main" in alice.run_code(
        f"import subprocess; print(subprocess.run(['git', 'ls-remote', '{url}'], "
        "capture_output=True, text=True, timeout=60).stdout)"
    )

    alice.run_code(f"import shutil; shutil.rmtree('{CLONE}', ignore_errors=True)")  # a rerun
    # First visit: cloned into her home, JupyterLab opens the notebook.
    opened = follow(alice, link)
    assert opened.endswith(f"/user/alice/lab/tree/{REPO}/{NOTEBOOK}"), opened
    assert cell_sources(alice)["exercise"] == "answer = None  # your answer here"

    # alice answers the exercise and saves (nbformat, as JupyterLab's save does).
    alice.run_code(
        "import nbformat\n"
        f"nb = nbformat.read('{CLONE}/{NOTEBOOK}', as_version=4)\n"
        f"nb.cells[1].source = {ALICE_ANSWER!r}\n"
        f"nbformat.write(nb, '{CLONE}/{NOTEBOOK}')\n"
    )
    # Upstream: the footer cell changes, the exercise's line too (a conflict with hers),
    # and a new file arrives.
    (material / NOTEBOOK).write_text(notebook("answer = None  # hint: 6 * 7", 'print("v2")'))
    (material / "notes.md").write_text("# Notes for week 2\n")
    _, published = publish(cluster, REPO, material)
    assert "published" in published

    # Second visit: the upstream changes arrive; where both changed a line, hers stays
    # (nbgitpuller merges with -Xours: it never discards a student's edit).
    follow(alice, link)
    cells = cell_sources(alice)
    assert cells["exercise"] == ALICE_ANSWER
    assert cells["footer"] == 'print("v2")'
    assert "week 2" in alice.run_code(f"print(open('{CLONE}/notes.md').read())")
    # A third visit with nothing new upstream changes nothing of hers.
    follow(alice, link)
    assert cell_sources(alice)["exercise"] == ALICE_ANSWER
    alice.stop_server()

"""The bootcamp day (docs/bootcamp.md) as a student lives it: `invoke walkthrough --yes` runs
every shell block of the document in order, against the suite's own sandbox (the document's
sam-* host names mapped to this env file's hosts), so that the document cannot drift from the
code. The cluster is deployed already, so the deploy steps show their second run (changed=0).
The blocks marked skip (an interactive shell, sandbox.down) are not run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from swarmhub import walkthrough as guide
from swarmhub.capacity import ROUNDED_TO, TIMES
from tests.cli import run
from tests.e2e.conftest import HUB, NODE_LIST, PROXY, PROXY_URL

pytestmark = pytest.mark.e2e


def test_every_step_of_the_bootcamp_document_works_as_written(cluster: Path) -> None:
    result = run("invoke", "walkthrough", "--yes", env_file=cluster, timeout=1800)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr
    steps = guide.load_steps()
    for step in steps:
        assert f"[{step.number}/{len(steps)}] $ " in out, step
    assert out.rstrip().endswith("The walkthrough is done.")
    # The commands ran against this sandbox, with its host names.
    assert f"$ .venv/bin/fab -H {HUB},{','.join(NODE_LIST)},{PROXY} provision" in out
    ran = [line for line in out.splitlines() if re.match(r"\[\d+/\d+\] \$ ", line)]
    assert ran and not [line for line in ran if "sam-" in line], ran
    # The capacity exercise: 46 VMs raw, 53 with the reserve.
    assert f"raw nodes: 317 {TIMES} 2 GiB / 14 GiB = 45.3 {ROUNDED_TO} 46" in out
    assert f"nodes with that reserve: 317 / 6 = 52.8 {ROUNDED_TO} 53" in out
    assert re.search(r"this machine \(.*\) fits \d+ users at 512 MiB each", out)
    # cluster.all after the steps, one by one: nothing left to change.
    after_steps = out.split("$ .venv/bin/invoke cluster.all", 1)[1].split("JupyterHub is up")[0]
    assert "changed=0" in after_steps and not re.search(r"changed=[1-9]", after_steps)
    assert f"JupyterHub is up: {PROXY_URL}/" in out
    # Looking inside: the hub stack, the hub's logs, an interact link followed.
    for container in ("jupyterhub", "chp", "cull"):
        assert re.search(rf"\b{container}\s*$", out, re.M), container
    assert "ada: JupyterLab opens" in out and "git-pull" in out
    # The OOM exercise: the kernel died, and status and logs name the OOM kill.
    assert "died running 'hog = bytearray(900 * 2**20)'" in out + result.stderr
    assert re.search(r"^\S*\s*ada\b.*OOM: killed", out, re.M), out
    assert "OOM kill in jupyter-ada (ada's server)" in out
    assert "healthy: proxy https ok, hub api ok" in out

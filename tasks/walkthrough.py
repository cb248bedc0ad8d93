"""walkthrough: the bootcamp day of docs/bootcamp.md, one step at a time."""

from __future__ import annotations

import os
import sys

from invoke import Context, task

from swarmhub import settings as env_settings
from swarmhub import walkthrough as guide
from swarmhub.errors import SwarmhubError


@task(
    help={
        "yes": "run every step without waiting for Enter (so does a run without a terminal)",
        "start": "begin at this step number (to resume after fixing a step)",
        "list": "only list the steps, running nothing",
    }
)
def walkthrough(c: Context, yes: bool = False, start: str = "1", list: bool = False) -> None:
    """Run the bootcamp day (docs/bootcamp.md) step by step, explained, waiting for Enter.

    Every ```sh block of the document is a step, in order, with the paragraph before it as
    its explanation. The document is written for env/sandbox.env; with another env file
    (SWARMHUB_ENV), its host names take the place of sam-hub, sam-node-1, ...
    """
    steps = guide.load_steps()
    if not start.isdigit() or not 1 <= int(start) <= len(steps):
        raise SwarmhubError(f"--start {start!r}: give a step number from 1 to {len(steps)}")
    if list:
        for step in steps:
            note = f"  (not run: {step.skip})" if step.skip else ""
            print(f"{step.number:>3}  {step.section}: {step.command.splitlines()[0]}{note}")
        return
    active = env_settings.load()
    names = guide.host_map(env_settings.load(str(guide.DOCUMENT_ENV)), active)
    os.environ["SWARMHUB_ENV"] = str(active.source)  # the steps run from the repository's root
    ask = None if yes or not sys.stdin.isatty() else input
    guide.walk(steps, names, ask, start=int(start), say=lambda text: print(text, flush=True))

"""class: before a lab, the servers of its students started and waiting for them."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from invoke import Context, task

from swarmhub import settings as env_settings
from swarmhub import warmup as class_warmup
from swarmhub.errors import SwarmhubError
from swarmhub.observe.remote import open_host
from swarmhub.runbook.host import as_root


@task(
    help={
        "students": "the students: names separated by commas, or @FILE (one a line)",
        "group": "the students of this group of the hub (with or besides --students)",
        "lab": "when the lab starts: 14:30 (today), 2026-12-02T14:30, or +20m from now",
        "at": "when to start their servers (default now); at most 59 minutes before --lab",
        "profile": "the profile to start (PROFILES_FILE; default each student's first)",
        "timeout": "seconds to wait for every server to be ready (default 900)",
    }
)
def warmup(
    c: Context,
    students: str = "",
    group: str = "",
    lab: str = "",
    at: str = "",
    profile: str = "",
    timeout: str = "900",
) -> None:
    """Start a class's servers before its lab, and keep the culler off them until it begins.

    Through the hub's REST API with a token of its own (the class-warmup service, made by
    hub.deploy, never leaving the hub): the students the hub does not know yet are created,
    their servers asked for as a student's login asks (the spawner's queue starts them in
    turn), and each ready server's last activity is set to the lab's start. The idle culler
    then spares them until CULL_TIMEOUT after the lab has begun: no process runs meanwhile.
    The hub takes an activity at most 59 minutes ahead, so the lab may start at most 59
    minutes after the warm-up does: give --at for a later lab (this command then waits).
    It prints the count of ready servers as it grows, and ends when all are ready (exit 0) or
    with those that are not (exit 1). `invoke status` shows a warm-up while it runs.
    """
    settings = env_settings.load()
    asked = class_warmup.check(students, group, lab, at, datetime.now(UTC), profile, timeout)
    hub = open_host(settings, settings.hub_host)
    try:
        command = class_warmup.hub_command(asked, settings.hub_dir)
        # The hub-side script prints its progress as it goes: shown as it comes.
        # Its refusals and errors come on stderr: one line each, shown below.
        result = hub.connection.run(as_root(command), hide="err", warn=True, in_stream=False)
    finally:
        hub.connection.close()
    errors = result.stderr.strip().splitlines()
    if result.exited == 2 and errors:
        raise SwarmhubError(f"{settings.hub_host}: {errors[-1].removeprefix('warm-up ')}")
    if result.exited != 0:
        for line in errors[-5:]:
            print(f"{settings.hub_host}: {line}", file=sys.stderr)
        sys.exit(result.exited if result.exited > 0 else 1)

"""backup.setup, and the commands behind backup.run, backup.list and backup.restore.

One script on the hub (/usr/local/sbin/swarmhub-backup, rendered from
templates/backup/swarmhub-backup.sh.j2) makes incremental snapshots of the homes (rsync with
hard links to the previous snapshot) and a consistent copy of the hub's SQLite database
(SQLite's online backup), keeps BACKUP_KEEP of them in BACKUP_DIR, and restores from them
without ever overwriting a live file. A systemd timer on the hub runs it on BACKUP_SCHEDULE;
the tasks run the same script over SSH.
"""

from __future__ import annotations

import re
import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.names import escape_user
from swarmhub.runbook.change import Change, FileWrite, Steps
from swarmhub.runbook.ensure import (
    SYSTEMD_DIR,
    ensure_directory,
    ensure_file,
    ensure_packages,
    ensure_unit,
    file_differs,
)
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.steps.hub import hub_answers
from swarmhub.steps.metrics import BACKUP_METRIC, BACKUP_METRIC_FILE
from swarmhub.templates import render

SCRIPT = "/usr/local/sbin/swarmhub-backup"
UNIT = "swarmhub-backup"
SNAPSHOT = re.compile(r"\d{8}T\d{6}Z")


def render_script(settings: Settings) -> str:
    return render(
        "backup/swarmhub-backup.sh.j2",
        homes_dir=settings.homes_dir,
        backup_dir=settings.backup_dir,
        keep=settings.backup_keep,
        hub_dir=settings.hub_dir,
        data_dir=settings.hub_data_dir,
        metric_file=BACKUP_METRIC_FILE,
        metric_name=BACKUP_METRIC,
    )


def service_unit() -> str:
    return render(f"systemd/{UNIT}.service")


def timer_unit(settings: Settings) -> str:
    return render(f"systemd/{UNIT}.timer.j2", schedule=settings.backup_schedule)


# --- what the tasks run on the hub ---


def run_command() -> str:
    return f"{SCRIPT} run"


def list_command() -> str:
    return f"{SCRIPT} list"


def check_snapshot(at: str | None) -> None:
    if at and not SNAPSHOT.fullmatch(at):
        raise SwarmhubError(
            f"--at {at}: a snapshot is named like 20261126T013000Z: see invoke backup.list"
        )


def restore_user_command(user: str, path: str | None = None, at: str | None = None) -> str:
    """Restore ``user``'s home (or ``path`` inside it) from snapshot ``at`` (the latest)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", user):
        raise SwarmhubError(f"--user {user}: not a user name (letters, digits, _ . @ -)")
    if path and (path.startswith("/") or ".." in path.split("/")):
        raise SwarmhubError(f"--path {path}: give a path inside the home, like work/hw1.ipynb")
    check_snapshot(at)
    command = f"{SCRIPT} restore-user --user {shlex.quote(escape_user(user))}"
    if path:
        command += f" --path {shlex.quote(path.strip('/'))}"
    if at:
        command += f" --at {at}"
    return command


def restore_hub_db_command(at: str | None = None) -> str:
    check_snapshot(at)
    return f"{SCRIPT} restore-hub-db" + (f" --at {at}" if at else "")


def calendar_check_command(schedule: str) -> str:
    return f"systemd-analyze calendar {shlex.quote(schedule)} >/dev/null"


# --- the step ---


def apply(ctx: StepContext, hub: HostView) -> Steps:
    settings = ctx.settings
    yield from ensure_packages(hub, ["rsync", "sqlite3"], "backups")
    if not hub.probe(calendar_check_command(settings.backup_schedule)).ok:
        raise SwarmhubError(
            f"{hub.name}: BACKUP_SCHEDULE={settings.backup_schedule} is not a calendar systemd "
            "understands: use daily, hourly or a time like *-*-* 03:00"
        )
    yield from ensure_directory(hub, settings.backup_dir, "0700")
    yield from ensure_file(hub, SCRIPT, render_script(settings), mode="0755", describe=SCRIPT)
    service = FileWrite.of(f"{SYSTEMD_DIR}/{UNIT}.service", service_unit())
    changed = file_differs(hub, service.path, service.content, service.mode, service.owner)
    # The timer starts the service: both files in one change, one reload.
    yield from ensure_unit(
        hub, f"{UNIT}.timer", timer_unit(settings), extra_files=(service,) if changed else ()
    )


def operation(
    name: str, command: str, what: str, *, changes: bool = True, hub_restarts: bool = False
) -> Step:
    """A one-off backup command on the hub (backup.run, .list, .restore), run through the
    session as any step; its output is the step's result. A read-only one (``changes``
    False: backup.list) is a probe."""

    def apply(ctx: StepContext, hub: HostView) -> Steps:
        if not hub.probe(f"test -x {SCRIPT}").ok:
            raise SwarmhubError(
                f"{hub.name}: {SCRIPT} is missing: run invoke backup.setup (or cluster.all) first"
            )
        if not changes:
            result = hub.probe(command)
            if result.failed:
                lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
                tail = lines[-1] if lines else f"exit {result.exited}"
                raise SwarmhubError(f"{hub.name}: {what} failed: {tail}")
            yield from ()
            return result.stdout
        done = yield Change(
            what,
            [command],
            then=[hub_answers()] if hub_restarts else [],
            restarts="the hub (its database restored)" if hub_restarts else "",
        )
        return done.output

    return Step(name=name, roles=frozenset({"hub"}), apply=apply, summary=what)


STEP = Step(
    name="backup.setup",
    roles=frozenset({"hub"}),
    apply=apply,
    summary="the backup script and its systemd timer on the hub",
)

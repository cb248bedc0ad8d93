"""backup.setup, and the commands behind backup.run, backup.list and backup.restore.

One script on the hub (/usr/local/sbin/swarmhub-backup, rendered from
compose/backup/swarmhub-backup.j2) makes incremental snapshots of the homes (rsync with
hard links to the previous snapshot) and a consistent copy of the hub's SQLite database
(SQLite's online backup), keeps BACKUP_KEEP of them in BACKUP_DIR, and restores from them
without ever overwriting a live file. A systemd timer on the hub runs it on BACKUP_SCHEDULE;
the tasks run the same script over SSH.
"""

from __future__ import annotations

import re
import shlex

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from swarmhub.errors import SwarmhubError
from swarmhub.names import escape_user
from swarmhub.runbook.ensure import ensure_directory, ensure_file, ensure_packages
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step
from swarmhub.settings import PROJECT_ROOT, Settings

TEMPLATES = PROJECT_ROOT / "compose" / "backup"
SCRIPT = "/usr/local/sbin/swarmhub-backup"
UNIT = "swarmhub-backup"
SNAPSHOT = re.compile(r"\d{8}T\d{6}Z")


def render_script(settings: Settings) -> str:
    environment = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    return environment.get_template("swarmhub-backup.j2").render(
        homes_dir=settings.homes_dir,
        backup_dir=settings.backup_dir,
        keep=settings.backup_keep,
        hub_dir=settings.hub_dir,
        data_dir=settings.hub_data_dir,
    )


def service_unit() -> str:
    return (
        "# Written by swarmhub (backup.setup).\n"
        "[Unit]\n"
        "Description=swarmhub backup: users' homes and the hub's database\n"
        "After=network-online.target remote-fs.target docker.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={SCRIPT} run\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
    )


def timer_unit(settings: Settings) -> str:
    return (
        "# Written by swarmhub (backup.setup) from BACKUP_SCHEDULE.\n"
        "[Unit]\n"
        "Description=swarmhub backup on schedule\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={settings.backup_schedule}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=5min\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


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


def apply(session: Session, hub: Host) -> None:
    settings = session.settings
    ensure_packages(hub, ["rsync", "sqlite3"], "backups")
    if not hub.probe(calendar_check_command(settings.backup_schedule)).ok:
        raise SwarmhubError(
            f"{hub.name}: BACKUP_SCHEDULE={settings.backup_schedule} is not a calendar systemd "
            "understands: use daily, hourly or a time like *-*-* 03:00"
        )
    ensure_directory(hub, settings.backup_dir, "0700")
    ensure_file(hub, SCRIPT, render_script(settings), mode="0755", describe=SCRIPT)
    changed = ensure_file(hub, f"/etc/systemd/system/{UNIT}.service", service_unit())
    changed |= ensure_file(hub, f"/etc/systemd/system/{UNIT}.timer", timer_unit(settings))
    state = hub.probe(
        f"systemctl is-enabled {UNIT}.timer; systemctl is-active {UNIT}.timer"
    ).stdout.split()
    if not changed and state == ["enabled", "active"]:
        hub.ok(f"backup timer on schedule ({settings.backup_schedule})")
        return
    hub.change(
        f"backup timer on schedule ({settings.backup_schedule})",
        f"systemctl daemon-reload && systemctl enable {UNIT}.timer && "
        f"systemctl restart {UNIT}.timer",
    )


def run_on_hub(settings: Settings, command: str, what: str, wait_for_hub: bool = False) -> str:
    """Run a backup command on the hub and return its output (its error line on failure);
    with ``wait_for_hub``, return once the hub answers again."""
    from swarmhub.runbook.session import open_host
    from swarmhub.steps.hub import wait_for_hub as hub_answers

    hub = open_host(settings, settings.hub_host, quiet=True)
    try:
        if not hub.probe(f"test -x {SCRIPT}").ok:
            raise SwarmhubError(
                f"{hub.name}: {SCRIPT} is missing: run invoke backup.setup (or cluster.all) first"
            )
        result = hub.run(command, check=False)
        if result.failed:
            lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise SwarmhubError(
                f"{hub.name}: {what} failed: {lines[-1] if lines else f'exit {result.exited}'}"
            )
        if wait_for_hub:
            hub_answers(hub)
        return result.stdout
    finally:
        hub.connection.close()


STEP = Step(
    name="backup.setup",
    roles=frozenset({"hub"}),
    apply=apply,
    summary="the backup script and its systemd timer on the hub",
)

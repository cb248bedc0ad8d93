"""backup.setup and backup.target, and the commands behind backup.run, backup.list and
backup.restore.

Backups are made with restic (encrypted, deduplicated, pruned by age): one script on the hub
(/usr/local/sbin/swarmhub-backup, rendered from templates/backup/swarmhub-backup.sh.j2) backs
up the users' homes, a consistent copy of the hub's SQLite database (SQLite's online backup)
and the hub's secrets to one repository: BACKUP_TARGET (sftp://HOST/PATH, on a backup host of
its own, reached as the user swarmhub-backup with a key that may only run SFTP, from the hub's
addresses only; or s3://HOST/BUCKET, an S3-compatible store, with the access key of
BACKUP_S3_KEY_ID and BACKUP_S3_SECRET_FILE, kept 0600 on the hub), or BACKUP_DIR on the hub.
It restores from them without ever overwriting a live file. A systemd timer on the hub runs it
on BACKUP_SCHEDULE; the tasks run the same script over SSH.

With STORAGE_HOST apart from the hub, restic runs where the homes are, not through a network
mount: the storage host gets the script too (its part "homes": the homes only, restic's
--host swarmhub-homes) and the hub keeps the rest (its part "hub": the database, the secrets
and the proxy's TLS material, --host swarmhub), each with its own timer, to the same
repository with the same password and SFTP key. backup.run takes both, named alike; restores
of homes run on the storage host, of the database on the hub; `restic check` runs on the hub.

The repository's password and the SFTP key are made on the provisioner at the first deploy
(PROJECT_ROOT/.swarmhub/<HUB_HOST>/, 0600) and kept 0600 on the hub: the repository is
unreadable without the password, so the provisioner's copy is what recovers a lost hub. A hub
whose password differs from the provisioner's is refused, never overwritten.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from swarmhub.backup_secrets import local_secrets
from swarmhub.errors import SwarmhubError
from swarmhub.names import escape_user
from swarmhub.runbook.change import Change, FileWrite, Note, Ok, Steps
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
from swarmhub.settings import PROJECT_ROOT, Settings, read_s3_secret
from swarmhub.steps import proxy_tls
from swarmhub.steps.homes import known_hosts_line
from swarmhub.steps.hub import hub_answers
from swarmhub.steps.swarm import host_addresses
from swarmhub.templates import render

SCRIPT = "/usr/local/sbin/swarmhub-backup"
UNIT = "swarmhub-backup"
SNAPSHOT = re.compile(r"\d{8}T\d{6}Z")
CONF_DIR = "/etc/swarmhub/backup"
PASSWORD = f"{CONF_DIR}/restic-password"
KEY = f"{CONF_DIR}/id_ed25519"
KNOWN_HOSTS = f"{CONF_DIR}/known_hosts"
INITIALIZED = f"{CONF_DIR}/initialized"
S3_CREDENTIALS = f"{CONF_DIR}/s3-credentials"
# Read by node-exporter's textfile collector (the metrics issue's Prometheus reads it too).
METRIC_DIR = "/var/lib/prometheus/node-exporter"
METRIC = f"{METRIC_DIR}/swarmhub_backup.prom"
# The backup host's user that owns the repository: SFTP only, from the hub only.
REPO_USER = "swarmhub-backup"
REPO_HOME = f"/var/lib/{REPO_USER}"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
CHECK_UNIT = "swarmhub-backup-check"
# What `restic check` reads of the data on BACKUP_CHECK_SCHEDULE: a different sample each time.
CHECK_SUBSET = "5%"


def repository(settings: Settings) -> str:
    """The repository as restic names it: sftp:HOST:/PATH, s3:https://HOST/BUCKET (or
    s3:http://… for s3+http://), or BACKUP_DIR/restic on the hub."""
    if settings.backup_s3:
        url = urlsplit(settings.backup_target)
        scheme = "http" if url.scheme == "s3+http" else "https"
        return f"s3:{scheme}://{url.netloc}{url.path}"
    if settings.backup_target:
        return f"sftp:{settings.backup_host}:{urlsplit(settings.backup_target).path}"
    return f"{settings.backup_dir}/restic"


def s3_credentials(settings: Settings, secret: str) -> str:
    """The hub's S3 credentials file (0600), read by the backup script: restic's variables."""
    lines = [
        "# Written by swarmhub (backup.setup): the access key of BACKUP_TARGET's store.",
        f"AWS_ACCESS_KEY_ID={shlex.quote(settings.backup_s3_key_id)}",
        f"AWS_SECRET_ACCESS_KEY={shlex.quote(secret)}",
    ]
    if settings.backup_s3_region:
        lines.append(f"AWS_DEFAULT_REGION={shlex.quote(settings.backup_s3_region)}")
    return "\n".join(lines) + "\n"


def target_path(settings: Settings) -> str:
    return urlsplit(settings.backup_target).path


# What a host's backup script keeps (``part_of``) and the restic --host of its snapshots.
PARTS = {
    "all": ("swarmhub", ""),
    "hub": ("swarmhub", " of the hub's part"),
    "homes": ("swarmhub-homes", " of the homes"),
}


def part_of(settings: Settings, host: str) -> str:
    """What ``host``'s backup script snapshots: "all" (the hub keeps the homes), "hub" (the
    hub, STORAGE_HOST apart: database, secrets, proxy TLS) or "homes" (the storage host)."""
    if settings.storage_name == settings.hub_host:
        return "all"
    return "hub" if host == settings.hub_host else "homes"


def backup_hosts(settings: Settings) -> list[str]:
    """The hosts that run restic: the hub, and the storage host when apart."""
    return list(dict.fromkeys([settings.hub_host, settings.storage_name]))


def render_script(settings: Settings, part: str = "all") -> str:
    limit = settings.backup_limit_upload
    restic_host, of_part = PARTS[part]
    peer = {"hub": settings.storage_name, "homes": settings.hub_host}.get(part, "")
    return render(
        "backup/swarmhub-backup.sh.j2",
        part=part,
        restic_host=restic_host,
        homes_restic_host=PARTS["homes"][0],
        of_part=of_part,
        hub_host=settings.hub_host,
        storage_host=settings.storage_name,
        peer_host=peer,
        homes_dir=settings.homes_dir,
        hub_dir=settings.hub_dir,
        data_dir=settings.hub_data_dir,
        repository=repository(settings),
        conf_dir=CONF_DIR,
        metric_dir=METRIC_DIR,
        sftp_host=settings.backup_host,
        s3=settings.backup_s3,
        sftp_user=REPO_USER,
        ssh_port=settings.ssh_port,
        keep_hourly=settings.backup_keep_hourly,
        keep_daily=settings.backup_keep_daily,
        keep_weekly=settings.backup_keep_weekly,
        limit_upload=f"--limit-upload {limit} " if limit else "",
        check_subset=CHECK_SUBSET,
        proxy_tls_dir=proxy_tls.COPY_DIR,
    )


def authorized_keys(public_key: str, sources: list[str]) -> str:
    """The backup host's authorized_keys for REPO_USER: the hub's key, SFTP only, from the
    addresses of the hosts that run restic only (the hub's, and the storage host's when
    apart; nothing else: no shell, no forwarding)."""
    options = f'restrict,from="{",".join(sources)}",command="{SFTP_SERVER}"'
    key = " ".join(public_key.split()[:2])
    return (
        "# Written by swarmhub (backup.target): the hub's backups, SFTP only.\n"
        f"{options} {key} swarmhub-backup\n"
    )


def service_unit() -> str:
    return render(f"systemd/{UNIT}.service")


def timer_unit(settings: Settings) -> str:
    return render(f"systemd/{UNIT}.timer.j2", schedule=settings.backup_schedule)


def check_units(settings: Settings) -> tuple[str, str]:
    """The service and timer of `restic check` (BACKUP_CHECK_SCHEDULE)."""
    return (
        render(f"systemd/{CHECK_UNIT}.service"),
        render(f"systemd/{CHECK_UNIT}.timer.j2", schedule=settings.backup_check_schedule),
    )


# --- what the tasks run on the hub ---


def run_command(name: str = "") -> str:
    """A snapshot now; ``name`` (its UTC time) names the hub's and the storage host's alike."""
    check_snapshot(name)
    return f"{SCRIPT} run" + (f" --name {name}" if name else "")


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


def restore_homes_command(at: str | None = None) -> str:
    """Every home of snapshot ``at`` (the latest), never overwriting a live file: a storage
    host rebuilt."""
    check_snapshot(at)
    return f"{SCRIPT} restore-homes" + (f" --at {at}" if at else "")


def restore_hub_db_command(at: str | None = None) -> str:
    check_snapshot(at)
    return f"{SCRIPT} restore-hub-db" + (f" --at {at}" if at else "")


def calendar_check_command(schedule: str) -> str:
    return f"systemd-analyze calendar {shlex.quote(schedule)} >/dev/null"


# --- the steps ---


def shown(path: Path) -> str:
    """A provisioner's path as the output shows it: inside the project, from its root."""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def ensure_password(hub: HostView, password: str, where: Path) -> Steps:
    """The hub holds the provisioner's repository password; one that differs is refused: the
    repository opens with one password only, and overwriting it would lose every snapshot."""
    why = file_differs(hub, PASSWORD, password, "0600", "root")
    if not why:
        yield Ok("repository password in place (0600)")
        return
    if why == "content":
        raise SwarmhubError(
            f"{hub.name}: {PASSWORD} differs from this machine's copy in {shown(where)}: the "
            "repository opens with one of them only: copy the right one over the other "
            "(sudo cat it there, 0600) and run backup.setup again"
        )
    yield Change(
        f"wrote the repository password ({why}); this machine's copy: {shown(where)}",
        files=[FileWrite.of(PASSWORD, password, "0600")],
    )
    yield Note(f"the repository password is kept in {shown(where)}: store a copy offline too")


def apply(ctx: StepContext, hub: HostView) -> Steps:
    """The hub (and the storage host when apart, its part: the homes; ``hub`` names it)."""
    settings = ctx.settings
    part = part_of(settings, hub.name)
    packages = (
        # The storage host has no base packages of provision: its restores need rsync and
        # python3 too.
        ["restic", "rsync", "python3", "openssh-client"]
        if part == "homes"
        else ["restic", "sqlite3", "openssh-client"]
    )
    yield from ensure_packages(hub, packages, "backups")
    for key in ("BACKUP_SCHEDULE", "BACKUP_CHECK_SCHEDULE"):
        schedule = settings.values[key]
        if not hub.probe(calendar_check_command(schedule)).ok:
            raise SwarmhubError(
                f"{hub.name}: {key}={schedule} is not a calendar systemd understands: use "
                "daily, hourly, weekly or a time like *-*-* 03:00"
            )
    kept = ctx.remember("backup_local_secrets", lambda: local_secrets(settings))
    yield from ensure_directory(hub, CONF_DIR, "0700")
    yield from ensure_password(hub, kept.password, kept.directory / "restic-password")
    if settings.backup_host:
        yield from ensure_file(hub, KEY, kept.private_key, mode="0600", describe="the SFTP key")
        backup = ctx.view(settings.backup_host)
        host_key = backup.read("/etc/ssh/ssh_host_ed25519_key.pub")
        if not host_key:
            raise SwarmhubError(
                f"{settings.backup_host}: no /etc/ssh/ssh_host_ed25519_key.pub: BACKUP_TARGET "
                "needs an SSH server with an Ed25519 host key there"
            )
        line = known_hosts_line(settings.backup_host, settings.ssh_port, host_key)
        yield from ensure_file(
            hub, KNOWN_HOSTS, line, describe=f"{settings.backup_host}'s pinned host key"
        )
    elif settings.backup_s3:
        secret = ctx.remember("backup_s3_secret", lambda: read_s3_secret(settings))
        yield from ensure_file(
            hub,
            S3_CREDENTIALS,
            s3_credentials(settings, secret),
            mode="0600",
            describe="the S3 store's access key",
        )
    else:
        yield from ensure_directory(hub, settings.backup_dir, "0700")
    yield from ensure_file(hub, SCRIPT, render_script(settings, part), mode="0755", describe=SCRIPT)
    service = FileWrite.of(f"{SYSTEMD_DIR}/{UNIT}.service", service_unit())
    changed = file_differs(hub, service.path, service.content, service.mode, service.owner)
    # The timer starts the service: both files in one change, one reload.
    yield from ensure_unit(
        hub, f"{UNIT}.timer", timer_unit(settings), extra_files=(service,) if changed else ()
    )
    if part != "homes":  # `restic check` once for the repository: from the hub
        check_service, check_timer = check_units(settings)
        service = FileWrite.of(f"{SYSTEMD_DIR}/{CHECK_UNIT}.service", check_service)
        changed = file_differs(hub, service.path, service.content, service.mode, service.owner)
        yield from ensure_unit(
            hub, f"{CHECK_UNIT}.timer", check_timer, extra_files=(service,) if changed else ()
        )
    # The repository made once (or found, on a rebuilt hub): the marker names it.
    wanted = repository(settings)
    if hub.read(INITIALIZED).strip() == wanted:
        yield Ok(f"repository {wanted} opens")
        return
    yield Change(f"repository {wanted} opened or made", [f"{SCRIPT} init"], follow_up=False)


def apply_target(ctx: StepContext, backup: HostView) -> Steps:
    """The backup host: REPO_USER owns the repository's directory and may only run SFTP,
    with the hub's key, from the addresses of the hosts that run restic."""
    settings = ctx.settings
    yield from ensure_packages(backup, ["openssh-server", "openssh-sftp-server"], "SFTP")
    if backup.probe(f"id -u {REPO_USER}").ok:
        yield Ok(f"user {REPO_USER}")
    else:
        yield Change(
            f"user {REPO_USER} (owns the repository)",
            [f"useradd --system --home-dir {REPO_HOME} --create-home --shell /bin/sh {REPO_USER}"],
        )
    yield from ensure_directory(backup, target_path(settings), "0700", REPO_USER)
    yield from ensure_directory(backup, f"{REPO_HOME}/.ssh", "0700", REPO_USER)
    kept = ctx.remember("backup_local_secrets", lambda: local_secrets(settings))
    sources = ctx.remember("backup_hub_addresses", lambda: hub_addresses(ctx))
    yield from ensure_file(
        backup,
        f"{REPO_HOME}/.ssh/authorized_keys",
        authorized_keys(kept.public_key, sources),
        mode="0600",
        owner=REPO_USER,
        describe=f"{REPO_USER}'s key (SFTP only, from {' and '.join(backup_hosts(settings))})",
    )


def hub_addresses(ctx: StepContext) -> list[str]:
    """The IPv4 addresses of the hub (and of the storage host when apart): where the backup
    host accepts its SFTP key from."""
    found: list[str] = []
    for name in backup_hosts(ctx.settings):
        view = ctx.hub if name == ctx.settings.hub_host else ctx.view(name)
        mine = host_addresses(view.probe("ip -4 -o addr show scope global", sudo=False).stdout)
        if name == ctx.settings.hub_host and ctx.settings.hub_address:
            mine.append(ctx.settings.hub_address)
        if not mine:
            raise SwarmhubError(f"{name}: no global IPv4 address found")
        found += mine
    return sorted(set(found))


def operation(
    name: str,
    command: str,
    what: str,
    *,
    changes: bool = True,
    hub_restarts: bool = False,
    roles: frozenset[str] = frozenset({"hub"}),
) -> Step:
    """A one-off backup command on the hub (backup.run, .list, .restore; on the storage host
    too, or only, by ``roles``), run through the session as any step; its output is the
    step's result. A read-only one (``changes`` False: backup.list) is a probe."""

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

    return Step(name=name, roles=roles, apply=apply, summary=what)


STEP = Step(
    name="backup.setup",
    roles=frozenset({"hub", "storage"}),
    apply=apply,
    summary="restic, the backup script and its systemd timer on the hub (and on the storage "
    "host when apart); the repository",
)

TARGET = Step(
    name="backup.target",
    roles=frozenset({"backup"}),
    apply=apply_target,
    summary="the backup host: the repository's directory, SFTP for the hub's key only",
)

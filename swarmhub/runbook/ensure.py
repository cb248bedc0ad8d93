"""Small idempotent declarations: probe the host, compare with the wanted state, and yield the
change that closes the gap (or an `Ok`).

Each is a generator for a step to ``yield from``. It returns False when the host was as
wanted, else the `Outcome` of its change (truthy; ``.applied`` is False in plan mode), so that
a step can follow up: reload a service whose config changed, or say what is known only after
the change (`Later`).
"""

from __future__ import annotations

import hashlib
import shlex

from swarmhub.runbook.change import Change, FileWrite, Note, Ok, Steps
from swarmhub.runbook.converge import APT_LOCK_TIMEOUT, install_packages_command
from swarmhub.runbook.host import HostView

SYSTEMD_DIR = "/etc/systemd/system"
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock")


def sha256(content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


# --- packages ---


def missing_packages_command(packages: list[str]) -> str:
    """Prints the names of the packages that are not installed, one per line; then
    ``locked`` when another apt/dpkg process holds a lock (a killed run's install)."""
    names = " ".join(shlex.quote(p) for p in packages)
    # The lock is looked for only when something is missing: a host's /proc is long to read.
    return (
        f"m=$(for p in {names}; do dpkg-query -W -f='${{Status}}\\n' \"$p\" 2>/dev/null "
        '| grep -q "install ok installed" || echo "$p"; done); echo "$m"; '
        f'[ -n "$m" ] && {lock_holder_command()} && echo locked; true'
    )


def lock_holder_command() -> str:
    """Succeeds when a process holds one of dpkg's or apt's locks open (no fuser or lsof on a
    minimal host: /proc tells)."""
    cases = "|".join(DPKG_LOCKS)
    return (
        '( for f in /proc/[0-9]*/fd/*; do case $(readlink "$f" 2>/dev/null) in '
        f"{cases}) exit 0;; esac; done; exit 1 )"
    )


def ensure_packages(host: HostView, packages: list[str], why: str = "") -> Steps:
    """The Debian packages are installed (apt-get only when one is missing)."""
    words = host.probe(missing_packages_command(packages)).stdout.split()
    missing = [w for w in words if w != "locked"]
    label = f" ({why})" if why else ""
    if not missing:
        yield Ok(f"packages present{label}: {' '.join(packages)}")
        return False
    if "locked" in words:
        yield Note(
            "another apt/dpkg run holds the package lock (a run cut short?): waiting for it "
            f"(up to {APT_LOCK_TIMEOUT // 60} min)"
        )
    outcome = yield Change(
        f"installed {' '.join(missing)}{label}", [install_packages_command(missing)]
    )
    return outcome


# --- files ---


def file_differs(host: HostView, path: str, content: str | bytes, mode: str, owner: str) -> str:
    """'' when ``path`` holds ``content`` with ``mode`` and ``owner``; else what differs."""
    return host.file_differs(path, content, mode, owner)


def ensure_file(
    host: HostView,
    path: str,
    content: str | bytes,
    *,
    mode: str = "0644",
    owner: str = "root",
    describe: str | None = None,
    then: tuple[str, ...] = (),
) -> Steps:
    """``path`` holds ``content`` with ``mode`` and ``owner``; written only when it differs
    (and then the commands ``then``, e.g. a reload, in the same change)."""
    label = describe or path
    why = file_differs(host, path, content, mode, owner)
    if not why:
        yield Ok(f"{label} up to date")
        return False
    outcome = yield Change(
        f"wrote {label} ({'new' if why == 'missing' else why})",
        files=[FileWrite.of(path, content, mode, owner)],
        commands=then,
    )
    return outcome


def ensure_directory(host: HostView, path: str, mode: str = "0755", owner: str = "root") -> Steps:
    stat = host.probe(f"stat -c '%a %U' {shlex.quote(path)} 2>/dev/null").stdout.split()
    if stat == [mode.lstrip("0"), owner]:
        yield Ok(f"directory {path}")
        return False
    quoted = shlex.quote(path)
    outcome = yield Change(
        f"directory {path} ({mode}, {owner})",
        [f"mkdir -p {quoted} && chmod {mode} {quoted} && chown {owner}:{owner} {quoted}"],
    )
    return outcome


def ensure_secret(host: HostView, path: str, nbytes: int = 32) -> Steps:
    """A random hex secret at ``path`` (0600, root), made once and never shown; made beside it
    and renamed, so that a run cut short never leaves an empty secret that looks made."""
    quoted = shlex.quote(path)
    if host.probe(f"test -s {quoted} && stat -c %a {quoted}").stdout.strip() == "600":
        yield Ok(f"secret {path} kept")
        return False
    outcome = yield Change(
        f"generated secret {path}",
        [
            f"mkdir -p $(dirname {quoted}) && umask 077 && "
            f"{{ test -s {quoted} || {{ openssl rand -hex {nbytes} > {quoted}.new && "
            f"mv -f {quoted}.new {quoted}; }}; }} && chmod 600 {quoted}"
        ],
    )
    return outcome


# --- systemd ---


def unit_state_command(unit: str) -> str:
    """`enabled active` (or what systemd says instead; `none` for nothing) in one round trip."""
    quoted = shlex.quote(unit)
    return (
        f"e=$(systemctl is-enabled {quoted} 2>/dev/null | head -n1); "
        f"a=$(systemctl is-active {quoted} 2>/dev/null | head -n1); "
        'echo "${e:-none} ${a:-none}"'
    )


def running(state: list[str]) -> bool:
    """A unit enabled (or static: started by another unit) and active."""
    return state[-2:] == ["enabled", "active"] or state == ["static", "active"]


def ensure_service_running(host: HostView, unit: str) -> Steps:
    """The systemd unit is enabled and active (started only when it is not)."""
    if running(host.probe(unit_state_command(unit)).stdout.split()):
        yield Ok(f"{unit} running")
        return False
    outcome = yield Change(f"started {unit}", [f"systemctl enable --now {shlex.quote(unit)}"])
    return outcome


def ensure_unit(
    host: HostView,
    unit: str,
    content: str,
    *,
    start: bool = True,
    extra_files: tuple[FileWrite, ...] = (),
) -> Steps:
    """A systemd unit written, systemd reloaded, the unit enabled and (with ``start``) running;
    restarted when its file or one of ``extra_files`` (its program, its settings, a unit it
    starts) changed. ``extra_files`` are the ones that differ: the caller probed them.

    The one helper for "write a unit, reload, enable, start": one change, whatever part of
    it is needed.
    """
    path = f"{SYSTEMD_DIR}/{unit}"
    why = file_differs(host, path, content, "0644", "root")
    state = host.probe(unit_state_command(unit)).stdout.split()
    files = ([FileWrite.of(path, content)] if why else []) + list(extra_files)
    commands: list[str] = ["systemctl daemon-reload"] if files else []
    parts = [f"{unit} written ({'new' if why == 'missing' else why})"] if why else []
    parts += [f"{f.path} written" for f in extra_files]
    if state[:1] != ["enabled"]:
        commands.append(f"systemctl enable {shlex.quote(unit)}")
        parts.append(f"{unit} enabled")
    if start and state[-1:] != ["active"]:
        commands.append(f"systemctl start {shlex.quote(unit)}")
        parts.append(f"{unit} started")
    elif start and files:
        commands.append(f"systemctl restart {shlex.quote(unit)}")
        parts.append(f"{unit} restarted")
    if not files and len(commands) == 0:
        yield Ok(f"{unit} {'running' if start else 'enabled'}, up to date")
        return False
    outcome = yield Change(", ".join(parts), commands, files=files)
    return outcome

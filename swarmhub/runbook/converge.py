"""A run cut short anywhere converges with one more run: the commands and decisions for it.

What a killed run leaves behind, and why these builders look the way they do:

- A remote command outlives the run that started it. Fabric runs commands without a
  terminal; when the provisioner dies or its connection drops, sshd closes the session's
  pipes but does not kill the command (it has its own session, setsid). A command whose output
  goes to a file runs to its end; one that writes to the closed pipe dies at its next write
  (SIGPIPE), possibly half-way. Long commands therefore write to a log on the host, and the
  next run waits for them (the package locks, the build and base locks) instead of racing them.
- A file is either the old one or the new one: written beside its place and renamed.
- A follow-up (restart, reload) of a change is never lost between two commands: it is either
  part of the same remote command, or recorded on the host as pending before the change and
  cleared after the follow-up (mark_pending_command and friends).
- Nothing here prints a secret: the swarm join token is only ever on a command line that
  Host.run masks, and secret files are read only on the hub, inside the command.

Every function returns a command line or a decision; none runs anything.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# --- 1. apt and dpkg: wait for a run still going on, repair one that was cut ---

# Every lock that apt-get update, apt-get install and dpkg take (apt and dpkg take them with
# fcntl; /proc/locks lists those and flock's alike).
PACKAGE_LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
# Long enough for a killed run's Docker install or a first boot's unattended-upgrades.
APT_LOCK_TIMEOUT = 600
# apt's output goes here, not to the SSH session: an install whose run was killed then
# finishes instead of dying of SIGPIPE half-way through unpacking.
APT_LOG = "/var/log/swarmhub-apt.log"
WAITING_FOR_APT = "waiting for another apt/dpkg run to finish"


def package_lock_holders_command(locks: Iterable[str] = PACKAGE_LOCKS) -> str:
    """Prints 'PID COMMAND' for each process that holds an apt or dpkg lock; nothing when
    every lock is free (a read-only probe, no package tool needed)."""
    names = " ".join(shlex.quote(lock) for lock in locks)
    # /proc/locks names a lock by device:inode; a pid is kept only when it also has that very
    # file open, so that another device's file with the same inode number never counts.
    return (
        f'for f in {names}; do [ -e "$f" ] || continue; i=$(stat -c %i "$f"); '
        'for p in $(awk -v i=":$i" \'$2 != "->" && substr($6, length($6) - length(i) + 1) '
        "== i {print $5}' /proc/locks); do for d in /proc/$p/fd/*; do "
        'if [ "$(readlink "$d")" = "$f" ]; then '
        "printf '%s %s\\n' \"$p\" \"$(tr '\\0\\n' '  ' < /proc/$p/cmdline | cut -c 1-120)\"; "
        "break; fi; "
        "done; done; done | sort -u"
    )


def parse_lock_holders(output: str) -> list[tuple[int, str]]:
    """(pid, command line) per holder in package_lock_holders_command's output."""
    holders = []
    for line in output.splitlines():
        pid, _, command = line.strip().partition(" ")
        if pid.isdigit():
            holders.append((int(pid), command.strip()))
    return holders


def waiting_for_apt_message(holders: list[tuple[int, str]], timeout: int = APT_LOCK_TIMEOUT) -> str:
    """The line a step says before an install that will wait (plan: 'would wait …')."""
    who = "; ".join(f"pid {pid}: {command or '?'}" for pid, command in holders[:3])
    return f"{WAITING_FOR_APT} ({who}), up to {timeout} s"


def dpkg_interrupted_command() -> str:
    """Exit 0 when an earlier package install was cut short and dpkg must finish it first
    (packages left unpacked or half-configured, or dpkg's journal not yet applied)."""
    return 'test -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)$(dpkg --audit 2>/dev/null)"'


def wait_for_package_locks_command(
    timeout: int = APT_LOCK_TIMEOUT, locks: Iterable[str] = PACKAGE_LOCKS
) -> str:
    """Wait until no process holds an apt or dpkg lock, saying so once; fail after
    ``timeout`` seconds with a line naming the holder."""
    holders = package_lock_holders_command(locks)
    return (
        f'holders() {{ {holders}; }}; waited=0; while [ -n "$(holders)" ]; do '
        f'[ $waited -eq 0 ] && echo "{WAITING_FOR_APT} (up to {timeout} s)" >&2; '
        f'if [ $waited -ge {timeout} ]; then echo "another apt/dpkg run still holds the '
        f'package lock after {timeout} s: pid $(holders | head -n 1)" >&2; exit 1; fi; '
        "sleep 2; waited=$((waited + 2)); done"
    )


def install_packages_command(
    packages: list[str],
    *,
    timeout: int = APT_LOCK_TIMEOUT,
    locks: Iterable[str] = PACKAGE_LOCKS,
    log: str = APT_LOG,
) -> str:
    """apt-get install that converges after a run cut short: it waits for an apt or dpkg run
    still going on, finishes an interrupted dpkg, then installs as ensure.py's command does
    (DEBIAN_FRONTEND=noninteractive, --no-install-recommends, --force-confold)."""
    names = " ".join(shlex.quote(p) for p in packages)
    quoted_log = shlex.quote(log)
    # apt waits for its own locks too (the race after our wait: unattended-upgrades), but not
    # for apt-get update's lists lock, and dpkg never waits: hence the wait above it.
    apt = f"apt-get -o DPkg::Lock::Timeout={timeout}"
    # dpkg --configure -a only when needed: it does not wait for the lock, so the usual run
    # (nothing interrupted) leaves the waiting to apt alone.
    repair = (
        f"if {dpkg_interrupted_command()}; then "
        "echo 'repairing an interrupted package install (dpkg --configure -a)'; "
        "dpkg --force-confold --configure -a; fi"
    )
    return (
        "export DEBIAN_FRONTEND=noninteractive; "
        f"{wait_for_package_locks_command(timeout, locks)}; "
        f"{{ echo \"== $(date -u '+%F %T') swarmhub: apt-get install {names}\"; {repair} && "
        f"{apt} update -qq && {apt} install -y -qq --no-install-recommends "
        f"-o Dpkg::Options::=--force-confold {names}; }} >> {quoted_log} 2>&1 "
        f"|| {{ status=$?; tail -n 5 {quoted_log} >&2; exit $status; }}"
    )


# --- 2. swarm join: a join cut short, pending, or joined in the background ---

SWARM_PORT = 2377
SWARM_INFO_COMMAND = "docker info --format '{{json .Swarm}}'"
HUB_NODES_COMMAND = "docker node ls --format '{{json .}}'"
JOIN_WAIT = 60
LOCAL_STATE = "docker info --format '{{.Swarm.LocalNodeState}}'"


@dataclass(frozen=True)
class SwarmInfo:
    """A host's own view of its swarm membership (``docker info``'s .Swarm)."""

    state: str  # inactive, pending, active, error, locked; "" when Docker does not answer
    node_id: str = ""
    is_manager: bool = False
    managers: tuple[str, ...] = ()  # the managers' addresses it knows, "IP:PORT"
    error: str = ""


@dataclass(frozen=True)
class HubNode:
    """One line of ``docker node ls`` on the hub."""

    node_id: str
    hostname: str
    status: str  # Ready, Down, Unknown, Disconnected
    availability: str


def parse_swarm_info(output: str) -> SwarmInfo:
    """SWARM_INFO_COMMAND's output; state "" when Docker did not answer."""
    try:
        data = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    except json.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    managers = tuple(
        str(m.get("Addr", "")) for m in data.get("RemoteManagers") or [] if isinstance(m, dict)
    )
    return SwarmInfo(
        state=str(data.get("LocalNodeState") or ""),
        node_id=str(data.get("NodeID") or ""),
        is_manager=bool(data.get("ControlAvailable")),
        managers=managers,
        error=str(data.get("Error") or ""),
    )


def parse_hub_nodes(output: str) -> list[HubNode]:
    """HUB_NODES_COMMAND's output, one JSON object a line."""
    nodes = []
    for line in output.splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("ID"):
            nodes.append(
                HubNode(
                    node_id=str(data["ID"]),
                    hostname=str(data.get("Hostname", "")),
                    status=str(data.get("Status", "")),
                    availability=str(data.get("Availability", "")),
                )
            )
    return nodes


@dataclass(frozen=True)
class JoinDecision:
    """What swarm.join does on a node, and the hub's entries to remove after a (re)join."""

    action: str  # member, wait, join, rejoin, refuse, no-docker
    message: str
    stale_ids: tuple[str, ...] = ()


def _same_node(hub_id: str, node_id: str) -> bool:
    # docker node ls may print a shortened ID; docker info prints the whole one.
    return bool(hub_id and node_id) and (node_id.startswith(hub_id) or hub_id.startswith(node_id))


def decide_join(
    node: str,
    info: SwarmInfo,
    hub_nodes: list[HubNode],
    hub_address: str,
    *,
    waited: bool = False,
    wait_seconds: int = JOIN_WAIT,
) -> JoinDecision:
    """What to do about ``node``'s swarm membership, from its own view and the hub's.

    ``waited``: the node was already given ``wait_seconds`` to finish a join or come back.
    A node the hub lists as its own is never made to leave (its students' servers would
    stop); a node of another swarm is refused; a join that never finishes is done again.
    """
    manager = f"{hub_address}:{SWARM_PORT}"
    listed = [n for n in hub_nodes if _same_node(n.node_id, info.node_id)]
    # Entries under this host name that are not the node as it is now: from before it left.
    stale = tuple(
        n.node_id
        for n in hub_nodes
        if n.hostname == node and not _same_node(n.node_id, info.node_id)
    )
    everything_stale = tuple(n.node_id for n in hub_nodes if n.hostname == node)
    if not info.state:
        return JoinDecision("no-docker", f"{node}: Docker is not running: run docker.install first")
    if info.state == "locked":
        return JoinDecision(
            "refuse",
            f"{node} is a manager of a locked swarm (autolock): unlock it (docker swarm unlock) "
            "and leave it (docker swarm leave --force) if it is not this cluster's",
        )
    if info.state == "active":
        if listed:
            status = listed[0].status.lower()
            if status == "ready":
                return JoinDecision("member", "swarm member", stale)
            if not waited:
                return JoinDecision(
                    "wait", f"the hub sees {node} {status}: waiting up to {wait_seconds} s", stale
                )
            return JoinDecision(
                "refuse",
                f"{node} is in the swarm but the hub has seen it {status} for {wait_seconds} s: "
                f"check that it reaches {manager} (firewall.configure on both) and its Docker "
                "(journalctl -u docker)",
            )
        if manager in info.managers:
            return JoinDecision(
                "rejoin",
                f"joined the swarm of {hub_address} again (the hub no longer knew {node})",
                everything_stale,
            )
        known = ", ".join(info.managers) or "managers unknown"
        return JoinDecision(
            "refuse",
            f"{node} is a member of another swarm ({known}): if that swarm is gone, run "
            "`docker swarm leave --force` on it, then run again",
        )
    if info.state == "pending":
        if not waited:
            return JoinDecision(
                "wait",
                f"a swarm join is still going on (a run cut short?): waiting up to "
                f"{wait_seconds} s",
            )
        return JoinDecision(
            "rejoin",
            f"joined the swarm of {hub_address} again (the join was still pending after "
            f"{wait_seconds} s)",
            everything_stale,
        )
    if info.state == "error":
        detail = f" ({info.error})" if info.error else ""
        return JoinDecision(
            "rejoin",
            f"joined the swarm of {hub_address} again (its swarm state was error{detail})",
            everything_stale,
        )
    return JoinDecision("join", f"joined the swarm of {hub_address}", everything_stale)


def _wait_while_pending(seconds: int) -> str:
    return (
        f'n=0; while [ "$({LOCAL_STATE})" = pending ] && [ $n -lt {seconds} ]; do '
        "sleep 1; n=$((n + 1)); done"
    )


def wait_while_pending_command(seconds: int = JOIN_WAIT) -> str:
    """Wait up to ``seconds`` for a pending join to settle, then print the node's swarm info
    (SWARM_INFO_COMMAND's output, for decide_join(..., waited=True))."""
    return f"{_wait_while_pending(seconds)}; {SWARM_INFO_COMMAND}"


def wait_until_listed_ready_command(node_id: str, seconds: int = JOIN_WAIT) -> str:
    """On the hub: wait up to ``seconds`` for the node to be Ready, then print the node list
    (HUB_NODES_COMMAND's output, for decide_join(..., waited=True))."""
    status = f"docker node inspect --format '{{{{.Status.State}}}}' {shlex.quote(node_id)}"
    return (
        f'n=0; while [ "$({status} 2>/dev/null)" != ready ] && [ $n -lt {seconds} ]; do '
        f"sleep 1; n=$((n + 1)); done; {HUB_NODES_COMMAND}"
    )


def join_command(
    token: str, hub_address: str, *, leave_first: bool = False, wait_seconds: int = JOIN_WAIT
) -> str:
    """Join the swarm as a worker and wait until the join has finished (a join that times
    out goes on in the background: it is waited for, not repeated); with ``leave_first``,
    leave a pending, broken or forgotten membership before."""
    manager = f"{hub_address}:{SWARM_PORT}"
    leave = "docker swarm leave --force >/dev/null 2>&1; " if leave_first else ""
    # The token is on this command line only: Host.run masks it in error lines, and nothing
    # here echoes it.
    return (
        f"{leave}docker swarm join --token {shlex.quote(token)} {shlex.quote(manager)} "
        f'>/dev/null || [ "$({LOCAL_STATE})" = pending ] || exit 1; '
        f"{_wait_while_pending(wait_seconds)}; state=$({LOCAL_STATE}); "
        f'[ "$state" = active ] || {{ echo "the swarm join did not finish: $state after '
        f"{wait_seconds} s: check that this host reaches {manager} (the hub's firewall)\" >&2; "
        "exit 1; }"
    )


def remove_nodes_command(node_ids: Iterable[str]) -> str:
    """On the hub: drop entries of the node from before it left (or joined again)."""
    ids = " ".join(shlex.quote(i) for i in node_ids)
    return f"docker node rm --force {ids}" if ids else ""


# --- 3. files written beside their place and renamed ---

NEW_SUFFIX = ".swarmhub-new"


def install_file_command(
    tmp: str, path: str, mode: str, owner: str = "root", group: str | None = None
) -> str:
    """Move an uploaded temporary file into place atomically: a reader, a crash or a killed
    run sees the old file or the new one, never a part (install alone unlinks the old file and
    writes the new one in place); the temporary files are removed either way."""
    directory = posixpath.dirname(path) or "/"
    new = shlex.quote(path + NEW_SUFFIX)
    # The new file is flushed before the rename, so that a power loss does not leave an
    # empty file under the old name either.
    return (
        f"mkdir -p {shlex.quote(directory)} && install -m {mode} -o {owner} -g {group or owner} "
        f"{shlex.quote(tmp)} {new} && sync {new} && mv -f {new} {shlex.quote(path)}; "
        f"status=$?; rm -f {shlex.quote(tmp)} {new}; exit $status"
    )


def secret_command(path: str, nbytes: int = 32) -> str:
    """A random hex secret at ``path`` (0600), made once: written beside it and renamed, so
    that the file is never there empty or short."""
    quoted = shlex.quote(path)
    new = shlex.quote(path + NEW_SUFFIX)
    return (
        f"mkdir -p {shlex.quote(posixpath.dirname(path) or '/')} && umask 077 && "
        f"{{ test -s {quoted} || {{ openssl rand -hex {nbytes} > {new} && mv -f {new} {quoted}; "
        f"}}; }} && chmod 600 {quoted}"
    )


# --- 4. what else a run cut short leaves half-done in the steps ---


def secret_env_file_command(secrets_dir: str, filename: str, variables: Mapping[str, str]) -> str:
    """A container's env file assembled from the secret files on the hub (values never
    shown): refused when a secret is missing or empty, written beside it and renamed, so that
    a run cut short never leaves a partial file that a later `test -s` would accept."""
    target = shlex.quote(f"{secrets_dir}/{filename}")
    new = shlex.quote(f"{secrets_dir}/{filename}{NEW_SUFFIX}")
    sources = " ".join(shlex.quote(f"{secrets_dir}/{src}") for src in variables.values())
    lines = "; ".join(
        f'echo "{var}=$(cat {shlex.quote(f"{secrets_dir}/{src}")})"'
        for var, src in variables.items()
    )
    return (
        f'for s in {sources}; do test -s "$s" || {{ echo "secret $s is missing or empty: '
        f'run hub.deploy" >&2; exit 1; }}; done; umask 077 && {{ {lines}; }} > {new} && '
        f"chmod 600 {new} && mv -f {new} {target}; status=$?; rm -f {new}; exit $status"
    )


def secret_env_current_command(
    secrets_dir: str, filename: str, variables: Mapping[str, str]
) -> str:
    """A probe: exit 0 when the env file is exactly what secret_env_file_command would write
    from the secret files now. It catches a partial file left by an older run and an env
    file behind a rotation cut short. Compared on the hub, by shell builtins and cmp: no
    value is printed or put on a command line (where ps would show it)."""
    target = shlex.quote(f"{secrets_dir}/{filename}")
    lines = "; ".join(
        f'echo "{var}=$(cat {shlex.quote(f"{secrets_dir}/{src}")})"'
        for var, src in variables.items()
    )
    return f"test -s {target} && {{ {lines}; }} | cmp -s - {target}"


def keygen_command(path: str, comment: str) -> str:
    """An SSH key pair at ``path`` and ``path``.pub, made beside them and renamed. Until the
    last rename the .pub is missing, so a probe for both sees an incomplete pair and the next
    run makes it again (ssh-keygen itself would refuse to overwrite a left-over key)."""
    quoted, pub = shlex.quote(path), shlex.quote(path + ".pub")
    new, new_pub = shlex.quote(path + NEW_SUFFIX), shlex.quote(path + NEW_SUFFIX + ".pub")
    return (
        f"install -d -m 0700 {shlex.quote(posixpath.dirname(path) or '/')} && "
        f"rm -f {new} {new_pub} && "
        f"ssh-keygen -q -t ed25519 -N '' -C {shlex.quote(comment)} -f {new} && chmod 600 {new} && "
        f"rm -f {pub} && mv -f {new} {quoted} && mv -f {new_pub} {pub}"
    )


def key_pair_complete_command(path: str) -> str:
    """A probe: exit 0 when ``path`` and its .pub exist and belong together."""
    quoted, pub = shlex.quote(path), shlex.quote(path + ".pub")
    return (
        f"test -s {quoted} && test -s {pub} && "
        f'test "$(ssh-keygen -y -f {quoted} 2>/dev/null | cut -d" " -f1,2)" = '
        f'"$(cut -d" " -f1,2 {pub})"'
    )


ROOTFS = "/var/tmp/swarmhub-rootfs"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def _once(lock: str, ref: str, command: str, wait_seconds: int) -> str:
    """``command`` under a lock, unless image ``ref`` exists by the time the lock is ours:
    a second run waits for the first one's build (still going on after it was killed)
    instead of building beside it, and then finds its image."""
    body = f"docker image inspect {shlex.quote(ref)} >/dev/null 2>&1 && exit 0; {command}"
    return f"flock -w {wait_seconds} {shlex.quote(lock)} sh -c {shlex.quote(body)}"


def debootstrap_base_command(
    suite: str, tag: str, mirror: str = DEBIAN_MIRROR, wait_seconds: int = 1800
) -> str:
    """The debootstrap base image, tagged only once the whole rootfs is in it. The rootfs is
    archived to a file first: in `tar | docker import`, a tar cut short still ends the stream
    and `docker import` would tag what it got. One at a time, and not again once it exists."""
    archive = f"{ROOTFS}.tar"
    # --one-file-system: a debootstrap still going on has /proc and /sys mounted inside.
    clean = f"rm -rf --one-file-system {ROOTFS} {archive}"
    build = (
        f"{clean} && debootstrap --variant=minbase {shlex.quote(suite)} {ROOTFS} "
        f"{shlex.quote(mirror)} >/var/tmp/swarmhub-debootstrap.log 2>&1 && "
        f"tar --numeric-owner -C {ROOTFS} -cf {archive} . && "
        f"docker import {archive} {shlex.quote(tag)} >/dev/null; status=$?; {clean}; exit $status"
    )
    return _once("/run/lock/swarmhub-base.lock", tag, build, wait_seconds)


def build_once_command(ref: str, build_command: str, wait_seconds: int = 3600) -> str:
    """An image build (images.build_command's line) that waits for a build of the same image
    still going on from a run cut short, and is skipped when that one made the image.

    A build cut short leaves no tag (the legacy builder tags at the very end, and stops when
    its client goes away), so the probe `docker image inspect REF` already tells a whole image
    from none; this only spares building it twice at once."""
    lock = f"/run/lock/swarmhub-build-{hashlib.sha256(ref.encode()).hexdigest()[:12]}.lock"
    return _once(lock, ref, build_command, wait_seconds)


# Follow-ups (a restart, a reload) recorded on the host before the change that needs them and
# cleared after they ran: a run cut short between the two leaves the record, and the next run,
# finding the files already as wanted, still knows the follow-up is owed. In /run when a reboot
# does the follow-up anyway (services start with their new files), in /var/lib when it does not
# (containers restart with their old configuration after a reboot).
PENDING_DIRS = {False: "/run/swarmhub/pending", True: "/var/lib/swarmhub/pending"}


def _pending_file(name: str, survives_reboot: bool) -> str:
    if not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"{name!r}: a follow-up's name is letters, digits, '.', '-' and '_'")
    return f"{PENDING_DIRS[survives_reboot]}/{name}"


def mark_pending_command(name: str, *, survives_reboot: bool = False) -> str:
    """Record follow-up ``name`` as owed; put it before the change, in the same command."""
    path = _pending_file(name, survives_reboot)
    return f"mkdir -p {posixpath.dirname(path)} && touch {path}"


def pending_follow_ups_command() -> str:
    """A probe: the names of the follow-ups owed on this host, one a line."""
    dirs = " ".join(PENDING_DIRS.values())
    return f"find {dirs} -maxdepth 1 -type f -printf '%f\\n' 2>/dev/null | sort -u"


def parse_pending(output: str) -> set[str]:
    """The follow-up names in pending_follow_ups_command's output."""
    return {line.strip() for line in output.splitlines() if line.strip()}


def follow_up_command(name: str, command: str) -> str:
    """Run follow-up ``command`` and, once it succeeded, clear its record."""
    files = " ".join(_pending_file(name, flag) for flag in (False, True))
    return f"{command} && rm -f {files}"


def needs_daemon_reload_command(units: Iterable[str]) -> str:
    """A probe: the units whose files changed since systemd read them (a daemon-reload cut
    off by a run cut short), one a line."""
    names = " ".join(shlex.quote(unit) for unit in units)
    return (
        f'for u in {names}; do [ "$(systemctl show -p NeedDaemonReload --value "$u" '
        '2>/dev/null)" = yes ] && echo "$u"; done; true'
    )

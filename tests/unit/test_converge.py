"""A run cut short converges: the builders as exact strings, the swarm join decisions on
facts, and the commands run for real in local shells (tools the test must not run for real,
apt-get, dpkg, docker, systemctl, are small shims on PATH that record their calls)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmhub.runbook import converge
from swarmhub.runbook.converge import HubNode, SwarmInfo, decide_join

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"


def sh(
    command: str,
    path_dirs: list[Path] = (),
    env: dict[str, str] | None = None,
    **kwargs: object,
) -> subprocess.CompletedProcess[str]:
    """``command`` in sh, as Host.run runs it (without sudo), with shims first on PATH."""
    path = ":".join([*map(str, path_dirs), os.environ["PATH"]])
    return subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), "PATH": path},
        timeout=60,
        **kwargs,
    )


def shim(folder: Path, name: str, body: str) -> None:
    """An executable ``name`` in ``folder``: records its arguments in calls.log, then ``body``."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {folder}/calls.log\n{body}\n')
    path.chmod(0o755)


def calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


# A process holding a POSIX (fcntl) lock on a file, the way apt and dpkg hold theirs.
HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "w")
fcntl.lockf(handle, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    path = tmp_path / "lock-frontend"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), "1.5"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "held\n"
    yield path, process
    process.kill()
    process.wait()


# --- 1. apt and dpkg ---

HOLDERS = (
    "for f in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock "
    '/var/cache/apt/archives/lock; do [ -e "$f" ] || continue; i=$(stat -c %i "$f"); '
    'for p in $(awk -v i=":$i" \'$2 != "->" && substr($6, length($6) - length(i) + 1) == i '
    "{print $5}' /proc/locks); do for d in /proc/$p/fd/*; do "
    'if [ "$(readlink "$d")" = "$f" ]; then '
    "printf '%s %s\\n' \"$p\" \"$(tr '\\0\\n' '  ' < /proc/$p/cmdline | cut -c 1-120)\"; "
    "break; fi; "
    "done; done; done | sort -u"
)
WAIT = (
    f'holders() {{ {HOLDERS}; }}; waited=0; while [ -n "$(holders)" ]; do '
    '[ $waited -eq 0 ] && echo "waiting for another apt/dpkg run to finish (up to 600 s)" >&2; '
    'if [ $waited -ge 600 ]; then echo "another apt/dpkg run still holds the package lock '
    'after 600 s: pid $(holders | head -n 1)" >&2; exit 1; fi; sleep 2; '
    "waited=$((waited + 2)); done"
)


def test_package_lock_holders_command_exact() -> None:
    assert converge.package_lock_holders_command() == HOLDERS


def test_install_packages_command_exact() -> None:
    assert converge.install_packages_command(["docker.io", "docker-cli"]) == (
        "export DEBIAN_FRONTEND=noninteractive; "
        f"{WAIT}; "
        "{ echo \"== $(date -u '+%F %T') swarmhub: apt-get install docker.io docker-cli\"; "
        'if test -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)$(dpkg --audit 2>/dev/null)"; '
        "then echo 'repairing an interrupted package install (dpkg --configure -a)'; "
        "dpkg --force-confold --configure -a; fi && "
        "apt-get -o DPkg::Lock::Timeout=600 update -qq && "
        "apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "
        "-o Dpkg::Options::=--force-confold docker.io docker-cli; } "
        ">> /var/log/swarmhub-apt.log 2>&1 || "
        "{ status=$?; tail -n 5 /var/log/swarmhub-apt.log >&2; exit $status; }"
    )


def test_dpkg_interrupted_command_exact() -> None:
    assert converge.dpkg_interrupted_command() == (
        'test -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)$(dpkg --audit 2>/dev/null)"'
    )


def test_lock_holders_are_named_and_free_locks_are_not(held_lock, tmp_path: Path) -> None:
    path, process = held_lock
    free = tmp_path / "lists-lock"
    free.touch()
    out = sh(converge.package_lock_holders_command([str(path), str(free), "/nonexistent"]))
    assert out.returncode == 0
    [(pid, command)] = converge.parse_lock_holders(out.stdout)
    assert pid == process.pid
    assert command.startswith(f"{sys.executable} -c  import fcntl")  # one line, cut short
    assert len(command) <= 120
    assert sh(converge.package_lock_holders_command([str(free)])).stdout == ""


def test_a_lock_on_another_file_does_not_count(held_lock, tmp_path: Path) -> None:
    """The same inode number on another device must not look like the package lock: the pid
    must have the very file open."""
    path, _ = held_lock
    other = tmp_path / "other"
    other.touch()
    probe = converge.package_lock_holders_command([str(other)]).replace(
        'i=$(stat -c %i "$f")', f"i={path.stat().st_ino}"
    )
    assert sh(probe).stdout == ""


def test_flock_holders_count_too(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = subprocess.Popen(["flock", str(path), "sleep", "5"])
    try:
        deadline = time.monotonic() + 5
        while not converge.parse_lock_holders(
            sh(converge.package_lock_holders_command([str(path)])).stdout
        ):
            assert time.monotonic() < deadline, "flock's lock not seen"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()


def test_the_install_waits_for_a_held_lock_then_goes_on(held_lock, tmp_path: Path) -> None:
    path, _ = held_lock
    started = time.monotonic()
    out = sh(converge.wait_for_package_locks_command(60, [str(path)]) + "; echo went-on")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "went-on\n"
    assert out.stderr == "waiting for another apt/dpkg run to finish (up to 60 s)\n"
    assert time.monotonic() - started >= 1.5


def test_the_wait_ends_with_a_line_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        out = sh(converge.wait_for_package_locks_command(2, [str(path)]))
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith(
        f"another apt/dpkg run still holds the package lock after 2 s: pid {holder.pid} "
    )


@pytest.fixture
def apt_shims(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    shim(
        bin_dir,
        "apt-get",
        'case "$*" in *fail-me*) echo "E: Unable to locate package fail-me"; exit 100;; esac',
    )
    shim(bin_dir, "dpkg", '[ "$1" = --audit ] && [ -n "$AUDIT" ] && echo "$AUDIT"; exit 0')
    return bin_dir


def test_an_install_repairs_an_interrupted_dpkg_first(apt_shims: Path, tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    command = converge.install_packages_command(["docker.io"], locks=[], log=str(log))
    env = {"AUDIT": "The following packages are only half configured: docker.io"}
    out = sh(command, [apt_shims], env)
    assert out.returncode == 0, out.stderr
    assert calls(apt_shims) == [
        "dpkg --audit",
        "dpkg --force-confold --configure -a",
        "apt-get -o DPkg::Lock::Timeout=600 update -qq",
        "apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "
        "-o Dpkg::Options::=--force-confold docker.io",
    ]
    assert "repairing an interrupted package install" in log.read_text()


def test_an_install_with_nothing_interrupted_runs_no_dpkg(apt_shims: Path, tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    out = sh(converge.install_packages_command(["curl"], locks=[], log=str(log)), [apt_shims])
    assert out.returncode == 0, out.stderr
    assert [c.split()[0] for c in calls(apt_shims)] == ["dpkg", "apt-get", "apt-get"]
    assert "dpkg --force-confold --configure -a" not in calls(apt_shims)


def test_a_failed_install_ends_with_apts_own_error_line(apt_shims: Path, tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    out = sh(converge.install_packages_command(["fail-me"], locks=[], log=str(log)), [apt_shims])
    assert out.returncode == 100
    assert out.stderr.splitlines()[-1] == "E: Unable to locate package fail-me"


def test_waiting_message() -> None:
    holders = converge.parse_lock_holders("4321 apt-get install -y docker.io\n")
    assert converge.waiting_for_apt_message(holders) == (
        "waiting for another apt/dpkg run to finish (pid 4321: apt-get install -y docker.io), "
        "up to 600 s"
    )


# --- 2. swarm join ---

HUB = "10.0.0.2"
NODE_ID = "x1b2c3d4e5f6g7h8i9j0k1l2m"


def info(
    state: str,
    node_id: str = NODE_ID,
    managers: tuple[str, ...] = (f"{HUB}:2377",),
    error: str = "",
) -> SwarmInfo:
    return SwarmInfo(state, node_id if state != "inactive" else "", False, managers, error)


def listed(status: str = "Ready", node_id: str = NODE_ID, hostname: str = "node-1") -> HubNode:
    return HubNode(node_id, hostname, status, "Active")


def test_parse_swarm_info_of_a_worker() -> None:
    out = (
        '{"NodeID":"x1b2c3d4e5f6g7h8i9j0k1l2m","NodeAddr":"10.0.0.3","LocalNodeState":"active",'
        '"ControlAvailable":false,"Error":"","RemoteManagers":[{"NodeID":"abc","Addr":"10.0.0.2:2377"}]}'
    )
    assert converge.parse_swarm_info(out) == SwarmInfo(
        "active", NODE_ID, False, ("10.0.0.2:2377",), ""
    )


@pytest.mark.parametrize(
    "out", ["", "Cannot connect to the Docker daemon", "null", '{"LocalNodeState":""}']
)
def test_parse_swarm_info_without_docker(out: str) -> None:
    assert converge.parse_swarm_info(out).state == ""


def test_parse_hub_nodes() -> None:
    out = (
        '{"Availability":"Active","Hostname":"node-1","ID":"x1b2c3d4e5f6g7h8i9j0k1l2m",'
        '"ManagerStatus":"","Self":false,"Status":"Ready"}\n'
        '{"Availability":"Active","Hostname":"hub","ID":"h0","ManagerStatus":"Leader","Status":"Ready"}\n'
        "not json\n"
    )
    assert converge.parse_hub_nodes(out) == [
        HubNode(NODE_ID, "node-1", "Ready", "Active"),
        HubNode("h0", "hub", "Ready", "Active"),
    ]


def test_a_ready_member_is_left_alone() -> None:
    decision = decide_join("node-1", info("active"), [listed()], HUB)
    assert (decision.action, decision.message, decision.stale_ids) == ("member", "swarm member", ())


def test_a_member_with_old_entries_gets_them_removed() -> None:
    nodes = [listed(), listed("Down", node_id="oldid")]
    assert decide_join("node-1", info("active"), nodes, HUB).stale_ids == ("oldid",)


def test_an_inactive_node_joins_and_old_entries_go() -> None:
    decision = decide_join("node-1", info("inactive", managers=()), [listed("Down", "oldid")], HUB)
    assert decision.action == "join"
    assert decision.message == "joined the swarm of 10.0.0.2"
    assert decision.stale_ids == ("oldid",)


def test_a_pending_join_is_waited_for_then_done_again() -> None:
    first = decide_join("node-1", info("pending", managers=()), [], HUB, wait_seconds=60)
    assert (first.action, first.message) == (
        "wait",
        "a swarm join is still going on (a run cut short?): waiting up to 60 s",
    )
    again = decide_join("node-1", info("pending"), [listed("Unknown")], HUB, waited=True)
    assert again.action == "rejoin"
    assert again.message == (
        "joined the swarm of 10.0.0.2 again (the join was still pending after 60 s)"
    )
    assert again.stale_ids == (NODE_ID,)


def test_a_pending_join_that_finished_is_a_member() -> None:
    assert decide_join("node-1", info("active"), [listed()], HUB, waited=True).action == "member"


def test_a_member_the_hub_sees_down_is_waited_for_then_refused_not_made_to_leave() -> None:
    first = decide_join("node-1", info("active"), [listed("Down")], HUB)
    assert first.action == "wait"
    assert first.message == "the hub sees node-1 down: waiting up to 60 s"
    last = decide_join("node-1", info("active"), [listed("Down")], HUB, waited=True)
    assert last.action == "refuse"
    assert last.message == (
        "node-1 is in the swarm but the hub has seen it down for 60 s: check that it reaches "
        "10.0.0.2:2377 (firewall.configure on both) and its Docker (journalctl -u docker)"
    )


def test_a_node_the_hub_forgot_joins_again() -> None:
    decision = decide_join("node-1", info("active"), [listed("Down", node_id="other")], HUB)
    assert decision.action == "rejoin"
    assert decision.message == "joined the swarm of 10.0.0.2 again (the hub no longer knew node-1)"
    assert decision.stale_ids == ("other",)


def test_a_node_of_another_swarm_is_refused() -> None:
    decision = decide_join("node-1", info("active", managers=("192.168.9.9:2377",)), [], HUB)
    assert decision.action == "refuse"
    assert decision.message == (
        "node-1 is a member of another swarm (192.168.9.9:2377): if that swarm is gone, run "
        "`docker swarm leave --force` on it, then run again"
    )


def test_an_error_state_joins_again_and_says_why() -> None:
    decision = decide_join("node-1", info("error", error="certificate expired"), [], HUB)
    assert decision.action == "rejoin"
    assert decision.message == (
        "joined the swarm of 10.0.0.2 again (its swarm state was error (certificate expired))"
    )


def test_locked_and_no_docker() -> None:
    assert decide_join("node-1", info("locked"), [], HUB).action == "refuse"
    no_docker = decide_join("node-1", SwarmInfo(""), [], HUB)
    assert (no_docker.action, no_docker.message) == (
        "no-docker",
        "node-1: Docker is not running: run docker.install first",
    )


def test_a_shortened_hub_id_still_names_the_node() -> None:
    assert (
        decide_join("node-1", info("active"), [listed(node_id=NODE_ID[:12])], HUB).action
        == "member"
    )


def test_no_decision_line_carries_a_token() -> None:
    cases = [info(s) for s in ("active", "pending", "error", "inactive", "locked")]
    for case in cases:
        for waited in (False, True):
            assert "SWMTKN" not in decide_join("node-1", case, [], HUB, waited=waited).message


def test_join_command_exact() -> None:
    state = "docker info --format '{{.Swarm.LocalNodeState}}'"
    assert converge.join_command(TOKEN, HUB, leave_first=True, wait_seconds=30) == (
        "docker swarm leave --force >/dev/null 2>&1; "
        f"docker swarm join --token {TOKEN} 10.0.0.2:2377 >/dev/null "
        f'|| [ "$({state})" = pending ] || exit 1; '
        f'n=0; while [ "$({state})" = pending ] && [ $n -lt 30 ]; do sleep 1; n=$((n + 1)); done; '
        f'state=$({state}); [ "$state" = active ] || {{ echo "the swarm join did not finish: '
        "$state after 30 s: check that this host reaches 10.0.0.2:2377 (the hub's firewall)\" "
        ">&2; exit 1; }"
    )
    assert not converge.join_command(TOKEN, HUB).startswith("docker swarm leave")


def test_wait_commands_exact() -> None:
    state = "docker info --format '{{.Swarm.LocalNodeState}}'"
    assert converge.wait_while_pending_command(60) == (
        f'n=0; while [ "$({state})" = pending ] && [ $n -lt 60 ]; do sleep 1; n=$((n + 1)); '
        "done; docker info --format '{{json .Swarm}}'"
    )
    assert converge.wait_until_listed_ready_command("abc", 10) == (
        "n=0; while [ \"$(docker node inspect --format '{{.Status.State}}' abc 2>/dev/null)\" "
        "!= ready ] && [ $n -lt 10 ]; do sleep 1; n=$((n + 1)); done; "
        "docker node ls --format '{{json .}}'"
    )
    assert converge.remove_nodes_command(["a", "b"]) == "docker node rm --force a b"
    assert converge.remove_nodes_command([]) == ""


# A docker whose swarm join times out and then finishes in the background: the state goes
# pending for PENDING_POLLS queries of the state, then active (or stays pending: -1).
DOCKER_JOIN = """
case "$1 $2" in
  "swarm join") echo "Timeout was reached before node joined. The attempt to join the swarm \
will continue in the background." >&2; exit 1;;
  "swarm leave") exit 0;;
  "info --format") polls="$(dirname "$0")/polls"; n=$(cat "$polls" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$polls"
    if [ "$PENDING_POLLS" = -1 ] || [ "$n" -lt "$PENDING_POLLS" ]; then echo pending
    else echo active; fi;;
esac
"""


def test_a_join_that_times_out_is_waited_for(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    shim(bin_dir, "docker", DOCKER_JOIN)
    env = {**os.environ, "PENDING_POLLS": "2", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", "-c", converge.join_command(TOKEN, HUB, wait_seconds=10)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert calls(bin_dir)[0] == f"docker swarm join --token {TOKEN} 10.0.0.2:2377"


def test_a_join_that_never_finishes_fails_without_the_token(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    shim(bin_dir, "docker", DOCKER_JOIN)
    env = {**os.environ, "PENDING_POLLS": "-1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", "-c", converge.join_command(TOKEN, HUB, leave_first=True, wait_seconds=1)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "the swarm join did not finish: pending after 1 s: check that this host reaches "
        "10.0.0.2:2377 (the hub's firewall)"
    )
    assert TOKEN not in out.stdout + out.stderr
    assert calls(bin_dir)[0] == "docker swarm leave --force"


# --- 3. atomic file writes ---


def test_install_file_command_exact() -> None:
    assert converge.install_file_command("/tmp/tmp.abc", "/etc/docker/daemon.json", "0644") == (
        "mkdir -p /etc/docker && install -m 0644 -o root -g root /tmp/tmp.abc "
        "/etc/docker/daemon.json.swarmhub-new && sync /etc/docker/daemon.json.swarmhub-new && "
        "mv -f /etc/docker/daemon.json.swarmhub-new /etc/docker/daemon.json; status=$?; "
        "rm -f /tmp/tmp.abc /etc/docker/daemon.json.swarmhub-new; exit $status"
    )


def me() -> tuple[str, str]:
    return (
        subprocess.getoutput("id -un"),
        subprocess.getoutput("id -gn"),
    )


def test_a_file_is_renamed_into_place_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "app.conf"
    target.parent.mkdir()
    target.write_text("old\n")
    reader = tmp_path / "reader-link"
    os.link(target, reader)  # an open reader keeps the old inode: it never sees a part
    upload = tmp_path / "upload"
    upload.write_text("new\n")
    user, group = me()
    out = sh(converge.install_file_command(str(upload), str(target), "0640", user, group))
    assert out.returncode == 0, out.stderr
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert reader.read_text() == "old\n"
    assert not upload.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["app.conf"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("old\n")
    upload = tmp_path / "upload"
    upload.write_text("new\n")
    out = sh(converge.install_file_command(str(upload), str(target), "0644", "no-such-user-x"))
    assert out.returncode != 0
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf"]


def test_a_file_in_a_new_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "unit.service"
    upload = tmp_path / "upload"
    upload.write_text("[Unit]\n")
    user, group = me()
    assert (
        sh(converge.install_file_command(str(upload), str(target), "0644", user, group)).returncode
        == 0
    )
    assert target.read_text() == "[Unit]\n"


def test_secret_command(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "cookie_secret"
    command = converge.secret_command(str(path))
    assert command == (
        f"mkdir -p {path.parent} && umask 077 && {{ test -s {path} || "
        f"{{ openssl rand -hex 32 > {path}.swarmhub-new && "
        f"mv -f {path}.swarmhub-new {path}; }}; }} && chmod 600 {path}"
    )
    if not shutil.which("openssl"):
        pytest.skip("no openssl")
    assert sh(command).returncode == 0
    first = path.read_text()
    assert len(first.strip()) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sh(command).returncode == 0
    assert path.read_text() == first  # made once
    path.write_text("")  # an empty file, as a run killed by the old command could leave
    assert sh(command).returncode == 0
    assert len(path.read_text().strip()) == 64


# --- 4. what else a run cut short leaves half-done ---

VARIABLES = {"JPY_COOKIE_SECRET": "cookie_secret", "CONFIGPROXY_AUTH_TOKEN": "proxy_token"}


def test_secret_env_file_command_exact() -> None:
    assert converge.secret_env_file_command("/srv/s", "jupyterhub.env", VARIABLES) == (
        'for s in /srv/s/cookie_secret /srv/s/proxy_token; do test -s "$s" || '
        '{ echo "secret $s is missing or empty: run hub.deploy" >&2; exit 1; }; done; '
        'umask 077 && { echo "JPY_COOKIE_SECRET=$(cat /srv/s/cookie_secret)"; '
        'echo "CONFIGPROXY_AUTH_TOKEN=$(cat /srv/s/proxy_token)"; } > '
        "/srv/s/jupyterhub.env.swarmhub-new && chmod 600 /srv/s/jupyterhub.env.swarmhub-new && "
        "mv -f /srv/s/jupyterhub.env.swarmhub-new /srv/s/jupyterhub.env; status=$?; "
        "rm -f /srv/s/jupyterhub.env.swarmhub-new; exit $status"
    )


def test_secret_env_current_command_exact() -> None:
    assert converge.secret_env_current_command("/srv/s", "jupyterhub.env", VARIABLES) == (
        "test -s /srv/s/jupyterhub.env && "
        '{ echo "JPY_COOKIE_SECRET=$(cat /srv/s/cookie_secret)"; '
        'echo "CONFIGPROXY_AUTH_TOKEN=$(cat /srv/s/proxy_token)"; } '
        "| cmp -s - /srv/s/jupyterhub.env"
    )


def test_env_files_are_whole_and_current_or_made_again(tmp_path: Path) -> None:
    folder = str(tmp_path)
    env_file = tmp_path / "jupyterhub.env"
    build = converge.secret_env_file_command(folder, "jupyterhub.env", VARIABLES)
    current = converge.secret_env_current_command(folder, "jupyterhub.env", VARIABLES)
    (tmp_path / "cookie_secret").write_text("c0ffee\n")
    # A secret missing: refused, nothing written (the old command wrote "VAR=" and went on).
    out = sh(build)
    assert out.returncode == 1
    assert out.stderr == f"secret {folder}/proxy_token is missing or empty: run hub.deploy\n"
    assert not env_file.exists()
    (tmp_path / "proxy_token").write_text("beef\n")
    assert sh(build).returncode == 0
    assert env_file.read_text() == "JPY_COOKIE_SECRET=c0ffee\nCONFIGPROXY_AUTH_TOKEN=beef\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert sh(current).returncode == 0
    env_file.write_text("JPY_COOKIE_SECRET=c0ffee\n")  # partial: a run killed half-way
    assert sh(current).returncode == 1
    assert sh(build).returncode == 0 and sh(current).returncode == 0
    (tmp_path / "proxy_token").write_text("new\n")  # a rotation cut before the env files
    assert sh(current).returncode == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".swarmhub-new")] == []


def test_keygen_command_exact() -> None:
    assert converge.keygen_command("/srv/s/homes_ed25519", "swarmhub-homes") == (
        "install -d -m 0700 /srv/s && "
        "rm -f /srv/s/homes_ed25519.swarmhub-new /srv/s/homes_ed25519.swarmhub-new.pub && "
        "ssh-keygen -q -t ed25519 -N '' -C swarmhub-homes -f /srv/s/homes_ed25519.swarmhub-new && "
        "chmod 600 /srv/s/homes_ed25519.swarmhub-new && rm -f /srv/s/homes_ed25519.pub && "
        "mv -f /srv/s/homes_ed25519.swarmhub-new /srv/s/homes_ed25519 && "
        "mv -f /srv/s/homes_ed25519.swarmhub-new.pub /srv/s/homes_ed25519.pub"
    )


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen")
def test_a_key_pair_left_half_made_is_made_again(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "homes_ed25519"
    key.parent.mkdir()
    key.write_text("half a key")  # killed after the private key, before the .pub
    complete = converge.key_pair_complete_command(str(key))
    assert sh(complete).returncode == 1
    # The step's old command: ssh-keygen will not overwrite the left-over key (stdin closed).
    old = f"ssh-keygen -q -t ed25519 -N '' -C swarmhub-homes -f {key}"
    assert sh(old, stdin=subprocess.DEVNULL).returncode != 0
    out = sh(converge.keygen_command(str(key), "swarmhub-homes"), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert sh(complete).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["homes_ed25519", "homes_ed25519.pub"]
    # A .pub of another key: not a pair.
    other = tmp_path / "other"
    sh(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    shutil.copy(f"{other}.pub", f"{key}.pub")
    assert sh(complete).returncode == 1


def test_debootstrap_base_command_exact() -> None:
    inner = (
        "docker image inspect swarmhub/debian:trixie >/dev/null 2>&1 && exit 0; "
        "rm -rf --one-file-system /var/tmp/swarmhub-rootfs /var/tmp/swarmhub-rootfs.tar && "
        "debootstrap --variant=minbase trixie /var/tmp/swarmhub-rootfs "
        "http://deb.debian.org/debian >/var/tmp/swarmhub-debootstrap.log 2>&1 && "
        "tar --numeric-owner -C /var/tmp/swarmhub-rootfs -cf /var/tmp/swarmhub-rootfs.tar . && "
        "docker import /var/tmp/swarmhub-rootfs.tar swarmhub/debian:trixie >/dev/null; "
        "status=$?; rm -rf --one-file-system /var/tmp/swarmhub-rootfs "
        "/var/tmp/swarmhub-rootfs.tar; exit $status"
    )
    assert converge.debootstrap_base_command("trixie", "swarmhub/debian:trixie") == (
        f"flock -w 1800 /run/lock/swarmhub-base.lock sh -c '{inner}'"
    )


def test_build_once_command_exact() -> None:
    command = converge.build_once_command("hub:5000/swarmhub/hub:abc", "cd /b && docker build .")
    assert command.startswith("flock -w 3600 /run/lock/swarmhub-build-")
    assert command.endswith(
        " sh -c 'docker image inspect hub:5000/swarmhub/hub:abc >/dev/null 2>&1 && exit 0; "
        "cd /b && docker build .'"
    )


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock")
def test_a_second_build_waits_for_the_first_and_does_not_build_again(tmp_path: Path) -> None:
    """Two runs at once (the second after the first was killed, its build still going on):
    one build only, and both succeed."""
    bin_dir = tmp_path / "bin"
    image = tmp_path / "image"
    shim(bin_dir, "docker", f'[ "$1 $2" = "image inspect" ] && test -e {image}')
    build = f"echo build >> {tmp_path}/builds; sleep 2; touch {image}"
    ref = f"test/{tmp_path.name}:1"
    command = converge.build_once_command(ref, build, wait_seconds=30)
    lock = command.split()[3]
    try:
        runs = [
            subprocess.Popen(
                ["sh", "-c", command],
                env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            )
            for _ in range(2)
        ]
        assert [run.wait(timeout=30) for run in runs] == [0, 0]
    finally:
        Path(lock).unlink(missing_ok=True)
    assert (tmp_path / "builds").read_text() == "build\n"


def test_follow_up_commands_exact() -> None:
    assert converge.mark_pending_command("docker-restart") == (
        "mkdir -p /run/swarmhub/pending && touch /run/swarmhub/pending/docker-restart"
    )
    assert converge.mark_pending_command("hub-up", survives_reboot=True) == (
        "mkdir -p /var/lib/swarmhub/pending && touch /var/lib/swarmhub/pending/hub-up"
    )
    assert converge.follow_up_command("docker-restart", "systemctl restart docker") == (
        "systemctl restart docker && rm -f /run/swarmhub/pending/docker-restart "
        "/var/lib/swarmhub/pending/docker-restart"
    )
    assert converge.pending_follow_ups_command() == (
        "find /run/swarmhub/pending /var/lib/swarmhub/pending -maxdepth 1 -type f "
        "-printf '%f\\n' 2>/dev/null | sort -u"
    )
    with pytest.raises(ValueError):
        converge.mark_pending_command("x; rm -rf /")


def test_a_follow_up_survives_a_run_cut_before_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        converge, "PENDING_DIRS", {False: f"{tmp_path}/run", True: f"{tmp_path}/var"}
    )
    change = f"{converge.mark_pending_command('docker-restart')} && echo new > {tmp_path}/conf"
    assert sh(change).returncode == 0
    # ... the run is killed here, before the restart ...
    probe = sh(converge.pending_follow_ups_command())
    assert converge.parse_pending(probe.stdout) == {"docker-restart"}
    failing = converge.follow_up_command("docker-restart", "false")
    assert sh(failing).returncode == 1
    assert converge.parse_pending(sh(converge.pending_follow_ups_command()).stdout) == {
        "docker-restart"
    }
    assert sh(converge.follow_up_command("docker-restart", "true")).returncode == 0
    assert sh(converge.pending_follow_ups_command()).stdout == ""


def test_needs_daemon_reload(tmp_path: Path) -> None:
    command = converge.needs_daemon_reload_command(["a.service", "b.timer"])
    assert command == (
        'for u in a.service b.timer; do [ "$(systemctl show -p NeedDaemonReload --value "$u" '
        '2>/dev/null)" = yes ] && echo "$u"; done; true'
    )
    bin_dir = tmp_path / "bin"
    shim(bin_dir, "systemctl", '[ "$5" = b.timer ] && echo yes || echo no')
    out = sh(command, [bin_dir])
    assert (out.returncode, out.stdout) == (0, "b.timer\n")

"""homes.storage and homes.mount: users' home directories on a storage host (the hub by
default), mounted at the same path on every node, so that a server started again on another
node finds the same files.

Two backends (HOMES_BACKEND):

- ``nfs`` (the default, for real VMs): nfs-kernel-server on the storage host exports
  HOMES_DIR to the nodes with ``all_squash,anonuid=HOME_UID,anongid=HOME_GID``: every file
  written from a node, by anyone (root in a container included), belongs to the homes' owner
  on the storage host. Nothing written from a node can be a root-owned or set-uid file, and
  the ownership is the same as with sshfs. The nodes mount it with a systemd .mount unit.
- ``sshfs`` (hosts whose kernel has no NFS, such as the sandbox's): the storage host makes a
  key pair (0600, never shown) and lets that key in as root with a forced command that drops
  to HOME_UID:HOME_GID and runs only the SFTP server in HOMES_DIR (where sshd refuses root,
  a drop-in allows root with forced commands only). Root, because the uid of
  the homes (1000) is often a login user of the host already; the forced command means the
  key can do nothing else (``restrict``: no shell, no forwarding). Each node gets the private
  key, the storage host's key (read from the storage host itself, never trusted on first use)
  and a .mount unit of type fuse.sshfs with short caches, so that a directory the hub makes
  shows up on the nodes at once.

A soft size limit (HOME_SOFT_LIMIT) is a report (`invoke homes.usage`): sshfs cannot enforce
one, and quotas on the storage host's file system are left to its administrator.
"""

from __future__ import annotations

import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.ensure import (
    ensure_file,
    ensure_packages,
    file_digest,
    sha256,
)
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step
from swarmhub.settings import Settings

# On every host that mounts the homes (nodes; the hub when storage is elsewhere).
CLIENT_DIR = "/etc/swarmhub/homes"
CLIENT_KEY = f"{CLIENT_DIR}/storage_key"
CLIENT_KNOWN_HOSTS = f"{CLIENT_DIR}/known_hosts"
KEY_COMMENT = "swarmhub-homes"
EXPORTS_FILE = "/etc/exports.d/swarmhub-homes.exports"
DOCKER_DROP_IN = "/etc/systemd/system/docker.service.d/swarmhub-homes.conf"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# File systems the hub's SQLite database must never live on (it locks badly there).
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "9p")

PACKAGES = {
    ("nfs", "storage"): ["nfs-kernel-server"],
    ("nfs", "client"): ["nfs-common"],
    ("sshfs", "storage"): ["openssh-server", "openssh-sftp-server", "util-linux"],
    ("sshfs", "client"): ["sshfs"],
}


# --- names ---


def mount_unit_name(path: str) -> str:
    """systemd's name of the .mount unit for ``path`` (``systemd-escape --path --suffix=mount``)."""
    parts = []
    for part in path.strip("/").split("/"):
        escaped = "".join(
            c if c.isalnum() or c in "_." else "".join(f"\\x{b:02x}" for b in c.encode())
            for c in part
        )
        if escaped.startswith("."):
            escaped = "\\x2e" + escaped[1:]
        parts.append(escaped)
    return ("-".join(parts) or "-") + ".mount"


def storage_key_path(settings: Settings) -> str:
    """The storage host's private key for sshfs (0600, in the secrets directory)."""
    return f"{settings.hub_dir}/secrets/homes_ed25519"


# --- command builders and rendered files ---


def forced_command(settings: Settings) -> str:
    """What the storage key may run: the SFTP server in HOMES_DIR, as HOME_UID:HOME_GID."""
    return (
        f"setpriv --reuid={settings.home_uid} --regid={settings.home_gid} --clear-groups "
        f"{SFTP_SERVER} -d {settings.homes_dir}"
    )


def authorized_key_line(settings: Settings, public_key: str) -> str:
    """root's authorized_keys line for the storage key: SFTP only, nothing else."""
    key = " ".join(public_key.split()[:2])
    return f'restrict,command="{forced_command(settings)}" {key} {KEY_COMMENT}'


def authorize_command(line: str) -> str:
    """Put ``line`` in root's authorized_keys, replacing an older storage key's line."""
    keys = "/root/.ssh/authorized_keys"
    return (
        f"install -d -m 0700 /root/.ssh && touch {keys} && chmod 600 {keys} && "
        f"sed -i '/ {KEY_COMMENT}$/d' {keys} && echo {shlex.quote(line)} >> {keys}"
    )


def keygen_command(path: str) -> str:
    quoted = shlex.quote(path)
    return (
        f"install -d -m 0700 $(dirname {quoted}) && "
        f"ssh-keygen -q -t ed25519 -N '' -C {KEY_COMMENT} -f {quoted} && chmod 600 {quoted}"
    )


def known_hosts_line(storage: str, port: int, host_public_key: str) -> str:
    """The storage host's key for the clients, under the name they mount it by."""
    name = storage if port == 22 else f"[{storage}]:{port}"
    return f"{name} {' '.join(host_public_key.split()[:2])}\n"


def exports_file(settings: Settings, clients: list[str]) -> str:
    """/etc/exports.d entry: HOMES_DIR to the clients, every access as the homes' owner."""
    options = (
        f"rw,sync,no_subtree_check,all_squash,anonuid={settings.home_uid},"
        f"anongid={settings.home_gid}"
    )
    entries = " ".join(f"{client}({options})" for client in clients)
    return (
        "# Written by swarmhub (homes.storage). All access squashed to the homes' owner.\n"
        f"{settings.homes_dir} {entries}\n"
    )


def mount_unit(settings: Settings) -> str:
    """The .mount unit of HOMES_DIR on a client, for the env's backend."""
    storage, homes = settings.storage_name, settings.homes_dir
    if settings.homes_backend == "nfs":
        what, kind = f"{storage}:{homes}", "nfs"
        # lookupcache=positive: a directory the hub just made is never "missing" from a cache.
        options = "_netdev,rw,hard,noatime,nfsvers=4.2,lookupcache=positive,actimeo=1"
    else:
        what, kind = f"root@{storage}:{homes}", "fuse.sshfs"
        options = ",".join(
            [
                "_netdev",
                "allow_other",
                # the kernel checks the files' modes: only their owner (jovyan) and root in
                # a server may read a home, not any other user of the node
                "default_permissions",
                "reconnect",
                "ServerAliveInterval=15",
                "ServerAliveCountMax=3",
                f"port={settings.ssh_port}",
                f"IdentityFile={CLIENT_KEY}",
                f"UserKnownHostsFile={CLIENT_KNOWN_HOSTS}",
                "StrictHostKeyChecking=yes",
                "BatchMode=yes",
                # no directory cache and one-second attributes: a home made on the storage
                # host is there at once for Docker's bind mount on the node
                "dir_cache=no",
                "attr_timeout=1",
                "entry_timeout=1",
                "negative_timeout=0",
            ]
        )
    return (
        f"# Written by swarmhub (homes.mount): the users' homes from {storage}.\n"
        "[Unit]\n"
        f"Description=swarmhub home directories from {storage} ({settings.homes_backend})\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Mount]\n"
        f"What={what}\n"
        f"Where={homes}\n"
        f"Type={kind}\n"
        f"Options={options}\n"
        "TimeoutSec=30\n"
        "\n"
        "[Install]\n"
        "WantedBy=remote-fs.target\n"
    )


def docker_after_mount(settings: Settings) -> str:
    """A drop-in for docker.service: start after the homes are mounted (after a reboot,
    a server must not bind an empty directory)."""
    unit = mount_unit_name(settings.homes_dir)
    return f"# Written by swarmhub (homes.mount).\n[Unit]\nWants={unit}\nAfter={unit}\n"


def mounted_command(path: str) -> str:
    return f"findmnt -n -o FSTYPE,SOURCE --mountpoint {shlex.quote(path)}"


def expected_mount(settings: Settings) -> list[str]:
    """What findmnt shows for a good mount: [fstype, source]."""
    storage, homes = settings.storage_name, settings.homes_dir
    if settings.homes_backend == "nfs":
        return ["nfs4", f"{storage}:{homes}"]
    return ["fuse.sshfs", f"root@{storage}:{homes}"]


def filesystem_command(path: str) -> str:
    """The file system type of ``path``, or of its nearest existing parent."""
    return (
        f'p={shlex.quote(path)}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '
        'findmnt -n -o FSTYPE --target "$p"'
    )


def usage_command(settings: Settings) -> str:
    """Bytes used by each home on the storage host: 'BYTES<TAB>PATH' lines."""
    homes = shlex.quote(settings.homes_dir)
    return (
        f"cd {homes} && find . -mindepth 1 -maxdepth 1 -type d -printf '%f\\0' "
        "| xargs -0 -r du -s --block-size=1 --"
    )


def parse_usage(output: str) -> list[tuple[str, int]]:
    """(directory, bytes) per home, largest first."""
    rows = []
    for line in output.splitlines():
        size, _, name = line.partition("\t")
        if size.strip().isdigit() and name:
            rows.append((name.strip().removeprefix("./"), int(size)))
    return sorted(rows, key=lambda row: (-row[1], row[0]))


# --- steps ---


def clients(settings: Settings) -> list[str]:
    """The hosts that mount the homes: the nodes, and the hub when storage is elsewhere."""
    names = list(settings.node_hosts)
    if settings.storage_name != settings.hub_host:
        names.insert(0, settings.hub_host)
    return names


SSHD_DROP_IN = "/etc/ssh/sshd_config.d/zz-swarmhub-homes.conf"
ROOT_BY_KEY = ("prohibit-password", "without-password", "forced-commands-only", "yes")


def sshd_root_drop_in() -> str:
    """Where sshd refuses root (PermitRootLogin no, as hardened images have it): root may log
    in with a key that has a forced command, and only so (the homes key runs SFTP only)."""
    return (
        "# Written by swarmhub (homes.storage): the nodes' sshfs logs in as root with a key\n"
        "# whose forced command runs only the SFTP server, as the homes' owner.\n"
        "Match User root\n"
        "    PermitRootLogin forced-commands-only\n"
    )


def root_login_command() -> str:
    """sshd's PermitRootLogin for a root login (Match blocks included)."""
    return "sshd -T -C user=root,host=localhost,addr=127.0.0.1 | grep -i '^permitrootlogin '"


def ensure_root_login(storage: Host) -> None:
    """sshd lets root in by key for the forced command: Debian's default prohibit-password
    does; where it is `no`, a drop-in allows forced-commands-only for root, nothing more."""
    if file_digest(storage, SSHD_DROP_IN) == sha256(sshd_root_drop_in()):
        storage.ok("sshd lets root in for forced commands only (homes)")
        return
    words = storage.probe(root_login_command()).stdout.split()
    setting = words[1].lower() if len(words) == 2 else "unknown"
    if setting in ROOT_BY_KEY:
        storage.ok(f"sshd lets root in by key ({setting})")
        return
    if setting != "no":
        raise SwarmhubError(
            f"{storage.name}: cannot read sshd's PermitRootLogin ({setting}): check `sshd -T` "
            "there, or use HOMES_BACKEND=nfs"
        )
    ensure_file(storage, SSHD_DROP_IN, sshd_root_drop_in(), describe="sshd: root by forced key")
    storage.change("sshd reloaded", "sshd -t && systemctl reload ssh")


def check_hub_database_local(settings: Settings, hub: Host) -> None:
    """The hub's SQLite database is on the hub's own disk (SQLite on NFS locks badly)."""
    fstype = hub.probe(filesystem_command(settings.hub_data_dir)).stdout.strip()
    if fstype.startswith("fuse") or fstype in NETWORK_FILESYSTEMS:
        raise SwarmhubError(
            f"{hub.name}: the hub's database directory {settings.hub_data_dir} is on {fstype}: "
            "SQLite must stay on the hub's local disk: move HUB_DIR to a local file system"
        )
    hub.ok(f"hub database on the hub's own disk ({fstype})")


def ensure_exports(settings: Settings, storage: Host) -> None:
    """The storage host exports the homes to every client of the env file (a node added
    later included) and runs the NFS server."""
    wanted = exports_file(settings, clients(settings))
    if ensure_file(storage, EXPORTS_FILE, wanted, describe="homes export"):
        storage.change("exports reloaded", "exportfs -ra")
    if storage.probe("systemctl is-active nfs-server").stdout.strip() == "active":
        storage.ok("nfs-server running")
    else:
        storage.change("started nfs-server", "systemctl enable --now nfs-server")


def ensure_homes_directory(settings: Settings, storage: Host) -> None:
    """HOMES_DIR belongs to the homes' owner: the hub makes users' directories in it through
    the mount (as HOME_UID, squashed or by the SFTP server) when storage is apart."""
    path = shlex.quote(settings.homes_dir)
    owner = f"{settings.home_uid}:{settings.home_gid}"
    if storage.probe(f"stat -c '%a %u:%g' {path}").stdout.split() == ["755", owner]:
        storage.ok(f"directory {settings.homes_dir} ({owner})")
        return
    storage.change(
        f"directory {settings.homes_dir} (0755, {owner})",
        f"mkdir -p {path} && chmod 0755 {path} && chown {owner} {path}",
    )


def apply_storage(session: Session, storage: Host) -> None:
    settings = session.settings
    backend = settings.homes_backend
    ensure_packages(storage, PACKAGES[(backend, "storage")], f"homes over {backend}")
    mounted = storage.probe(mounted_command(settings.homes_dir)).stdout.split()
    if mounted:
        raise SwarmhubError(
            f"{storage.name}: {settings.homes_dir} is mounted from {mounted[-1]} "
            f"({mounted[0]}), but the storage host keeps the homes on its own disk: there, copy "
            f"them over and run systemctl disable --now {mount_unit_name(settings.homes_dir)}"
        )
    unit = f"/etc/systemd/system/{mount_unit_name(settings.homes_dir)}"
    if storage.probe(f"test -e {unit} -o -e {DOCKER_DROP_IN}").ok:
        # a former client: its unit would mount the homes over themselves at the next boot
        storage.change(
            "removed the homes mount of a former client (this host keeps the homes now)",
            f"systemctl disable {mount_unit_name(settings.homes_dir)} 2>/dev/null; "
            f"rm -f {unit} {DOCKER_DROP_IN} && systemctl daemon-reload",
        )
    ensure_homes_directory(settings, storage)
    if backend == "nfs":
        ensure_exports(settings, storage)
        return
    ensure_root_login(storage)
    key = storage_key_path(settings)
    if storage.probe(f"test -s {key} && test -s {key}.pub").ok:
        storage.ok("homes key kept")
    else:
        storage.change("generated the homes key (sshfs)", keygen_command(key))
    if storage.plan and not storage.probe(f"test -s {key}.pub").ok:
        storage.changed("root's authorized_keys: the homes key, SFTP only")
        return
    line = authorized_key_line(settings, storage.run(f"cat {key}.pub").stdout)
    if storage.probe(f"grep -qxF {shlex.quote(line)} /root/.ssh/authorized_keys").ok:
        storage.ok("homes key allowed (SFTP in the homes only)")
    else:
        storage.change("root's authorized_keys: the homes key, SFTP only", authorize_command(line))


def client_files(session: Session) -> tuple[str, str]:
    """(private key, known_hosts) for the sshfs clients, read once from the storage host."""

    def read() -> tuple[str, str]:
        settings = session.settings
        storage = session.host(settings.storage_name)
        key = storage.run(f"cat {storage_key_path(settings)}").stdout
        host_key = storage.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
        return key, known_hosts_line(settings.storage_name, settings.ssh_port, host_key)

    return session.remember("homes_client_files", read)


def apply_mount(session: Session, client: Host) -> None:
    settings = session.settings
    if "hub" in client.roles:
        check_hub_database_local(settings, client)
    if client.name == settings.storage_name:
        client.ok(f"homes are local here ({settings.homes_dir})")
        return
    backend = settings.homes_backend
    ensure_packages(client, PACKAGES[(backend, "client")], f"homes over {backend}")
    changed = False
    if backend == "nfs":  # nodes.add runs this alone: the export must name the new node
        storage = session.host(settings.storage_name)
        session.remember("homes_exports", lambda: ensure_exports(settings, storage))
    else:
        if (
            client.plan
            and not session.host(settings.storage_name)
            .probe(f"test -s {storage_key_path(settings)}")
            .ok
        ):
            client.changed("homes key and the storage host's key")
        else:
            key, known_hosts = client_files(session)
            changed |= ensure_file(
                client, CLIENT_KEY, key, mode="0600", describe="homes key (storage login)"
            )
            changed |= ensure_file(client, CLIENT_KNOWN_HOSTS, known_hosts, mode="0644")
    unit = mount_unit_name(settings.homes_dir)
    changed |= ensure_file(client, f"/etc/systemd/system/{unit}", mount_unit(settings))
    changed |= ensure_file(
        client,
        DOCKER_DROP_IN,
        docker_after_mount(settings),
        describe="docker starts after the homes mount",
    )
    # One round trip: the unit enabled at boot? then what is mounted there.
    state = client.probe(
        f"echo $(systemctl is-enabled {unit} 2>/dev/null); {mounted_command(settings.homes_dir)}"
    ).stdout.split("\n", 1)
    enabled = state[0].strip() == "enabled"
    found = state[1].split() if len(state) > 1 else []
    if not changed and found == expected_mount(settings) and enabled:
        client.ok(f"homes mounted from {settings.storage_name} ({backend})")
        return
    start = "restart" if found else "start"
    client.change(
        f"homes mounted from {settings.storage_name} at {settings.homes_dir} ({backend})",
        f"mkdir -p {shlex.quote(settings.homes_dir)} && systemctl daemon-reload && "
        f"systemctl enable {unit} && systemctl {start} {unit}",
    )
    if not client.plan:
        found = client.probe(mounted_command(settings.homes_dir)).stdout.split()
        if found != expected_mount(settings):
            raise SwarmhubError(
                f"{client.name}: {settings.homes_dir} is not mounted from "
                f"{settings.storage_name} after starting {unit}: see journalctl -u {unit}"
            )


STORAGE = Step(
    name="homes.storage",
    roles=frozenset({"storage"}),
    apply=apply_storage,
    summary="users' home directories on the storage host (the hub by default)",
)
MOUNT = Step(
    name="homes.mount",
    roles=frozenset({"hub", "node"}),
    apply=apply_mount,
    parallel=True,
    summary="the homes mounted where users' servers run (and on the hub, when apart)",
)

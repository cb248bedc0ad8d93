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
from swarmhub.runbook.change import Change, FileWrite, Later, Ok, Steps
from swarmhub.runbook.converge import key_pair_complete_command, keygen_command
from swarmhub.runbook.ensure import ensure_file, ensure_packages, file_differs
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.templates import render

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


def authorize_command(settings: Settings, public_key_path: str) -> str:
    """Put the storage key's line (authorized_key_line, made on the host from the public key
    file, so that it can be declared before the key exists) in root's authorized_keys,
    replacing an older storage key's line."""
    keys = "/root/.ssh/authorized_keys"
    options = shlex.quote(f'restrict,command="{forced_command(settings)}"')
    return (
        f"install -d -m 0700 /root/.ssh && touch {keys} && chmod 600 {keys} && "
        f"sed -i '/ {KEY_COMMENT}$/d' {keys} && "
        f'echo {options} "$(cut -d" " -f1,2 {shlex.quote(public_key_path)})" {KEY_COMMENT} '
        f">> {keys}"
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
    return render(
        "homes/swarmhub-homes.exports.j2",
        homes_dir=settings.homes_dir,
        clients=clients,
        options=options,
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
    return render(
        "systemd/homes.mount.j2",
        storage=storage,
        backend=settings.homes_backend,
        what=what,
        homes_dir=homes,
        kind=kind,
        options=options,
    )


def docker_after_mount(settings: Settings) -> str:
    """A drop-in for docker.service: start after the homes are mounted (after a reboot,
    a server must not bind an empty directory)."""
    return render("systemd/docker-after-homes.conf.j2", unit=mount_unit_name(settings.homes_dir))


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
    return render("homes/sshd-root-forced-commands.conf")


def root_login_command() -> str:
    """sshd's PermitRootLogin for a root login (Match blocks included)."""
    return "sshd -T -C user=root,host=localhost,addr=127.0.0.1 | grep -i '^permitrootlogin '"


def ensure_root_login(storage: HostView) -> Steps:
    """sshd lets root in by key for the forced command: Debian's default prohibit-password
    does; where it is `no`, a drop-in allows forced-commands-only for root, nothing more."""
    drop_in = sshd_root_drop_in()
    if not file_differs(storage, SSHD_DROP_IN, drop_in, "0644", "root"):
        yield Ok("sshd lets root in for forced commands only (homes)")
        return
    words = storage.probe(root_login_command()).stdout.split()
    setting = words[1].lower() if len(words) == 2 else "unknown"
    if setting in ROOT_BY_KEY:
        yield Ok(f"sshd lets root in by key ({setting})")
        return
    if setting != "no":
        raise SwarmhubError(
            f"{storage.name}: cannot read sshd's PermitRootLogin ({setting}): check `sshd -T` "
            "there, or use HOMES_BACKEND=nfs"
        )
    yield Change(
        "sshd: root by forced key only (drop-in), reloaded",
        ["sshd -t && systemctl reload ssh"],
        files=[FileWrite.of(SSHD_DROP_IN, drop_in)],
    )


def check_hub_database_local(settings: Settings, hub: HostView) -> Steps:
    """The hub's SQLite database is on the hub's own disk (SQLite on NFS locks badly)."""
    fstype = hub.probe(filesystem_command(settings.hub_data_dir)).stdout.strip()
    if fstype.startswith("fuse") or fstype in NETWORK_FILESYSTEMS:
        raise SwarmhubError(
            f"{hub.name}: the hub's database directory {settings.hub_data_dir} is on {fstype}: "
            "SQLite must stay on the hub's local disk: move HUB_DIR to a local file system"
        )
    yield Ok(f"hub database on the hub's own disk ({fstype})")


def ensure_exports(settings: Settings, storage: HostView) -> Steps:
    """The storage host exports the homes to every client of the env file (a node added
    later included) and runs the NFS server. Declared on the storage host, also when the
    homes mount step of a node asks for it."""
    wanted = exports_file(settings, clients(settings))
    yield from ensure_file(
        storage, EXPORTS_FILE, wanted, describe="homes export", then=("exportfs -ra",)
    )
    if storage.probe("systemctl is-active nfs-server").stdout.strip() == "active":
        yield Ok("nfs-server running")
    else:
        yield Change("started nfs-server", ["systemctl enable --now nfs-server"])


def ensure_homes_directory(settings: Settings, storage: HostView) -> Steps:
    """HOMES_DIR belongs to the homes' owner: the hub makes users' directories in it through
    the mount (as HOME_UID, squashed or by the SFTP server) when storage is apart."""
    path = shlex.quote(settings.homes_dir)
    owner = f"{settings.home_uid}:{settings.home_gid}"
    if storage.probe(f"stat -c '%a %u:%g' {path}").stdout.split() == ["755", owner]:
        yield Ok(f"directory {settings.homes_dir} ({owner})")
        return
    yield Change(
        f"directory {settings.homes_dir} (0755, {owner})",
        [f"mkdir -p {path} && chmod 0755 {path} && chown {owner} {path}"],
    )


def apply_storage(ctx: StepContext, storage: HostView) -> Steps:
    settings = ctx.settings
    backend = settings.homes_backend
    yield from ensure_packages(storage, PACKAGES[(backend, "storage")], f"homes over {backend}")
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
        yield Change(
            "removed the homes mount of a former client (this host keeps the homes now)",
            [
                f"systemctl disable {mount_unit_name(settings.homes_dir)} 2>/dev/null; "
                f"rm -f {unit} {DOCKER_DROP_IN} && systemctl daemon-reload"
            ],
        )
    yield from ensure_homes_directory(settings, storage)
    if backend == "nfs":
        yield from ensure_exports(settings, storage)
        return
    yield from ensure_root_login(storage)
    key = storage_key_path(settings)
    public = storage.read(f"{key}.pub")
    if public and storage.probe(key_pair_complete_command(key)).ok:
        yield Ok("homes key kept")
        line = authorized_key_line(settings, public)
        allowed = storage.probe(f"grep -qxF {shlex.quote(line)} /root/.ssh/authorized_keys").ok
    else:
        # A new key is in no authorized_keys yet: its line follows, made from it on the host.
        yield Change("generated the homes key (sshfs)", [keygen_command(key, KEY_COMMENT)])
        allowed = False
    if allowed:
        yield Ok("homes key allowed (SFTP in the homes only)")
    else:
        yield Change(
            "root's authorized_keys: the homes key, SFTP only",
            [authorize_command(settings, f"{key}.pub")],
        )


def client_files(ctx: StepContext) -> tuple[str, str] | None:
    """(private key, known_hosts) for the sshfs clients, read once from the storage host;
    None while the storage host has no key yet (plan mode, before homes.storage)."""

    def read() -> tuple[str, str] | None:
        settings = ctx.settings
        storage = ctx.view(settings.storage_name)
        key = storage.read(storage_key_path(settings))
        host_key = storage.read("/etc/ssh/ssh_host_ed25519_key.pub")
        if not key or not host_key:
            return None
        return key, known_hosts_line(settings.storage_name, settings.ssh_port, host_key)

    return ctx.remember("homes_client_files", read)


def apply_mount(ctx: StepContext, client: HostView) -> Steps:
    settings = ctx.settings
    if "hub" in client.roles:
        yield from check_hub_database_local(settings, client)
    if client.name == settings.storage_name:
        yield Ok(f"homes are local here ({settings.homes_dir})")
        return
    backend = settings.homes_backend
    yield from ensure_packages(client, PACKAGES[(backend, "client")], f"homes over {backend}")
    files: list[FileWrite] = []
    if backend == "nfs":
        # nodes.add runs this alone: the export must name the new node (declared there).
        storage = ctx.view(settings.storage_name)
        wanted = exports_file(settings, clients(settings))
        if file_differs(storage, EXPORTS_FILE, wanted, "0644", "root"):
            yield Change(
                f"homes export names {client.name}",
                ["exportfs -ra"],
                files=[FileWrite.of(EXPORTS_FILE, wanted)],
                host=storage.name,
            )
    else:
        found = client_files(ctx)
        if found is None and not ctx.changes_pending:
            raise SwarmhubError(
                f"{settings.storage_name}: the homes key is missing: run homes.setup (the "
                "storage host's part) first"
            )
        if found is None:
            yield Later("the homes key and the storage host's key: read once homes.storage ran")
        else:
            key, known_hosts = found
            if file_differs(client, CLIENT_KEY, key, "0600", "root"):
                files.append(FileWrite.of(CLIENT_KEY, key, mode="0600"))
            if file_differs(client, CLIENT_KNOWN_HOSTS, known_hosts, "0644", "root"):
                files.append(FileWrite.of(CLIENT_KNOWN_HOSTS, known_hosts))
    unit = mount_unit_name(settings.homes_dir)
    for path, content in (
        (f"/etc/systemd/system/{unit}", mount_unit(settings)),
        (DOCKER_DROP_IN, docker_after_mount(settings)),
    ):
        if file_differs(client, path, content, "0644", "root"):
            files.append(FileWrite.of(path, content))
    # One round trip: the unit enabled at boot? then what is mounted there.
    state = client.probe(
        f"echo $(systemctl is-enabled {unit} 2>/dev/null); {mounted_command(settings.homes_dir)}"
    ).stdout.split("\n", 1)
    enabled = state[0].strip() == "enabled"
    found_mount = state[1].split() if len(state) > 1 else []
    if not files and found_mount == expected_mount(settings) and enabled:
        yield Ok(f"homes mounted from {settings.storage_name} ({backend})")
        return
    start = "restart" if found_mount else "start"
    described = ", ".join(f.path.rsplit("/", 1)[-1] for f in files)
    yield Change(
        f"homes mounted from {settings.storage_name} at {settings.homes_dir} ({backend})"
        + (f": wrote {described}" if described else ""),
        [
            f"mkdir -p {shlex.quote(settings.homes_dir)} && systemctl daemon-reload && "
            f"systemctl enable {unit} && systemctl {start} {unit}",
            f"test \"$({mounted_command(settings.homes_dir)} | awk '{{print $1, $2}}')\" = "
            f"{shlex.quote(' '.join(expected_mount(settings)))} || {{ echo '{settings.homes_dir} "
            f"is not mounted from {settings.storage_name} after starting {unit}: see "
            f"journalctl -u {unit}' >&2; exit 1; }}",
        ],
        files=files,
        # A mount started again under running servers leaves their bind mounts stale.
        restarts="the homes mount" if found_mount else "",
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
    on_node_add="node",
    restarts=True,
)


def usage(ctx: StepContext, storage: HostView) -> Steps:
    """The bytes each home uses (a probe: `du` on the storage host), as usage_command prints."""
    result = storage.probe(usage_command(ctx.settings))
    if result.failed:
        raise SwarmhubError(
            f"{storage.name}: cannot read the homes' sizes in {ctx.settings.homes_dir}: "
            f"{(result.stderr.strip() or 'exit ' + str(result.exited)).splitlines()[-1]}"
        )
    yield from ()
    return result.stdout


USAGE = Step(
    name="homes.usage",
    roles=frozenset({"storage"}),
    apply=usage,
    summary="each home's size on the storage host",
)

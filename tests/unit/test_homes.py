"""Homes and backups: settings, command builders and rendered files, without SSH."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.runbook.session import step_hosts
from swarmhub.steps import backup, homes, hub

ENV = """\
HUB_HOST=hub
NODE_HOSTS=node-1,node-2
PROXY_HOST=proxy
AUTHENTICATOR=native
"""


def load(tmp_path: Path, extra: str = "") -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV + extra)
    return settings.load(str(path))


@pytest.fixture
def nfs(tmp_path: Path) -> settings.Settings:
    return load(tmp_path)


@pytest.fixture
def sshfs(tmp_path: Path) -> settings.Settings:
    return load(tmp_path, "HOMES_BACKEND=sshfs\nSSH_PORT=2222\n")


# --- settings ---


def test_homes_default_to_nfs_on_the_hub(nfs) -> None:
    assert nfs.homes_backend == "nfs"
    assert nfs.storage_name == "hub"
    assert nfs.role_of("hub") == ("hub", "storage")
    assert (nfs.homes_dir, nfs.home_uid, nfs.home_gid) == ("/srv/swarmhub/homes", 1000, 100)
    assert nfs.backup_dir == "/var/backups/swarmhub"
    assert nfs.backup_schedule == "daily" and nfs.backup_target == ""
    assert (nfs.backup_keep_hourly, nfs.backup_keep_daily, nfs.backup_keep_weekly) == (24, 14, 8)


def test_a_separate_storage_host_gets_the_storage_role(tmp_path: Path) -> None:
    loaded = load(tmp_path, "STORAGE_HOST=files\nBACKUP_TARGET=sftp://vault/srv/restic\n")
    assert loaded.role_of("files") == ("storage",)
    assert loaded.role_of("hub") == ("hub",)
    assert step_hosts(loaded, homes.STORAGE) == ["files"]
    assert homes.clients(loaded) == ["hub", "node-1", "node-2"]


def test_a_node_cannot_be_the_storage_host(tmp_path: Path) -> None:
    with pytest.raises(SwarmhubError, match="node-1 is both node and storage"):
        load(tmp_path, "STORAGE_HOST=node-1\n")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("HOMES_DIR=/srv/swarmhub\n", "overlaps the hub's database"),
        ("HOMES_DIR=/srv/swarmhub/data/homes\n", "overlaps the hub's database"),
        ("BACKUP_DIR=/srv/swarmhub/homes/backups\n", "BACKUP_DIR=.* overlaps HOMES_DIR"),
        ("HOMES_BACKEND=smb\n", "is not one of nfs, sshfs"),
        ("HOMES_DIR=homes\n", "must be an absolute path"),
        ("BACKUP_SCHEDULE=daily; rm -rf /\n", "is not a systemd calendar"),
        ("HOME_SOFT_LIMIT=lots\n", "is not a size"),
    ],
)
def test_bad_homes_settings_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(SwarmhubError, match=message):
        load(tmp_path, extra)


# --- names ---


def test_mount_unit_names_follow_systemd_escape() -> None:
    assert homes.mount_unit_name("/srv/swarmhub/homes") == "srv-swarmhub-homes.mount"
    assert homes.mount_unit_name("/srv/course-homes") == "srv-course\\x2dhomes.mount"


# --- sshfs ---


def test_the_storage_key_may_only_run_sftp_as_the_homes_owner(sshfs) -> None:
    line = homes.authorized_key_line(sshfs, "ssh-ed25519 AAAAC3Nza root@hub\n")
    assert line == (
        'restrict,command="setpriv --reuid=1000 --regid=100 --clear-groups '
        '/usr/lib/openssh/sftp-server -d /srv/swarmhub/homes" ssh-ed25519 AAAAC3Nza '
        "swarmhub-homes"
    )
    command = homes.authorize_command(sshfs, "/k.pub")
    assert "sed -i '/ swarmhub-homes$/d' /root/.ssh/authorized_keys" in command
    assert command.endswith(">> /root/.ssh/authorized_keys")


def test_the_line_made_on_the_host_is_the_line_checked_for(sshfs, tmp_path: Path) -> None:
    # The authorize command builds the line from the public key file on the storage host;
    # the next run checks for authorized_key_line: they must be the same line.
    public = tmp_path / "k.pub"
    public.write_text("ssh-ed25519 AAAAC3Nza root@hub\n")
    keys = tmp_path / "authorized_keys"
    command = homes.authorize_command(sshfs, str(public)).replace("/root/.ssh", str(tmp_path))
    subprocess.run(["sh", "-c", command], check=True)
    line = homes.authorized_key_line(sshfs, public.read_text())
    assert keys.read_text() == line + "\n"


def test_the_storage_key_is_made_on_the_storage_host_without_a_passphrase(sshfs) -> None:
    path = homes.storage_key_path(sshfs)
    assert path == "/srv/swarmhub/secrets/homes_ed25519"
    command = homes.keygen_command(path, homes.KEY_COMMENT)
    assert "ssh-keygen -q -t ed25519 -N '' -C swarmhub-homes" in command
    # made beside it, the .pub renamed last: a pair cut short is made again
    assert command.endswith(f"mv -f {path}.swarmhub-new.pub {path}.pub")


def test_where_sshd_refuses_root_only_forced_commands_are_let_in() -> None:
    drop_in = homes.sshd_root_drop_in()
    assert "Match User root\n    PermitRootLogin forced-commands-only\n" in drop_in
    assert homes.SSHD_DROP_IN.startswith("/etc/ssh/sshd_config.d/")
    assert "sshd -T -C user=root" in homes.root_login_command()


def test_known_hosts_names_the_storage_host_as_mounted() -> None:
    key = "ssh-ed25519 AAAAhostkey root@hub\n"
    assert homes.known_hosts_line("hub", 22, key) == "hub ssh-ed25519 AAAAhostkey\n"
    assert homes.known_hosts_line("hub", 2222, key) == "[hub]:2222 ssh-ed25519 AAAAhostkey\n"


def test_sshfs_mount_unit(sshfs) -> None:
    unit = homes.mount_unit(sshfs)
    assert "What=root@hub:/srv/swarmhub/homes\n" in unit
    assert "Where=/srv/swarmhub/homes\n" in unit
    assert "Type=fuse.sshfs\n" in unit
    options = next(line for line in unit.splitlines() if line.startswith("Options="))
    for option in (
        "allow_other",
        "default_permissions",
        "reconnect",
        "ServerAliveInterval=15",
        "port=2222",
        "IdentityFile=/etc/swarmhub/homes/storage_key",
        "UserKnownHostsFile=/etc/swarmhub/homes/known_hosts",
        "StrictHostKeyChecking=yes",
        "dir_cache=no",
        "attr_timeout=1",
    ):
        assert option in options.removeprefix("Options=").split(",")
    assert homes.expected_mount(sshfs) == ["fuse.sshfs", "root@hub:/srv/swarmhub/homes"]
    assert homes.PACKAGES[("sshfs", "client")] == ["sshfs"]


# --- nfs (this machine's kernel has no NFS: proven here only) ---


def test_nfs_export_squashes_every_access_to_the_homes_owner(nfs) -> None:
    exports = homes.exports_file(nfs, homes.clients(nfs))
    options = "rw,sync,no_subtree_check,all_squash,anonuid=1000,anongid=100"
    assert f"/srv/swarmhub/homes node-1({options}) node-2({options})\n" in exports
    assert "no_root_squash" not in exports


def test_nfs_mount_unit(nfs) -> None:
    unit = homes.mount_unit(nfs)
    assert "What=hub:/srv/swarmhub/homes\n" in unit
    assert "Type=nfs\n" in unit
    assert "lookupcache=positive" in unit and "hard" in unit
    assert homes.expected_mount(nfs) == ["nfs4", "hub:/srv/swarmhub/homes"]
    assert homes.PACKAGES[("nfs", "storage")] == ["nfs-kernel-server"]
    assert homes.PACKAGES[("nfs", "client")] == ["nfs-common"]


def test_docker_waits_for_the_homes_mount(nfs) -> None:
    assert "After=srv-swarmhub-homes.mount" in homes.docker_after_mount(nfs)


# --- usage ---


def test_usage_is_parsed_largest_first() -> None:
    output = "4096\t./bob\n3221225472\t./alice\nnoise\n"
    assert homes.parse_usage(output) == [("alice", 3221225472), ("bob", 4096)]


def test_usage_command_sizes_each_home(nfs) -> None:
    command = homes.usage_command(nfs)
    assert command.startswith("cd /srv/swarmhub/homes && find . -mindepth 1 -maxdepth 1")
    assert "du -s --block-size=1" in command


# --- the hub ---


def test_the_hub_mounts_the_homes_and_keeps_its_database_local(nfs) -> None:
    compose = hub.render_compose(nfs)
    assert "- /srv/swarmhub/homes:/srv/swarmhub/homes\n" in compose
    assert "- /srv/swarmhub/data:/srv/jupyterhub/data" in compose
    env = hub.hub_settings_env(nfs)
    assert "HOMES_DIR=/srv/swarmhub/homes\nHOME_UID=1000\nHOME_GID=100\n" in env
    config = hub.hub_config()
    assert 'c.SwarmSpawner.volumes = {HOMES_DIR + "/{username}": "/home/jovyan"}' in config
    assert "c.Spawner.pre_spawn_hook = make_home" in config


def test_the_database_check_looks_at_the_nearest_existing_directory() -> None:
    command = homes.filesystem_command("/srv/swarmhub/data")
    assert command.startswith('p=/srv/swarmhub/data; while [ ! -e "$p" ]')
    assert "findmnt -n -o FSTYPE --target" in command


# --- backups ---


def test_backup_script_is_rendered_from_the_env(tmp_path: Path) -> None:
    loaded = load(tmp_path, "BACKUP_DIR=/backups\nBACKUP_KEEP_DAILY=7\n")
    script = backup.render_script(loaded)
    assert script.startswith("#!/bin/bash\n")
    for line in (
        "HOMES_DIR=/srv/swarmhub/homes",
        "REPOSITORY=/backups/restic",
        "DB=/srv/swarmhub/data/jupyterhub.sqlite",
    ):
        assert f"\n{line}\n" in script
    assert "--keep-daily 7" in script and "sftp.command" not in script
    assert "\".backup '$STAGE/jupyterhub.sqlite'\"" in script


def test_backup_timer_follows_the_schedule(tmp_path: Path) -> None:
    loaded = load(tmp_path, "BACKUP_SCHEDULE=*-*-* 03:00\n")
    assert "OnCalendar=*-*-* 03:00\n" in backup.timer_unit(loaded)
    assert "ExecStart=/usr/local/sbin/swarmhub-backup run\n" in backup.service_unit()
    assert backup.calendar_check_command("*-*-* 03:00") == (
        "systemd-analyze calendar '*-*-* 03:00' >/dev/null"
    )


def test_restore_commands() -> None:
    assert backup.restore_user_command("alice") == (
        "/usr/local/sbin/swarmhub-backup restore-user --user alice"
    )
    assert backup.restore_user_command("Bob", "work/hw 1.ipynb", "20261126T013000Z") == (
        "/usr/local/sbin/swarmhub-backup restore-user --user -42ob "
        "--path 'work/hw 1.ipynb' --at 20261126T013000Z"
    )
    assert backup.restore_hub_db_command() == "/usr/local/sbin/swarmhub-backup restore-hub-db"
    assert backup.restore_hub_db_command("20261126T013000Z").endswith("--at 20261126T013000Z")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: backup.restore_user_command("al ice"), "not a user name"),
        (lambda: backup.restore_user_command("alice", "../bob"), "inside the home"),
        (lambda: backup.restore_user_command("alice", "/etc/passwd"), "inside the home"),
        (lambda: backup.restore_user_command("alice", at="yesterday"), "20261126T013000Z"),
        (lambda: backup.restore_hub_db_command("latest; reboot"), "backup.list"),
    ],
)
def test_bad_restore_arguments_are_refused(call, message: str) -> None:
    with pytest.raises(SwarmhubError, match=message):
        call()


def test_diagnose_collects_the_homes_and_backup_files(nfs, tmp_path: Path) -> None:
    from swarmhub.observe.diagnose import config_paths

    hub_files = config_paths(nfs, ("hub", "storage"))
    assert homes.EXPORTS_FILE in hub_files and backup.SCRIPT in hub_files
    assert "/etc/systemd/system/srv-swarmhub-homes.mount" in config_paths(nfs, ("node",))
    apart = load(
        tmp_path, "STORAGE_HOST=files\nHOMES_BACKEND=sshfs\nBACKUP_TARGET=sftp://vault/srv/r\n"
    )
    assert "/etc/systemd/system/srv-swarmhub-homes.mount" in config_paths(apart, ("hub",))
    assert not any("secrets" in path for path in config_paths(apart, ("storage",)))
    assert backup.SCRIPT in config_paths(apart, ("storage",))

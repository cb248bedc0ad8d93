"""The sandbox's ssh_config and known_hosts, and the checks on host keys."""

from pathlib import Path

import paramiko
import pytest

from swarmhub import ssh


def host(name: str = "sam-hub", port: int = 22) -> ssh.SshHost:
    return ssh.SshHost(name, "10.231.0.10", "admin", port, Path("/k/id"), "ssh-ed25519 AAAA")


def test_ssh_config_names_key_known_hosts_and_strict_checking() -> None:
    text = ssh.render_ssh_config([host()], Path("/k/known_hosts"), "header")
    assert "Host sam-hub\n    HostName 10.231.0.10\n    User admin\n" in text
    assert "UserKnownHostsFile /k/known_hosts" in text
    assert "StrictHostKeyChecking yes" in text


def test_known_hosts_lists_name_and_address() -> None:
    assert ssh.render_known_hosts([host()]) == "sam-hub,10.231.0.10 ssh-ed25519 AAAA\n"
    assert ssh.render_known_hosts([host(port=2222)]).startswith(
        "[sam-hub]:2222,[10.231.0.10]:2222 "
    )


def test_keypair_is_made_once_with_private_permissions(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "id_ed25519"
    assert ssh.ensure_keypair(key, "test")
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.with_name("id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    before = key.read_bytes()
    assert not ssh.ensure_keypair(key, "test")
    assert key.read_bytes() == before
    paramiko.Ed25519Key.from_private_key_file(str(key))


def test_write_if_changed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert ssh.write_if_changed(path, "a")
    assert not ssh.write_if_changed(path, "a")
    assert ssh.write_if_changed(path, "b")


def test_connection_refuses_unknown_host_keys(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host x\n    HostName 127.0.0.1\n    UserKnownHostsFile {tmp_path}/kh\n")
    conn = ssh.connect("x", ssh_config=config)
    assert isinstance(conn.client._policy, paramiko.RejectPolicy)


def test_connection_follows_strict_host_key_checking_no(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host x\n    StrictHostKeyChecking no\n")
    conn = ssh.connect("x", ssh_config=config)
    assert not isinstance(conn.client._policy, paramiko.RejectPolicy)


@pytest.mark.parametrize("name", ["sam-hub", "10.231.0.10"])
def test_connection_loads_the_recorded_keys(tmp_path: Path, name: str) -> None:
    ssh.ensure_keypair(tmp_path / "hostkey", "host")
    public = " ".join((tmp_path / "hostkey.pub").read_text().split()[:2])
    known = tmp_path / "kh"
    known.write_text(f"sam-hub,10.231.0.10 {public}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {name}\n    UserKnownHostsFile {known}\n")
    conn = ssh.connect(name, ssh_config=config)
    assert conn.client._system_host_keys.lookup(name) is not None

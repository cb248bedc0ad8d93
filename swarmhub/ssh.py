"""SSH to the hosts: keys, known host keys, the ssh_config, and connections that check keys.

Fabric 3 accepts any host key it has not seen (paramiko's ``AutoAddPolicy``). swarmhub does
not: a connection loads the known_hosts files its ssh_config names and refuses a host whose
key is unknown or changed, unless that host's ssh_config says ``StrictHostKeyChecking no``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fabric
import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmhub.errors import SwarmhubError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def ensure_keypair(private_key: Path, comment: str) -> bool:
    """Create an Ed25519 key pair at ``private_key`` (and ``.pub``) unless it exists.

    Returns True when a key was created.
    """
    public_key = private_key.with_name(private_key.name + ".pub")
    if private_key.exists() and public_key.exists():
        return False
    private_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_bytes)
    public_key.write_text(f"{public_bytes.decode()} {comment}\n")
    return True


@dataclass(frozen=True)
class SshHost:
    """One entry of a generated ssh_config."""

    name: str
    address: str
    user: str
    port: int
    identity_file: Path
    host_key: str  # "ssh-ed25519 AAAA..."


def render_ssh_config(hosts: Iterable[SshHost], known_hosts: Path, header: str) -> str:
    """An ssh_config naming each host, for OpenSSH and Fabric alike."""
    lines = [f"# {header}", ""]
    for host in hosts:
        lines += [
            f"Host {host.name}",
            f"    HostName {host.address}",
            f"    User {host.user}",
            f"    Port {host.port}",
            f"    IdentityFile {host.identity_file}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {known_hosts}",
            "    StrictHostKeyChecking yes",
            "",
        ]
    return "\n".join(lines)


def render_known_hosts(hosts: Iterable[SshHost]) -> str:
    """known_hosts lines for each host, under its name and its address."""
    lines = []
    for host in hosts:
        names = [host.name, host.address]
        if host.port != 22:
            names = [f"[{name}]:{host.port}" for name in names]
        lines.append(f"{','.join(names)} {host.host_key}")
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """Write ``content`` to ``path`` unless it already holds it. True when written."""
    if path.exists() and path.read_text() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(content)
    os.replace(tmp, path)
    return True


class VerifiedConnection(fabric.Connection):
    """A Fabric connection that checks the host key against known_hosts.

    It loads the files named by the host's ``UserKnownHostsFile`` (``~/.ssh/known_hosts``
    when none is named) and refuses unknown keys unless ``StrictHostKeyChecking no``. Errors
    on connecting become one line that says what to do.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        strict = str(self.ssh_config.get("stricthostkeychecking", "yes")).lower()
        files = self.ssh_config.get("userknownhostsfile", DEFAULT_KNOWN_HOSTS)
        if isinstance(files, str):
            files = files.split()
        for name in files:
            path = Path(os.path.expanduser(name))
            if path.is_file():
                self.client.load_system_host_keys(str(path))
        if strict not in ("no", "off"):
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.known_hosts_files = files

    def open(self) -> Any:
        try:
            return super().open()
        except paramiko.BadHostKeyException:
            raise SwarmhubError(
                f"{self.original_host}: its host key does not match the known one "
                f"({', '.join(self.known_hosts_files)}): if the host was rebuilt, remove its "
                "old key (ssh-keygen -R NAME) and check the new one; for the sandbox run "
                "invoke sandbox.up"
            ) from None
        except paramiko.AuthenticationException:
            raise SwarmhubError(
                f"{self.original_host}: SSH refused the key for user {self.user}: check SSH_KEY "
                "and SSH_USER in the env file (for the sandbox: invoke sandbox.up)"
            ) from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" in str(error):
                raise SwarmhubError(
                    f"{self.original_host}: its host key is not known "
                    f"({', '.join(self.known_hosts_files)}): add it after checking it "
                    "(ssh-keyscan), or for the sandbox run invoke sandbox.up"
                ) from None
            raise SwarmhubError(f"{self.original_host}: SSH failed: {error}") from None
        except (TimeoutError, socket.gaierror, OSError) as error:
            raise SwarmhubError(
                f"{self.original_host}: cannot reach it over SSH ({self.host}:{self.port}: "
                f"{getattr(error, 'strerror', None) or error}): check that the host is up and "
                "its name in the env file (for the sandbox: invoke sandbox.status)"
            ) from None


def connect(
    host: str,
    *,
    ssh_config: Path | None = None,
    user: str | None = None,
    port: int | None = None,
    key_file: Path | None = None,
    connect_timeout: int = 10,
) -> VerifiedConnection:
    """A checked connection to ``host``, named as in ``ssh_config`` (or ~/.ssh/config)."""
    config = fabric.Config(runtime_ssh_path=str(ssh_config) if ssh_config else None)
    config.timeouts.connect = connect_timeout
    connect_kwargs = {"key_filename": [str(key_file)]} if key_file else {}
    return VerifiedConnection(
        host, user=user, port=port, config=config, connect_kwargs=connect_kwargs
    )

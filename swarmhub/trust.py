"""hosts.trust: the first contact with a host — its SSH host keys shown, and added to
known_hosts only after a yes. Never a silent accept: a changed key is refused."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import paramiko

from swarmhub import ssh
from swarmhub.errors import SwarmhubError
from swarmhub.settings import Settings

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def scan_keys(address: str, port: int, timeout: float = 10) -> list[paramiko.PKey]:
    """The host's keys, one SSH handshake per key type (nothing is authenticated)."""
    keys = []
    for key_type in KEY_TYPES:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except OSError as error:
            raise SwarmhubError(
                f"cannot reach {address}:{port} over SSH ({error}): check the host is up"
            ) from None
        transport = paramiko.Transport(sock)
        transport.get_security_options().key_types = [key_type]
        try:
            transport.start_client(timeout=timeout)
            keys.append(transport.get_remote_server_key())
        except paramiko.SSHException:
            pass  # the host has no key of this type
        finally:
            transport.close()
    return keys


def known_name(name: str, port: int) -> str:
    return name if port == 22 else f"[{name}]:{port}"


def compare(
    known: paramiko.HostKeys, names: list[str], keys: list[paramiko.PKey]
) -> tuple[list[tuple[str, paramiko.PKey]], list[tuple[str, paramiko.PKey]]]:
    """(new, changed): the (name, key) pairs known_hosts lacks, and those it knows with
    another key of the same type."""
    new, changed = [], []
    for name in names:
        entries = known.lookup(name) or {}
        for key in keys:
            old = entries.get(key.get_name())
            if old is None:
                new.append((name, key))
            elif old != key:
                changed.append((name, key))
    return new, changed


def _names_match(pattern: str, names: list[str]) -> bool:
    """A known_hosts host field (plain or hashed, |1|salt|hash) names one of ``names``."""
    for field in pattern.split(","):
        for name in names:
            if field.startswith("|1|"):
                if paramiko.HostKeys.hash_host(name, field) == field:
                    return True
            elif field == name:
                return True
    return False


def forget(path: Path, names: list[str]) -> None:
    """Remove every key known for ``names`` from ``path`` (as `ssh-keygen -R` does); the
    other lines stay as they are."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [
        line
        for line in lines
        if line.startswith("#") or not line.split() or not _names_match(line.split()[0], names)
    ]
    path.write_text("".join(kept))


def trust(
    settings: Settings, host: str, confirm: Callable[[str], bool], *, replace: bool = False
) -> str:
    """Show ``host``'s keys and add them to its known_hosts file once ``confirm`` says yes.
    A key that differs from the known one is refused, unless ``replace`` (recover.hub: the
    host was rebuilt): then the new keys are shown and, after a yes, replace the old ones."""
    if host not in settings.hosts:
        raise SwarmhubError(
            f"{host} is not a host of {settings.source.name} (hosts: "
            f"{', '.join(settings.hosts)}): add it to the env file first"
        )
    connection = ssh.connect(host, ssh_config=settings.ssh_config, port=settings.ssh_port)
    files = [Path(os.path.expanduser(f)) for f in connection.known_hosts_files]
    known = paramiko.HostKeys()
    for path in files:
        if path.is_file():
            known.load(str(path))
    # Under the name and the address: SSH checks the key under the HostName it connects to.
    names = list(dict.fromkeys(known_name(n, connection.port) for n in (host, connection.host)))
    keys = scan_keys(connection.host, connection.port)
    if not keys:
        raise SwarmhubError(f"{host}: offered no host key of {', '.join(KEY_TYPES)}")
    new, changed = compare(known, names, keys)
    if changed and not replace:
        name, key = changed[0]
        raise SwarmhubError(
            f"{host}: its {key.get_name()} key differs from the one known for {name} "
            f"({fingerprint(key)}): if the host was rebuilt, check the new key on its "
            f"console, remove the old one (ssh-keygen -R {name}), then run hosts.trust"
        )
    listing = "\n".join(f"  {key.get_name()} {fingerprint(key)}" for key in keys)
    trusted = len(new) < len(names) * len(keys)  # a key SSH checks is known already
    if not changed and (not new or (replace and trusted)):
        return f"{host} ({connection.host}) is already trusted:\n{listing}"
    question = (
        f"{host} ({connection.host}:{connection.port}) offers these host keys:\n{listing}\n"
        + ("They differ from the keys known for it (a rebuilt host).\n" if changed else "")
        + "Compare them with the host's console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub).\n"
        + (f"Replace the old ones in {files[0]}?" if changed else f"Add them to {files[0]}?")
    )
    if not confirm(question):
        raise SwarmhubError(
            f"{host}: not trusted: nothing was added (check the fingerprints, then answer yes "
            "or pass --yes)"
        )
    files[0].parent.mkdir(parents=True, exist_ok=True)
    if changed:
        for path in files:
            if path.is_file():
                forget(path, names)
        new = [(name, key) for name in names for key in keys]
    with open(files[0], "a", encoding="utf-8") as out:
        os.chmod(files[0], 0o600)
        for name, key in new:
            out.write(f"{name} {key.get_name()} {key.get_base64()}\n")
    verb = "replaced the old keys with" if changed else "added"
    return f"{host}: {verb} {len(keys)} host key(s) under {' and '.join(names)} in {files[0]}"


def ask(question: str) -> bool:
    """A yes from a person at a terminal; no terminal means no."""
    print(question)
    if not sys.stdin.isatty():
        print("(no terminal to answer on: run with --yes once you have checked them)")
        return False
    return input("Trust them? [y/N] ").strip().lower() in ("y", "yes")

"""The backup secrets the provisioner keeps: the restic repository's password and the SFTP key
pair of the hub's backups, made (0600) the first time a deploy needs them, in
PROJECT_ROOT/.swarmhub/<HUB_HOST>/ (git ignores it). The repository is unreadable without the
password: this copy (and one offline) is what recovers a lost hub.

Named after the hub, not the env file: one cluster may be reached through several env files
(a copy with one more node, a staff member's own), and each must find the same password.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from swarmhub import ssh
from swarmhub.settings import PROJECT_ROOT, Settings


@dataclass(frozen=True)
class LocalSecrets:
    """The repository's password and the SFTP key pair, as the provisioner keeps them."""

    directory: Path
    password: str
    private_key: str
    public_key: str


def secrets_dir(settings: Settings) -> Path:
    """Where the provisioner keeps the backup secrets of this cluster's hub (never committed)."""
    return PROJECT_ROOT / ".swarmhub" / settings.hub_host


def local_secrets(settings: Settings) -> LocalSecrets:
    """The provisioner's copy of the backup secrets, made (0600) the first time."""
    directory = secrets_dir(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    password_file = directory / "restic-password"
    if not password_file.exists():
        # Not the `secrets` module: invoke puts tasks/ (which has a secrets.py) on sys.path.
        password = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        new = password_file.with_name(password_file.name + ".new")
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        new.rename(password_file)  # never an empty password file that looks made
    key_file = directory / "backup-sftp-key"
    ssh.ensure_keypair(key_file, comment=f"swarmhub backups of {settings.hub_host}")
    return LocalSecrets(
        directory=directory,
        password=password_file.read_text(),
        private_key=key_file.read_text(),
        public_key=key_file.with_name(key_file.name + ".pub").read_text().strip(),
    )

"""How ``fab`` reaches the hosts: the env file's ssh_config, and host keys that are checked."""

from __future__ import annotations

from pathlib import Path

import fabric.tasks

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.ssh import VerifiedConnection


def env_ssh_config() -> Path | None:
    """The ``SSH_CONFIG`` of the active env file, when it names a file that exists.

    A broken env file is not reported here (``fab --list`` must still work): the tasks
    report it when they validate the env file.
    """
    try:
        raw = env_settings.read_env_file(env_settings.env_path())
        path = env_settings.SCHEMA["SSH_CONFIG"].parse(raw.get("SSH_CONFIG", ""))
    except (SwarmhubError, ValueError):
        return None
    return path if path is not None and path.is_file() else None


def use_verified_connections_in_fab() -> None:
    """Make ``fab -H HOST`` connect with `VerifiedConnection` (Fabric's own accepts any key)."""
    fabric.tasks.Connection = VerifiedConnection  # type: ignore[attr-defined]

"""Commands on this machine (the provisioner): the Docker CLI above all."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from swarmhub.errors import SwarmhubError


def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capturing its output as text.

    With ``check`` a non-zero exit raises `SwarmhubError` naming ``what`` was being done
    and the command's last line of error output.
    """
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(list(argv), input=data, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise SwarmhubError(
            f"{argv[0]} is not installed on this machine: run scripts/setup"
        ) from None
    result = subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and result.returncode != 0:
        raise SwarmhubError(f"{what or ' '.join(argv[:3])} failed: {last_line(result.stderr)}")
    return result


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (or a note that there was none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def docker(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the Docker CLI."""
    return run(["docker", *args], **kwargs)  # type: ignore[arg-type]


def check_docker_engine() -> str:
    """Make sure a Docker engine answers; return its version, or raise one clear line."""
    try:
        proc = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        raise SwarmhubError(
            "Docker is not installed on this machine: run scripts/setup "
            "(it installs Debian's docker.io), or install Docker Engine"
        ) from None
    except subprocess.TimeoutExpired:
        raise SwarmhubError(
            "the Docker engine does not answer within 30 s: restart it (sudo systemctl restart "
            "docker, or scripts/setup)"
        ) from None
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    error = proc.stderr.lower()
    if "permission denied" in error:
        raise SwarmhubError(
            "no permission on the Docker socket (/var/run/docker.sock): add yourself to the "
            "docker group (sudo usermod -aG docker $USER) and log in again, or run as root"
        )
    raise SwarmhubError(
        "the Docker engine is not running: start it (sudo systemctl start docker), or run "
        f"scripts/setup ({last_line(proc.stderr)})"
    )

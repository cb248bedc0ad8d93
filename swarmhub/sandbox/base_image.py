"""The VM image of the sandbox: a Debian rootfs made here with debootstrap, built once, cached.

No registry is needed: debootstrap fetches Debian packages, ``docker import`` turns the rootfs
into a base image, and ``swarmhub/sandbox/vm/Dockerfile`` adds the VM's user, sshd settings
and PID 1. Where a registry is reachable, ``SANDBOX_BASE_IMAGE=debian:trixie`` starts from
the official image instead. Both images are tagged by a hash of what they are made from, so
a second run finds them and a change to the inputs builds anew.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from swarmhub import local
from swarmhub.errors import SwarmhubError
from swarmhub.settings import Settings

VM_DIR = Path(__file__).resolve().parent / "vm"
ADMIN_USER_ARG = "ADMIN_USER"

# What a fresh cloud VM of Debian has, and no more: systemd, sshd, sudo, Python (for
# tools), curl, CA certificates. No Docker: installing it is the runbook's job.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "ca-certificates",
    "iproute2",
    "iputils-ping",
    "procps",
    "python3",
    "curl",
    "less",
)


def _digest(*parts: str | bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:12]


def rootfs_tag(suite: str) -> str:
    """The tag of the imported debootstrap rootfs for ``suite``."""
    return f"swarmhub/sandbox-rootfs:{suite}-{_digest(suite, *PACKAGES)}"


def vm_tag(settings: Settings) -> str:
    """The tag of the VM image: changes whenever its base or any file under vm/ changes."""
    base = settings.sandbox_base_image or rootfs_tag(settings.sandbox_suite)
    files = [p.read_bytes() for p in sorted(VM_DIR.iterdir()) if p.is_file()]
    return (
        f"swarmhub/sandbox-vm:{settings.sandbox_suite}-{_digest(base, settings.ssh_user, *files)}"
    )


def image_exists(tag: str) -> bool:
    return local.docker("image", "inspect", tag, check=False).returncode == 0


def debootstrap_command(suite: str, target: Path, mirror: str) -> list[str]:
    """The debootstrap call that makes a minimal rootfs with the VM's packages."""
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        suite,
        str(target),
        mirror,
    ]


def _as_root(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return argv
    if shutil.which("sudo") is None:
        raise SwarmhubError("debootstrap needs root: run as root or install sudo")
    return ["sudo", "--non-interactive", *argv]


def build_rootfs_image(suite: str, mirror: str, log: Callable[[str], None]) -> str:
    """Debootstrap ``suite`` and import it as a Docker image, unless it is already there."""
    tag = rootfs_tag(suite)
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise SwarmhubError(
            "debootstrap is not installed: run scripts/setup (or apt-get install debootstrap), "
            "or set SANDBOX_BASE_IMAGE=debian:trixie where a registry is reachable"
        )
    log(f"building the VM base: debootstrap of Debian {suite} (about a minute, once)")
    workdir = Path(tempfile.mkdtemp(prefix="swarmhub-rootfs-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    try:
        proc = local.run(_as_root(debootstrap_command(suite, rootfs, mirror)), check=False)
        if proc.returncode != 0:
            raise SwarmhubError(
                f"debootstrap of {suite} from {mirror} failed: "
                f"{local.last_line(proc.stderr or proc.stdout)} (check SANDBOX_MIRROR and the "
                "network; the full log is in the rootfs's debootstrap/debootstrap.log)"
            )
        tar = subprocess.Popen(
            _as_root(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."]),
            stdout=subprocess.PIPE,
        )
        imported = subprocess.run(
            ["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True
        )
        tar.stdout.close()  # type: ignore[union-attr]
        if tar.wait() != 0 or imported.returncode != 0:
            raise SwarmhubError(f"docker import of the rootfs failed: {imported.stderr.strip()}")
    finally:
        subprocess.run(_as_root(["rm", "-rf", str(workdir)]), check=False)
    return tag


def ensure_vm_image(settings: Settings, log: Callable[[str], None]) -> str:
    """The VM image's tag, building the rootfs and the image only when they are missing."""
    tag = vm_tag(settings)
    if image_exists(tag):
        return tag
    base = settings.sandbox_base_image or build_rootfs_image(
        settings.sandbox_suite, settings.sandbox_mirror, log
    )
    log(f"building the VM image {tag}")
    proc = subprocess.run(
        [
            "docker",
            "build",
            "--quiet",
            f"--build-arg=BASE={base}",
            f"--build-arg={ADMIN_USER_ARG}={settings.ssh_user}",
            f"--build-arg=PACKAGES={' '.join(PACKAGES)}",
            f"--tag={tag}",
            str(VM_DIR),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if proc.returncode != 0:
        raise SwarmhubError(f"building the VM image failed: {local.last_line(proc.stderr)}")
    return tag


def main() -> int:
    """Build the VM image of the active env (SWARMHUB_ENV) if it is missing: scripts/test runs
    it once before its sandboxes come up side by side, so that they do not each build it."""
    from swarmhub.settings import load

    try:
        print(ensure_vm_image(load(), lambda line: print(f"sandbox: {line}", flush=True)))
    except SwarmhubError as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What converge.py relies on about Docker, checked on the local Docker engine (no sandbox, no
registry): a build cut short leaves no tag, and `docker import` tags a tar stream cut short at
a file boundary (why the debootstrap base is archived to a file before it is imported)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

NAME = f"swarmhub-converge-test-{uuid.uuid4().hex[:8]}"


def docker(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, **kwargs)


def has_image(ref: str) -> bool:
    return docker("image", "inspect", ref).returncode == 0


def rootfs_tar(binaries: dict[str, str]) -> bytes:
    """A tiny root file system from this machine's own binaries (name in /bin -> program)
    and the libraries they load, each at the path the loader looks for it."""
    files: dict[str, str] = {}  # path in the image -> file on this machine
    for name, program in binaries.items():
        path = shutil.which(program)
        assert path, program
        files[f"bin/{name}"] = path
        libraries = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for word in libraries.split():
            if word.startswith("/"):
                files[word.lstrip("/")] = word
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        archive.addfile(tmp)
        for inside, outside in sorted(files.items()):
            archive.add(os.path.realpath(outside), arcname=inside)
    return out.getvalue()


ROOTFS = {"sh": "dash", "sleep": "sleep"}


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    if not shutil.which("docker") or docker("info").returncode != 0:
        pytest.skip("needs a Docker engine")
    if not shutil.which("dash"):
        pytest.skip("needs dash for the test image's /bin/sh")
    ref = f"{NAME}/base:1"
    imported = subprocess.run(
        ["docker", "import", "-", ref], input=rootfs_tar(ROOTFS), capture_output=True
    )
    assert imported.returncode == 0, imported.stderr
    yield ref
    refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    mine = [r for r in refs if r.startswith(f"{NAME}/")]
    if mine:
        docker("rmi", "--force", *mine)


def test_a_build_cut_short_leaves_no_tag(base: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN sleep 30\nRUN sleep 0\n")
    ref = f"{NAME}/half:1"
    with open(tmp_path / "build.log", "w") as log:
        build = subprocess.Popen(
            ["docker", "build", "--tag", ref, str(tmp_path)],
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "Running in" not in (tmp_path / "build.log").read_text():
        assert time.monotonic() < deadline and build.poll() is None, (
            tmp_path / "build.log"
        ).read_text()
        time.sleep(0.2)
    build.send_signal(signal.SIGKILL)  # the builder's client gone: the provisioner rebooted
    build.wait()
    time.sleep(2)
    assert not has_image(ref)
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN sleep 0\n")
    done = docker("build", "--tag", ref, str(tmp_path), env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert has_image(ref)  # the tag comes with the finished build, at its end


def test_docker_import_tags_a_tar_stream_cut_at_a_file_boundary(base: str) -> None:
    whole = rootfs_tar(ROOTFS)
    with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
        members = archive.getmembers()
    cut = members[len(members) // 2].offset  # where a killed `tar` may stop writing
    ref = f"{NAME}/cut:1"
    imported = subprocess.run(
        ["docker", "import", "-", ref], input=whole[:cut], capture_output=True
    )
    assert imported.returncode == 0 and has_image(ref), imported.stderr

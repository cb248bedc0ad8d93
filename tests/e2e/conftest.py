"""One sandbox for the whole end-to-end session, brought up once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swarmhub.sandbox.plan import plan_vms
from swarmhub.settings import read_env_file, validate
from swarmhub.student import Student
from tests.cli import BIN, ROOT, docker, run

# The suite's own sandbox (tests/e2e/sandbox.env). SWARMHUB_E2E_ENV names another env file
# so that a new test file can run against a second sandbox beside it; the older test files
# still spell the t-* names out and run only against sandbox.env.
ENV_FILE = Path(
    os.environ.get("SWARMHUB_E2E_ENV") or Path(__file__).resolve().parent / "sandbox.env"
).resolve()
SETTINGS = validate(read_env_file(ENV_FILE), ENV_FILE)
HUB = SETTINGS.hub_host
PROXY = SETTINGS.proxy_host
NODE_LIST = list(SETTINGS.node_hosts)
VMS = [vm.name for vm in plan_vms(SETTINGS)]
ADDRESSES = {vm.name: vm.address for vm in plan_vms(SETTINGS)}


def container_ids(names: list[str]) -> dict[str, str]:
    return {name: docker("inspect", "--format", "{{.Id}}", name) for name in names}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Path]:
    """The test sandbox, up; left up at the end (the `last` test tears it down)."""
    result = run("invoke", "sandbox.up", env_file=ENV_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    yield ENV_FILE


PROXY_URL = f"https://{ADDRESSES[PROXY]}"
PASSWORD = SETTINGS.dummy_password
NODES = set(NODE_LIST)
STATE_DIR = (ROOT / SETTINGS.sandbox_dir).resolve()
CERT_FILE = ROOT / "test-artifacts" / f"{PROXY}-cert.pem"


def env_with(cluster: Path, tmp_path: Path, name: str, *replacements: tuple[str, str]) -> Path:
    """``cluster``'s env file with each (old, new) replaced, old required, saved as ``name``."""
    text = cluster.read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def keep_busy(person: Student, minutes: int = 30) -> None:
    """Report ``person``'s running server active ``minutes`` ahead: the suite's culler
    (CULL_TIMEOUT=60) then leaves it alone while a slow step runs on a busy machine. Stop
    the server at the end of the test."""
    when = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    posted = person.api(
        "POST",
        f"/users/{person.name}/activity",
        json={"lastActivity": when, "servers": {"": {"last_activity": when}}},
    )
    assert posted.status_code == 200, posted.text


def on_hub(sandbox: Path, command: str) -> str:
    result = run("fab", "-H", HUB, "--", command, env_file=sandbox)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def recap(output: str) -> dict[str, tuple[int, int, int]]:
    """The RECAP table: host -> (ok, changed, failed)."""
    rows = re.findall(r"^(\S+)\s+\S+\s+ok=(\d+)\s+changed=(\d+)\s+failed=(\d+)", output, re.M)
    return {host: (int(ok), int(changed), int(failed)) for host, ok, changed, failed in rows}


def hub_container_ids(sandbox: Path) -> dict[str, str]:
    out = on_hub(sandbox, "docker ps --format '{{.Names}} {{.ID}}'")
    return dict(line.split() for line in out.splitlines())


def node_of(sandbox: Path, user: str) -> str:
    return on_hub(
        sandbox,
        f"docker service ps jupyter-{user} --filter desired-state=running --format '{{{{.Node}}}}'",
    )


def cut_short(env_file: Path, *argv: str, after: str, wait: float, sig: int) -> str:
    """Start ``invoke ARGV`` and send its process group ``sig`` ``wait`` seconds after the line
    containing ``after`` appears (as Ctrl-C, or a kill of the provisioner's whole run, does);
    its output so far. SIGINT restored for it (a background suite would ignore Ctrl-C)."""
    env = {**os.environ, "SWARMHUB_ENV": str(env_file)}
    process = subprocess.Popen(
        [str(BIN / "invoke"), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen, deadline = [], time.monotonic() + 900
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if after in line:
            break
        assert time.monotonic() < deadline, "".join(seen[-20:])
    else:
        raise AssertionError(f"{after!r} never came: " + "".join(seen[-20:]))
    time.sleep(wait)
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return "".join(seen)


@pytest.fixture(scope="session")
def cluster(sandbox: Path) -> Iterator[Path]:
    """The sandbox, deployed with `invoke cluster.all` from bare VMs — by two runs: the first
    is killed (SIGKILL of its process group) while apt installs Docker on the hosts, and one
    more run must converge (a run cut short converges with one more)."""
    cut = cut_short(sandbox, "cluster.all", after="== docker.install", wait=4, sig=signal.SIGKILL)
    assert "RECAP" not in cut
    result = run("invoke", "cluster.all", env_file=sandbox, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert f"JupyterHub is up: {PROXY_URL}/" in result.stdout
    cert = run("fab", "-H", PROXY, "--", "cat /etc/swarmhub/tls/fullchain.pem", env_file=sandbox)
    CERT_FILE.parent.mkdir(exist_ok=True)
    CERT_FILE.write_text(cert.stdout)
    yield sandbox


def student(name: str, password: str = PASSWORD) -> Student:
    """A student whose client checks the proxy's (self-signed) certificate."""
    return Student(PROXY_URL, name, password, ca_file=str(CERT_FILE))

"""Backups to an S3-compatible store (BACKUP_TARGET=s3://…): backup.run, backup.list and one
restore, through restic's S3 backend.

No real S3 store can be reached from here: the store is a STAND-IN, moto's S3 server (Debian's
python3-moto), run by this test on the sandbox's backup VM and reached over plain HTTP
(s3+http://). What is real: restic, the backup script, backup.setup writing the access key
0600 on the hub, the tasks. What is not: the store (moto keeps the objects in memory) and
HTTPS to it. Runs on the backup sandbox (tests/e2e/backup.env) after test_5b_restic.py; it
puts the sandbox back on its SFTP repository at the end.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmhub.steps import backup
from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import ADDRESSES, CERT_FILE, PROXY, SETTINGS, env_with, on_hub, student

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not SETTINGS.backup_host,
        reason="needs the backup sandbox, whose backup VM runs the stand-in (tests/e2e/backup.env)",
    ),
]

STORE = SETTINGS.backup_host  # the VM that runs the stand-in store
PORT = 9000
UNIT = "swarmhub-e2e-s3-stand-in"
MARKER = "swarmhub-s3-marker-" + secrets.token_hex(8)
HOME = f"{SETTINGS.homes_dir}/alice"


def invoke(env: Path, *argv: str) -> str:
    result = run("invoke", *argv, env_file=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def on_store(env: Path, command: str) -> str:
    result = run("fab", "-H", STORE, "--", command, env_file=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def stand_in(sandbox: Path) -> Iterator[None]:
    """moto's S3 server on the backup VM, port PORT open to the hub only, while the module
    runs; the VM's firewall put back at the end."""
    if run("invoke", "health", env_file=sandbox, timeout=300).returncode != 0:
        invoke(sandbox, "cluster.all")
    cert = run("fab", "-H", PROXY, "--", "cat /etc/swarmhub/tls/fullchain.pem", env_file=sandbox)
    CERT_FILE.parent.mkdir(exist_ok=True)
    CERT_FILE.write_text(cert.stdout)
    on_store(
        sandbox,
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "python3-moto python3-flask-cors >/dev/null",
    )
    on_store(
        sandbox,
        f"sudo systemctl stop {UNIT} 2>/dev/null; sudo systemd-run --unit {UNIT} "
        f"python3 -m moto.server -H 0.0.0.0 -p {PORT}",
    )
    hub = ADDRESSES[SETTINGS.hub_host]
    on_store(
        sandbox,
        f"sudo nft insert rule inet swarmhub input ip saddr {hub} tcp dport {PORT} accept",
    )
    deadline = time.monotonic() + 60
    while (
        run(
            "fab",
            "-H",
            SETTINGS.hub_host,
            "--",
            f"curl -sf -o /dev/null http://{STORE}:{PORT}/",
            env_file=sandbox,
        ).returncode
        != 0
    ):
        assert time.monotonic() < deadline, "the stand-in S3 server did not answer in 60 s"
        time.sleep(2)
    try:
        yield
    finally:
        on_store(sandbox, f"sudo systemctl stop {UNIT}; sudo systemctl restart swarmhub-firewall")


@pytest.fixture(scope="module")
def s3_env(
    sandbox: Path, stand_in: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The sandbox's env file with BACKUP_TARGET on the stand-in store (same file name: the
    same repository password on this machine), backup.setup run with it; the SFTP target
    set up again at the end."""
    folder = tmp_path_factory.mktemp("s3")
    secret = folder / "s3-secret"
    secret.write_text(secrets.token_urlsafe(30) + "\n")
    secret.chmod(0o600)
    env = env_with(
        sandbox,
        folder,
        sandbox.name,
        (
            f"BACKUP_TARGET={SETTINGS.backup_target}\n",
            f"BACKUP_TARGET=s3+http://{STORE}:{PORT}/swarmhub-e2e/restic\n"
            f"BACKUP_S3_KEY_ID=swarmhube2e\nBACKUP_S3_SECRET_FILE={secret}\n",
        ),
    )
    try:
        out = invoke(env, "backup.setup")
        # The store keeps nothing across runs (moto's memory): made anew each time.
        assert f"repository s3:http://{STORE}:{PORT}/swarmhub-e2e/restic opened or made" in out
        assert secret.read_text().strip() not in out
        yield env
    finally:
        on_hub(sandbox, f"sudo rm -f {backup.S3_CREDENTIALS}")
        invoke(sandbox, "backup.setup")


@pytest.fixture(scope="module")
def alice(s3_env: Path) -> Iterator[Student]:
    who = student("alice")
    who.login()
    who.start_server()
    yield who
    who.stop_server()


def test_backups_go_to_an_s3_store_and_come_back(s3_env: Path, alice: Student) -> None:
    modes = on_hub(s3_env, f"sudo stat -c '%a %U' {backup.S3_CREDENTIALS}")
    assert modes == "600 root"
    alice.run_code(f"open('s3-notes.txt', 'w').write({MARKER!r})")
    name = invoke(s3_env, "backup.run").strip().splitlines()[-1]
    assert backup.SNAPSHOT.fullmatch(name), name
    assert name in invoke(s3_env, "backup.list")
    alice.run_code("import os; os.remove('s3-notes.txt')")
    out = invoke(s3_env, "backup.restore", "--user", "alice", "--path", "s3-notes.txt")
    assert "restored 1 file(s)" in out, out
    assert alice.run_code("print(open('s3-notes.txt').read())").strip() == MARKER
    alice.run_code("import os; os.remove('s3-notes.txt')")

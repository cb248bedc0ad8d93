"""hosts.trust: fingerprints as OpenSSH prints them, and known_hosts names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from swarmhub import trust


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="needs ssh-keygen")
def test_fingerprints_match_ssh_keygen(tmp_path: Path) -> None:
    key_file = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    openssh = subprocess.run(
        ["ssh-keygen", "-lf", f"{key_file}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    assert trust.fingerprint(key) == openssh


def test_known_hosts_names_carry_a_port_other_than_22() -> None:
    assert trust.known_name("hub", 22) == "hub"
    assert trust.known_name("hub", 2222) == "[hub]:2222"


def test_no_yes_no_trust(capsys: pytest.CaptureFixture[str]) -> None:
    assert trust.ask("Add them?") is False  # pytest's stdin is not a terminal
    assert "--yes" in capsys.readouterr().out

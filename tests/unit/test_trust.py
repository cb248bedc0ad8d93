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


def _key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def test_a_rebuilt_hosts_keys_are_changed_not_new() -> None:
    old, rebuilt = _key(), _key()
    known = paramiko.HostKeys()
    known.add("hub", old.get_name(), old)
    new, changed = trust.compare(known, ["hub", "10.0.0.10"], [rebuilt])
    assert [n for n, _ in changed] == ["hub"] and [n for n, _ in new] == ["10.0.0.10"]
    assert trust.compare(known, ["hub"], [old]) == ([], [])


def test_forgetting_a_host_keeps_the_other_lines(tmp_path: Path) -> None:
    old, other = _key(), _key()
    hashed = paramiko.HostKeys.hash_host("10.0.0.10")
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        f"hub {old.get_name()} {old.get_base64()}\n"
        f"{hashed} {old.get_name()} {old.get_base64()}\n"
        f"node-1,10.0.0.11 {other.get_name()} {other.get_base64()}\n"
    )
    trust.forget(path, ["hub", "10.0.0.10"])
    assert path.read_text() == (
        f"# a comment\nnode-1,10.0.0.11 {other.get_name()} {other.get_base64()}\n"
    )


def test_recover_hub_replaces_a_rebuilt_hubs_keys_after_a_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from swarmhub import settings
    from swarmhub.errors import SwarmhubError

    env = tmp_path / "course.env"
    env.write_text("HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\nAUTHENTICATOR=native\n")
    loaded = settings.load(str(env))
    old, rebuilt, other = _key(), _key(), _key()
    path = tmp_path / "known_hosts"
    before = (
        f"hub {old.get_name()} {old.get_base64()}\nnode-1 {other.get_name()} {other.get_base64()}\n"
    )
    path.write_text(before)
    connection = SimpleNamespace(known_hosts_files=[str(path)], host="hub", port=22)
    monkeypatch.setattr(trust.ssh, "connect", lambda *a, **k: connection)
    monkeypatch.setattr(trust, "scan_keys", lambda *a, **k: [rebuilt])
    asked: list[str] = []
    with pytest.raises(SwarmhubError, match="differs from the one known"):
        trust.trust(loaded, "hub", lambda q: True)
    with pytest.raises(SwarmhubError, match="not trusted: nothing was added"):
        trust.trust(loaded, "hub", lambda q: asked.append(q) or False, replace=True)
    assert path.read_text() == before and "a rebuilt host" in asked[0]
    assert trust.fingerprint(rebuilt) in asked[0]
    out = trust.trust(loaded, "hub", lambda q: True, replace=True)
    assert out.startswith("hub: replaced the old keys with 1 host key(s)")
    assert path.read_text() == (
        f"node-1 {other.get_name()} {other.get_base64()}\n"
        f"hub {rebuilt.get_name()} {rebuilt.get_base64()}\n"
    )
    assert "already trusted" in trust.trust(loaded, "hub", lambda q: False, replace=True)


def test_recover_hub_asks_nothing_when_a_key_is_trusted_already(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox's sandbox.up trusts a rebuilt VM's ed25519 key: SSH connects, no question
    (a key type it did not write is no reason to ask)."""
    from types import SimpleNamespace

    from swarmhub import settings

    env = tmp_path / "course.env"
    env.write_text("HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\nAUTHENTICATOR=native\n")
    known, extra = _key(), paramiko.RSAKey.generate(1024)
    path = tmp_path / "known_hosts"
    path.write_text(f"hub {known.get_name()} {known.get_base64()}\n")
    connection = SimpleNamespace(known_hosts_files=[str(path)], host="hub", port=22)
    monkeypatch.setattr(trust.ssh, "connect", lambda *a, **k: connection)
    monkeypatch.setattr(trust, "scan_keys", lambda *a, **k: [known, extra])
    loaded = settings.load(str(env))
    out = trust.trust(loaded, "hub", lambda q: pytest.fail("asked"), replace=True)
    assert "already trusted" in out

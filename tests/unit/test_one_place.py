"""What several parts of swarmhub must agree on is written once: chp's port, how many hosts
are worked on at once, how a host comes to trust the extra CAs."""

from __future__ import annotations

import ast
import io
import subprocess
import tokenize
from pathlib import Path
from types import SimpleNamespace

import pytest

from swarmhub import ca, parallel, ports, settings
from swarmhub.observe import commands
from swarmhub.sandbox import cluster
from swarmhub.steps import firewall, hub, provision, proxy
from tests.unit.fakehost import FakeHost, declared, view_of

ROOT = Path(__file__).resolve().parents[2]
RAW = {"HUB_HOST": "hub", "NODE_HOSTS": "node-1,node-2", "PROXY_HOST": "proxy"}
ENV = settings.validate({**RAW, "AUTHENTICATOR": "native"}, Path("course.env"))


# --- chp's port ---


def test_chps_port_reaches_compose_nginx_the_firewall_and_the_api() -> None:
    port = ports.CHP_PORT
    compose = hub.render_compose(ENV)
    assert f"--port={port}\n" in compose and f'"{port}:{port}"' in compose
    assert f"server hub:{port};" in proxy.render_site(ENV)
    assert port == firewall.CHP_PORT
    assert f"ct original proto-dst {port} ip saddr @proxy return" in firewall.render_rules(
        ENV, ("hub",), ["10.0.0.10", "10.0.0.11"], ["10.0.0.11"]
    )
    assert commands.HUB_API == ports.HUB_API == f"http://127.0.0.1:{port}/hub/api"


def chp_port_literals(path: Path) -> list[str]:
    """8000 as a number, or as ``:8000`` in a string (a URL, a port mapping) in ``path``;
    prose in docstrings and comments ("chp's port 8000") is not counted."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        number = token.type == tokenize.NUMBER and token.string == "8000"
        if number or (token.type == tokenize.STRING and ":8000" in token.string):
            found.append(f"{path.relative_to(ROOT)}:{token.start[0]}")
    return found


def test_chps_port_is_written_once() -> None:
    sources = [p for p in ROOT.glob("swarmhub/**/*.py") if p.name != "ports.py"]
    assert not [hit for p in sources for hit in chp_port_literals(p)]
    templates = sorted(ROOT.glob("templates/**/*.j2"))
    assert templates and not [p.name for p in templates if "8000" in p.read_text()]
    # Not rendered, so not given the constant: images/hub/Dockerfile's EXPOSE (documentation
    # only) names chp's ports by hand.


# --- how many at once ---


@pytest.mark.parametrize(("count", "width"), [(0, 1), (1, 1), (10, 10), (32, 32), (100, 32)])
def test_the_pool_is_one_thread_a_host_up_to_the_limit(count: int, width: int) -> None:
    assert parallel.MAX_PARALLEL == 32
    assert parallel.pool_width(count) == width


def test_no_thread_pool_has_a_width_of_its_own() -> None:
    # health.check asks exactly two things at once (the proxy and the hub): a count, not a width.
    allowed = {"swarmhub/observe/health.py"}
    fixed = []
    for path in sorted(ROOT.glob("swarmhub/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "max_workers":
                literal = isinstance(node.value, ast.Constant)
                name = str(path.relative_to(ROOT))
                if literal and name not in allowed:
                    fixed.append(f"{name}:{node.value.lineno}")
    assert not fixed


# --- the extra CAs ---

CERT = "-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
BUNDLE = "# our CAs\n" + CERT.format(body="AAAA") + "between\n" + CERT.format(body="BBBB")


def run_trust(tmp_path: Path, update_exit: int) -> subprocess.CompletedProcess[str]:
    """trust_command run by sh, with a stand-in update-ca-certificates."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "update-ca-certificates"
    fake.write_text(f"#!/bin/sh\nls {tmp_path / 'ca'} > {tmp_path / 'seen'}\nexit {update_exit}\n")
    fake.chmod(0o755)
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(BUNDLE)
    command = ca.trust_command(str(bundle), "d1g35t", str(tmp_path / "ca"))
    return subprocess.run(
        ["sh", "-c", command],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_trust_command_makes_one_file_a_certificate_then_the_digest(tmp_path: Path) -> None:
    assert run_trust(tmp_path, 0).returncode == 0
    directory = tmp_path / "ca"
    assert (directory / "extra-001.crt").read_text() == CERT.format(body="AAAA")
    assert (directory / "extra-002.crt").read_text() == CERT.format(body="BBBB")
    assert (tmp_path / "seen").read_text().split() == ["extra-001.crt", "extra-002.crt"]
    assert (directory / ".digest").read_text() == "d1g35t\n"
    assert not (tmp_path / "bundle.pem").exists()


def test_a_failed_update_leaves_no_digest_so_the_next_run_tries_again(tmp_path: Path) -> None:
    assert run_trust(tmp_path, 1).returncode != 0
    assert not (tmp_path / "ca" / ".digest").exists()


def test_provision_and_the_sandbox_trust_the_cas_with_the_one_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = ca.ca_digest(BUNDLE)
    wanted = ca.trust_command(ca.BUNDLE_PATH, digest)
    node = FakeHost("node-1", ("node",), connection=None, files={ca.DIGEST_FILE: ["missing"]})
    (change,) = declared(provision.ensure_extra_ca(view_of(node), BUNDLE))
    assert change.commands == (wanted,)
    assert [f.path for f in change.files] == [ca.BUNDLE_PATH]

    asked: list[list[str]] = []

    def docker(*args: str, **_: object) -> SimpleNamespace:
        return SimpleNamespace(stdout="", returncode=1)  # no digest yet

    def run(argv: list[str], **kwargs: object) -> SimpleNamespace:
        asked.append(argv)
        assert kwargs["input"] == "".join(ca.split_pem_bundle(BUNDLE))
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(cluster.local, "docker", docker)
    monkeypatch.setattr(cluster.local, "run", run)
    bundle = tmp_path / "cas.pem"
    bundle.write_text(BUNDLE)
    assert cluster.ensure_extra_ca("sam-node-1", bundle)
    (argv,) = asked
    assert argv[:4] == ["docker", "exec", "-i", "sam-node-1"]
    assert argv[-1] == f"cat > {ca.BUNDLE_PATH} && {wanted}"

"""Network isolation (issue 18), without SSH: the settings, the overlay's layout, the swarm
manager's network, the hub stack's networks, each server's firewall (checked by nft itself
where it can run) and the start script of the user image (run with stand-ins for nft and
setpriv). What the rules do to real packets is proven on the sandbox
(tests/e2e/test_7b_isolation.py)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.overlay import layout
from swarmhub.settings import PROJECT_ROOT
from swarmhub.steps import firewall, hub, swarm
from tests.unit.conftest import SERVER_FIREWALL

ENV = """\
HUB_HOST=hub
NODE_HOSTS=node-1,node-2
PROXY_HOST=proxy
AUTHENTICATOR=native
"""
START_SCRIPT = PROJECT_ROOT / "images/user/swarmhub-server-start"


def load(tmp_path: Path, extra: str = "") -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV + extra)
    return settings.load(str(path))


# --- the settings: one line for a bad value, before any host -------------------------------


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("SWARM_SUBNET=10.250.0.0/25", "SWARM_SUBNET=10.250.0.0/25: 10.250.0.0/25 must be from"),
        ("SWARM_SUBNET=10.250.0.1/20", "has host bits set: give a network like"),
        ("SWARM_SUBNET=8.8.0.0/16", "8.8.0.0/16 is not a private range"),
        ("KERNEL_EGRESS=closed", "KERNEL_EGRESS=closed: 'closed' is not one of open, allow-list"),
        (
            "KERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=https://pypi.org",
            "'https://pypi.org': give a host name, an address or a network, not a URL",
        ),
        ("KERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=10.0.0.0/33", "'10.0.0.0/33' is not an"),
        ("KERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=bad_name", "'bad_name' is not a host"),
        (
            "KERNEL_EGRESS_ALLOW=pypi.org",
            "KERNEL_EGRESS_ALLOW is set but KERNEL_EGRESS=open lets kernels reach everything",
        ),
    ],
)
def test_a_bad_isolation_setting_is_one_line(tmp_path: Path, line: str, says: str) -> None:
    with pytest.raises(SwarmhubError) as caught:
        load(tmp_path, line + "\n")
    message = str(caught.value)
    assert "\n" not in message and says in message, message


def test_the_egress_defaults_are_open(tmp_path: Path) -> None:
    env = load(tmp_path)
    assert (env.kernel_egress, env.kernel_egress_allow) == ("open", ())
    assert env.swarm_subnet == ipaddress.IPv4Network("10.250.0.0/20")


# --- the overlay: fixed addresses below, Docker's range above --------------------------------


def test_chp_and_the_hub_have_fixed_addresses_outside_the_servers_range() -> None:
    overlay = layout(ipaddress.IPv4Network("10.250.0.0/20"))
    assert (overlay.gateway, overlay.chp, overlay.hub) == ("10.250.0.1", "10.250.0.2", "10.250.0.3")
    assert overlay.servers == ipaddress.IPv4Network("10.250.8.0/21")
    for fixed in (overlay.gateway, overlay.chp, overlay.hub):
        assert ipaddress.ip_address(fixed) not in overlay.servers
    small = layout(ipaddress.IPv4Network("192.168.7.0/24"))
    assert (small.hub, str(small.servers)) == ("192.168.7.3", "192.168.7.128/25")


def test_the_swarm_network_is_checked_and_an_old_one_is_refused_with_what_to_do() -> None:
    overlay = layout(ipaddress.IPv4Network("10.250.0.0/20"))

    def check(found: str) -> bool:
        return swarm.check_network("hub", "swarmhub", found.split(), overlay, "/srv/swarmhub")

    assert check("") is False  # missing: created
    assert check("overlay true 10.250.0.0/20 10.250.8.0/21") is True
    with pytest.raises(SwarmhubError) as caught:
        check("overlay true 10.0.1.0/24")  # made before isolation: Docker chose its range
    message = str(caught.value)
    assert message.startswith("hub: network swarmhub has subnet 10.0.1.0/24, not SWARM_SUBNET")
    assert "docker compose down` in /srv/swarmhub" in message and "\n" not in message
    with pytest.raises(SwarmhubError, match="not an attachable overlay"):
        check("bridge false 172.20.0.0/16")


# --- the hub stack: chp's ports on its own bridge, fixed addresses on the overlay -------------


def test_chp_listens_on_the_hub_stacks_bridge_only(tmp_path: Path) -> None:
    env = load(tmp_path)
    compose = yaml.safe_load(hub.render_compose(env))
    services, networks = compose["services"], compose["networks"]
    chp = services["chp"]
    assert "--ip=chp-internal" in chp["command"] and "--api-ip=chp-internal" in chp["command"]
    assert not [arg for arg in chp["command"] if "0.0.0.0" in arg]
    # the API is never published; its metrics on the hub's loopback only (Prometheus)
    assert chp["ports"] == ["8000:8000", "127.0.0.1:8002:8002"]
    assert chp["networks"] == {
        "internal": {"aliases": ["chp-internal"]},
        "users": {"ipv4_address": "10.250.0.2"},
    }
    assert services["jupyterhub"]["networks"] == {
        "internal": {},
        "users": {"ipv4_address": "10.250.0.3"},
    }
    assert services["cull"]["networks"] == ["internal"]  # no business on the overlay
    assert networks == {
        "internal": {"driver": "bridge"},
        "users": {"name": "swarmhub", "external": True},
    }


def test_servers_start_as_root_with_net_admin_only_to_load_their_firewall(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    env = load(tmp_path, "KERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=git.example.edu\n")
    config = load_hub_config(hub.hub_settings_env(env) + "CULLER_API_TOKEN=t\n")
    spawner = config.SwarmSpawner
    assert spawner.cmd == ["swarmhub-server-start", "jupyterhub-singleuser"]
    assert spawner.extra_container_spec == {"user": "root", "cap_add": ["NET_ADMIN"]}
    assert spawner.environment == {
        "SWARMHUB_SERVER_FIREWALL": SERVER_FIREWALL,
        "SWARMHUB_EGRESS_NAMES": "git.example.edu",
    }
    assert config.ConfigurableHTTPProxy.api_url == "http://chp-internal:8001"


def test_docker_py_takes_the_container_spec() -> None:
    """SwarmSpawner passes extra_container_spec to docker-py's ContainerSpec (the hub image
    pins docker 7): NET_ADMIN becomes the service's CapabilityAdd."""
    docker_types = pytest.importorskip("docker.types")
    spec = docker_types.ContainerSpec(image="user", user="root", cap_add=["NET_ADMIN"])
    assert (spec["User"], spec["CapabilityAdd"]) == ("root", ["NET_ADMIN"])


def test_a_change_of_the_servers_firewall_restarts_the_hub(tmp_path: Path) -> None:
    def label(env: settings.Settings) -> str:
        compose = yaml.safe_load(hub.render_compose(env))
        return compose["services"]["jupyterhub"]["labels"]["io.swarmhub.config"]

    assert label(load(tmp_path)) != label(load(tmp_path, "KERNEL_EGRESS=allow-list\n"))
    files = [path for path, _, _ in hub.hub_files(load(tmp_path), "/s/secrets", "/s")]
    assert "/s/server-firewall.nft" in files


# --- each server's firewall ------------------------------------------------------------------


def chain(rules: str, name: str) -> str:
    """The text of one chain of an nftables table, up to its closing brace."""
    start = rules.index(f"chain {name} {{")
    depth = 0
    for end in range(start, len(rules)):
        depth += {"{": 1, "}": -1}.get(rules[end], 0)
        if depth == 0 and rules[end] == "}":
            return rules[start : end + 1]
    raise AssertionError(f"chain {name} is not closed")


def test_a_server_lets_in_chp_and_the_hub_only(tmp_path: Path) -> None:
    rules = hub.server_firewall(load(tmp_path))
    assert "set from_chp_and_hub { type ipv4_addr; elements = { 10.250.0.2, 10.250.0.3 } }" in rules
    incoming = chain(rules, "input")
    assert "policy drop" in incoming
    assert "ip saddr @from_chp_and_hub tcp dport 8888 accept" in incoming
    assert incoming.count("accept") == 3  # lo, replies, chp and the hub


def test_a_kernel_reaches_the_hubs_api_and_nothing_else_on_the_overlay(tmp_path: Path) -> None:
    outgoing = chain(hub.server_firewall(load(tmp_path)), "output")
    api = outgoing.index("ip daddr 10.250.0.3 tcp dport 8081 accept")
    assert api < outgoing.index("ip daddr 10.250.0.0/20 reject")
    assert "policy accept" in outgoing and "@egress_allowed" not in outgoing  # open


def test_the_exam_setting_allows_its_hosts_and_dns_only(tmp_path: Path) -> None:
    env = load(
        tmp_path,
        "KERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=git.example.edu,192.0.2.7,198.51.100.0/24\n",
    )
    rules = hub.server_firewall(env)
    assert "elements = { 192.0.2.7, 198.51.100.0/24 }" in rules
    assert "git.example.edu" not in rules  # a name: resolved by the server when it starts
    assert "KERNEL_EGRESS_NAMES=git.example.edu\n" in hub.hub_settings_env(env)
    outgoing = chain(rules, "output")
    order = [
        outgoing.index("ip daddr 10.250.0.3 tcp dport 8081 accept"),
        outgoing.index("ip daddr 10.250.0.0/20 reject"),
        outgoing.index("th dport 53 accept"),
        outgoing.index("ip daddr @egress_allowed accept"),
        outgoing.rindex("reject"),
    ]
    assert order == sorted(order)
    nothing_allowed = hub.server_firewall(load(tmp_path, "KERNEL_EGRESS=allow-list\n"))
    assert "flags interval; }" in nothing_allowed  # an exam with no internet at all
    assert "KERNEL_EGRESS_NAMES=\n" in hub.hub_settings_env(load(tmp_path))


NFT = shutil.which("nft")


def nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.nft"
    path.write_text(text)
    check = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", str(path)], capture_output=True, text=True
    )
    if "Operation not permitted" in check.stderr:
        pytest.skip("needs root for a network namespace")
    return check


@pytest.mark.skipif(not NFT or not shutil.which("unshare"), reason="needs nft")
@pytest.mark.parametrize(
    "extra",
    [
        "",
        "KERNEL_EGRESS=allow-list\n",
        "KERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=pypi.org,192.0.2.7,198.51.100.0/24\n",
    ],
)
def test_nft_accepts_a_servers_firewall(tmp_path: Path, extra: str) -> None:
    check = nft_check(hub.server_firewall(load(tmp_path, extra)), tmp_path)
    assert check.returncode == 0, check.stderr


# --- the hosts' firewall: no port of the cluster's to a container ----------------------------


def test_containers_reach_no_cluster_port_but_the_public_site(tmp_path: Path) -> None:
    cluster = ["10.0.0.10", "10.0.0.11", "10.0.0.21", "10.0.0.22"]
    rules = firewall.render_rules(load(tmp_path), ("node",), cluster, ["10.0.0.11"])
    chain_text = chain(rules, "from_containers")
    assert "ip daddr @proxy tcp dport { 80, 443 } return" in chain_text
    assert "22" not in chain_text  # no SSH to any host of the cluster
    incoming = chain(rules, "input")
    assert incoming.index("jump from_containers") < incoming.index('comment "from anywhere"')
    with_git = firewall.render_rules(
        load(tmp_path, "FIREWALL_CLUSTER_TCP_PORTS=9418\n"), ("node",), cluster, []
    )
    assert "tcp dport { 9418 } return" in chain(with_git, "from_containers")


@pytest.mark.skipif(not NFT or not shutil.which("unshare"), reason="needs nft")
def test_nft_accepts_the_hosts_rules_with_and_without_cluster_ports(tmp_path: Path) -> None:
    for extra in ("", "FIREWALL_CLUSTER_TCP_PORTS=9418,8080\n"):
        rules = firewall.render_rules(load(tmp_path, extra), ("hub",), ["10.0.0.10"], ["10.0.0.1"])
        check = nft_check(rules, tmp_path)
        assert check.returncode == 0, check.stderr


# --- the user image's start: fail closed, then jovyan without capabilities ------------------


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A bin/ with nft, setpriv, getent and id that log what they are asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    scripts = {
        "nft": f'echo "nft $*" >> {log}; [ "$1" = -f ] && cat >> {log}; exit ${{NFT_EXIT:-0}}',
        "setpriv": f'echo "setpriv $*" >> {log}',
        "getent": '[ "$2" = pypi.org ] && printf "203.0.113.80 STREAM pypi.org\\n'
        '203.0.113.80 DGRAM\\n203.0.113.81 STREAM\\n"; true',
        "id": "echo ${FAKE_UID:-0}",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def start(stand_ins: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    variables = {"PATH": f"{stand_ins}:{os.environ['PATH']}", "HOME": "/root", **env}
    log = stand_ins.parent / "log"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        ["sh", str(START_SCRIPT), "jupyterhub-singleuser", "--debug"],
        env=variables,
        capture_output=True,
        text=True,
        cwd="/",
    )
    return done, log.read_text() if log.exists() else ""


def test_the_start_loads_the_firewall_then_drops_to_jovyan(stand_ins: Path) -> None:
    firewall_text = "table inet swarmhub_server {}"
    done, log = start(
        stand_ins, SWARMHUB_SERVER_FIREWALL=firewall_text, SWARMHUB_EGRESS_NAMES="pypi.org"
    )
    assert done.returncode == 0, done.stderr
    assert log.splitlines() == [
        "nft -f -",
        firewall_text,
        "nft add element inet swarmhub_server egress_allowed { 203.0.113.80,203.0.113.81 }",
        "setpriv --reuid=jovyan --regid=users --init-groups --inh-caps=-all --bounding-set=-all "
        "--no-new-privs -- jupyterhub-singleuser --debug",
    ]


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"FAKE_UID": "1000"}, "not started as root"),
        ({}, "not starting a server without its firewall"),
        ({"SWARMHUB_SERVER_FIREWALL": "table t", "NFT_EXIT": "1"}, "nft refused"),
    ],
)
def test_the_start_refuses_a_server_it_cannot_firewall(
    stand_ins: Path, env: dict[str, str], refusal: str
) -> None:
    done, log = start(stand_ins, **env)
    assert done.returncode == 1 and refusal in done.stderr, done.stderr
    assert "setpriv" not in log

"""The firewall's rules, rendered without SSH; checked by nft itself when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import firewall
from swarmhub.steps.swarm import host_addresses

ENV = """\
HUB_HOST=hub
NODE_HOSTS=node-1,node-2
PROXY_HOST=proxy
AUTHENTICATOR=native
"""
CLUSTER = ["10.0.0.10", "10.0.0.11", "10.0.0.21", "10.0.0.22"]


@pytest.fixture
def env(tmp_path: Path) -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV)
    return settings.load(str(path))


def rules_for(env: settings.Settings, *roles: str) -> str:
    return firewall.render_rules(env, roles, CLUSTER, ["10.0.0.11"])


def test_only_ssh_is_open_to_anyone_on_hub_and_nodes(env) -> None:
    for roles in (("hub",), ("node",)):
        rules = rules_for(env, *roles)
        assert "policy drop" in rules
        assert 'tcp dport { 22 } accept comment "from anywhere"' in rules
        assert "dport { 22, 80, 443 } accept" not in rules


def test_the_proxy_is_open_on_80_and_443(env) -> None:
    assert 'tcp dport { 22, 80, 443 } accept comment "from anywhere"' in rules_for(env, "proxy")


def test_swarm_registry_and_storage_only_from_cluster_hosts(env, tmp_path: Path) -> None:
    hub = rules_for(env, "hub")
    assert "elements = { 10.0.0.10, 10.0.0.11, 10.0.0.21, 10.0.0.22 }" in hub
    # 9100: the node exporter, 9323: Docker's engine metrics, scraped by Prometheus on the
    # hub (METRICS=on, the default)
    assert "ip saddr @cluster tcp dport { 2049, 2377, 5000, 7946, 9100, 9323 } accept" in hub
    assert "ip saddr @cluster udp dport { 4789, 7946 } accept" in hub
    path = tmp_path / "git.env"
    path.write_text(ENV + "FIREWALL_CLUSTER_TCP_PORTS=9418\n")
    with_git = firewall.render_rules(settings.load(str(path)), ("hub",), CLUSTER, [])
    assert "tcp dport { 2049, 2377, 5000, 7946, 9100, 9323, 9418 } accept" in with_git
    # the registry lives on the hub only
    assert "ip saddr @cluster tcp dport { 2049, 2377, 7946, 9100, 9323 } accept" in rules_for(
        env, "node"
    )
    # the proxy runs no Docker
    assert "9323" not in rules_for(env, "proxy")


def test_chp_is_reached_from_the_proxy_only(env) -> None:
    hub = rules_for(env, "hub")
    assert "ct original proto-dst 8000 ip saddr @proxy return" in hub
    assert "8000" not in rules_for(env, "node")


def test_containers_reach_only_the_public_site_of_cluster_hosts(env) -> None:
    rules = rules_for(env, "node")
    assert "ip daddr @cluster jump from_containers" in rules
    chain = rules[rules.index("chain from_containers") :]
    assert "ip daddr @proxy tcp dport { 80, 443 } return" in chain and "drop" in chain


def test_users_are_blocked_from_metadata_and_the_list_is_a_setting(env, tmp_path: Path) -> None:
    assert "elements = { 169.254.169.254/32 }" in rules_for(env, "node")
    path = tmp_path / "other.env"
    path.write_text(ENV + "FIREWALL_BLOCKED_FROM_USERS=169.254.169.254/32, 10.9.0.0/16\n")
    other = settings.load(str(path))
    assert "elements = { 169.254.169.254/32, 10.9.0.0/16 }" in rules_for(other, "node")
    path.write_text(ENV + "FIREWALL_BLOCKED_FROM_USERS=metadata\n")
    with pytest.raises(SwarmhubError, match="FIREWALL_BLOCKED_FROM_USERS"):
        settings.load(str(path))


def test_only_our_table_is_replaced_never_the_whole_ruleset(env) -> None:
    rules = rules_for(env, "hub")
    assert "flush ruleset" not in rules
    assert rules.index("delete table inet swarmhub") < rules.index("table inet swarmhub {")


@pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("nft"), reason="needs nft")
def test_nft_accepts_the_rules(env, tmp_path: Path) -> None:
    path = tmp_path / "rules.nft"
    path.write_text(rules_for(env, "hub", "proxy"))
    check = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", str(path)], capture_output=True, text=True
    )
    if "Operation not permitted" in check.stderr:
        pytest.skip("needs root for a network namespace")
    assert check.returncode == 0, check.stderr


def test_host_addresses_skip_docker_interfaces() -> None:
    out = (
        "2: docker0    inet 172.17.0.1/16 scope global docker0\n"
        "3: eth0    inet 10.0.0.10/24 scope global eth0\n"
        "4: eth1    inet 192.168.5.10/24 scope global eth1\n"
        "5: docker_gwbridge    inet 172.18.0.1/16 scope global docker_gwbridge\n"
    )
    assert host_addresses(out) == ["10.0.0.10", "192.168.5.10"]


def test_a_docker_api_on_tcp_is_found() -> None:
    out = (
        'LISTEN 0 4096 0.0.0.0:2375 0.0.0.0:* users:(("dockerd",pid=1,fd=3))\n'
        'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=2,fd=3))\n'
        'LISTEN 0 4096 *:2377 *:* users:(("dockerd",pid=1,fd=30))\n'
        'LISTEN 0 4096 *:7946 *:* users:(("dockerd",pid=1,fd=31))\n'
        # the engine's metrics (METRICS), not its API
        'LISTEN 0 4096 *:9323 *:* users:(("dockerd",pid=1,fd=32))\n'
    )
    assert firewall.docker_tcp_listeners(out) == ["0.0.0.0:2375"]


def test_the_firewalls_state_is_read_in_one_round_trip() -> None:
    assert firewall.firewall_state("enabled active yes\n") == {
        "enabled": "enabled",
        "active": "active",
        "loaded": "yes",
    }
    # A host without the unit yet: systemctl prints nothing, unit_state_command says none.
    assert firewall.firewall_state("none inactive no\n")["enabled"] == "none"

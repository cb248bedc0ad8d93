"""The sandbox's VMs: names, fixed addresses and the docker commands that make them."""

from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.ca import ca_digest, split_pem_bundle
from swarmhub.sandbox import commands
from swarmhub.sandbox.plan import VM, hosts_block, node_names, plan_vms, with_hosts_block


@pytest.fixture
def sandbox(tmp_path: Path) -> settings.Settings:
    path = tmp_path / "s.env"
    path.write_text(
        "HUB_HOST=sam-hub\nNODE_HOSTS=sam-node-1,sam-node-2\nPROXY_HOST=sam-proxy\n"
        "SANDBOX_SUBNET=10.231.0.0/24\nSANDBOX_NAME=swarmhub\n"
    )
    return settings.load(str(path))


def test_default_plan_is_hub_nodes_proxy_with_fixed_addresses(sandbox: settings.Settings) -> None:
    assert plan_vms(sandbox) == [
        VM("sam-hub", "hub", "10.231.0.10"),
        VM("sam-node-1", "node", "10.231.0.21"),
        VM("sam-node-2", "node", "10.231.0.22"),
        VM("sam-proxy", "proxy", "10.231.0.11"),
    ]


def test_more_nodes_continue_the_name_pattern_and_keep_addresses(
    sandbox: settings.Settings,
) -> None:
    assert node_names(sandbox, 4) == ["sam-node-1", "sam-node-2", "sam-node-3", "sam-node-4"]
    four = plan_vms(sandbox, 4)
    assert four[:3] == plan_vms(sandbox)[:3]
    assert VM("sam-node-4", "node", "10.231.0.24") in four


def test_fewer_nodes_and_no_nodes(sandbox: settings.Settings) -> None:
    assert node_names(sandbox, 1) == ["sam-node-1"]
    with pytest.raises(ValueError):
        node_names(sandbox, 0)


def test_vm_run_without_privileged_uses_the_measured_flag_set() -> None:
    vm = VM("sam-hub", "hub", "10.231.0.10")
    argv = commands.run_vm(
        vm,
        sandbox="swarmhub",
        image="img",
        authorized_key="ssh-ed25519 AAA k",
        privileged=False,
        with_fuse_device=True,
    )
    assert "--privileged" not in argv
    assert "--cap-drop=SYS_RESOURCE" in argv
    assert "--security-opt=systempaths=unconfined" in argv
    assert "--ip=10.231.0.10" in argv
    assert "--label=io.swarmhub.sandbox=swarmhub" in argv
    assert "--mount=type=volume,src=swarmhub-sam-hub-docker,dst=/var/lib/docker" in argv
    assert "--device=/dev/fuse" in argv
    assert argv[-1] == "img"


def test_vm_run_privileged_where_allowed() -> None:
    vm = VM("sam-hub", "hub", "10.231.0.10")
    argv = commands.run_vm(
        vm,
        sandbox="s",
        image="img",
        authorized_key="k",
        privileged=True,
        with_fuse_device=True,
    )
    assert "--privileged" in argv
    assert "--cap-drop=SYS_RESOURCE" not in argv
    assert "--device=/dev/fuse" not in argv


def test_hosts_block_is_replaced_not_appended_twice() -> None:
    vms = [VM("b", "node", "10.0.0.2"), VM("a", "hub", "10.0.0.1")]
    block = hosts_block(vms, "m")
    assert block == "# BEGIN m\n10.0.0.1\ta\n10.0.0.2\tb\n# END m\n"
    once = with_hosts_block("127.0.0.1\tlocalhost\n", block, "m")
    assert with_hosts_block(once, block, "m") == once
    bigger = hosts_block([*vms, VM("c", "node", "10.0.0.3")], "m")
    assert with_hosts_block(once, bigger, "m").count("# BEGIN m") == 1


CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"


def test_ca_bundle_is_split_into_certificates() -> None:
    bundle = f"# a comment\n{CERT}\n\n{CERT.replace('MIIB', 'MIIC')}\n"
    certs = split_pem_bundle(bundle)
    assert len(certs) == 2
    assert certs[1].startswith("-----BEGIN CERTIFICATE-----\nMIIC")
    assert ca_digest(bundle) == ca_digest(bundle + "\n# trailing comment\n")
    with pytest.raises(ValueError):
        split_pem_bundle("not a certificate")


def test_a_vm_made_anew_gets_a_bare_docker_volume() -> None:
    name = commands.docker_volume_name("swarmhub-test", "t-hub")
    assert commands.remove_volume("swarmhub-test", "t-hub") == [
        "docker",
        "volume",
        "rm",
        "--force",
        name,
    ]

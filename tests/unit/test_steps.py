"""The runbook's decisions and command builders, without SSH."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.overlay import layout
from swarmhub.runbook.converge import secret_env_file_command
from swarmhub.runbook.host import Host, file_state_command, parse_file_state
from swarmhub.runbook.session import step_hosts, steps_for_host
from swarmhub.steps import docker_engine, hub, images, provision, proxy, swarm

ENV = """\
HUB_HOST=hub
NODE_HOSTS=node-1,node-2
PROXY_HOST=proxy
DOMAIN=jupyter.example.edu
AUTHENTICATOR=native
ALLOWED_USERS=alice,bob
ADMIN_USERS=alice
USER_MEM_LIMIT=2G
USER_CPU_LIMIT=1
CULL_TIMEOUT=1800
"""


@pytest.fixture
def env(tmp_path: Path) -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV)
    return settings.load(str(path))


def test_daemon_json_logs_to_the_journal_trusts_the_hub_registry_and_sets_dns(env) -> None:
    config = docker_engine.daemon_config(env, ["10.0.0.53"])
    # the journal: rsyslog ships it (monitor.logs), `docker logs` reads it, named by container
    assert config["log-driver"] == "journald"
    assert config["log-opts"] == {"tag": "{{.Name}}"}
    assert config["insecure-registries"] == ["hub:5000"]
    assert config["dns"] == ["10.0.0.53"]
    assert "dns" not in docker_engine.daemon_config(env, [])


def test_loopback_nameservers_are_not_given_to_containers() -> None:
    resolv = "nameserver 127.0.0.53\nnameserver 10.255.255.53\n# nameserver 1.2.3.4\n"
    assert docker_engine.provisioner_nameservers(resolv) == ["10.255.255.53"]


def test_docker_packages_per_distribution(env) -> None:
    assert "docker-cli" in docker_engine.packages_for(env, "debian", "trixie")
    assert "docker-compose-v2" in docker_engine.packages_for(env, "ubuntu", "noble")
    with pytest.raises(SwarmhubError, match="Debian 12 has no Compose v2"):
        docker_engine.packages_for(env, "debian", "bookworm")
    with pytest.raises(SwarmhubError, match="not supported"):
        docker_engine.packages_for(env, "fedora", "40")


def test_docker_repository_option(tmp_path: Path) -> None:
    path = tmp_path / "r.env"
    path.write_text(ENV + "DOCKER_SOURCE=docker-repo\n")
    loaded = settings.load(str(path))
    assert docker_engine.packages_for(loaded, "debian", "bookworm") == (
        docker_engine.DOCKER_REPO_PACKAGES
    )
    commands = " && ".join(docker_engine.docker_repo_commands("debian", "bookworm"))
    assert "https://download.docker.com/linux/debian bookworm stable" in commands


def test_the_swarm_advertises_the_hosts_own_interface() -> None:
    out = (
        "2: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\n"
        "3: eth0    inet 10.231.0.10/24 brd 10.231.0.255 scope global eth0\n"
    )
    assert swarm.pick_address(out) == "10.231.0.10"
    assert swarm.pick_address("") is None
    assert swarm.init_command("10.0.0.1") == (
        "docker swarm init --advertise-addr 10.0.0.1 --dispatcher-heartbeat 2s"
    )
    overlay = layout(ipaddress.IPv4Network("10.250.0.0/20"))
    assert swarm.network_command("swarmhub", overlay) == (
        "docker network create --driver overlay --attachable --subnet 10.250.0.0/20 "
        "--gateway 10.250.0.1 --ip-range 10.250.8.0/21 swarmhub"
    )


def test_fab_host_of_the_wrong_role_is_refused(env) -> None:
    with pytest.raises(SwarmhubError) as caught:
        step_hosts(env, hub.STEP, "proxy")
    assert str(caught.value) == (
        "hub.deploy runs on the hub (hub), but proxy is the proxy in course.env"
    )


def test_fab_host_not_in_the_env_file(env) -> None:
    with pytest.raises(SwarmhubError, match=r"elsewhere is not a host of course\.env"):
        step_hosts(env, hub.STEP, "elsewhere")


def test_steps_pick_their_roles_from_the_env_file(env) -> None:
    assert step_hosts(env, provision.STEP) == ["hub", "node-1", "node-2", "proxy"]
    assert step_hosts(env, docker_engine.STEP) == ["hub", "node-1", "node-2"]
    assert step_hosts(env, swarm.JOIN) == ["node-1", "node-2"]
    assert step_hosts(env, swarm.JOIN, "node-2") == ["node-2"]


def test_image_refs_are_pinned_by_content(env) -> None:
    ref = images.image_ref(env, "user")
    assert ref.startswith("hub:5000/swarmhub/user:")
    assert ref == images.image_ref(env, "user")
    assert images.image_ref(env, "hub") != ref
    assert "chp/package.json" in images.context_files("hub")


def test_wait_for_kernel_is_built_against_the_locked_jupyterlab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extension's core (@jupyterlab/core-meta) is the JupyterLab of each series' lock;
    what a build in place leaves is not part of the context."""
    package = json.loads(images.context_files("user")["wait-for-kernel/package.json"])
    core = package["devDependencies"]["@jupyterlab/core-meta"]
    for series in settings.JUPYTERHUB_SERIES:
        assert images.locked_version("jupyterlab", series, image="user") == core
    assert (
        "@jupyterlab/notebook-extension:cell-executor"
        in (package["jupyterlab"]["disabledExtensions"])
    )
    built = tmp_path / "user/wait-for-kernel/node_modules/x/index.js"
    built.parent.mkdir(parents=True)
    built.write_text("x")
    (tmp_path / "user/Dockerfile").write_text("FROM x")
    monkeypatch.setattr(images, "IMAGES_DIR", tmp_path)
    assert list(images.context_files("user")) == ["Dockerfile"]


def test_pulled_images_are_used_as_named(tmp_path: Path) -> None:
    path = tmp_path / "p.env"
    path.write_text(ENV + "IMAGE_SOURCE=pull\nUSER_IMAGE=quay.io/course/user:2026.1\n")
    assert images.image_ref(settings.load(str(path)), "user") == "quay.io/course/user:2026.1"


def test_build_uses_the_legacy_builder_on_host_networking() -> None:
    command = images.build_command("r:1", "swarmhub/debian:trixie", "/srv/b")
    assert "DOCKER_BUILDKIT=0 docker build --network host" in command
    assert "--build-arg BASE=swarmhub/debian:trixie" in command


def test_hub_settings_carry_limits_users_and_the_user_image(env) -> None:
    text = hub.hub_settings_env(env)
    assert f"USER_MEM_LIMIT={2 * 1024**3}\n" in text and "USER_CPU_LIMIT=1.0" in text
    assert "ALLOWED_USERS=alice,bob" in text and "ADMIN_USERS=alice" in text
    assert "USER_IMAGE=hub:5000/swarmhub/user:" in text


def test_compose_restarts_the_hub_when_its_settings_change(env, tmp_path: Path) -> None:
    compose = hub.render_compose(env)
    assert "--timeout=1800" in compose
    assert "container_name: chp" in compose and "container_name: cull" in compose
    other = tmp_path / "o.env"
    other.write_text(ENV.replace("USER_CPU_LIMIT=1", "USER_CPU_LIMIT=2"))
    changed = hub.render_compose(settings.load(str(other)))
    digest = [line for line in compose.splitlines() if "io.swarmhub.config" in line]
    assert digest and digest[0] not in changed


def test_secret_env_files_are_assembled_on_the_hub() -> None:
    command = secret_env_file_command("/s", "proxy.env", {"CONFIGPROXY_AUTH_TOKEN": "proxy_token"})
    assert 'echo "CONFIGPROXY_AUTH_TOKEN=$(cat /s/proxy_token)"' in command
    assert "umask 077" in command and command.endswith("exit $status")


def test_nginx_site_redirects_upgrades_websockets_and_forwards_to_the_hub(env) -> None:
    site = proxy.render_site(env)
    assert "return 301 https://$host$request_uri;" in site
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    assert "server hub:8000;" in site
    assert "server_name jupyter.example.edu;" in site


def test_self_signed_certificate_names_the_domain_and_address() -> None:
    command = proxy.self_signed_command("sam-proxy", "10.231.0.11")
    assert "subjectAltName=DNS:sam-proxy,IP:10.231.0.11" in command
    assert "chmod 600 /etc/swarmhub/tls/privkey.pem" in command


def test_fab_host_runs_its_part_of_a_task_of_several_roles(env) -> None:
    distribute = [images.SERVE, images.PULL]
    assert steps_for_host(distribute, env, "hub") == [images.SERVE]
    assert steps_for_host(distribute, env, "node-1") == [images.PULL]
    assert steps_for_host(distribute, env, None) == distribute
    # No step concerns the proxy: the first one stays, and step_hosts refuses it.
    assert steps_for_host(distribute, env, "proxy") == [images.SERVE]
    assert steps_for_host([hub.STEP], env, "proxy") == [hub.STEP]


def test_a_failed_command_never_shows_the_secret_it_carried() -> None:
    token = "SWMTKN-1-2m74rk5pyywo1iohx8e0dhra8oivp6hzc8x8zmmpm0ll9krtao-6pcy5jdzx56v1tepaq"

    class Refusing:
        def run(self, command: str, **_: object) -> SimpleNamespace:
            assert token in command  # the host gets the token ...
            error = f"Error response from daemon: join {token} timed out"
            return SimpleNamespace(stdout="", stderr=error, failed=True, exited=1)

    node = Host("node-3", ("node",), Refusing())
    with pytest.raises(SwarmhubError) as caught:
        node.run(f"docker swarm join --token {token} 10.0.0.10:2377")
    message = str(caught.value)  # ... the error line does not
    assert token[:12] not in message
    assert "docker swarm join --token *** 10.0.0.10:2377" in message
    assert message.endswith("join *** timed out")


def test_a_files_state_is_one_round_trip() -> None:
    command = file_state_command("/etc/docker/daemon.json")
    assert command.count("/etc/docker/daemon.json") == 2 and "&&" in command
    digest = "ab" * 32
    assert parse_file_state(f"644 root\n{digest}  /etc/x\n") == (["644", "root"], digest)
    assert parse_file_state("") == ([], None)  # missing
    assert parse_file_state("600 root\n") == (["600", "root"], None)  # unreadable


def test_build_stages_are_pruned_only_after_every_parallel_build() -> None:
    # A stage's image is untagged until its image's last stage copies from it: pruning
    # after the first build to end removed the user image's node stage mid-build.
    command = images.parallel_build_command([("r/hub:1", "b", "/c/hub"), ("r/user:1", "b", "/c/u")])
    lines = command.splitlines()
    prune = next(i for i, line in enumerate(lines) if "docker image prune" in line)
    assert images.BUILD_STAGE_LABEL in lines[prune]
    assert all(i < prune for i, line in enumerate(lines) if line.startswith("wait "))
    assert all("prune" not in line for line in lines[:prune])

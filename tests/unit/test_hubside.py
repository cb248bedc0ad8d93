"""The hub's spawner module (swarmhub/hubside/swarmhub_spawner.py): placed beside
jupyterhub_config.py on the hub, importable there without swarmhub, and set up by the config
on the real JupyterHub and DockerSpawner the hub image pins."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
from dockerspawner import SwarmSpawner
from jupyterhub import __version__ as jupyterhub_v
from jupyterhub.utils import format_exception
from tornado.web import HTTPError
from traitlets.config import Config

from swarmhub import settings
from swarmhub.hubside import SPAWNER_MODULE
from swarmhub.observe.diagnose import config_paths
from swarmhub.settings import PROJECT_ROOT
from swarmhub.steps import hub, images

# What the hub image has besides the standard library (images/hub/requirements.txt) that the
# module may use.
HUB_IMAGE_PACKAGES = {"dockerspawner", "jupyterhub", "prometheus_client", "tornado"}
# ... and what it imports where the series has it (in `try: ... except ImportError`): JupyterHub
# 6's HTTP client, aiohttp.
SERIES_PACKAGES = {"aiohttp"}


def hub_env(homes: Path) -> str:
    return (
        "USER_IMAGE=u\nSWARM_NETWORK=n\nUSER_MEM_LIMIT=1073741824\nUSER_CPU_LIMIT=1.5\n"
        f"HOMES_DIR={homes}\nHOME_UID={os.getuid()}\nHOME_GID={os.getgid()}\n"
        "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=x\nCULLER_API_TOKEN=t\nSPAWN_CONCURRENCY=\n"
    )


def course(tmp_path: Path) -> settings.Settings:
    env_file = tmp_path / "course.env"
    env_file.write_text("HUB_HOST=hub\nNODE_HOSTS=n1,n2\nPROXY_HOST=proxy\n")
    return settings.load(str(env_file))


def test_the_module_imports_only_what_the_hub_image_has() -> None:
    tree = ast.parse(SPAWNER_MODULE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: the hub has no package around it"
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) <= HUB_IMAGE_PACKAGES | SERIES_PACKAGES


def locked(series: str) -> dict[str, str]:
    lock = images.context_files("hub", series)["requirements.txt"].decode().splitlines()
    return dict(line.split("==") for line in lock if "==" in line and not line.startswith("#"))


def test_the_tests_pin_the_default_series_hub_image_versions() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["test"]
    test_pins = dict(item.split("==") for item in extra if "==" in item)
    assert set(test_pins) >= {*HUB_IMAGE_PACKAGES, "traitlets"}  # traitlets: the config loader
    pinned = locked(settings.DEFAULT_SERIES)
    assert test_pins == {name: pinned[name] for name in test_pins}


def test_these_tests_run_on_the_versions_of_a_series_hub_image() -> None:
    # .venv: the default series; .venv-jupyterhub-5.5 (scripts/test): the 5.5 series.
    installed = {name: metadata.version(name) for name in (*HUB_IMAGE_PACKAGES, "traitlets")}
    series = [s for s in settings.JUPYTERHUB_SERIES if locked(s)["jupyterhub"] == jupyterhub_v]
    assert series, f"JupyterHub {jupyterhub_v} is the hub image of no series"
    pinned = locked(series[0])
    assert installed == {name: pinned[name] for name in installed}


def test_each_series_locks_one_jupyterhub_in_both_images() -> None:
    for series in settings.JUPYTERHUB_SERIES:
        hub_version = images.locked_version("jupyterhub", series, "hub")
        assert hub_version.startswith(series + "."), series
        # A user image of another major logs a warning of login redirect loops (upstream).
        assert images.locked_version("jupyterhub", series, "user") == hub_version
    chp = json.loads(images.context_files("hub")["chp/package.json"])
    assert chp["dependencies"]["configurable-http-proxy"] == "5.3.0"
    assert images.jupyterhub_version_of("6.1") == "6.1.1"


def test_the_hub_mounts_the_module_beside_its_config(tmp_path: Path) -> None:
    compose = hub.render_compose(course(tmp_path))
    assert "command: [jupyterhub, -f, /srv/jupyterhub/jupyterhub_config.py]\n" in compose
    assert "- ./jupyterhub_config.py:/srv/jupyterhub/jupyterhub_config.py:ro\n" in compose
    assert "- ./swarmhub_spawner.py:/srv/jupyterhub/swarmhub_spawner.py:ro" in compose


def test_diagnose_collects_the_module(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    assert f"{loaded.hub_dir}/swarmhub_spawner.py" in config_paths(loaded, ("hub",))


def test_a_changed_spawner_restarts_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = course(tmp_path)
    before = hub.render_compose(loaded)
    monkeypatch.setattr(hub, "spawner_module", lambda: SPAWNER_MODULE.read_text() + "# new\n")
    after = hub.render_compose(loaded)
    changed = [
        (b, a) for b, a in zip(before.splitlines(), after.splitlines(), strict=True) if b != a
    ]
    assert len(changed) == 1 and "io.swarmhub.config:" in changed[0][0]


def hub_spawner(config: Config, user: str = "Bob") -> SwarmSpawner:
    """A user's spawner as the hub makes it: the config's class with the config's values."""
    return config.JupyterHub.spawner_class(config=config, user=SimpleNamespace(name=user))


def test_the_config_sets_up_the_real_spawner(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(hub_env(tmp_path / "homes"))
    spawner = hub_spawner(config)
    assert isinstance(spawner, SwarmSpawner)
    assert spawner.mem_limit == spawner.mem_guarantee == 1024**3  # the env's bytes reach Docker
    assert spawner.cpu_limit == 1.5
    assert spawner.start_timeout == spawner.http_timeout == 300
    assert spawner.extra_placement_spec == {"constraints": ["node.role == worker"]}
    assert config.JupyterHub.concurrent_spawn_limit == 0  # the queue serves a class start


def test_the_hubs_http_client_asks_the_system_resolver_each_time(
    tmp_path: Path, load_hub_config: Callable[[str], Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """JupyterHub 6's aiohttp client, set up by the config, resolves through getaddrinfo (no
    c-ares cache that kept a restarted server's old address for Docker's TTL of 600 s)."""
    pytest.importorskip("jupyterhub.httpclient")  # JupyterHub 6; 5.5 has tornado's client
    from aiohttp import TCPConnector
    from jupyterhub.httpclient import JupyterHubHTTPClient

    config = load_hub_config(hub_env(tmp_path / "homes"))
    asked: list[str] = []

    async def resolve() -> list[str]:
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def counting(host: str, *args: object, **kwargs: object) -> object:
            asked.append(host)
            return await real(host, *args, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", counting)
        client = JupyterHubHTTPClient(config=config)
        connector = client._new_connector()
        assert isinstance(connector, TCPConnector)
        try:
            first = await connector._resolver.resolve("localhost", 80)
            await connector._resolver.resolve("localhost", 80)
        finally:
            await connector.close()
        return [entry["host"] for entry in first]

    assert "127.0.0.1" in asyncio.run(resolve())
    assert asked == ["localhost", "localhost"]


def test_the_hub_makes_the_home_the_server_mounts(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    homes = tmp_path / "homes"
    spawner = hub_spawner(load_hub_config(hub_env(homes)), user="Bob")
    spawner.run_pre_spawn_hook()
    home = homes / "-42ob"  # DockerSpawner's escaping of "Bob"
    assert home.is_dir() and home.stat().st_mode & 0o777 == 0o700
    assert spawner.volume_binds == {str(home): {"bind": "/home/jovyan", "mode": "rw"}}
    home.chmod(0o755)  # changed by hand: set right again at the next spawn
    spawner.run_pre_spawn_hook()
    assert home.stat().st_mode & 0o777 == 0o700


def refused_with(spawner: SwarmSpawner, error: str) -> Exception:
    asked: list[str] = []

    async def get_task() -> dict:
        asked.append("task")
        return {"Status": {"State": "pending", "Err": error}}

    spawner.get_task = get_task
    with pytest.raises(HTTPError) as caught:
        asyncio.run(asyncio.wait_for(spawner.start_object(), 1))
    assert asked == ["task"]  # at once, not at the start timeout
    return caught.value


def test_a_full_cluster_is_said_at_once_as_a_refusal(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    spawner = hub_spawner(load_hub_config(hub_env(tmp_path)))
    refused = refused_with(spawner, "no suitable node (insufficient resources on 2 nodes)")
    message, _ = format_exception(refused)  # what JupyterHub shows the student
    assert message.startswith("The cluster is full right now: no node has room")
    assert refused.reason == "cluster_full" and refused.status_code == 503
    assert "insufficient resources on 2 nodes" in refused.log_message
    if jupyterhub_v.startswith("6."):
        # JupyterHub 6 counts it as status="failure", reason="cluster_full", not as an error.
        from jupyterhub.spawner import SpawnException

        assert isinstance(refused, SpawnException)


def test_no_node_taking_servers_is_a_refusal_too(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    spawner = hub_spawner(load_hub_config(hub_env(tmp_path)))
    error = "no suitable node (2 nodes not available for new tasks; scheduling constraints …)"
    refused = refused_with(spawner, error)
    assert refused.reason == "no_node"
    assert format_exception(refused)[0].startswith("No node takes new servers right now")


def test_a_running_task_is_seen_at_once(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    spawner = hub_spawner(load_hub_config(hub_env(tmp_path)))
    states = iter(["running", "running"])

    async def get_task() -> dict:
        return {"Status": {"State": next(states)}}

    spawner.get_task = get_task
    asyncio.run(asyncio.wait_for(spawner.start_object(), 0.5))
    assert next(states, None) is None  # ours looked once, then SwarmSpawner's own check


def test_a_waiting_student_sees_their_place_in_line(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(hub_env(tmp_path).replace("SPAWN_CONCURRENCY=", "SPAWN_CONCURRENCY=1"))
    spawners = [hub_spawner(config, user=name) for name in ("ann", "ben", "cat", "dan")]

    async def storm() -> tuple[dict, dict]:
        queue = config.JupyterHub.spawner_class.spawn_queue
        await queue.take_turn()  # ann starts
        waiting = [asyncio.create_task(queue.take_turn(s._queued)) for s in spawners[1:]]
        await asyncio.sleep(0)
        progress = spawners[3].progress()
        dan_sees = await anext(progress)
        await progress.aclose()
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        spawners[0].phase = "booting"
        return dan_sees, await anext(spawners[0].progress())

    dan_sees, ann_sees = asyncio.run(storm())
    assert dan_sees == {
        "progress": 10,
        "message": "Many students are starting at once: 2 ahead of you in line",
    }
    assert ann_sees == {"progress": 80, "message": "Your server is booting"}


def test_the_hub_reaches_a_server_by_its_tasks_address(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    spawner = hub_spawner(load_hub_config(hub_env(tmp_path)))

    async def get_task() -> dict:
        other = {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.5/24"]}
        ours = {"Network": {"Spec": {"Name": "n"}}, "Addresses": ["10.250.8.5/20"]}
        return {"NetworksAttachments": [other, ours]}

    spawner.get_task = get_task
    # Not the service's name: the hub's resolver caches a restarted server's old address.
    assert asyncio.run(spawner.get_ip_and_port()) == ("10.250.8.5", 8888)


def node_lost_poll(spawner: SwarmSpawner, state: str, nodes: list[dict]) -> object:
    """What poll says of a running task on node `n1` when the swarm lists ``nodes``."""

    async def get_task() -> dict:
        return {"NodeID": "n1", "Status": {"State": state}}

    async def get_object() -> dict:
        return {"ID": "s1"}

    async def docker(method: str, *args: object, **kwargs: object) -> object:
        assert method == "nodes"
        return nodes

    spawner.get_task, spawner.get_object, spawner.docker = get_task, get_object, docker
    spawner.object_id = "s1"
    type(spawner).node_states.read_at = float("-inf")
    return asyncio.run(spawner.poll())


def test_a_server_on_a_dead_node_is_gone_at_the_next_poll(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(hub_env(tmp_path))
    assert config.Spawner.poll_interval == 5
    assert config.SwarmSpawner.extra_task_spec == {"restart_policy": {"Condition": "none"}}
    ready = [{"ID": "n1", "Description": {"Hostname": "node-1"}, "Status": {"State": "ready"}}]
    down = [{"ID": "n1", "Description": {"Hostname": "node-1"}, "Status": {"State": "down"}}]
    spawner = hub_spawner(config)
    assert node_lost_poll(spawner, "running", ready) is None
    assert node_lost_poll(spawner, "running", down) == "gone: its node node-1 is down"
    assert type(spawner).lost_nodes.pop("Bob") == "its node node-1 is down"
    assert node_lost_poll(hub_spawner(config), "running", []) == "gone: its node left the swarm"
    assert node_lost_poll(hub_spawner(config), "failed", ready) is not None  # as before


def test_a_server_the_swarm_moved_is_stopped_not_routed_to_nothing(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(hub_env(tmp_path))
    spawner = hub_spawner(config)
    ready = [{"ID": "n1", "Description": {"Hostname": "node-1"}, "Status": {"State": "ready"}}]
    moved = {"Network": {"Spec": {"Name": "n"}}, "Addresses": ["10.250.8.9/21"]}

    async def get_task() -> dict:
        return {"NodeID": "n1", "Status": {"State": "running"}, "NetworksAttachments": [moved]}

    async def get_object() -> dict:
        return {"ID": "s1"}

    async def docker(method: str, *args: object, **kwargs: object) -> object:
        return ready

    spawner.get_task, spawner.get_object, spawner.docker = get_task, get_object, docker
    spawner.object_id = "s1"
    type(spawner).node_states.read_at = float("-inf")
    spawner.server = SimpleNamespace(ip="10.250.8.5")
    assert asyncio.run(spawner.poll()) == "moved: now at 10.250.8.9, routed to 10.250.8.5"
    spawner.server = SimpleNamespace(ip="10.250.8.9")
    assert asyncio.run(spawner.poll()) is None
    # Routed by its service name (no task address yet when it started): not a move.
    spawner.server = SimpleNamespace(ip="jupyter-bob")
    assert asyncio.run(spawner.poll()) is None

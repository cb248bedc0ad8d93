"""Whether the cluster has room for one more server, asked before a start queues
(swarmhub/hubside/swarmhub_spawner.py, Room): a student the cluster cannot take is told at
once, not after waiting their turn in line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from traitlets.config import Config

from swarmhub.hubside.swarmhub_spawner import free_reservations, room_left

GIB = 2**30
HUB_ENV = (
    "USER_IMAGE=u\nSWARM_NETWORK=n\nUSER_MEM_LIMIT=1073741824\nUSER_CPU_LIMIT=1\nHOMES_DIR=/h\n"
    "HOME_UID=1000\nHOME_GID=100\nAUTHENTICATOR=dummy\nDUMMY_PASSWORD=x\nCULLER_API_TOKEN=t\n"
    "SPAWN_CONCURRENCY=1\n"
)


def node(node_id: str, memory: int, *, availability: str = "active", state: str = "ready") -> dict:
    return {
        "ID": node_id,
        "Spec": {"Availability": availability},
        "Status": {"State": state},
        "Description": {"Resources": {"MemoryBytes": memory, "NanoCPUs": 2 * 10**9}},
    }


def task(node_id: str, memory: int, service: str = "s") -> dict:
    return {
        "NodeID": node_id,
        "ServiceID": service,
        "Spec": {"Resources": {"Reservations": {"MemoryBytes": memory}}},
    }


def test_a_nodes_room_is_its_memory_less_its_tasks_reservations() -> None:
    nodes = [node("a", 4 * GIB), node("b", 4 * GIB), node("c", 4 * GIB, availability="drain")]
    nodes.append(node("d", 4 * GIB, state="down"))
    tasks = [task("a", GIB), task("a", GIB), task("b", GIB, "mine"), task("c", GIB)]
    free = free_reservations(nodes, tasks, skip_services={"mine"})
    # Drained and down nodes take nothing; a claimed start's own task is not counted twice.
    assert free == {"a": (2 * GIB, 2 * 10**9), "b": (4 * GIB, 2 * 10**9)}


@pytest.mark.parametrize(
    ("ahead", "wanted", "fits"),
    [
        ([], GIB, True),
        ([GIB, GIB, GIB], GIB, True),  # 2 + 2 free: the fourth still fits
        ([GIB, GIB, GIB, GIB], GIB, False),
        ([3 * GIB], 2 * GIB, True),  # 3 GiB goes nowhere (refused itself): takes nothing
        ([GIB], 2 * GIB, True),  # 1 GiB goes to the node with most room, 2 left on the other
        ([], 3 * GIB, False),  # 4 GiB free in all, but no node has 3
    ],
)
def test_a_start_fits_after_those_ahead_of_it(ahead: list[int], wanted: int, fits: bool) -> None:
    free = {"a": (2 * GIB, 0), "b": (2 * GIB, 0)}
    assert room_left(free, [(need, 0) for need in ahead], (wanted, 0)) is fits


@pytest.fixture
def spawner_class(load_hub_config: Callable[[str], Config]) -> Any:
    config = load_hub_config(HUB_ENV)
    cls = config.JupyterHub.spawner_class
    cls.room.read_at = float("-inf")
    cls.room.claims.clear()
    cls.config_for_test = config
    return cls


def spawner_of(cls: Any, name: str, nodes: list[dict], tasks: list[dict]) -> Any:
    spawner = cls(config=cls.config_for_test, user=SimpleNamespace(name=name, groups=[]))

    async def docker(method: str, *args: object, **kwargs: object) -> object:
        return {"nodes": nodes, "tasks": tasks}[method]

    spawner.docker = docker
    return spawner


def test_a_student_the_cluster_cannot_take_is_refused_before_queueing(spawner_class: Any) -> None:
    # One node of 2 GiB, one server of 1 GiB on it, one start under way (ann's, claimed):
    # ben's 1 GiB fits nowhere once ann's is placed.
    nodes, tasks = [node("a", 2 * GIB)], [task("a", GIB)]
    ann = spawner_of(spawner_class, "ann", nodes, tasks)
    assert asyncio.run(spawner_class.room.claim(ann, (GIB, 0))) == ""
    ben = spawner_of(spawner_class, "ben", nodes, tasks)
    queue = spawner_class.spawn_queue
    with pytest.raises(Exception) as caught:  # the hub's copy of the module's ClusterFull
        asyncio.run(ben.start())
    assert type(caught.value).__name__ == "ClusterFull" and caught.value.reason == "cluster_full"
    assert "1 start(s) ahead in line" in caught.value.log_message
    assert queue.starting == 0 and not queue.waiting  # it took no place in line
    assert list(spawner_class.room.claims) == ["ann"]  # and left no claim


def test_a_swarm_that_does_not_answer_lets_the_start_go_on(spawner_class: Any) -> None:
    ben = spawner_of(spawner_class, "ben", [], [])

    async def docker(method: str, *args: object, **kwargs: object) -> object:
        raise ConnectionError("no swarm")

    ben.docker = docker
    assert asyncio.run(spawner_class.room.claim(ben, (GIB, 0))) == ""
    assert list(spawner_class.room.claims) == ["ben"]


def test_students_arriving_together_are_counted_one_after_the_other(spawner_class: Any) -> None:
    # Room for two on one node, three ask at once: the third is refused, whatever the order
    # in which the swarm's answer reaches them.
    nodes = [node("a", 2 * GIB)]
    students = [spawner_of(spawner_class, name, nodes, []) for name in ("ann", "ben", "cat")]

    async def together() -> list[str]:
        return await asyncio.gather(*(spawner_class.room.claim(s, (GIB, 0)) for s in students))

    answers = asyncio.run(together())
    assert [bool(why) for why in answers] == [False, False, True]
    assert list(spawner_class.room.claims) == ["ann", "ben"]

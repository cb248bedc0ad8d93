"""The hub's spawn queue (swarmhub/hubside/swarmhub_spawner.py, set up by the hub's
jupyterhub_config.py): servers start in turns, in order of arrival, and a spawn the hub gives
up on never keeps a turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from traitlets.config import Config

from swarmhub import settings
from swarmhub.hubside.swarmhub_spawner import SpawnQueue
from swarmhub.steps import hub

HUB_ENV = (
    "USER_IMAGE=u\nSWARM_NETWORK=n\nUSER_MEM_LIMIT=1073741824\nUSER_CPU_LIMIT=1\nHOMES_DIR=/h\n"
    "HOME_UID=1000\nHOME_GID=100\nAUTHENTICATOR=dummy\nDUMMY_PASSWORD=x\nCULLER_API_TOKEN=t\n"
)


def hub_queue(config: Config) -> SpawnQueue:
    """The line the hub's spawner class takes turns in (a class attribute: one for the hub)."""
    return config.JupyterHub.spawner_class.spawn_queue


@pytest.fixture
def set_queue(load_hub_config: Callable[[str], Config]) -> SpawnQueue:
    """The hub's queue with SPAWN_CONCURRENCY=2."""
    return hub_queue(load_hub_config(HUB_ENV + "SPAWN_CONCURRENCY=2\n"))


def test_the_limit_comes_from_the_env(set_queue: SpawnQueue) -> None:
    assert set_queue.limit == 2


@pytest.mark.parametrize(("line", "expected"), [("", ""), ("SPAWN_CONCURRENCY=5\n", "5")])
def test_the_env_gives_the_hub_its_limit(tmp_path: Path, line: str, expected: str) -> None:
    env_file = tmp_path / "course.env"
    env_file.write_text("HUB_HOST=hub\nNODE_HOSTS=n1,n2,n3\nPROXY_HOST=proxy\n" + line)
    hub_env = hub.hub_settings_env(settings.load(str(env_file)))
    assert f"\nSPAWN_CONCURRENCY={expected}\n" in hub_env


class FakeSpawner:
    """What follow_nodes asks of a spawner: SwarmSpawner's docker(), here a swarm's nodes."""

    def __init__(self, nodes: list[tuple[str, str]]) -> None:
        self.nodes = [{"Spec": {"Availability": a}, "Status": {"State": s}} for a, s in nodes]
        self.calls = 0

    async def docker(self, method: str, **filters: object) -> list[dict]:
        assert method == "nodes" and filters == {"filters": {"role": "worker"}}
        self.calls += 1
        return self.nodes


def test_without_a_setting_two_starts_a_node_taking_servers(
    load_hub_config: Callable[[str], Config],
) -> None:
    queue = hub_queue(load_hub_config(HUB_ENV + "SPAWN_CONCURRENCY=\n"))
    swarm = FakeSpawner([("active", "ready"), ("active", "ready"), ("pause", "ready")])
    swarm.nodes.append({"Spec": {"Availability": "active"}, "Status": {"State": "down"}})

    async def twice() -> None:
        await queue.follow_nodes(swarm)
        await queue.follow_nodes(swarm)  # within 30 s: not asked again

    asyncio.run(twice())
    assert queue.limit == 4
    assert swarm.calls == 1


def test_a_higher_limit_lets_the_next_in_line_start() -> None:
    queue = SpawnQueue(1)

    async def scenario() -> tuple[bool, int]:
        await queue.take_turn()
        waiting = asyncio.create_task(queue.take_turn())
        await asyncio.sleep(0)
        queue.set_limit(2)  # a node joined
        await asyncio.wait_for(waiting, 1)
        return waiting.done(), queue.starting

    assert asyncio.run(scenario()) == (True, 2)


def test_a_set_limit_follows_the_env_not_the_nodes(set_queue: SpawnQueue) -> None:
    swarm = FakeSpawner([("active", "ready")] * 5)
    asyncio.run(set_queue.follow_nodes(swarm))
    assert set_queue.limit == 2 and swarm.calls == 0


def test_starts_take_turns_in_order_of_arrival() -> None:
    queue = SpawnQueue(2)
    order: list[str] = []
    places: dict[str, int] = {}

    async def spawn(name: str, seconds: float) -> None:
        tickets: list[asyncio.Future[None]] = []
        await queue.take_turn(on_wait=tickets.append)
        if tickets:
            places[name] = -1  # queued: its place was shown while waiting
        order.append(name)
        try:
            await asyncio.sleep(seconds)
        finally:
            queue.end_turn()

    async def storm() -> list[int]:
        tasks = [asyncio.create_task(spawn(f"s{i}", 0.05)) for i in range(6)]
        await asyncio.sleep(0.01)
        ahead = [queue.ahead_of(ticket) for ticket in queue.waiting]
        await asyncio.gather(*tasks)
        return ahead

    ahead = asyncio.run(storm())
    assert order == [f"s{i}" for i in range(6)]
    assert ahead == [0, 1, 2, 3]  # four waited, each seeing how many were ahead
    assert set(places) == {"s2", "s3", "s4", "s5"}
    assert queue.starting == 0 and not queue.waiting


def test_a_spawn_given_up_while_waiting_leaves_the_line() -> None:
    queue = SpawnQueue(1)

    async def scenario() -> tuple[int, int]:
        await queue.take_turn()
        waiting = asyncio.create_task(queue.take_turn())
        later = asyncio.create_task(queue.take_turn())
        await asyncio.sleep(0)
        waiting.cancel()  # the hub's start_timeout
        await asyncio.sleep(0)
        in_line = len(queue.waiting)
        queue.end_turn()  # the first start ends: the turn goes to `later`
        await asyncio.wait_for(later, 1)
        queue.end_turn()
        return in_line, queue.starting

    in_line, starting = asyncio.run(scenario())
    assert in_line == 1
    assert starting == 0


def test_a_turn_handed_to_a_cancelled_spawn_is_passed_on() -> None:
    queue = SpawnQueue(1)

    async def scenario() -> int:
        await queue.take_turn()
        handed = asyncio.create_task(queue.take_turn())
        later = asyncio.create_task(queue.take_turn())
        await asyncio.sleep(0)
        queue.end_turn()  # hands the turn to `handed`…
        handed.cancel()  # …which is cancelled before it runs again
        await asyncio.gather(handed, return_exceptions=True)
        await asyncio.wait_for(later, 1)  # the turn reached the next in line
        queue.end_turn()
        return queue.starting

    assert asyncio.run(scenario()) == 0


def test_a_lower_limit_holds_the_line_until_starts_end() -> None:
    queue = SpawnQueue(3)

    async def scenario() -> list[int]:
        for _ in range(3):
            await queue.take_turn()
        waiting = asyncio.create_task(queue.take_turn())
        await asyncio.sleep(0)
        queue.set_limit(1)  # two nodes left
        seen = []
        for _ in range(3):
            queue.end_turn()
            await asyncio.sleep(0)
            seen.append(queue.starting)
        await asyncio.wait_for(waiting, 1)
        return seen

    # 3 starting, limit 1: the first two ends free turns, the third hands its turn on.
    assert asyncio.run(scenario()) == [2, 1, 1]


def test_a_swarm_that_does_not_answer_leaves_the_limit(
    load_hub_config: Callable[[str], Config],
) -> None:
    queue = hub_queue(load_hub_config(HUB_ENV + "SPAWN_CONCURRENCY=\n"))
    warnings: list[str] = []

    class Unreachable:
        log = type("Log", (), {"warning": lambda self, *args: warnings.append(args[0])})()

        async def docker(self, method: str, **_: object) -> list[dict]:
            raise OSError("docker.sock: connection refused")

    asyncio.run(queue.follow_nodes(Unreachable()))
    assert queue.limit == 2
    assert warnings and "could not list the swarm's nodes" in warnings[0]

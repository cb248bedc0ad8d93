"""benchmarks/hub_capacity's spawner: swarmhub's CourseSwarmSpawner with its Docker service
calls replaced by the stand-in (benchmarks/standin/server.py), and nothing else changed.

Kept, as on a real start: JupyterHub's spawn path (the user's token and OAuth client, the
pre-spawn hook that makes the home, the progress stream, the proxy's route, the readiness
checks), CourseSwarmSpawner.start (the profile, the image pinned by digest from the hub's
Docker, the room check against the swarm's real nodes and tasks, the queue with its limit
following the nodes), and at each poll the swarm's node states. Replaced: the service's
creation and removal and the reads of its task, which ask the stand-in instead; each poll
still sends the swarm the task query SwarmSpawner sends (its answer is empty here).

Each stand-in counts in the room check as a task reserving RESERVATION on a node (round
robin over the nodes), as a real server's reservation does, so that the check's arithmetic
runs over as many servers as the benchmark started.

Loaded by benchmarks/standin/jupyterhub_config.py only: never by a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from typing import Any, ClassVar
from urllib.parse import quote

from dockerspawner import SwarmSpawner
from swarmhub_spawner import CourseSwarmSpawner, Room
from tornado.httpclient import AsyncHTTPClient

STANDIN_HOST = "hub-capacity-standin"  # its container, on the users' overlay
STANDIN_PORT = 8888
RESERVATION = 2**20  # 1 MiB a stand-in: the room check counts it, the nodes never fill


class Placed:
    """The stand-ins started: user name -> the node their reservation is counted on."""

    nodes: ClassVar[dict[str, str]] = {}


class StandinRoom(Room):
    """Room, with each started stand-in counted as a task reserving RESERVATION."""

    async def read(self, spawner: SwarmSpawner) -> None:
        before = self.read_at
        await super().read(spawner)
        if self.read_at != before:  # read again from the swarm: add the stand-ins' tasks
            self.tasks = self.tasks + [
                {
                    "NodeID": node,
                    "ServiceID": f"standin-{name}",
                    "Spec": {"Resources": {"Reservations": {"MemoryBytes": RESERVATION}}},
                }
                for name, node in Placed.nodes.items()
            ]


class StandinStart(SwarmSpawner):
    """SwarmSpawner's Docker object calls, answered by the stand-in. Placed after
    CourseSwarmSpawner in StandinSpawner's bases, so that CourseSwarmSpawner's own calls to
    super() reach these."""

    address: ClassVar[str] = ""
    standin_client: ClassVar[AsyncHTTPClient | None] = None  # not `client`: the Docker one

    @property
    def standin_id(self) -> str:
        return f"standin-{self.user.name}"

    def control(self) -> tuple[str, dict[str, str]]:
        url = f"http://{STANDIN_HOST}:{STANDIN_PORT}/_standin/servers/{quote(self.user.name)}"
        return url, {"Authorization": f"token {os.environ['STANDIN_TOKEN']}"}

    def http(self) -> AsyncHTTPClient:
        if StandinStart.standin_client is None:  # not the hub's client, nor tornado's shared one
            StandinStart.standin_client = AsyncHTTPClient(force_instance=True, max_clients=100)
        return StandinStart.standin_client

    async def standin_address(self) -> str:
        if not StandinStart.address:
            loop = asyncio.get_running_loop()
            StandinStart.address = await loop.run_in_executor(
                None, socket.gethostbyname, STANDIN_HOST
            )
        return StandinStart.address

    async def get_object(self) -> dict[str, Any] | None:
        return {"ID": self.standin_id} if self.user.name in Placed.nodes else None

    async def create_object(self) -> dict[str, Any]:
        """The server registered with the stand-in, with the environment a real server gets
        (its JUPYTERHUB_* variables: token, OAuth client, prefix, activity URL)."""
        env = {k: v for k, v in self.get_env().items() if k.startswith("JUPYTERHUB_")}
        url, headers = self.control()
        await self.http().fetch(
            url, method="PUT", body=json.dumps(env), headers=headers, request_timeout=120
        )
        nodes = [node["ID"] for node in self.room.nodes] or [""]
        Placed.nodes[self.user.name] = nodes[len(Placed.nodes) % len(nodes)]
        return {"ID": self.standin_id}

    async def get_task(self) -> dict[str, Any] | None:
        """The stand-in's task: running, on its node, at the stand-in's address."""
        node = Placed.nodes.get(self.user.name)
        if node is None:
            return None
        with contextlib.suppress(Exception):  # the query a real poll sends: empty here
            await self.docker(
                "tasks", filters={"service": self.service_name, "desired-state": "running"}
            )
        address = await self.standin_address()
        return {
            "ID": self.standin_id,
            "NodeID": node,
            "ServiceID": self.standin_id,
            "Status": {"State": "running"},
            "NetworksAttachments": [
                {"Network": {"Spec": {"Name": self.network_name}}, "Addresses": [f"{address}/24"]}
            ],
        }

    async def start_object(self) -> None:
        """Nothing to wait for: the stand-in answers as soon as it is registered."""

    async def remove_object(self) -> None:
        url, headers = self.control()
        Placed.nodes.pop(self.user.name, None)
        await self.http().fetch(url, method="DELETE", headers=headers, request_timeout=120)


class StandinSpawner(CourseSwarmSpawner, StandinStart):
    """CourseSwarmSpawner on the stand-in (StandinStart), with its room check counting the
    stand-ins (StandinRoom)."""

    room: ClassVar[Room] = StandinRoom()

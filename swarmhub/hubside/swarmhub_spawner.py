"""swarmhub's spawner for JupyterHub: servers start in turns, a full cluster is said at once.

Copied to the hub by hub.deploy (from swarmhub/hubside/ in the swarmhub repository) beside
jupyterhub_config.py, which imports it; a change to this file restarts the hub, it does not
rebuild the hub's image. It runs in the hub image, where swarmhub is not installed: import
only the standard library, jupyterhub, dockerspawner and tornado here. What the hub is set to
(the env's values, `c.X = Y`) stays in jupyterhub_config.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from dockerspawner import SwarmSpawner
from jupyterhub.spawner import Spawner
from tornado.httpclient import AsyncHTTPClient

try:
    # JupyterHub 6: a spawn refused on purpose (the cluster is full) is a `failure` with a
    # reason in the spawn metrics, logged without a traceback, not an `error`.
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5 (JUPYTERHUB_SERIES=5.5): upstream's fallback, upgrading-v6.md
    from tornado.web import HTTPError

    class SpawnException(HTTPError):  # type: ignore[no-redef]
        def __init__(
            self,
            message: str,
            *,
            reason: str,
            log_message: str = "",
            message_html: str = "",
            status_code: int = 400,
        ) -> None:
            self.jupyterhub_message = message
            if message_html:
                self.jupyterhub_html_message = message_html
            super().__init__(status_code, log_message or message, reason=reason)


try:
    from aiohttp.resolver import ThreadedResolver
except ImportError:  # JupyterHub 5 (JUPYTERHUB_SERIES=5.5) has no aiohttp client
    ThreadedResolver = None  # type: ignore[assignment,misc]


def system_resolver() -> Any:
    """A resolver for JupyterHub 6's aiohttp client that asks the system (getaddrinfo, i.e.
    Docker's DNS) every time, instead of aiohttp's default with aiodns.

    Why: aiodns's c-ares keeps every answer for its TTL, and Docker's DNS answers with
    600 s. A user's server that restarts comes back at a new address under the same name
    (jupyter-NAME, dnsrr), and the hub kept asking the old one: seen on the sandbox, a
    culled student's next start "never showed up" after 300 s while the server ran. Only
    aiohttp's own cache of 10 s remains (TCPConnector's ttl_dns_cache).

    JupyterHub builds its connector inside its event loop, from `connector_options`, which
    jupyterhub_config.py fills before any loop runs: so the resolver finds its loop when it
    first resolves, not when it is made."""
    if ThreadedResolver is None:
        return None

    class SystemResolver(ThreadedResolver):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:  # no loop yet: see _loop
            pass

        @property
        def _loop(self) -> asyncio.AbstractEventLoop:
            return asyncio.get_running_loop()

    return SystemResolver()


# Without SPAWN_CONCURRENCY: this many starts at once for each node taking servers. A start
# is CPU-bound on its node; on the 2-core sandbox, 2 a node gave the fastest login storm.
STARTS_PER_NODE = 2
NODES_CHECK_SECONDS = 30  # how often a start may ask the swarm for its nodes
# A swarm task on its way to running: start_object looks again a second later.
STARTING_STATES = frozenset(
    {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)


class SpawnQueue:
    """At most `limit` servers start at once; the others wait their turn in order of arrival.

    In a login storm every start then gets the CPU it needs, so the first students are ready
    in seconds instead of all of them at the end, and a waiting student sees their place in
    line. A start holds its turn until its server answers HTTP."""

    def __init__(self, limit: int, *, follows_nodes: bool = False) -> None:
        self.limit = limit
        # True: the limit follows the nodes taking servers (nodes.add, nodes.drain and
        # nodes.remove change it without a hub restart); False: a limit set by the admin.
        self.follows_nodes = follows_nodes
        self.nodes_checked_at = float("-inf")
        self.starting = 0
        self.waiting: list[asyncio.Future[None]] = []  # first come first served

    @classmethod
    def for_concurrency(cls, spawn_concurrency: int) -> SpawnQueue:
        """The line SPAWN_CONCURRENCY asks for: that many starts at once, or with 0 (empty)
        STARTS_PER_NODE for each node taking servers."""
        if spawn_concurrency:
            return cls(spawn_concurrency)
        return cls(STARTS_PER_NODE, follows_nodes=True)

    def set_limit(self, limit: int) -> None:
        """A new limit (nodes came or went); a higher one lets the next in line start."""
        self.limit = max(1, limit)
        while self.waiting and self.starting < self.limit:
            ticket = self.waiting.pop(0)
            if not ticket.done():
                self.starting += 1
                ticket.set_result(None)

    def ahead_of(self, ticket: asyncio.Future[None]) -> int:
        """How many wait before this ticket (0 once it is no longer in line)."""
        return self.waiting.index(ticket) if ticket in self.waiting else 0

    async def take_turn(
        self, on_wait: Callable[[asyncio.Future[None]], object] | None = None
    ) -> None:
        """Wait for a turn; on_wait(ticket) is called when the start has to queue."""
        if self.starting < self.limit and not self.waiting:
            self.starting += 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        if on_wait:
            on_wait(ticket)
        try:
            await ticket
        except asyncio.CancelledError:  # the hub gave up on this spawn (start_timeout)
            if ticket in self.waiting:
                self.waiting.remove(ticket)
            elif ticket.done() and not ticket.cancelled():
                self.end_turn()  # the turn was handed over just before: pass it on
            raise

    def end_turn(self) -> None:
        """Hand the turn to the first one waiting, or free it (also when the limit went
        down meanwhile and more are starting than it allows)."""
        while self.waiting and self.starting <= self.limit:
            ticket = self.waiting.pop(0)
            if not ticket.done():
                ticket.set_result(None)
                return
        self.starting -= 1

    async def follow_nodes(self, spawner: SwarmSpawner) -> None:
        """Set the limit to STARTS_PER_NODE a node taking servers, asking the swarm (through
        the spawner's Docker client) at most every NODES_CHECK_SECONDS; a limit set by the
        admin stays as it is."""
        now = asyncio.get_running_loop().time()
        if not self.follows_nodes or now - self.nodes_checked_at < NODES_CHECK_SECONDS:
            return
        self.nodes_checked_at = now
        try:
            nodes = await spawner.docker("nodes", filters={"role": "worker"})
        except Exception as error:  # the spawn goes on with the limit it had
            spawner.log.warning("spawn queue: could not list the swarm's nodes: %s", error)
            return
        taking = [
            node
            for node in nodes
            if node["Spec"].get("Availability") == "active"
            and node["Status"].get("State") == "ready"
        ]
        self.set_limit(STARTS_PER_NODE * len(taking))


class Refused(SpawnException):
    """A spawn swarmhub refuses on purpose, with the reason the spawn metrics count it under
    (`status="failure"`, JupyterHub 6) and the message the student sees at once."""

    def __init__(self, message: str, *, reason: str, detail: str) -> None:
        # 503: the cluster cannot take the server now; trying later may work.
        super().__init__(message, reason=reason, log_message=detail, status_code=503)
        # What JupyterHub shows the student, on the spawn page as on the progress page.
        self.jupyterhub_message = message


class ClusterFull(Refused):
    """No node has room for the server (the swarm says: insufficient resources)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "The cluster is full right now: no node has room for another server. "
            "Please try again in a few minutes, or tell your course staff.",
            reason="cluster_full",
            detail=f"cluster full: {detail}",
        )


class NoNodeTakesServers(Refused):
    """No node takes new servers (all drained or paused, or none has joined the swarm)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "No node takes new servers right now (the cluster is being maintained). "
            "Please try again in a few minutes, or tell your course staff.",
            reason="no_node",
            detail=f"no node takes servers: {detail}",
        )


def refusal(task_error: str) -> Refused | None:
    """The refusal a swarm task's scheduling error means, if it is one."""
    if "insufficient resources" in task_error:
        return ClusterFull(task_error)
    if "no suitable node" in task_error and "not available for new tasks" in task_error:
        return NoNodeTakesServers(task_error)
    return None


class CourseSwarmSpawner(SwarmSpawner):
    """SwarmSpawner that starts servers in turns (SpawnQueue), tells a student at once when no
    node has room for their server instead of letting the spawn hang until it times out, and
    sees a server ready within a second rather than with the back-off of up to 11 s that
    SwarmSpawner and JupyterHub use when polling."""

    # One line for the whole hub, shared by every user's spawner: a class attribute set by
    # jupyterhub_config.py, not a trait (traitlets gives each spawner a deep copy of c.* values).
    spawn_queue: ClassVar[SpawnQueue] = SpawnQueue.for_concurrency(0)
    queue_ticket: asyncio.Future[None] | None = None
    phase = "requested"

    async def start(self) -> tuple[str, int]:
        self.phase = "requested"
        await self.spawn_queue.follow_nodes(self)
        await self.spawn_queue.take_turn(on_wait=self._queued)
        self.queue_ticket = None
        try:
            self.phase = "creating"
            ip, port = await super().start()
            self.phase = "booting"
            await self.wait_for_http(f"http://{ip}:{port}{self.server.base_url}api")
            return ip, port
        finally:
            self.spawn_queue.end_turn()

    def _queued(self, ticket: asyncio.Future[None]) -> None:
        self.queue_ticket = ticket
        self.phase = "queued"

    async def start_object(self) -> None:
        """Wait for the service's task to run, checking every second."""
        for _ in range(int(self.start_timeout)):
            task = await self.get_task()
            status = (task or {}).get("Status", {})
            state = status.get("State", "").lower()
            refused = refusal(status.get("Err", ""))
            if refused is not None:
                raise refused
            if state not in STARTING_STATES:
                break
            await asyncio.sleep(1)
        return await super().start_object()  # running: returns at once; else its error

    async def wait_for_http(self, url: str) -> None:
        """Until the server answers (any HTTP status) or http_timeout passes; JupyterHub's
        own check that follows then passes at once, or reports the failure."""
        client = AsyncHTTPClient(force_instance=True)  # not the hub's (its proxy calls)
        deadline = asyncio.get_running_loop().time() + self.http_timeout
        try:
            while asyncio.get_running_loop().time() < deadline:
                try:
                    await client.fetch(url, raise_error=False, request_timeout=3)
                    return
                except Exception:  # not listening yet, or its name not resolvable yet
                    await asyncio.sleep(0.5)
        finally:
            client.close()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """What a student sees while waiting: their place in line, then the start."""
        shown = None
        while self.phase != "booting":
            if self.phase == "queued" and self.queue_ticket is not None:
                ahead = self.spawn_queue.ahead_of(self.queue_ticket)
                message = (
                    f"Many students are starting at once: {ahead} ahead of you in line"
                    if ahead
                    else "You are next in line"
                )
                event = {"progress": 10, "message": message}
            else:
                event = {"progress": 30, "message": "Starting your server on a node"}
            if event != shown:
                yield event
                shown = event
            await asyncio.sleep(1)
        yield {"progress": 80, "message": "Your server is booting"}


def home_maker(homes_dir: str, uid: int, gid: int) -> Callable[[Spawner], None]:
    """A pre_spawn_hook that makes the user's home, homes_dir/<escaped name>, 0700 and owned
    by uid:gid (the user image's jovyan), before the spawn: a swarm bind mount fails when its
    source is missing."""

    def make_home(spawner: Spawner) -> None:
        path = os.path.join(homes_dir, spawner.escaped_name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        status = os.stat(path)
        if (status.st_uid, status.st_gid) != (uid, gid):
            os.chown(path, uid, gid)
        if status.st_mode & 0o777 != 0o700:
            os.chmod(path, 0o700)

    return make_home

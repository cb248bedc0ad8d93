"""swarmhub's spawner for JupyterHub: servers start in turns, a full cluster is said at once.

Copied to the hub by hub.deploy (from swarmhub/hubside/ in the swarmhub repository) beside
jupyterhub_config.py, which imports it; a change to this file restarts the hub, it does not
rebuild the hub's image. It runs in the hub image, where swarmhub is not installed: import
only the standard library, jupyterhub, dockerspawner, tornado and prometheus_client (a
jupyterhub dependency) here. What the hub is set to
(the env's values, `c.X = Y`) stays in jupyterhub_config.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from dockerspawner import SwarmSpawner
from jupyterhub.spawner import Spawner
from prometheus_client import REGISTRY, Gauge, Histogram
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
# How old the swarm's list of node states may be when a poll reads it: one `docker node ls`
# for all the servers polled in that time, not one a server.
NODE_STATES_SECONDS = 2.0
# How old the swarm's nodes and reservations may be when a start asks whether the cluster
# has room for it: one `docker node ls` and `docker service ps` for every start in that time.
ROOM_SECONDS = 2.0
# Where a start's time goes, on the hub's /hub/metrics beside JupyterHub's own: the wait in
# line apart from the start itself (JupyterHub's spawn histogram holds both), so that an
# alert on slow starts does not fire at every class start, when students wait their turn.
SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600)


def registered(metric: Any) -> Any:
    """The metric, in the registry JupyterHub's /hub/metrics serves (once: a second import of
    this module, as the unit tests make, keeps the first one's)."""
    with contextlib.suppress(ValueError):
        REGISTRY.register(metric)
    return metric


QUEUE_WAIT = registered(
    Histogram(
        "swarmhub_spawn_queue_wait_seconds",
        "Time a server start waited in line for its turn (0 when it did not queue)",
        buckets=SECONDS_BUCKETS,
        registry=None,
    )
)
START_DURATION = registered(
    Histogram(
        "swarmhub_server_start_seconds",
        "Time from a start's turn to its server answering HTTP (the wait in line apart)",
        buckets=SECONDS_BUCKETS,
        registry=None,
    )
)
QUEUE_WAITING = registered(
    Gauge("swarmhub_spawn_queue_waiting", "Server starts waiting in line now", registry=None)
)
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


class NodeStates:
    """The swarm's nodes (id -> (hostname, state)), read at most every NODE_STATES_SECONDS
    and shared by every spawner's poll (a class attribute of the spawner)."""

    def __init__(self) -> None:
        self.read_at = float("-inf")
        self.states: dict[str, tuple[str, str]] = {}
        self.lock = asyncio.Lock()

    async def of(self, spawner: SwarmSpawner, node_id: str) -> tuple[str, str] | None:
        """(hostname, state) of node ``node_id`` (None: unknown to the swarm)."""
        async with self.lock:
            now = asyncio.get_running_loop().time()
            if now - self.read_at >= NODE_STATES_SECONDS or node_id not in self.states:
                nodes = await spawner.docker("nodes")
                self.states = {
                    node["ID"]: (
                        node.get("Description", {}).get("Hostname", node["ID"][:12]),
                        node.get("Status", {}).get("State", "unknown"),
                    )
                    for node in nodes
                }
                self.read_at = now
        return self.states.get(node_id)


def free_reservations(
    nodes: list[dict[str, Any]], tasks: list[dict[str, Any]], skip_services: set[str]
) -> dict[str, tuple[int, int]]:
    """(memory bytes, nano CPUs) each node taking servers has left to reserve: its resources
    minus the reservations of the tasks the swarm keeps on it (desired state running), as
    the swarm's scheduler counts them. Tasks of skip_services are left out: their starts are
    counted by their claim instead, once, whether their service exists yet or not."""
    free: dict[str, tuple[int, int]] = {}
    for node in nodes:
        if node.get("Spec", {}).get("Availability") != "active":
            continue
        if node.get("Status", {}).get("State") != "ready":
            continue
        resources = node.get("Description", {}).get("Resources", {})
        free[node["ID"]] = (resources.get("MemoryBytes", 0), resources.get("NanoCPUs", 0))
    for task in tasks:
        node_id = task.get("NodeID", "")
        if node_id not in free or task.get("ServiceID") in skip_services:
            continue
        reserved = task.get("Spec", {}).get("Resources", {}).get("Reservations", {})
        memory, cpus = free[node_id]
        free[node_id] = (
            memory - reserved.get("MemoryBytes", 0),
            cpus - reserved.get("NanoCPUs", 0),
        )
    return free


def room_left(
    free: dict[str, tuple[int, int]], ahead: list[tuple[int, int]], wanted: tuple[int, int]
) -> bool:
    """Whether a server reserving ``wanted`` still fits once the starts ``ahead`` of it
    (queued or starting, in order) have theirs: each goes to the node with the most memory
    left that fits it (one that fits nowhere will be refused, and takes nothing). With one
    size of server, as most courses have, this is exactly what fits; with several profiles
    it is close, and the swarm stays the judge of a start that is let through."""
    left = dict(free)

    def fitting(need: tuple[int, int]) -> list[str]:
        return [
            node
            for node, (memory, cpus) in left.items()
            if memory >= need[0] and (not need[1] or cpus >= need[1])
        ]

    for need in ahead:
        nodes = fitting(need)
        if nodes:
            node = max(nodes, key=lambda name: left[name][0])
            left[node] = (left[node][0] - need[0], left[node][1] - need[1])
    return bool(fitting(wanted))


class Room:
    """Whether the cluster has room for one more server, asked before a start takes its place
    in line: a student the cluster cannot take is told at once, not after waiting their turn
    (seen on 2026-12-01, 56 servers running: 30 s in line, then "cluster full"). Shared by
    every spawner (a class attribute), like the queue."""

    def __init__(self) -> None:
        self.read_at = float("-inf")
        self.nodes: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.lock = asyncio.Lock()
        # The starts under way, in order of arrival: user name -> (reservation, service id
        # once made); a start is claimed from before its turn in line until it ran or failed.
        self.claims: dict[str, tuple[tuple[int, int], str]] = {}

    async def read(self, spawner: SwarmSpawner) -> None:
        """The swarm's nodes and running tasks, at most ROOM_SECONDS old."""
        async with self.lock:
            now = asyncio.get_running_loop().time()
            if now - self.read_at < ROOM_SECONDS:
                return
            self.nodes = await spawner.docker("nodes", filters={"role": "worker"})
            self.tasks = await spawner.docker("tasks", filters={"desired-state": "running"})
            self.read_at = now

    async def claim(self, spawner: SwarmSpawner, wanted: tuple[int, int]) -> str:
        """Claim room for a server reserving ``wanted``, and return empty, when it fits (or
        the swarm did not answer: then the start goes on, and the swarm decides); else why
        not, for the log. The fit is decided and claimed with no wait in between, so that
        students arriving together are counted one after the other."""
        try:
            await self.read(spawner)
        except Exception as error:
            spawner.log.warning("room: could not read the swarm's nodes and tasks: %s", error)
        why = self.why_not(spawner, wanted) if any(wanted) else ""
        if not why:
            self.claims[spawner.user.name] = (wanted, "")
        return why

    def why_not(self, spawner: SwarmSpawner, wanted: tuple[int, int]) -> str:
        """Why a server reserving ``wanted`` does not fit on the nodes last read, once the
        starts claimed before it have theirs; empty if it fits."""
        claims = [claim for name, claim in self.claims.items() if name != spawner.user.name]
        free = free_reservations(self.nodes, self.tasks, {sid for _, sid in claims if sid})
        if not free:
            return ""  # no node takes servers: the swarm's own refusal says so
        ahead = [need for need, _ in claims]
        if room_left(free, ahead, wanted):
            return ""
        most = max(memory for memory, _ in free.values()) // 2**20
        return (
            f"no node has room for a reservation of {wanted[0] // 2**20} MiB: at most "
            f"{most} MiB left on a node, {len(ahead)} start(s) ahead in line"
        )

    def made(self, spawner: SwarmSpawner, service_id: str) -> None:
        """The claimed start's service exists: its task is counted by its claim, not twice."""
        if spawner.user.name in self.claims:
            self.claims[spawner.user.name] = (self.claims[spawner.user.name][0], service_id)

    def release(self, spawner: SwarmSpawner) -> None:
        """The start ran (its task now counts) or failed (it takes nothing)."""
        self.claims.pop(spawner.user.name, None)


def task_address(task: dict[str, Any] | None, network: str) -> str:
    """The task's address on ``network`` ('' when it has none yet)."""
    for attachment in (task or {}).get("NetworksAttachments") or []:
        if attachment.get("Network", {}).get("Spec", {}).get("Name") != network:
            continue
        for address in attachment.get("Addresses") or []:
            return address.split("/")[0]
    return ""


def lost_node(node: tuple[str, str] | None) -> str:
    """Why a server whose task runs on ``node`` is gone ('' when its node is ready)."""
    if node is None:
        return "its node left the swarm"
    hostname, state = node
    return "" if state == "ready" else f"its node {hostname} is {state}"


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


class ProfileRefused(SpawnException):
    """A profile the user may not use, or none of that name: no server is started."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(
            message, reason="profile_refused", log_message=message, status_code=status_code
        )
        self.jupyterhub_message = message


def refusal(task_error: str) -> Refused | None:
    """The refusal a swarm task's scheduling error means, if it is one."""
    if "insufficient resources" in task_error:
        return ClusterFull(task_error)
    if "no suitable node" in task_error and "not available for new tasks" in task_error:
        return NoNodeTakesServers(task_error)
    return None


def is_address(value: str) -> bool:
    """Whether value is an IP address (not a host or service name)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class CourseSwarmSpawner(SwarmSpawner):
    """SwarmSpawner that starts servers in turns (SpawnQueue), tells a student at once when no
    node has room for their server instead of letting the spawn hang until it times out, and
    sees a server ready within a second rather than with the back-off of up to 11 s that
    SwarmSpawner and JupyterHub use when polling."""

    # One line for the whole hub, shared by every user's spawner: a class attribute set by
    # jupyterhub_config.py, not a trait (traitlets gives each spawner a deep copy of c.* values).
    spawn_queue: ClassVar[SpawnQueue] = SpawnQueue.for_concurrency(0)
    node_states: ClassVar[NodeStates] = NodeStates()
    room: ClassVar[Room] = Room()
    # The profiles (profiles.json, or one made of hub.env's values): set by the config, like
    # the queue, one list for the whole hub.
    profiles: ClassVar[list[dict[str, Any]]] = []
    queue_ticket: asyncio.Future[None] | None = None
    phase = "requested"
    # Why a user's last server stopped when its node did, by user name, shown on the next
    # spawn's page (a class attribute: the hub may make a new spawner for the next start).
    lost_nodes: ClassVar[dict[str, str]] = {}
    # The course (COURSE_ID; empty: no nbgrader) and who grades it: set by the config.
    course_id: ClassVar[str] = ""
    graders_group: ClassVar[str] = "graders"
    homes_dir: ClassVar[str] = ""
    home_owner: ClassVar[tuple[int, int]] = (1000, 100)
    gradebook_url: ClassVar[str] = ""  # postgresql+psycopg2: the image has psycopg2, not psycopg 3

    async def get_ip_and_port(self) -> tuple[str, int]:
        """The server's address on the overlay network, read from its task, not its service
        name: the hub's resolver (aiohttp with aiodns: c-ares caches an answer for its TTL,
        600 s from Docker's DNS) would keep a restarted server's old address for minutes, and
        a server started again (on another node, after its node died) would never answer."""
        address = task_address(await self.get_task(), self.network_name)
        if address:
            return address, self.port
        return await super().get_ip_and_port()

    async def poll(self) -> Any:
        """None while the server runs; its status once it stopped — also when the node it
        runs on is down: the swarm keeps saying such a task runs, but nothing answers there.

        This is the one mechanism that moves a student off a dead node: the hub decides,
        from the swarm's node states, at every poll (c.Spawner.poll_interval); the service
        never restarts by itself (restart condition none), so the swarm does not race it with
        a second server. The hub then drops the route, and the student's next start removes
        the old service and makes a new one on a node that is ready."""
        status = await super().poll()
        if status is not None:
            return status
        task = await self.get_task()
        node_id = (task or {}).get("NodeID")
        if not node_id:
            return None
        # A task the swarm replaced (nodes.drain --evict) answers at another address than
        # the one the hub routes to: the server is stopped, and its student's next start
        # makes a new one (files kept), rather than a route to nothing.
        address = task_address(task, self.network_name)
        routed = getattr(self.server, "ip", "") if self.server is not None else ""
        # Only an address can differ: a server that had no task address yet when it started
        # is routed by its service name (get_ip_and_port's fallback), which is no move.
        if address and is_address(routed) and address != routed:
            self.log.warning(
                "server of %s moved to %s (routed to %s)", self.user.name, address, routed
            )
            return f"moved: now at {address}, routed to {routed}"
        try:
            why = lost_node(await self.node_states.of(self, node_id))
        except Exception as error:  # the swarm did not answer: the server is not known gone
            self.log.warning("poll: could not read the swarm's nodes: %s", error)
            return None
        if not why:
            return None
        self.lost_nodes[self.user.name] = why
        self.log.warning("server of %s is gone: %s", self.user.name, why)
        return f"gone: {why}"

    # Profiles of our own rather than DockerSpawner's `allowed_images`: a profile is an image
    # *and* its memory and CPU limits, and may be kept to some groups; allowed_images knows
    # images alone and lets every user pick any of them. KubeSpawner's profile_list is the
    # model (a name in user_options, applied in start), but it is KubeSpawner's own code.

    def usable_profiles(self) -> list[dict[str, Any]]:
        """The profiles this server's user may start: open ones, and those of their groups."""
        groups = {group.name for group in self.user.groups}
        return [p for p in self.profiles if not p["groups"] or groups & set(p["groups"])]

    def asked_now(self) -> bool:
        """This start's request names a profile (the form, a URL's `opt-profile`, the REST
        API's body), rather than JupyterHub reusing the options of the user's last start, as
        it does when a start names none."""
        request = getattr(getattr(self, "handler", None), "request", None)
        if request is None:
            return False
        if "profile" in request.arguments or "opt-profile" in request.arguments:
            return True
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return False
        return isinstance(body, dict) and "profile" in body

    def chosen_profile(self) -> dict[str, Any]:
        """The profile user_options names (the form, `opt-profile=NAME` in a URL, or the REST
        API's {"profile": NAME}), or the first the user may use; a refusal otherwise."""
        name = (self.user_options or {}).get("profile") or ""
        if isinstance(name, list):  # straight from a form or a query, unconverted
            name = name[0] if name else ""
        usable = self.usable_profiles()
        if not name:
            return usable[0]
        known = {p["name"]: p for p in self.profiles}
        if name not in known:
            refused = ProfileRefused(
                f"There is no profile {name!r}: choose one of "
                f"{', '.join(p['name'] for p in usable)}.",
                status_code=400,
            )
        elif known[name] not in usable:
            refused = ProfileRefused(
                f"The profile {name!r} is for the groups {', '.join(known[name]['groups'])} "
                f"only, and {self.user.name} is in none of them: choose another profile, or "
                "ask your course staff.",
                status_code=403,
            )
        else:
            return known[name]
        if self.asked_now():
            raise refused
        # Remembered from an earlier start: the profile is gone from the file, or the user
        # left its group (a TA removed). With one profile left to them there is no form to
        # choose again: refusing would keep them from any server.
        self.log.warning(
            "%s: %s; starting %s instead", self._log_name, refused.log_message, usable[0]["name"]
        )
        return usable[0]

    def apply_profile(self) -> dict[str, Any]:
        """The chosen profile's image and limits, for this start."""
        profile = self.chosen_profile()
        self.image = profile["image"]
        self.mem_limit = profile["mem_limit"]
        self.mem_guarantee = profile["mem_guarantee"]
        self.cpu_limit = profile["cpu_limit"]
        self.log.info("%s starts profile %s (%s)", self._log_name, profile["name"], self.image)
        return profile

    def is_grader(self) -> bool:
        """Whether this server's user is in the graders' group (the profiles file's groups
        with the dummy authenticator, the LMS's roles with LTI)."""
        return self.graders_group in {group.name for group in self.user.groups}

    async def find_gradebook_host(self) -> None:
        """The gradebook's address (PostgreSQL on the hub), once for the hub: HUB_ADDRESS when
        set, else the swarm manager's own address (`docker info`), which nodes reach; a host
        name may not resolve inside a server."""
        cls = type(self)
        if not self.course_id or "{host}" not in cls.gradebook_url:
            return
        info = await self.docker("info")
        address = (info.get("Swarm") or {}).get("NodeAddr") or ""
        if address:
            CourseSwarmSpawner.gradebook_url = cls.gradebook_url.replace("{host}", address)

    def apply_course(self) -> None:
        """With a course: this start's mounts of it (course_mounts) and nbgrader's settings;
        the group is read at each start, so a grader removed loses the course at the next."""
        if not self.course_id:
            self.environment = {**self.environment, "JUPYTER_CONFIG_PATH": ROLES_CONFIG + "none"}
            return
        grader = self.is_grader()
        make_course_dirs(
            self.homes_dir, self.course_id, self.escaped_name, self.user.name, *self.home_owner
        )
        base = {k: v for k, v in self.volumes.items() if not k.startswith(self.homes_dir + "/.")}
        self.volumes = {
            **base,
            **course_mounts(self.homes_dir, self.course_id, self.escaped_name, grader),
        }
        self.environment = {
            **self.environment,
            "NBGRADER_COURSE_ID": self.course_id,
            "NBGRADER_EXCHANGE": EXCHANGE_ROOT,
            "SWARMHUB_COURSE_ROLE": "grader" if grader else "student",
            # nbgrader's extensions of the role (the user image's swarmhub-roles/): a
            # convenience, not the isolation, which is the mounts and the firewall.
            "JUPYTER_CONFIG_PATH": ROLES_CONFIG + ("grader" if grader else "student"),
        }
        self.environment.pop("NBGRADER_DB_URL", None)
        if grader and self.gradebook_url and "{host}" not in self.gradebook_url:
            # the gradebook's password: graders' servers only (their firewall opens 5432)
            self.environment["NBGRADER_DB_URL"] = self.gradebook_url
        self.log.info(
            "%s gets course %s as %s",
            self._log_name,
            self.course_id,
            "grader" if grader else "student",
        )

    async def pin_image(self) -> str:
        """Name this start's image by its digest too (`repo:tag@sha256:...`), as `docker
        service create` does, so that the node starts the copy it holds without asking the
        registry: Docker's swarm executor skips the pull of an image named by digest that is
        present (images.pull put every offered one on every node before the hub offered it).
        Named by tag alone, every start asks the registry (a `pull` event on the node).

        The digest is the manager's (the hub's Docker pushed our images to the registry, or
        pulled a published one): its only RepoDigest of that repository, else the registry's
        answer through the manager (Docker's distribution endpoint, which `docker service
        create` asks); neither: the tag as it is, and the node asks the registry."""
        image = self.image
        if "@" in image:
            return image
        last = image.rsplit("/", 1)[-1]
        repository = image.rsplit(":", 1)[0] if ":" in last else image
        try:
            info = await self.docker("inspect_image", image)
        except Exception:  # not on the hub: the node pulls it by tag, as before
            info = {}
        digests = {
            named.split("@", 1)[1]
            for named in info.get("RepoDigests") or []
            if named.split("@", 1)[0] == repository
        }
        if len(digests) != 1:
            try:
                found = await self.docker("inspect_distribution", image)
                digests = {found["Descriptor"]["digest"]}
            except Exception as error:
                self.log.warning("%s: no digest for %s: %s", self._log_name, image, error)
                return image
        pinned = f"{image}@{digests.pop()}"
        self.image = pinned
        return pinned

    async def start(self) -> tuple[str, int]:
        self.phase = "requested"
        self.apply_profile()  # first: a refused profile takes no turn and starts nothing
        await self.find_gradebook_host()
        self.apply_course()
        await self.pin_image()
        wanted = (int(self.mem_guarantee or 0), int((self.cpu_guarantee or 0) * 1e9))
        no_room = await self.room.claim(self, wanted)
        if no_room:
            raise ClusterFull(no_room)  # at once: not after a turn in line
        try:
            await self.spawn_queue.follow_nodes(self)
            asked = time.monotonic()
            await self.spawn_queue.take_turn(on_wait=self._queued)
            turn = time.monotonic()
            QUEUE_WAIT.observe(turn - asked)
            self.queue_ticket = None
            try:
                self.phase = "creating"
                ip, port = await super().start()
                self.phase = "booting"
                await self.wait_for_http(f"http://{ip}:{port}{self.server.base_url}api")
                START_DURATION.observe(time.monotonic() - turn)
                return ip, port
            finally:
                self.spawn_queue.end_turn()
        finally:
            self.room.release(self)

    def _queued(self, ticket: asyncio.Future[None]) -> None:
        self.queue_ticket = ticket
        self.phase = "queued"

    async def start_object(self) -> None:
        """Wait for the service's task to run, checking every second."""
        self.room.made(self, self.object_id or "")
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
        """What a student sees while waiting: why the last server went (its node stopped),
        their place in line, then the start."""
        shown = None
        lost = self.lost_nodes.pop(self.user.name, "")
        if lost:
            yield {
                "progress": 5,
                "message": f"Your previous server stopped ({lost}): starting a new one on "
                "another node. Your files are in your home, as you left them.",
            }
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


# Read at each scrape: the line of the hub's spawner class (set by jupyterhub_config.py).
QUEUE_WAITING.set_function(lambda: len(CourseSwarmSpawner.spawn_queue.waiting))


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


# --- The course's nbgrader exchange (issue 20, docs/nbgrader.md) ---
# Every server runs as jovyan (uid 1000) and the homes' storage squashes every write to
# HOME_UID, so Unix permissions keep no student from another: what a server can reach is only
# what the spawner mounts into it. Under HOMES_DIR/.course/<COURSE_ID> (the storage every node
# mounts; ".course" is no user's escaped name: escaping writes "." as "-2e"):
#   course/              the graders' course directory (source, release, submitted, autograded)
#   exchange/outbound/   released assignments: read-only to students
#   exchange/inbound/<s> one student's submissions: that student's own, nobody else's
#   exchange/feedback/<s> one student's feedback: read-only to them
#   exchange/names/<s>   the user name of escaped name s, written by the hub alone
#   exchange/collected/  what swarmhub-collect-submissions kept (the graders' inbound)
EXCHANGE_ROOT = "/srv/nbgrader/exchange"
COURSE_ROOT = "/srv/nbgrader/course"
SUBMISSIONS_ROOT = "/srv/nbgrader/submissions"
STUDENTS_ROOT = "/srv/nbgrader/students"
ROLES_CONFIG = "/opt/venv/etc/jupyter/swarmhub-roles/"


def course_dir(homes_dir: str, course_id: str) -> str:
    """The course's directory on the homes' storage."""
    return os.path.join(homes_dir, ".course", course_id)


def course_mounts(
    homes_dir: str, course_id: str, escaped_name: str, grader: bool
) -> dict[str, dict[str, str]]:
    """The bind mounts (SwarmSpawner's volumes: host path -> bind and mode) of one server:
    a student's sees the released assignments read-only, their own inbound and feedback
    directories, nothing of anyone else's; a grader's the course directory and the whole
    exchange, every student's submissions read-only (collected by the name the hub wrote)."""
    root = course_dir(homes_dir, course_id)
    exchange = os.path.join(root, "exchange")
    seen = f"{EXCHANGE_ROOT}/{course_id}"
    if not grader:
        return {
            f"{exchange}/outbound": {"bind": f"{seen}/outbound", "mode": "ro"},
            f"{exchange}/inbound/{escaped_name}": {"bind": f"{seen}/inbound", "mode": "rw"},
            f"{exchange}/feedback/{escaped_name}": {"bind": f"{seen}/feedback", "mode": "ro"},
        }
    return {
        f"{root}/course": {"bind": COURSE_ROOT, "mode": "rw"},
        f"{exchange}/outbound": {"bind": f"{seen}/outbound", "mode": "rw"},
        f"{exchange}/collected": {"bind": f"{seen}/inbound", "mode": "rw"},
        f"{exchange}/feedback-out": {"bind": f"{seen}/feedback", "mode": "rw"},
        f"{exchange}/inbound": {"bind": SUBMISSIONS_ROOT, "mode": "ro"},
        f"{exchange}/names": {"bind": STUDENTS_ROOT, "mode": "ro"},
    }


def make_course_dirs(
    homes_dir: str, course_id: str, escaped_name: str, name: str, uid: int, gid: int
) -> None:
    """Make the course's directories a server mounts (a swarm bind mount fails when its
    source is missing), owned by uid:gid, and write the student's user name under names/."""
    root = course_dir(homes_dir, course_id)
    exchange = os.path.join(root, "exchange")
    paths = [os.path.join(root, "course")]
    paths += [os.path.join(exchange, d) for d in ("outbound", "collected", "feedback-out")]
    paths += [os.path.join(exchange, d, escaped_name) for d in ("inbound", "feedback")]
    paths.append(os.path.join(exchange, "names"))
    for path in paths:
        os.makedirs(path, mode=0o755, exist_ok=True)
        status = os.stat(path)
        if (status.st_uid, status.st_gid) != (uid, gid):
            os.chown(path, uid, gid)
    named = os.path.join(exchange, "names", escaped_name)
    try:
        with open(named) as f:
            if f.read() == name:
                return
    except FileNotFoundError:
        pass
    with open(named + ".new", "w") as f:
        f.write(name)
    os.chown(named + ".new", uid, gid)
    os.replace(named + ".new", named)


def profile_form(spawner: CourseSwarmSpawner) -> str:
    """The spawn page's choice of profiles; none (no form) when the user may use only one."""
    usable = spawner.usable_profiles()
    if len(usable) < 2:
        return ""
    rows = []
    for index, profile in enumerate(usable):
        name = html.escape(profile["name"], quote=True)
        checked = " checked" if index == 0 else ""
        rows.append(
            f'<div class="form-check mb-2"><input class="form-check-input" type="radio" '
            f'name="profile" id="profile-{name}" value="{name}"{checked}>'
            f'<label class="form-check-label" for="profile-{name}">'
            f"<strong>{html.escape(profile['display_name'])}</strong> "
            f'<span class="text-muted">{html.escape(profile["description"])}</span>'
            "</label></div>"
        )
    return "<fieldset><legend>Choose your server</legend>" + "".join(rows) + "</fieldset>"


def profile_options(formdata: dict[str, list[str]]) -> dict[str, str]:
    """The form's (or a URL's `opt-profile=`) choice as user_options: {"profile": NAME}."""
    return {"profile": (formdata.get("profile") or [""])[0]}


def sync_groups(api_url: str, token: str, groups: dict[str, list[str]]) -> list[str]:
    """Remove from each group of the profiles file the members it no longer lists (the hub's
    `load_groups` creates the groups and adds their members, but never removes one), through
    the hub's REST API; groups the file does not declare are left as they are. What it did."""

    def call(method: str, path: str, body: object = None) -> Any:
        request = urllib.request.Request(
            f"{api_url.rstrip('/')}/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    done = []
    for name, members in groups.items():
        group = call("GET", f"groups/{name}")
        extra = sorted(set(group.get("users", [])) - set(members))
        if extra:
            call("DELETE", f"groups/{name}/users", {"users": extra})
            done.append(f"{name}: removed {', '.join(extra)}")
    return done


def main() -> None:
    """The hub's group-sync service (a managed service of the hub, started with it): syncs
    the groups once the hub answers, then every SYNC_EVERY seconds (a change of the file
    restarts the hub anyway)."""
    with open(os.environ["SWARMHUB_PROFILES"]) as f:
        groups = json.load(f)["groups"]
    url, token = os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]
    while True:
        try:
            for line in sync_groups(url, token, groups):
                print(f"group-sync: {line}", flush=True)
        except Exception as error:  # the hub not answering yet: next round
            print(f"group-sync: {error}", flush=True)
            time.sleep(5)
            continue
        time.sleep(int(os.environ.get("SYNC_EVERY", "300")))


if __name__ == "__main__":
    main()

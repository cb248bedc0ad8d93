# JupyterHub's configuration for swarmhub, copied to the hub by hub.deploy.
# Every knob comes from the environment (hub.env and secrets/*.env beside it, rendered from
# the env file), so this file reads the same on every deployment.
import asyncio
import os

from dockerspawner import SwarmSpawner

c = get_config()  # noqa: F821 (provided by JupyterHub)
env = os.environ


def listed(name):
    return {item.strip() for item in env.get(name, "").split(",") if item.strip()}


# The hub behind a separate configurable-http-proxy (the `chp` container), which keeps
# routing users to their servers while the hub restarts.
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_port = 8081
c.JupyterHub.hub_connect_ip = "jupyterhub"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://chp:8001"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"


class SpawnQueue:
    """At most `limit` servers start at once; the others wait their turn in order of arrival.

    In a login storm every start then gets the CPU it needs, so the first students are ready
    in seconds instead of all of them at the end, and a waiting student sees their place in
    line. A start holds its turn until its server answers HTTP."""

    def __init__(self, limit):
        self.limit = limit
        self.starting = 0
        self.waiting = []  # futures, first come first served

    def set_limit(self, limit):
        """A new limit (nodes came or went); a higher one lets the next in line start."""
        self.limit = max(1, limit)
        while self.waiting and self.starting < self.limit:
            ticket = self.waiting.pop(0)
            if not ticket.done():
                self.starting += 1
                ticket.set_result(None)

    def ahead_of(self, ticket):
        return self.waiting.index(ticket) if ticket in self.waiting else 0

    async def take_turn(self, on_wait=None):
        """Wait for a turn; on_wait(ticket) is called when the start has to queue."""
        if self.starting < self.limit and not self.waiting:
            self.starting += 1
            return
        ticket = asyncio.get_running_loop().create_future()
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

    def end_turn(self):
        """Hand the turn to the first one waiting, or free it (also when the limit went
        down meanwhile and more are starting than it allows)."""
        while self.waiting and self.starting <= self.limit:
            ticket = self.waiting.pop(0)
            if not ticket.done():
                ticket.set_result(None)
                return
        self.starting -= 1


# SPAWN_CONCURRENCY empty: 2 starts a node, following the nodes that take servers now
# (nodes.add, nodes.drain and nodes.remove change it without a hub restart).
SPAWN_CONCURRENCY = int(env.get("SPAWN_CONCURRENCY") or 0)
SPAWN_QUEUE = SpawnQueue(SPAWN_CONCURRENCY or 2)
NODES_CHECKED = {"at": float("-inf")}


async def follow_nodes(spawner):
    """Set the queue's limit to 2 a node taking servers, at most every 30 seconds."""
    now = asyncio.get_running_loop().time()
    if SPAWN_CONCURRENCY or now - NODES_CHECKED["at"] < 30:
        return
    NODES_CHECKED["at"] = now
    try:
        nodes = await spawner.docker("nodes", filters={"role": "worker"})
    except Exception as error:  # the spawn goes on with the limit it had
        spawner.log.warning("spawn queue: could not list the swarm's nodes: %s", error)
        return
    taking = [
        node
        for node in nodes
        if node["Spec"].get("Availability") == "active" and node["Status"].get("State") == "ready"
    ]
    SPAWN_QUEUE.set_limit(2 * len(taking))


class CourseSwarmSpawner(SwarmSpawner):
    """SwarmSpawner that starts servers in turns (SpawnQueue), tells a student at once when no
    node has room for their server instead of letting the spawn hang until it times out, and
    sees a server ready within a second rather than with the back-off of up to 11 s that
    SwarmSpawner and JupyterHub use when polling."""

    queue_ticket = None
    phase = "requested"

    async def start(self):
        self.phase = "requested"
        await follow_nodes(self)
        await SPAWN_QUEUE.take_turn(on_wait=self._queued)
        self.queue_ticket = None
        try:
            self.phase = "creating"
            ip, port = await super().start()
            self.phase = "booting"
            await self.wait_for_http(f"http://{ip}:{port}{self.server.base_url}api")
            return ip, port
        finally:
            SPAWN_QUEUE.end_turn()

    def _queued(self, ticket):
        self.queue_ticket = ticket
        self.phase = "queued"

    async def start_object(self):
        """Wait for the service's task to run, checking every second."""
        for _ in range(int(self.start_timeout)):
            task = await self.get_task()
            status = (task or {}).get("Status", {})
            state = status.get("State", "").lower()
            if "insufficient resources" in status.get("Err", ""):
                error = RuntimeError(f"cluster full: {status['Err']}")
                error.jupyterhub_message = (
                    "The cluster is full right now: no node has room for another server. "
                    "Please try again in a few minutes, or tell your course staff."
                )
                raise error
            if state not in STARTING_STATES:
                break
            await asyncio.sleep(1)
        return await super().start_object()  # running: returns at once; else its error

    async def wait_for_http(self, url):
        """Until the server answers (any HTTP status) or http_timeout passes; JupyterHub's
        own check that follows then passes at once, or reports the failure."""
        from tornado.httpclient import AsyncHTTPClient

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

    async def progress(self):
        """What a student sees while waiting: their place in line, then the start."""
        shown = None
        while self.phase != "booting":
            if self.phase == "queued" and self.queue_ticket is not None:
                ahead = SPAWN_QUEUE.ahead_of(self.queue_ticket)
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


STARTING_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}


# Users' servers: one swarm service each, on the nodes only, with memory and CPU limits.
# The memory guarantee is a swarm reservation: a node takes a server only if it has room.
c.JupyterHub.spawner_class = CourseSwarmSpawner
c.SwarmSpawner.image = env["USER_IMAGE"]
c.SwarmSpawner.network_name = env["SWARM_NETWORK"]
c.SwarmSpawner.extra_placement_spec = {"constraints": ["node.role == worker"]}
c.SwarmSpawner.extra_endpoint_spec = {"mode": "dnsrr"}  # no IPVS needed
# Bytes (hub.env is written so): JupyterHub's ByteSpecification reads "2G" as 2 GiB but would
# take "2GB" for a bad value, so swarmhub does the reading of units once, itself.
c.SwarmSpawner.mem_limit = int(env["USER_MEM_LIMIT"])
c.SwarmSpawner.mem_guarantee = int(env.get("USER_MEM_GUARANTEE") or env["USER_MEM_LIMIT"])
c.SwarmSpawner.cpu_limit = float(env["USER_CPU_LIMIT"])
c.SwarmSpawner.remove = True
c.SwarmSpawner.start_timeout = 300  # includes the wait in line (SpawnQueue)
# A spawn not done in 3 s shows the progress page (the place in line) instead of a
# browser tab that seems to hang for JupyterHub's default 10 s.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 3}
c.SwarmSpawner.http_timeout = 300  # a login storm on small nodes is CPU-bound
c.SwarmSpawner.debug = env.get("SPAWNER_DEBUG") == "1"

# Users' homes: HOMES_DIR/<escaped name> on the storage host, mounted at the same path on
# the hub and on every node. The hub makes it (owned by the user image's jovyan) before the
# spawn, since a swarm bind mount fails when its source is missing; the server mounts it as
# /home/jovyan wherever it lands, so a student finds the same files on any node.
HOMES_DIR = env["HOMES_DIR"]
HOME_UID, HOME_GID = int(env["HOME_UID"]), int(env["HOME_GID"])


def make_home(spawner):
    path = os.path.join(HOMES_DIR, spawner.escaped_name)
    os.makedirs(path, mode=0o700, exist_ok=True)
    status = os.stat(path)
    if (status.st_uid, status.st_gid) != (HOME_UID, HOME_GID):
        os.chown(path, HOME_UID, HOME_GID)
    if status.st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


c.Spawner.pre_spawn_hook = make_home
c.SwarmSpawner.volumes = {HOMES_DIR + "/{username}": "/home/jovyan"}  # {username}: escaped

# Who may log in (AUTHENTICATOR in the env file; OAuth secrets in secrets/auth.env).
OAUTH_CLASSES = {"github": "github", "google": "google", "oidc": "generic-oauth"}
authenticator = env["AUTHENTICATOR"]
if authenticator == "dummy":  # the sandbox only: the runbook refuses it elsewhere
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = env["DUMMY_PASSWORD"]
elif authenticator == "native":
    c.JupyterHub.authenticator_class = "native"
    c.NativeAuthenticator.open_signup = False
else:
    c.JupyterHub.authenticator_class = OAUTH_CLASSES[authenticator]
    c.OAuthenticator.client_id = env["OAUTH_CLIENT_ID"]
    c.OAuthenticator.client_secret = env["OAUTH_CLIENT_SECRET"]
    c.OAuthenticator.oauth_callback_url = env["OAUTH_CALLBACK_URL"]
    if env.get("GOOGLE_HOSTED_DOMAIN"):
        c.GoogleOAuthenticator.hosted_domain = [env["GOOGLE_HOSTED_DOMAIN"]]
    if authenticator == "oidc":
        c.GenericOAuthenticator.authorize_url = env["OIDC_AUTHORIZE_URL"]
        c.GenericOAuthenticator.token_url = env["OIDC_TOKEN_URL"]
        c.GenericOAuthenticator.userdata_url = env["OIDC_USERDATA_URL"]
        c.GenericOAuthenticator.username_claim = env["OIDC_USERNAME_CLAIM"]
        c.GenericOAuthenticator.scope = sorted(listed("OIDC_SCOPES"))
        c.GenericOAuthenticator.login_service = env["OIDC_LOGIN_SERVICE"]
allowed = listed("ALLOWED_USERS")
if allowed:
    c.Authenticator.allowed_users = allowed
else:
    # dummy, native (admins create the accounts), or google within GOOGLE_HOSTED_DOMAIN:
    # the runbook refuses an OAuth login open to everyone.
    c.Authenticator.allow_all = True
c.Authenticator.admin_users = listed("ADMIN_USERS")

# The idle culler: a service of the hub holding only the scopes it needs.
c.JupyterHub.services = [{"name": "idle-culler", "api_token": env["CULLER_API_TOKEN"]}]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]

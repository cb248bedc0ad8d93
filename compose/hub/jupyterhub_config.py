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


class CourseSwarmSpawner(SwarmSpawner):
    """SwarmSpawner that tells a student at once when no node has room for their server,
    instead of letting the spawn hang until it times out."""

    async def start_object(self):
        task = await self.get_task()
        for _ in range(20):  # the scheduler decides within a second or two
            status = (task or {}).get("Status", {})
            if status.get("State") != "pending":
                break
            if "insufficient resources" in status.get("Err", ""):
                error = RuntimeError(f"cluster full: {status['Err']}")
                error.jupyterhub_message = (
                    "The cluster is full right now: no node has room for another server. "
                    "Please try again in a few minutes, or tell your course staff."
                )
                raise error
            await asyncio.sleep(0.25)
            task = await self.get_task()
        return await super().start_object()


# Users' servers: one swarm service each, on the nodes only, with memory and CPU limits.
# The memory guarantee is a swarm reservation: a node takes a server only if it has room.
c.JupyterHub.spawner_class = CourseSwarmSpawner
c.SwarmSpawner.image = env["USER_IMAGE"]
c.SwarmSpawner.network_name = env["SWARM_NETWORK"]
c.SwarmSpawner.extra_placement_spec = {"constraints": ["node.role == worker"]}
c.SwarmSpawner.extra_endpoint_spec = {"mode": "dnsrr"}  # no IPVS needed
c.SwarmSpawner.mem_limit = env["USER_MEM_LIMIT"]
c.SwarmSpawner.mem_guarantee = env.get("USER_MEM_GUARANTEE") or env["USER_MEM_LIMIT"]
c.SwarmSpawner.cpu_limit = float(env["USER_CPU_LIMIT"])
c.SwarmSpawner.remove = True
c.SwarmSpawner.start_timeout = 300
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

# JupyterHub's configuration for swarmhub, copied to the hub by hub.deploy.
# Every knob comes from the environment (hub.env and secrets/*.env beside it, rendered from
# the env file), so this file reads the same on every deployment.
import json
import os
import socket
import sys

# The spawner and its spawn queue are swarmhub_spawner.py, beside this file (hub.deploy writes
# both, compose.yml mounts both), so that changing them restarts the hub without a new image.
# JupyterHub does not put this file's directory on sys.path; traitlets runs it with __file__.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from swarmhub_spawner import (
    CourseSwarmSpawner,
    SpawnQueue,
    home_maker,
    profile_form,
    profile_options,
    system_resolver,
)

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
# chp's API listens on the hub stack's internal network only (compose.yml): not on the
# overlay, where users' servers are.
c.ConfigurableHTTPProxy.api_url = "http://chp-internal:8001"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
# JupyterHub 6's HTTP client (aiohttp) asks the system's resolver, which follows a restarted
# server to its new address at once (system_resolver in swarmhub_spawner.py says why).
RESOLVER = system_resolver()
if RESOLVER is not None:
    c.JupyterHubHTTPClient.connector_options = {"resolver": RESOLVER}


# SPAWN_CONCURRENCY empty: 2 starts a node, following the nodes that take servers now
# (nodes.add, nodes.drain and nodes.remove change it without a hub restart).
SPAWN_CONCURRENCY = int(env.get("SPAWN_CONCURRENCY") or 0)
CourseSwarmSpawner.spawn_queue = SpawnQueue.for_concurrency(SPAWN_CONCURRENCY)

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
# No `remove` setting: SwarmSpawner always removes a stopped server's service (a class
# attribute, not a trait; setting it only logged "Config option `remove` not recognized").
# A node lost: the hub decides (CourseSwarmSpawner.poll reads the swarm's node states every
# poll_interval), the swarm never restarts a server elsewhere by itself, so no student ever
# has two. With the swarm's 2 s heartbeat (swarm.manage), a dead node's servers are known
# gone within about 15 s.
c.SwarmSpawner.extra_task_spec = {"restart_policy": {"Condition": "none"}}
c.Spawner.poll_interval = 5

# --- Profiles (PROFILES_FILE, issue 15) ---
# The servers a student may choose: profiles.json (written by hub.deploy from the env's
# profiles file, each profile with the image its new servers start on), or the one made of
# the values above. The spawn page offers the profiles a user may use (none: no form); the
# choice, from the form, a URL's `opt-profile=NAME` or the REST API's {"profile": NAME}, is
# checked again when the server starts (CourseSwarmSpawner.chosen_profile).
if env.get("PROFILES"):
    with open(env["PROFILES"]) as f:
        PROFILES = json.load(f)
else:
    PROFILES = {
        "profiles": [
            {
                "name": "default",
                "display_name": "Default",
                "description": "",
                "image": c.SwarmSpawner.image,
                "mem_limit": c.SwarmSpawner.mem_limit,
                "mem_guarantee": c.SwarmSpawner.mem_guarantee,
                "cpu_limit": c.SwarmSpawner.cpu_limit,
                "groups": [],
            }
        ],
        "groups": {},
    }
CourseSwarmSpawner.profiles = PROFILES["profiles"]
c.CourseSwarmSpawner.options_form = profile_form
c.CourseSwarmSpawner.options_from_form = profile_options
# Groups: the profiles file is their source. load_groups creates them and adds members; the
# group-sync service (swarmhub_spawner.py's main) removes those the file no longer lists.
# Which source wins: for a group the profiles file declares, the file (a TA removed from it
# loses the group, whatever added them); groups it does not declare (those an LMS will manage
# through LTI, issue 20) are left alone.
#
# With AUTHENTICATOR=lti13 the authenticator manages groups (manage_groups), and JupyterHub
# refuses to start with load_groups set ("Group management has been offloaded to the
# authenticator"): the LMS is then the source of truth for GRADERS_GROUP and STUDENTS_GROUP,
# and the profiles file's other groups reach their members at each launch instead
# (swarmhub_lti.py's user_groups), by the user names the LMS gives.
if env["AUTHENTICATOR"] != "lti13":
    c.JupyterHub.load_groups = {
        name: {"users": members} for name, members in PROFILES["groups"].items()
    }
# --- end of profiles ---
c.SwarmSpawner.start_timeout = 300  # includes the wait in line (SpawnQueue)
# No cap on spawns pending at once: JupyterHub's default of 100 answers the 101st student of
# a class start with a 429, although the spawner's queue (SpawnQueue) would serve them in
# turn, and a student the cluster has no room for is refused at once (Room), not queued.
c.JupyterHub.concurrent_spawn_limit = 0
# A spawn not done in 3 s shows the progress page (the place in line) instead of a
# browser tab that seems to hang for JupyterHub's default 10 s.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 3}
c.SwarmSpawner.http_timeout = 300  # a login storm on small nodes is CPU-bound
c.SwarmSpawner.debug = env.get("SPAWNER_DEBUG") == "1"

# --- Users' servers kept apart on the network (issue 18) ---
# A server starts as root with NET_ADMIN for one thing: swarmhub-server-start (in the user
# image) loads the server's own firewall, server-firewall.nft beside this file (written by
# hub.deploy), into the server's network namespace, then runs jupyterhub-singleuser as jovyan
# with no capabilities. Only chp and the hub reach the server; the server reaches the hub's
# API and nothing else on the overlay; KERNEL_EGRESS=allow-list limits the internet.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "server-firewall.nft")) as f:
    SERVER_FIREWALL = f.read()
c.SwarmSpawner.cmd = ["swarmhub-server-start", "jupyterhub-singleuser"]
c.SwarmSpawner.extra_container_spec = {"user": "root", "cap_add": ["NET_ADMIN"]}
c.SwarmSpawner.environment = {
    "SWARMHUB_SERVER_FIREWALL": SERVER_FIREWALL,
    "SWARMHUB_EGRESS_NAMES": env.get("KERNEL_EGRESS_NAMES", ""),
}
# --- end of issue 18 ---

# Users' homes: HOMES_DIR/<escaped name> on the storage host, mounted at the same path on
# the hub and on every node. The hub makes it (owned by the user image's jovyan) before the
# spawn, since a swarm bind mount fails when its source is missing; the server mounts it as
# /home/jovyan wherever it lands, so a student finds the same files on any node.
HOMES_DIR = env["HOMES_DIR"]
make_home = home_maker(HOMES_DIR, int(env["HOME_UID"]), int(env["HOME_GID"]))
c.Spawner.pre_spawn_hook = make_home
c.SwarmSpawner.volumes = {HOMES_DIR + "/{username}": "/home/jovyan"}  # {username}: escaped

# The course (COURSE_ID, docs/nbgrader.md): each server gets its own view of nbgrader's
# exchange, mounted by CourseSwarmSpawner.apply_course: students their own submissions only.
CourseSwarmSpawner.course_id = env.get("COURSE_ID", "")
CourseSwarmSpawner.graders_group = env.get("GRADERS_GROUP", "graders")
CourseSwarmSpawner.homes_dir = HOMES_DIR
CourseSwarmSpawner.home_owner = (int(env["HOME_UID"]), int(env["HOME_GID"]))
if env.get("GRADEBOOK_PASSWORD"):  # gradebook.database's PostgreSQL (secrets/gradebook.env)
    CourseSwarmSpawner.gradebook_url = (
        f"postgresql+psycopg2://nbgrader:{env['GRADEBOOK_PASSWORD']}@"
        + (env.get("GRADEBOOK_HOST") or "{host}")  # {host}: the swarm manager's address
        + ":5432/"
        + env["GRADEBOOK_DB"]
    )

# Who may log in (AUTHENTICATOR in the env file; OAuth secrets in secrets/auth.env).
OAUTH_CLASSES = {"github": "github", "google": "google", "oidc": "generic-oauth"}
authenticator = env["AUTHENTICATOR"]
if authenticator == "dummy":  # the sandbox only: the runbook refuses it elsewhere
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = env["DUMMY_PASSWORD"]
elif authenticator == "native":
    c.JupyterHub.authenticator_class = "native"
    c.NativeAuthenticator.open_signup = False
elif authenticator in OAUTH_CLASSES:
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
if authenticator == "lti13":  # docs/lms.md
    from swarmhub_lti import SwarmhubLTI13Authenticator

    c.JupyterHub.authenticator_class = SwarmhubLTI13Authenticator
    c.LTI13Authenticator.issuer = env["LTI13_ISSUER"]
    c.LTI13Authenticator.client_id = [env["LTI13_CLIENT_ID"]]
    c.LTI13Authenticator.authorize_url = env["LTI13_AUTHORIZE_URL"]
    c.LTI13Authenticator.jwks_endpoint = env["LTI13_JWKS_URL"]
    c.LTI13Authenticator.username_key = env["LTI13_USERNAME_CLAIM"]
    c.SwarmhubLTI13Authenticator.context_id = env["LTI13_CONTEXT_ID"]
    c.SwarmhubLTI13Authenticator.graders_group = env["GRADERS_GROUP"]
    c.SwarmhubLTI13Authenticator.students_group = env["STUDENTS_GROUP"]
    c.SwarmhubLTI13Authenticator.profile_groups = PROFILES["groups"]
    # Groups from the LMS's roles at every launch, kept in the auth state (the launch's
    # claims), which JupyterHub encrypts with JUPYTERHUB_CRYPT_KEY (secrets/crypt_key).
    c.Authenticator.manage_groups = True
    c.Authenticator.enable_auth_state = True
    # A launch is a cross-site form POST, and so is the platform's answer to the hub's
    # callback: the state and nonce cookies set at the first must come back with the second,
    # which SameSite=Lax (browsers' default) forbids. SameSite=None (with Secure) on the hub's
    # cookies: the CSRF cost is that they travel with cross-site requests too; JupyterHub's
    # _xsrf token on its forms and API still guards state-changing requests.
    cookie_options = {"samesite": "None", "secure": True}
    c.JupyterHub.tornado_settings["cookie_options"] = cookie_options
    if env.get("LTI_IFRAME"):
        # Inside the LMS's iframe: that origin (only) may frame the hub and the servers. The
        # clickjacking cost: a page of that LMS (a course page a teacher writes, say) can frame
        # a logged-in student's server under its own content.
        ancestors = f"frame-ancestors 'self' {env['LTI_IFRAME']}"
        c.JupyterHub.tornado_settings["headers"] = {"Content-Security-Policy": ancestors}
        c.Spawner.args = [
            "--ServerApp.tornado_settings="
            + json.dumps({"headers": {"Content-Security-Policy": ancestors}}),
            # the server's own login cookies (HubOAuth's state cookie) in the iframe too
            "--HubOAuth.cookie_options=" + json.dumps(cookie_options),
        ]
allowed = listed("ALLOWED_USERS")
if allowed:
    c.Authenticator.allowed_users = allowed
else:
    # dummy, native (admins create the accounts), or google within GOOGLE_HOSTED_DOMAIN:
    # the runbook refuses an OAuth login open to everyone.
    c.Authenticator.allow_all = True
c.Authenticator.admin_users = listed("ADMIN_USERS")

# The idle culler and Prometheus: services of the hub holding only the scopes they need.
c.JupyterHub.services = [{"name": "idle-culler", "api_token": env["CULLER_API_TOKEN"]}]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
# class.warmup (swarmhub/hubside/class_warmup.py, run in this container): creates the
# students not yet known, starts their servers through the spawner (the queue) and posts
# each ready server's activity as the lab's start, so that the culler spares it until then.
if env.get("WARMUP_API_TOKEN"):
    c.JupyterHub.services.append({"name": "class-warmup", "api_token": env["WARMUP_API_TOKEN"]})
    c.JupyterHub.load_roles.append(
        {
            "name": "class-warmup",
            "scopes": [
                "admin:users",
                "list:users",
                "read:users",
                "read:groups",
                "servers",
                "users:activity",
            ],
            "services": ["class-warmup"],
        }
    )
if PROFILES["groups"]:
    # The group-sync service: started by the hub (a managed service), its own token.
    c.JupyterHub.services.append(
        {
            "name": "group-sync",
            "command": [
                sys.executable,
                os.path.join(os.path.dirname(__file__), "swarmhub_spawner.py"),
            ],
            "environment": {"SWARMHUB_PROFILES": env["PROFILES"]},
        }
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "group-sync",
            "scopes": ["read:groups", "admin:groups"],
            "services": ["group-sync"],
        }
    )
if env.get("METRICS_API_TOKEN"):
    # Prometheus on the hub host scrapes /hub/metrics with this token (monitor.metrics).
    PROMETHEUS = {"name": "prometheus", "api_token": env["METRICS_API_TOKEN"]}
    if env.get("DASHBOARD_PORT"):
        # The admins' dashboard: swarmhub-dashboard (HubOAuth before Prometheus, run by
        # monitor.metrics on the hub's host) listens on swarmhub-host, the host's address on
        # Docker's default bridge (compose.yml's host-gateway), resolved here for chp, which
        # routes /services/prometheus/ to it. Only the role below lets a user in: another
        # user gets the hub's 403. No consent page: it is the hub's own service.
        DASHBOARD_ADDRESS = socket.gethostbyname("swarmhub-host")
        PROMETHEUS["url"] = f"http://{DASHBOARD_ADDRESS}:{env['DASHBOARD_PORT']}"
        PROMETHEUS["oauth_no_confirm"] = True
        c.JupyterHub.load_roles.append(
            {
                "name": "dashboard",
                "description": "the admins' dashboard (Prometheus, /services/prometheus/)",
                "scopes": ["access:services!service=prometheus"],
                "users": sorted(listed("ADMIN_USERS")),
            }
        )
    # jupyterhub_active_users (the dashboard's active users) every minute, not every hour.
    c.PeriodicMetricsCollector.active_users_update_interval = 60
    c.JupyterHub.services.append(PROMETHEUS)
    c.JupyterHub.load_roles.append(
        {"name": "prometheus", "scopes": ["read:metrics"], "services": ["prometheus"]}
    )

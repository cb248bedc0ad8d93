"""hub.upgrade: a major upgrade of JupyterHub (5.5 to 6.1), which hub.deploy refuses to make.

The task runs images.build, images.serve and images.pull first (the new series' hub and user
images, the user image on every node before the new hub starts), then this step on the hub:
the hub and the culler stop while chp keeps routing students to their running servers; a copy
of the database is made beside it (`jupyterhub.sqlite.pre-<version>-<time>`, on the hub's own
disk: no backup host needed); `jupyterhub upgrade-db` migrates it on the new image; the new
hub starts. A migration that fails puts the copy back (byte for byte), starts the old version
again and says so in one line (templates/hub/upgrade.sh.j2 does it on the hub, in one go).

Servers started before the upgrade keep running on the old image (the hub of 6 talks to them);
`invoke status` flags them, and UPGRADE_RESTART_SERVERS=yes stops them once the new hub runs.
A second run finds the hub on the wanted major and changes nothing.
"""

from __future__ import annotations

import json
import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.names import unescape_user
from swarmhub.ports import CHP_API_PORT, HUB_API
from swarmhub.runbook.change import Change, FileWrite, Later, Note, Ok, Steps, Wait
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.steps import hub as hub_stack
from swarmhub.steps.images import chp_ref, image_present, image_ref, jupyterhub_version
from swarmhub.templates import render

USER_SERVICES = "docker service ls --filter name=jupyter- --format '{{.Name}}|{{.Image}}'"
# The hub stack's files an upgrade replaces (and puts back when the migration fails).
UPGRADED_FILES = ("hub.env", "swarmhub_spawner.py", "jupyterhub_config.py", "compose.yml")
STATE_FILE = "upgrade/last.json"  # under HUB_DIR: what the last upgrade did (read by status)


def state_path(settings: Settings) -> str:
    return f"{settings.hub_dir}/{STATE_FILE}"


def user_servers(hub: HostView) -> dict[str, str]:
    """Each user's server running as a swarm service: user -> its image (without digest)."""
    found = hub.probe(USER_SERVICES)
    servers = {}
    for line in found.stdout.splitlines():
        name, _, image = line.partition("|")
        if name.startswith("jupyter-") and image:
            servers[unescape_user(name.removeprefix("jupyter-"))] = image.split("@", 1)[0]
    return servers


def stop_servers_command(settings: Settings, users: list[str]) -> str:
    """Stop servers through the hub's API (as the culler does, with its token, which reaches
    curl on its standard input): the hub knows they stopped."""
    token = shlex.quote(f"{settings.hub_dir}/secrets/culler_token")
    stops = [
        f"printf 'Authorization: token %s\\n' \"$(cat {token})\" | curl -fsS -o /dev/null "
        f"-X DELETE -H @- {shlex.quote(f'{HUB_API}/users/{user}/server')}"
        for user in users
    ]
    return " && ".join(stops)


def after_upgrade(ctx: StepContext, hub: HostView, running: str) -> Steps:
    """The hub runs the wanted major: servers of the old one are kept (flagged by status), or
    stopped with UPGRADE_RESTART_SERVERS=yes."""
    settings = ctx.settings
    state = hub.read(state_path(settings))
    before = ""
    if state:
        try:
            before = json.loads(state).get("user_image_before", "")
        except ValueError:
            before = ""
    servers = user_servers(hub)
    old = [user for user, image in sorted(servers.items()) if before and image == before]
    if not old:
        yield Ok(f"no server of the previous major runs (JupyterHub {running} everywhere)")
        return
    names = ", ".join(old[:5]) + (" …" if len(old) > 5 else "")
    if settings.upgrade_restart_servers != "yes":
        yield Note(
            f"{len(old)} server(s) of the previous major keep running ({names}): invoke status "
            "flags them; they move to the new image when they stop (culled, or stopped by "
            "their student); UPGRADE_RESTART_SERVERS=yes stops them now"
        )
        yield Ok(f"servers started before the upgrade kept running ({len(old)})")
        return
    yield Change(
        f"stopped {len(old)} server(s) started before the upgrade ({names}): "
        "UPGRADE_RESTART_SERVERS=yes (files stay; their students start a new server)",
        [stop_servers_command(settings, old)],
    )


def ensure_images(ctx: StepContext, hub: HostView) -> Steps:
    """The new series' images on the hub, and its user image on every node, before anything
    stops: images.build, images.serve and images.pull run first in this task."""
    settings = ctx.settings
    wanted = [
        (hub, "hub", image_ref(settings, "hub")),
        (hub, "user", image_ref(settings, "user")),
        (hub, "chp", chp_ref(settings)),
    ]
    wanted += [
        (ctx.view(node), "user", image_ref(settings, "user")) for node in settings.node_hosts
    ]
    missing = 0
    for view, name, ref in wanted:
        if image_present(view, ref):
            continue
        missing += 1
        if not ctx.changes_pending:
            raise SwarmhubError(
                f"{view.name}: the {name} image {ref} is missing: run images.build and "
                "images.distribute (hub.upgrade runs them first)"
            )
        yield Later(f"the {name} image {ref} on {view.name}: made by the images steps first")
    if not missing:
        yield Ok(f"the new images on the hub and on {len(settings.node_hosts)} node(s)")


def apply(ctx: StepContext, hub: HostView) -> Steps:
    settings = ctx.settings
    wanted = jupyterhub_version(settings)
    running = hub_stack.running_hub_version(hub)
    if running is None:
        raise SwarmhubError(
            f"{hub.name}: no hub is deployed here: hub.upgrade upgrades a running hub; "
            "deploy one with invoke cluster.all (or hub.deploy)"
        )
    if hub_stack.major(running) > hub_stack.major(wanted):
        hub_stack.refuse_major_change(settings, hub.name, running)  # raises: no downgrade
    if hub_stack.major(running) == hub_stack.major(wanted):
        yield Ok(f"the hub runs JupyterHub {running}: no major upgrade to make (series {wanted})")
        yield from after_upgrade(ctx, hub, running)
        return

    # A major upgrade.
    yield from ensure_images(ctx, hub)
    directory = settings.hub_dir
    data = settings.hub_data_dir
    database = f"{data}/jupyterhub.sqlite"
    found = hub.probe(f"date -u +%Y%m%dT%H%M%SZ; stat -c %s {database}")
    lines = found.stdout.split()
    if not found.ok or len(lines) != 2:
        raise SwarmhubError(f"{hub.name}: no database at {database}: is the hub deployed there?")
    stamp, size = lines[0], int(lines[1])
    copy = f"{database}.pre-{running}-{stamp}"
    stage = f"{directory}/upgrade/{running}-to-{wanted}-{stamp}"
    servers = user_servers(hub)
    chp_changes = not hub.probe(
        f"test \"$(docker inspect --format '{{{{.Config.Image}}}}' chp 2>/dev/null)\" = "
        f"{shlex.quote(chp_ref(settings))}"
    ).ok
    yield Note(
        f"expected downtime: the hub and the culler stop for the copy of the database "
        f"({size / 2**20:.1f} MiB), the migration and the new hub's start, about a minute; "
        f"logins and new servers wait meanwhile, the {len(servers)} running server(s) keep "
        "answering through chp"
        + (
            " (chp moves to its new image with their routes: a second's pause)"
            if chp_changes
            else ""
        )
    )
    before = {user for user, image in servers.items() if image != image_ref(settings, "user")}
    state = json.dumps(
        {
            "from": running,
            "to": wanted,
            "at": stamp,
            "copy": copy,
            "user_image_before": next(iter(sorted({servers[u] for u in before})), ""),
        }
    )
    script = render(
        "hub/upgrade.sh.j2",
        hub_dir=directory,
        stage=stage,
        data_dir=data,
        copy=copy,
        old=running,
        new=wanted,
        files=UPGRADED_FILES,
        chp_changes=chp_changes,
        chp_api_port=CHP_API_PORT,
        state=state,
    )
    secrets_dir = f"{directory}/secrets"
    new_files = {
        path.rsplit("/", 1)[-1]: (content, mode)
        for path, content, mode in hub_stack.hub_files(settings, secrets_dir, directory)
        if path.rsplit("/", 1)[-1] in UPGRADED_FILES
    }
    files = [FileWrite.of(f"{stage}/upgrade.sh", script, mode="0700")]
    files += [FileWrite.of(f"{stage}/new/{n}", c, mode=m) for n, (c, m) in new_files.items()]
    yield Change(
        f"JupyterHub {running} to {wanted}: the database copied to {copy}, migrated "
        "(jupyterhub upgrade-db), the hub started on the new images"
        + (", chp on its new image" if chp_changes else ""),
        [f"sh {stage}/upgrade.sh"],
        files=files,
        then=[
            Wait(
                f"JupyterHub {wanted} answers",
                f'curl -fsS {HUB_API}/ | grep -q \'"version": *"{wanted}"\'',
                timeout=180,
                sudo=False,
                explain="docker logs --tail 5 jupyterhub 2>&1",
            )
        ],
    )
    if before and settings.upgrade_restart_servers == "yes":
        yield Change(
            f"stopped {len(before)} server(s) started before the upgrade: "
            "UPGRADE_RESTART_SERVERS=yes (files stay; their students start a new server)",
            [stop_servers_command(settings, sorted(before))],
        )
    elif before:
        yield Note(
            f"{len(before)} server(s) of JupyterHub {running} keep running "
            f"({', '.join(sorted(before)[:5])}): invoke status flags them"
        )


STEP = Step(
    name="hub.upgrade",
    roles=frozenset({"hub"}),
    apply=apply,
    summary="a major upgrade of JupyterHub: database copied and migrated, the new hub",
)

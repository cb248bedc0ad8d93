"""The runbook, in one place: its steps in order, the tasks that run them, and what runs where
when a node is added. `cluster.all`, `nodes.add`, the task collections and the README's step
table are derived from (or checked against) this list.

Naming rule: a step's name is its task's name, `<area>.<verb>` (`provision` alone is the
first step that changes hosts). A task of several steps (`homes.setup`,
`images.distribute`) is a group of steps that are tasks of their own too.
"""

from __future__ import annotations

from swarmhub.runbook.session import Step
from swarmhub.steps import (
    backup,
    docker_engine,
    firewall,
    fit,
    gradebook,
    homes,
    hub,
    images,
    logs,
    metrics,
    monitor,
    provision,
    proxy,
    proxy_tls,
    swarm,
    upgrade,
)

RUNBOOK: tuple[Step, ...] = (
    # Read-only, first: a node too small for a profile stops the run before any host changes.
    fit.STEP,
    provision.STEP,
    docker_engine.STEP,
    # After Docker (the firewall checks its API is not on TCP), before anything listens, and
    # before the swarm: a node new to NODE_HOSTS can join only once the others let it in.
    firewall.STEP,
    swarm.MANAGE,
    swarm.JOIN,
    homes.STORAGE,
    homes.MOUNT,
    images.BUILD,
    images.SERVE,
    images.PULL,
    # Before the hub: its secret (the gradebook's password) is in the hub's secrets then.
    gradebook.STEP,
    hub.STEP,
    images.PRUNE,
    # The backup host before the hub's backup.setup, which opens (or makes) the repository.
    backup.TARGET,
    backup.STEP,
    # A new proxy gets its TLS material back before proxy.configure would make a new one; the
    # hub keeps a copy of it (in every snapshot) once proxy.configure has made or found it.
    proxy_tls.RESTORE,
    proxy.STEP,
    proxy_tls.COPY,
    # After nginx (its log files on the proxy) and Docker (its journald log driver).
    logs.STEP,
    monitor.STEP,
    metrics.STEP,
)

# Tasks made of several steps, run in the order above.
GROUPS: dict[str, tuple[Step, ...]] = {
    "homes.setup": (homes.STORAGE, homes.MOUNT),
    "images.distribute": (images.SERVE, images.PULL),
}

# Tasks that cluster.all does not run: a major upgrade of JupyterHub (hub.deploy refuses one)
# builds and distributes the new series' images first, then upgrades the hub.
OPERATIONS: dict[str, tuple[Step, ...]] = {
    "hub.upgrade": (images.BUILD, images.SERVE, images.PULL, upgrade.STEP),
}

# What each task does, for `--help` (one line first, as a runbook paragraph reads).
HELP: dict[str, str] = {
    "profiles.check": (
        "Check that every node has the memory each profile guarantees (read-only).\n\n"
        "A node with less memory than a profile's guarantee never takes its servers: the run "
        "stops there with one line, before any host changes."
    ),
    "provision": (
        "Prepare every host: base packages, time sync, admin groups, CAs, kernel settings."
    ),
    "docker.install": (
        "Install Docker Engine and Compose v2 on hub and nodes; manage daemon.json.\n\n"
        "A daemon.json change restarts Docker, which stops the servers of a node: refused "
        "where servers run, unless --restart-nodes (one node at a time)."
    ),
    "firewall.configure": (
        "Firewall every host: SSH (and 80/443 on the proxy) from anywhere, the rest cluster-only."
    ),
    "swarm.manage": "Start the swarm manager on the hub and its attachable overlay network.",
    "swarm.join": "Join the nodes to the swarm as workers (members are left alone).",
    "homes.storage": "Keep the users' homes on the storage host (HOMES_BACKEND).",
    "homes.mount": "Mount the homes on the nodes (and on the hub when storage is apart).",
    "homes.setup": "Keep the homes on the storage host and mount them on the nodes.",
    "images.build": "Build the hub and user images on the hub (pinned versions; no registry).",
    "images.serve": "Serve the user image from the hub's registry.",
    "images.pull": "Pull the user image, the offered images and the kept course tags on the nodes.",
    "images.distribute": "Serve the user image from the hub's registry and pull it on every node.",
    "images.prune": (
        "Remove old image tags from the nodes, the hub and its registry.\n\n"
        "Of the course layers, keeps the IMAGE_KEEP tags each profile offered last, the tag it "
        "offers, a pin, the rollback's target and every tag a running server uses; of our user, "
        "hub and chp images, those built now, those in use and the last upgrade's series. The "
        "registry's garbage collection then frees their layers (the registry stops for "
        "seconds: servers start from the nodes' own copy, named by digest)."
    ),
    "gradebook.database": (
        "nbgrader's gradebook in PostgreSQL on the hub (COURSE_ID; nothing without one).\n\n"
        "Its password is made on the hub the first time (secrets/gradebook_password, 0600, "
        "never printed) and given to graders' servers only; pg_hba.conf is the same on every "
        "run (the firewalls decide who reaches port 5432)."
    ),
    "hub.deploy": "Deploy the hub stack with Docker Compose; restart only what changed.",
    "hub.upgrade": (
        "Upgrade JupyterHub to a new major: copy the database, migrate it, start the new hub.\n\n"
        "Builds the series' images and pulls the user image on every node first; the hub's "
        "database is copied to jupyterhub.sqlite.pre-<version>-<time> beside it before "
        "`jupyterhub upgrade-db`; a failed migration puts the copy back and starts the old "
        "version again. Running servers keep running (UPGRADE_RESTART_SERVERS)."
    ),
    "backup.target": (
        "Prepare the backup host of BACKUP_TARGET: the repository's directory, SFTP for the "
        "hub's key only."
    ),
    "backup.proxy": (
        "Keep a copy of the proxy's TLS key and certificate (and ACME account) on the hub, "
        "0600, so that every snapshot holds them."
    ),
    "proxy.restore": (
        "Put the proxy's TLS material back from the hub's copy on a proxy that has none (a new "
        "VM of the same name), before proxy.configure would make a new certificate."
    ),
    "backup.setup": (
        "Install restic, the backup script and its timer (BACKUP_SCHEDULE) on the hub; open "
        "or make the repository.\n\n"
        "The repository's password and the SFTP key are made on this machine the first time "
        "(.swarmhub/<HUB_HOST>/, 0600; its path is printed, never the secret) and kept 0600 on the "
        "hub; a hub whose password differs is refused, never overwritten."
    ),
    "proxy.configure": (
        "Configure nginx on the proxy: TLS, HTTP to HTTPS, websockets, forwarding to the hub."
    ),
    "monitor.logs": (
        "Ship every host's journal (and nginx's logs) with rsyslog to SYSLOG_URL: TLS, TCP or "
        "UDP.\n\nRaises journald's rate limit on every host (Docker logs to the journal). "
        "Lines sent while the log server is away wait in rsyslog's disk-assisted queue."
    ),
    "monitor.deploy": (
        "Run the swarmhub-agent on every host (alerts no rule can raise: OOM kills naming the "
        "user, dead kernels, 5xx bursts, failed starts), or remove it (ALERT_WEBHOOK_URL empty)."
    ),
    "monitor.metrics": (
        "Prometheus, Alertmanager and the blackbox exporter on the hub, node exporters on every "
        "host (METRICS).\n\nScrapes every 15 s; alerts go to ALERT_WEBHOOK_URL through "
        "Alertmanager. A config that promtool or amtool rejects is never installed."
    ),
}


def tasks() -> dict[str, tuple[Step, ...]]:
    """Every runbook task and its steps: one a step, then the groups."""
    return {step.name: (step,) for step in RUNBOOK} | GROUPS | OPERATIONS


def all_steps() -> tuple[Step, ...]:
    """Every registered step: the runbook's, and those only operations run."""
    steps = list(RUNBOOK)
    for group in OPERATIONS.values():
        steps += [step for step in group if step not in steps]
    return tuple(steps)


def table_rows() -> list[str]:
    """The tasks of the README's step table, in order: each step, or its group in its place."""
    rows: list[str] = []
    for step in RUNBOOK:
        group = next((name for name, steps in GROUPS.items() if step in steps), step.name)
        if group not in rows:
            rows.append(group)
    return rows


def node_add_steps() -> list[Step]:
    """What `nodes.add` runs, in order: the runbook's order, but the images pulled before the
    node joins the swarm. A node takes servers from its join on, and the hub offers only
    images every node holds: a new node must hold them (the user image, each profile's) by
    then, so that no spawn there waits for a pull. (The pull needs Docker, its registry
    setting and the hub's firewall open to the node: the steps before.)"""
    steps = [step for step in RUNBOOK if step.on_node_add]
    steps.remove(images.PULL)
    steps.insert(steps.index(swarm.JOIN), images.PULL)
    return steps


def node_add_everywhere() -> frozenset[str]:
    """The steps `nodes.add` runs on every host of their roles, not on the new node only."""
    return frozenset(step.name for step in RUNBOOK if step.on_node_add == "all")

"""nodes: add, drain, activate and remove node hosts during a term."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.runbook.session import run_steps
from swarmhub.steps import nodes, registry
from tasks._common import PLAN_HELP, RESTART_HELP


@task(positional=["host"], help={**PLAN_HELP, **RESTART_HELP})
def add(c, host, plan=False, restart_nodes=False):
    """Make a node listed in NODE_HOSTS ready: provision, Docker, every offered image (the
    user image and each profile's), join, homes; the other hosts only open their firewalls
    to it."""
    settings = env_settings.load()
    if host not in settings.node_hosts:
        raise SwarmhubError(
            f"{host} is not in NODE_HOSTS of {settings.source.name}: add it there first "
            "(the env file is the source of truth)"
        )
    run_steps(
        settings,
        registry.node_add_steps(),
        plan=plan,
        only=host,
        everywhere=registry.node_add_everywhere(),
        restart_nodes=restart_nodes,
        command=f"nodes.add {host}",
    )


@task(
    positional=["host"],
    help={"evict": "also stop the servers running there (they start again on other nodes)"},
)
def drain(c, host, evict=False):
    """Stop new servers landing on a node (--evict: stop its running servers too)."""
    step = nodes.availability_step("nodes.drain", "drain" if evict else "pause", host)
    run_steps(env_settings.load(), [step], command=f"nodes.drain {host}")


@task(positional=["host"])
def activate(c, host):
    """Let a drained node take new servers again."""
    step = nodes.availability_step("nodes.activate", "active", host)
    run_steps(env_settings.load(), [step], command=f"nodes.activate {host}")


@task(positional=["host"], help={"force": "remove it even though servers still run there"})
def remove(c, host, force=False):
    """Take a node out of the swarm (refused while servers run there, unless --force)."""
    settings = env_settings.load()
    run_steps(settings, [nodes.remove_step(host, force)], command=f"nodes.remove {host}")
    if host in settings.node_hosts:
        print(
            f"note: {host} is still in NODE_HOSTS of {settings.source.name}: take it out (or "
            "cluster.all will join it again), then run invoke firewall.configure "
            "monitor.metrics to close the other hosts' firewalls to it and stop Prometheus "
            "scraping it"
        )

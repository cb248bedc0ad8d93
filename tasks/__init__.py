"""swarmhub's tasks: one namespace, seen by both ``invoke`` and ``fab``.

The modules mirror the deployment doc: provision → docker → firewall → swarm → homes →
images → hub → backup → proxy → monitor, and cluster.all runs them in order. The sandbox
rehearses it all on this machine.
"""

from invoke import Collection

from tasks import (
    backup,
    cluster,
    docker,
    firewall,
    homes,
    hosts,
    hub,
    images,
    interact,
    monitor,
    nodes,
    proxy,
    sandbox,
    secrets,
    swarm,
)
from tasks.observe import diagnose, health, logs, status
from tasks.plan import plan
from tasks.provision import provision
from tasks.walkthrough import walkthrough

ns = Collection()
ns.add_task(provision)
ns.add_task(plan)
ns.add_task(walkthrough)
for observer in (status, logs, health, diagnose):
    ns.add_task(observer)
modules = (
    hosts,
    docker,
    swarm,
    firewall,
    homes,
    images,
    hub,
    backup,
    proxy,
    monitor,
    cluster,
    nodes,
    interact,
    secrets,
    sandbox,
)
for module in modules:
    ns.add_collection(Collection.from_module(module))

"""swarmhub's tasks: one namespace, seen by both ``invoke`` and ``fab``.

The modules mirror the deployment doc: provision → docker → swarm → firewall → images → hub → proxy,
and cluster.all runs them in order. The sandbox rehearses it all on this machine.
"""

from invoke import Collection

from tasks import (
    cluster,
    docker,
    firewall,
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

ns = Collection()
ns.add_task(provision)
ns.add_task(plan)
for observer in (status, logs, health, diagnose):
    ns.add_task(observer)
modules = (
    hosts,
    docker,
    swarm,
    firewall,
    images,
    hub,
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

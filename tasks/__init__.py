"""swarmhub's tasks: one namespace, seen by both ``invoke`` and ``fab``.

The runbook's step tasks (provision, docker.install, ..., monitor.deploy, and the groups
homes.setup and images.distribute) are made from the registry, swarmhub/steps/registry.py;
cluster.all runs them in order. The modules here add the tasks that are not steps: backups
and restores, nodes coming and going, observing, the sandbox.
"""

from invoke import Collection

from swarmhub.steps import registry
from tasks import (
    backup,
    classes,
    cluster,
    course,
    homes,
    hosts,
    images,
    interact,
    nodes,
    recover,
    sandbox,
    secrets,
)
from tasks._common import step_task
from tasks.observe import diagnose, health, logs, metrics, status
from tasks.plan import plan
from tasks.walkthrough import walkthrough

ns = Collection()
for top in (plan, walkthrough, status, logs, health, metrics, diagnose):
    ns.add_task(top)
collections = {
    module.__name__.rsplit(".", 1)[-1]: Collection.from_module(module)
    for module in (
        backup,
        homes,
        cluster,
        course,
        nodes,
        hosts,
        images,
        interact,
        recover,
        secrets,
        sandbox,
    )
}
# `class` is a keyword: the module is classes, its tasks are class.warmup.
collections["class"] = Collection.from_module(classes, name="class")
for name, steps in registry.tasks().items():
    made = step_task(name, steps, registry.HELP[name])
    if "." not in name:
        ns.add_task(made)
        continue
    area, verb = name.split(".", 1)
    collections.setdefault(area, Collection(area)).add_task(made, name=verb)
for collection in collections.values():
    ns.add_collection(collection)

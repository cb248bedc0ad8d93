"""swarmhub's tasks: one namespace, seen by both ``invoke`` and ``fab``."""

from invoke import Collection

from tasks import sandbox

ns = Collection()
ns.add_collection(Collection.from_module(sandbox))

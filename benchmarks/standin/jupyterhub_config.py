# benchmarks/hub_capacity's hub config, applied by that benchmark alone (its compose
# override), never by a deployment: the hub's own config, then students' servers replaced by
# the stand-in (standin_spawner.py: the spawner's Docker service calls only) and each
# server's memory reservation made tiny, so that the room check runs but never fills.
import os
import sys

c = get_config()  # noqa: F821 (provided by JupyterHub)
load_subconfig("/srv/jupyterhub/jupyterhub_config.py")  # noqa: F821 (traitlets)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from standin_spawner import RESERVATION, StandinSpawner  # noqa: E402

for profile in StandinSpawner.profiles:
    profile["mem_guarantee"] = RESERVATION
c.JupyterHub.spawner_class = StandinSpawner

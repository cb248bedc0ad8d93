"""Code that runs inside the hub container, not in the runbook.

hub.deploy copies these files to the hub beside jupyterhub_config.py, where swarmhub is not
installed: they import only the standard library and what the hub image has (jupyterhub,
dockerspawner, tornado), and the runbook reads them as files, never imports them.
"""

from pathlib import Path

# Read by hub.deploy (its content is part of the hub's config digest) and imported by the
# hub's jupyterhub_config.py as the top-level module `swarmhub_spawner`.
SPAWNER_MODULE = Path(__file__).with_name("swarmhub_spawner.py")
# The admins' dashboard's front (HubOAuth before Prometheus): copied to the hub by
# monitor.metrics, run there from the hub image by the swarmhub-dashboard unit.
DASHBOARD_MODULE = Path(__file__).with_name("dashboard.py")
# The class warm-up: sent by `invoke class.warmup` on the standard input of a python3 in the
# hub's container each time it runs (not placed on the hub).
WARMUP_SCRIPT = Path(__file__).with_name("class_warmup.py")
# LMS logins (AUTHENTICATOR=lti13): placed beside the config by hub.deploy, imported by it
# as `swarmhub_lti` only for that authenticator.
LTI_MODULE = Path(__file__).with_name("swarmhub_lti.py")

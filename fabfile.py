"""Fabric's entry point: the same tasks as ``invoke``, plus ``fab -H HOST -- COMMAND``.

swarmhub's ``fab`` (installed in .venv by scripts/setup) reads the hosts from the ssh_config
of the active env file (``SSH_CONFIG``; the sandbox writes ``.sandbox/ssh_config``) and
checks host keys against known_hosts rather than accepting them blindly.
"""

from swarmhub.fabric_setup import use_verified_connections_in_fab
from tasks import ns

use_verified_connections_in_fab()

__all__ = ["ns"]

"""The ``fab`` command of a swarmhub checkout: Fabric's, with the project's setup always loaded.

Fabric skips the fabfile (and so the project's ssh_config and host-key checking) for a bare
``fab -H HOST -- COMMAND``. This ``fab`` loads it in that case too, so that the command
reaches the hosts named by the env file and checks their keys. Everything else is Fabric's.
"""

from __future__ import annotations

from fabric import Config, Executor, __version__
from fabric.main import Fab
from invoke import Collection
from invoke.exceptions import Exit

from swarmhub.fabric_setup import env_ssh_config, use_verified_connections_in_fab


class ProjectFab(Fab):
    """Fabric's program, loading the project's fabfile even for ``fab -H HOST -- COMMAND``."""

    def load_collection(self) -> None:
        if not self._remainder_only:
            super().load_collection()
            return
        try:
            # Invoke's loader imports fabfile.py (which sets up SSH) and the project config.
            super(Fab, self).load_collection()
        except Exit:
            self.collection = Collection()  # outside a checkout: plain Fabric behaviour
        # Only the remainder runs, never the collection's tasks.
        self.collection = Collection()

    def update_config(self) -> None:
        # The env file's ssh_config names the hosts, unless `fab -S FILE` names another.
        if not self.args["ssh-config"].value:
            path = env_ssh_config()
            if path is not None:
                self.args["ssh-config"].value = str(path)
        super().update_config()


program = ProjectFab(
    name="Fabric (swarmhub)",
    version=__version__,
    executor_class=Executor,
    config_class=Config,
)


def main() -> None:
    """Entry point of ``fab``."""
    use_verified_connections_in_fab()
    program.run()

"""The hub's configuration loaded as the hub loads it: the files hub.deploy writes, side by
side as the compose file mounts them in /srv/jupyterhub, run by JupyterHub's own loader for
python config files (traitlets) with the variables the hub's env files give it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jupyterhub.app import JupyterHub
from traitlets.config import Config

from swarmhub.steps import hub


@pytest.fixture(autouse=True, scope="session")
def facts_s3_secret_0600() -> None:
    """The stand-in S3 secret of tests/unit/facts/s3.env: 0600, as backup.setup wants it (git
    keeps no such mode)."""
    (Path(__file__).resolve().parent / "facts" / "s3-secret").chmod(0o600)


@pytest.fixture(autouse=True)
def provisioner_secrets_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backup secrets a step makes on the provisioner go to the test's own directory, not
    into the checkout's .swarmhub/ (replayed facts make a password and a key there)."""
    from swarmhub import backup_secrets
    from swarmhub.steps import backup

    monkeypatch.setattr(backup_secrets, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.setattr(backup, "PROJECT_ROOT", tmp_path / "project")  # the paths it shows


HUB_MODULE = "swarmhub_spawner"  # the name jupyterhub_config.py imports it by, on the hub
SERVER_FIREWALL = "table inet swarmhub_server {}\n"  # what the config hands every server


@pytest.fixture
def load_hub_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Config]]:
    """load(env_text): the config jupyterhub_config.py makes, in a fresh `swarmhub_spawner`."""
    directory = tmp_path / "srv-jupyterhub"
    directory.mkdir()
    config_file = directory / "jupyterhub_config.py"
    config_file.write_text(hub.hub_config())
    (directory / f"{HUB_MODULE}.py").write_text(hub.spawner_module())
    (directory / "swarmhub_lti.py").write_text(hub.lti_module())
    (directory / "server-firewall.nft").write_text(SERVER_FIREWALL)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the config puts its directory first

    def load(env_text: str) -> Config:
        for line in env_text.splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                monkeypatch.setenv(key, value)
        sys.modules.pop(HUB_MODULE, None)  # a new hub process: a new spawn queue
        sys.modules.pop("swarmhub_lti", None)
        # `jupyterhub -f /srv/jupyterhub/jupyterhub_config.py`: an absolute name, no path.
        loader = JupyterHub.python_config_loader_class(str(config_file), path=None)
        return loader.load_config()

    yield load
    sys.modules.pop(HUB_MODULE, None)
    sys.modules.pop("swarmhub_lti", None)

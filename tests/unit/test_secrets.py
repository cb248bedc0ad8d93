"""secrets.rotate: which secrets, which env files and which containers, without SSH."""

from __future__ import annotations

import pytest

from swarmhub.errors import SwarmhubError
from swarmhub.steps import secrets
from swarmhub.steps.hub import SECRETS


def test_every_generated_secret_can_be_rotated() -> None:
    assert sorted(secrets.secret_files("all")) == sorted(SECRETS)
    with pytest.raises(SwarmhubError, match="use one of cookie, proxy-token, crypt-key, culler"):
        secrets.secret_files("password")


def test_only_the_containers_holding_a_secret_are_recreated() -> None:
    def services(name: str) -> list[str]:
        files = secrets.affected(secrets.secret_files(name))
        return sorted(secrets.SERVICE_OF_ENV_FILE[f] for f in files)

    assert services("cookie") == ["jupyterhub"]
    assert services("proxy-token") == ["chp", "jupyterhub"]
    assert services("culler") == ["cull", "jupyterhub"]
    assert services("all") == ["chp", "cull", "jupyterhub"]


def test_a_new_secret_never_appears_on_the_command_line() -> None:
    command = secrets.new_secret_command("/srv/swarmhub/secrets/cookie_secret")
    assert command.startswith("umask 077 && openssl rand -hex 32 > ")
    assert command.endswith(
        "mv /srv/swarmhub/secrets/cookie_secret.new /srv/swarmhub/secrets/cookie_secret"
    )

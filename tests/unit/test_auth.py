"""Logins from the env: validation before any host is touched, and the hub's rendered config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from traitlets.config import Config

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import hub

HOSTS = "HUB_HOST=hub\nNODE_HOSTS=node-1,node-2\nPROXY_HOST=proxy\n"
SANDBOX = "SSH_CONFIG=.sandbox-x/ssh_config\n"


def load(tmp_path: Path, text: str) -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(HOSTS + text)
    return settings.load(str(path))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SwarmhubError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def secret_file(tmp_path: Path, value: str = "s3cr3t-client-value") -> str:
    path = tmp_path / "oauth-secret"
    path.write_text(value + "\n")
    return f"OAUTH_CLIENT_SECRET_FILE={path}\n"


# --- validation ---


def test_the_shared_password_works_on_the_sandbox(tmp_path: Path) -> None:
    loaded = load(tmp_path, SANDBOX + "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=pw\n")
    assert settings.is_sandbox(loaded)


def test_the_shared_password_is_refused_with_a_real_domain(tmp_path: Path) -> None:
    text = SANDBOX + "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=pw\nDOMAIN=hub.example.edu\n"
    message = error(tmp_path, text)
    assert "AUTHENTICATOR=dummy" in message and "DOMAIN=hub.example.edu is a real name" in message
    assert message.endswith("set AUTHENTICATOR to native, github, google or oidc")
    assert "\n" not in message


def test_the_shared_password_is_refused_outside_the_sandbox(tmp_path: Path) -> None:
    message = error(tmp_path, "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=pw\n")
    assert "no SSH_CONFIG: a sandbox's env names the ssh_config sandbox.up writes" in message


def test_oauth_needs_its_client_and_an_allow_list(tmp_path: Path) -> None:
    assert "needs OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET_FILE" in error(
        tmp_path, "AUTHENTICATOR=github\n"
    )
    message = error(tmp_path, "AUTHENTICATOR=github\nOAUTH_CLIENT_ID=x\n" + secret_file(tmp_path))
    assert "lets anyone with an account there in" in message
    oidc = "AUTHENTICATOR=oidc\nOAUTH_CLIENT_ID=x\nALLOWED_USERS=a\n" + secret_file(tmp_path)
    assert "OIDC_AUTHORIZE_URL, OIDC_TOKEN_URL, OIDC_USERDATA_URL" in error(tmp_path, oidc)
    insecure = oidc + (
        "OIDC_AUTHORIZE_URL=http://idp/a\nOIDC_TOKEN_URL=https://idp/t\n"
        "OIDC_USERDATA_URL=https://idp/u\n"
    )
    assert "must be an https:// address" in error(tmp_path, insecure)


def test_google_within_a_hosted_domain_needs_no_list(tmp_path: Path) -> None:
    text = "AUTHENTICATOR=google\nOAUTH_CLIENT_ID=x\nGOOGLE_HOSTED_DOMAIN=example.edu\n"
    assert load(tmp_path, text + secret_file(tmp_path)).google_hosted_domain == "example.edu"
    assert "set GOOGLE_HOSTED_DOMAIN, ALLOWED_USERS" in error(
        tmp_path, "AUTHENTICATOR=google\nOAUTH_CLIENT_ID=x\n" + secret_file(tmp_path)
    )


def test_user_files_must_exist_and_hold_names(tmp_path: Path) -> None:
    loaded = load(tmp_path, f"ALLOWED_USERS_FILE={tmp_path}/missing.txt\n")
    with pytest.raises(SwarmhubError, match=r"ALLOWED_USERS_FILE=.*does not exist"):
        settings.check_local_files(loaded)
    bad = tmp_path / "bad.txt"
    bad.write_text("alice\nnot a name\n")
    with pytest.raises(SwarmhubError, match="one user name a line"):
        settings.names_in_file(bad)


# --- what the hub gets ---


def oidc_env(tmp_path: Path) -> settings.Settings:
    students = tmp_path / "students.txt"
    students.write_text("# course 101\nalice\nbob  # TA\n\n")
    admins = tmp_path / "admins.txt"
    admins.write_text("prof\n")
    return load(
        tmp_path,
        "AUTHENTICATOR=oidc\nOAUTH_CLIENT_ID=course-hub\nDOMAIN=hub.example.edu\n"
        "OIDC_AUTHORIZE_URL=https://idp.example.edu/authorize\n"
        "OIDC_TOKEN_URL=https://idp.example.edu/token\n"
        "OIDC_USERDATA_URL=https://idp.example.edu/userinfo\n"
        f"ALLOWED_USERS=carol\nALLOWED_USERS_FILE={students}\nADMIN_USERS_FILE={admins}\n"
        + secret_file(tmp_path),
    )


def test_the_client_secret_goes_to_the_secrets_only(tmp_path: Path) -> None:
    env = oidc_env(tmp_path)
    assert hub.auth_env(env) == "OAUTH_CLIENT_SECRET=s3cr3t-client-value\n"
    public = hub.hub_settings_env(env)
    assert "s3cr3t" not in public
    assert "ALLOWED_USERS=carol,alice,bob\n" in public
    assert "ADMIN_USERS=prof\n" in public
    assert "OAUTH_CALLBACK_URL=https://hub.example.edu/hub/oauth_callback\n" in public


def test_the_hub_config_for_oidc(tmp_path: Path, load_hub_config: Callable[[str], Config]) -> None:
    env = oidc_env(tmp_path)
    secrets = "CULLER_API_TOKEN=t\n" + hub.auth_env(env)
    config = load_hub_config(hub.hub_settings_env(env) + secrets)
    assert config.JupyterHub.authenticator_class == "generic-oauth"
    assert config.OAuthenticator.client_secret == "s3cr3t-client-value"
    assert config.GenericOAuthenticator.token_url == "https://idp.example.edu/token"
    assert config.GenericOAuthenticator.scope == ["email", "openid", "profile"]
    assert config.Authenticator.allowed_users == {"alice", "bob", "carol"}
    assert config.Authenticator.admin_users == {"prof"}
    assert "allow_all" not in config.Authenticator


def test_the_hub_config_for_google(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    google = load(
        tmp_path,
        "AUTHENTICATOR=google\nOAUTH_CLIENT_ID=x\nGOOGLE_HOSTED_DOMAIN=example.edu\n"
        + secret_file(tmp_path),
    )
    text = hub.hub_settings_env(google) + "CULLER_API_TOKEN=t\n" + hub.auth_env(google)
    config = load_hub_config(text)
    assert config.JupyterHub.authenticator_class == "google"
    assert config.GoogleOAuthenticator.hosted_domain == ["example.edu"]
    assert config.Authenticator.allow_all is True


def test_the_hub_config_for_the_sandbox(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    sandbox = load(tmp_path, SANDBOX + "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=pw\n")
    text = hub.hub_settings_env(sandbox) + "CULLER_API_TOKEN=t\n" + hub.auth_env(sandbox)
    config = load_hub_config(text)
    assert config.JupyterHub.authenticator_class == "dummy"
    assert config.DummyAuthenticator.password == "pw"

"""LMS logins (AUTHENTICATOR=lti13): the settings' validation, swarmhub's decisions in the
hub's swarmhub_lti.py (the course's context, roles to groups) on the real
jupyterhub-ltiauthenticator the hub image pins, and the hub config it gets. The launch itself
(signature, expiry, audience, nonce) is ltiauthenticator's; tests/e2e exercise it end to end
only where a stand-in LMS runs (docs/lms.md says what is tested)."""

from __future__ import annotations

import ast
import asyncio
import json
import runpy
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from swarmhub import settings
from swarmhub.hubside import LTI_MODULE
from swarmhub.steps import hub
from tests.unit.test_auth import error as auth_error
from tests.unit.test_auth import load as auth_load

DOMAIN = "DOMAIN=hub.example.edu\n"
LTI = (
    "AUTHENTICATOR=lti13\nLTI13_ISSUER=https://canvas.example.edu\nLTI13_CLIENT_ID=10000042\n"
    "LTI13_AUTHORIZE_URL=https://canvas.example.edu/api/lti/authorize_redirect\n"
    "LTI13_JWKS_URL=https://canvas.example.edu/api/lti/security/jwks\n"
    "LTI13_CONTEXT_ID=course-101\n"
)
MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
INSTRUCTOR = MEMBERSHIP + "Instructor"
LEARNER = MEMBERSHIP + "Learner"
TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
ADMIN = "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator"


# The hub imports it from its file, beside the config: so do the tests.
lti = SimpleNamespace(**runpy.run_path(str(LTI_MODULE)))


def error(tmp_path: Path, text: str) -> str:
    message = auth_error(tmp_path, DOMAIN + text)
    assert "\n" not in message
    return message


def load(tmp_path: Path, text: str) -> settings.Settings:
    return auth_load(tmp_path, DOMAIN + text)


# --- settings ---


def test_an_lms_login_needs_its_platform_and_course(tmp_path: Path) -> None:
    message = error(tmp_path, "AUTHENTICATOR=lti13\n")
    assert "needs LTI13_ISSUER, LTI13_CLIENT_ID, LTI13_AUTHORIZE_URL, LTI13_JWKS_URL" in message
    assert message.endswith("see docs/lms.md")


def test_an_lms_login_without_a_course_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, LTI.replace("LTI13_CONTEXT_ID=course-101\n", ""))
    assert "needs LTI13_CONTEXT_ID (launches are accepted for one course only)" in message


def test_the_platform_is_reached_over_https(tmp_path: Path) -> None:
    text = LTI.replace("https://canvas.example.edu/api/lti/security", "http://lms/x")
    assert "LTI13_JWKS_URL=http://lms/x/jwks must be an https:// address" in error(tmp_path, text)


def test_the_user_name_claim_is_sub_or_email(tmp_path: Path) -> None:
    assert load(tmp_path, LTI).lti13_username_claim == "sub"
    assert load(tmp_path, LTI + "LTI13_USERNAME_CLAIM=email\n").lti13_username_claim == "email"
    message = error(tmp_path, LTI + "LTI13_USERNAME_CLAIM=name\n")
    assert "LTI13_USERNAME_CLAIM" in message and "not one of sub, email" in message


def test_graders_and_students_need_two_groups(tmp_path: Path) -> None:
    message = error(tmp_path, LTI + "GRADERS_GROUP=course\nSTUDENTS_GROUP=course\n")
    assert "GRADERS_GROUP and STUDENTS_GROUP are both course" in message
    assert "GRADERS_GROUP" in error(tmp_path, LTI + "GRADERS_GROUP=Big Group\n")


def test_the_iframe_names_an_https_origin_of_an_lms_login(tmp_path: Path) -> None:
    framed = load(tmp_path, LTI + "LTI_IFRAME=https://canvas.example.edu/\n")
    assert framed.lti_iframe == "https://canvas.example.edu"
    assert "is not an https:// origin" in error(tmp_path, LTI + "LTI_IFRAME=canvas.example.edu\n")
    assert "is not an https:// origin" in error(tmp_path, LTI + "LTI_IFRAME=https://a.edu/x\n")
    other = "AUTHENTICATOR=native\nLTI_IFRAME=https://canvas.example.edu\n"
    assert "LTI_IFRAME is for AUTHENTICATOR=lti13 only" in error(tmp_path, other)


# --- decisions ---


@pytest.mark.parametrize(
    ("roles", "group"),
    [
        ([INSTRUCTOR], "graders"),
        ([TA], "graders"),
        ([MEMBERSHIP + "ContentDeveloper"], "graders"),
        ([LEARNER, TA], "graders"),
        ([LEARNER], "students"),
        ([], "students"),
        ([ADMIN], "students"),  # an institution's admin is not the course's grader
        ([MEMBERSHIP + "Learner#Instructor-ish", 3], "students"),
    ],
)
def test_lms_roles_give_one_course_group(roles: list, group: str) -> None:
    assert lti.lms_group(roles, "graders", "students") == group


def test_a_launch_from_another_course_is_refused() -> None:
    context = "https://purl.imsglobal.org/spec/lti/claim/context"
    lti.check_context({context: {"id": "course-101"}}, "course-101")
    for token in ({context: {"id": "course-202"}}, {}, {context: "course-101"}):
        with pytest.raises(lti.LoginError, match="another course"):
            lti.check_context(token, "course-101")
    with pytest.raises(lti.LoginError):
        lti.check_context({context: {"id": ""}}, "")  # no course set: nothing passes


def test_the_lms_owns_its_groups_and_the_profiles_file_the_others() -> None:
    profile_groups = {"gpu": ["alice"], "graders": ["alice"], "students": ["bob"]}
    groups = lti.user_groups("alice", [LEARNER], "graders", "students", profile_groups)
    assert groups == ["gpu", "students"]  # the file's graders membership does not count
    assert lti.user_groups("bob", [TA], "graders", "students", profile_groups) == ["graders"]


def token(roles: list[str], context: str = "course-101") -> dict:
    return {
        "nonce": uuid.uuid4().hex,
        "exp": time.time() + 300,
        "sub": "8f3c-student",
        "email": "ada@example.edu",
        "https://purl.imsglobal.org/spec/lti/claim/context": {"id": context},
        "https://purl.imsglobal.org/spec/lti/claim/roles": roles,
    }


def test_the_authenticator_returns_the_groups_at_each_launch() -> None:
    authenticator = lti.SwarmhubLTI13Authenticator(
        context_id="course-101", username_key="email", profile_groups={"gpu": ["ada@example.edu"]}
    )
    first = asyncio.run(authenticator.authenticate(None, token([LEARNER])))
    assert first["name"] == "ada@example.edu"
    assert first["groups"] == ["gpu", "students"]
    assert first["auth_state"]["sub"] == "8f3c-student"
    made_ta = asyncio.run(authenticator.authenticate(None, token([LEARNER, TA])))
    assert made_ta["groups"] == ["gpu", "graders"]
    with pytest.raises(lti.LoginError):
        asyncio.run(authenticator.authenticate(None, token([INSTRUCTOR], "course-202")))


def test_a_replayed_launch_is_refused() -> None:
    """ltiauthenticator compares the nonce with the launch's cookie only: a launch captured
    whole (form and cookies) is refused the second time, until its token expires."""
    authenticator = lti.SwarmhubLTI13Authenticator(context_id="course-101", username_key="sub")
    launch = token([LEARNER])
    asyncio.run(authenticator.authenticate(None, launch))
    with pytest.raises(lti.LoginError, match="already used"):
        asyncio.run(authenticator.authenticate(None, dict(launch)))
    with pytest.raises(lti.LoginError, match="no nonce"):
        asyncio.run(authenticator.authenticate(None, {**token([LEARNER]), "nonce": ""}))
    asyncio.run(authenticator.authenticate(None, token([LEARNER])))  # a new launch: fine


def test_nonces_are_forgotten_once_their_tokens_expire() -> None:
    ledger = lti.NonceLedger()
    ledger.check_and_record({"nonce": "n1", "exp": 1000}, now=900)
    with pytest.raises(lti.LoginError):
        ledger.check_and_record({"nonce": "n1", "exp": 1000}, now=999)
    ledger.check_and_record({"nonce": "n2", "exp": 2000}, now=1001)  # n1 dropped
    assert set(ledger._until) == {"n2"}


# --- the hub's config ---


def lti_hub_env(tmp_path: Path, extra: str = "") -> str:
    env = load(tmp_path, LTI + extra)
    return hub.hub_settings_env(env) + "CULLER_API_TOKEN=t\n" + hub.auth_env(env)


def test_the_hub_config_for_an_lms(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(lti_hub_env(tmp_path))
    assert config.JupyterHub.authenticator_class.__name__ == "SwarmhubLTI13Authenticator"
    assert config.LTI13Authenticator.client_id == ["10000042"]
    assert config.LTI13Authenticator.username_key == "sub"
    assert config.SwarmhubLTI13Authenticator.context_id == "course-101"
    assert config.SwarmhubLTI13Authenticator.graders_group == "graders"
    assert config.Authenticator.manage_groups is True
    assert config.Authenticator.enable_auth_state is True
    # JupyterHub refuses to start with both: "Group management has been offloaded ..."
    assert "load_groups" not in config.JupyterHub
    cookies = config.JupyterHub.tornado_settings["cookie_options"]
    assert cookies == {"samesite": "None", "secure": True}
    assert "headers" not in config.JupyterHub.tornado_settings  # not framed: 'self' only
    assert "args" not in config.Spawner


def test_the_hub_config_framed_by_the_lms(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    config = load_hub_config(lti_hub_env(tmp_path, "LTI_IFRAME=https://canvas.example.edu\n"))
    csp = "frame-ancestors 'self' https://canvas.example.edu"
    assert config.JupyterHub.tornado_settings["headers"] == {"Content-Security-Policy": csp}
    server = dict(arg[2:].split("=", 1) for arg in config.Spawner.args)
    assert json.loads(server["ServerApp.tornado_settings"])["headers"] == {
        "Content-Security-Policy": csp
    }
    assert json.loads(server["HubOAuth.cookie_options"])["samesite"] == "None"


def test_other_logins_keep_the_profiles_groups(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    env = load(tmp_path, "AUTHENTICATOR=native\n")
    config = load_hub_config(hub.hub_settings_env(env) + "CULLER_API_TOKEN=t\n")
    assert "load_groups" in config.JupyterHub
    assert "manage_groups" not in config.Authenticator
    assert "cookie_options" not in config.JupyterHub.tornado_settings


def test_the_lms_module_is_placed_only_for_an_lms(tmp_path: Path) -> None:
    def placed(text: str) -> bool:
        files = hub.hub_files(load(tmp_path, text), "/srv/s/secrets", "/srv/s")
        return "/srv/s/swarmhub_lti.py" in [path for path, _, _ in files]

    assert placed(LTI) and not placed("AUTHENTICATOR=native\n")
    # and mounted beside the config in the hub's container, where it imports it from
    mount = "./swarmhub_lti.py:/srv/jupyterhub/swarmhub_lti.py:ro"
    assert mount in hub.render_compose(load(tmp_path, LTI))
    assert mount not in hub.render_compose(load(tmp_path, "AUTHENTICATOR=native\n"))
    assert "LTI13_CONTEXT_ID=course-101\n" in hub.hub_settings_env(load(tmp_path, LTI))


def test_the_module_imports_only_what_the_hub_image_has() -> None:
    tree = ast.parse(LTI_MODULE.read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    hub_image = {"jupyterhub", "ltiauthenticator", "traitlets"}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} <= hub_image


def test_jupyterhub_starts_with_the_lms_config(
    tmp_path: Path, load_hub_config: Callable[[str], Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real JupyterHub initializes with it: no 'Group management has been offloaded to the
    authenticator' (load_groups beside manage_groups), auth state with the crypt key."""
    from jupyterhub.app import JupyterHub

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "0" * 64)
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "t")
    homes = tmp_path / "homes"
    homes.mkdir()
    extra = (
        "USER_IMAGE=u\nSWARM_NETWORK=n\nUSER_MEM_LIMIT=1073741824\nUSER_CPU_LIMIT=1.5\n"
        f"HOMES_DIR={homes}\nHOME_UID=1000\nHOME_GID=1000\nSPAWN_CONCURRENCY=\n"
    )
    config = load_hub_config(lti_hub_env(tmp_path) + extra)
    config.JupyterHub.db_url = f"sqlite:///{tmp_path}/hub.sqlite"
    config.JupyterHub.cookie_secret_file = str(tmp_path / "cookie_secret")
    config.JupyterHub.pid_file = ""
    config.JupyterHub.services = []
    config.JupyterHub.load_roles = []
    monkeypatch.chdir(tmp_path)
    app = JupyterHub(config=config)
    try:
        asyncio.run(app.initialize([]))
        assert app.authenticator.manage_groups and app.authenticator.enable_auth_state
        assert type(app.authenticator).__name__ == "SwarmhubLTI13Authenticator"
    finally:
        JupyterHub.clear_instance()

"""LMS logins over LTI 1.3 (AUTHENTICATOR=lti13): placed beside jupyterhub_config.py on the
hub and imported by it only for that authenticator, on the hub image's
jupyterhub-ltiauthenticator.

ltiauthenticator checks the launch (signature against the platform's JWKS, issuer, audience,
expiry, the state and nonce cookies) and names the user; this module adds what swarmhub
decides: a launch from any course but the one of LTI13_CONTEXT_ID is refused (a tool installed
for a whole LMS account would otherwise let in every account of it), and the LMS roles give
the user's groups (manage_groups): instructors and TAs the graders group, everyone else the
students group, at every launch, so a role changed in the LMS counts from the next launch.

ltiauthenticator's nonce check compares the token's nonce with the nonce cookie only: a
launch captured whole (its form and cookies) could be sent again until the token expires.
The authenticator remembers the nonces of the launches it accepted until their tokens expire
(NonceLedger) and refuses one seen before; the hub's memory only, so a replay across a hub
restart within the token's lifetime (minutes) is not caught.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ltiauthenticator.lti13.auth import LTI13Authenticator
from ltiauthenticator.lti13.error import LoginError  # the callback answers it with a 400 page
from traitlets import Dict, Unicode

CONTEXT_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/context"
ROLES_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/roles"
# LTI 1.3 role URIs (LIS vocabulary) whose holders grade: the last part of the URI, after
# '#' (context roles) or '/' (sub-roles such as membership/Instructor#TeachingAssistant).
GRADING_ROLES = frozenset({"Instructor", "TeachingAssistant", "ContentDeveloper", "Mentor"})


def role_names(roles: Iterable[str]) -> set[str]:
    """The short names of LTI role URIs: 'http://purl.imsglobal.org/vocab/lis/v2/membership#
    Instructor' -> 'Instructor'; a sub-role '...membership/Instructor#TeachingAssistant' gives
    'TeachingAssistant' (not 'Instructor': a TA sub-role is not the instructor)."""
    names = set()
    for role in roles:
        if not isinstance(role, str):
            continue
        names.add(role.rsplit("#", 1)[-1].rsplit("/", 1)[-1])
    return names


def lms_group(roles: Iterable[str], graders: str, students: str) -> str:
    """The one course group the LMS roles give: graders for instructors, TAs, content
    developers and mentors; students for everyone else (a learner, or no role at all)."""
    return graders if role_names(roles) & GRADING_ROLES else students


def check_context(token: Mapping[str, Any], context_id: str) -> None:
    """Refuse a launch from another course than LTI13_CONTEXT_ID (or from none)."""
    context = token.get(CONTEXT_CLAIM)
    got = context.get("id") if isinstance(context, Mapping) else None
    if not context_id or got != context_id:
        raise LoginError(
            f"This launch comes from another course (context {got or 'none'}) than the one "
            "this hub serves: ask your instructor for the course's link."
        )


class NonceLedger:
    """The nonces of accepted launches, each kept until its token's expiry (exp)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def check_and_record(self, token: Mapping[str, Any], now: float | None = None) -> None:
        """Refuse a launch without a nonce, or whose nonce was seen before; record it."""
        now = time.time() if now is None else now
        self._until = {nonce: until for nonce, until in self._until.items() if until > now}
        nonce = token.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise LoginError("This launch has no nonce: start again from the course's link.")
        if nonce in self._until:
            raise LoginError(
                "This launch was already used (its nonce was seen before): start again from "
                "the course's link in the LMS."
            )
        exp = token.get("exp")
        # a token without exp does not get here (ltiauthenticator requires it): an hour then
        self._until[nonce] = float(exp) if isinstance(exp, int | float) else now + 3600


def user_groups(
    name: str,
    roles: Iterable[str],
    graders: str,
    students: str,
    profile_groups: Mapping[str, Iterable[str]],
) -> list[str]:
    """All of a user's groups at a launch: the LMS's (the source of truth for the graders and
    students groups) and those the profiles file gives them by name (its other groups); with
    manage_groups, JupyterHub removes the user from any group not listed."""
    groups = {lms_group(roles, graders, students)}
    for group, members in profile_groups.items():
        if group not in (graders, students) and name in members:
            groups.add(group)
    return sorted(groups)


class SwarmhubLTI13Authenticator(LTI13Authenticator):
    """LTI13Authenticator for one course, with the groups its roles give."""

    context_id = Unicode(config=True, help="The course's LTI context id; other launches fail.")
    graders_group = Unicode("graders", config=True, help="Group of instructors and TAs.")
    students_group = Unicode("students", config=True, help="Group of everyone else.")
    profile_groups = Dict(config=True, help="The profiles file's groups: name -> members.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nonces = NonceLedger()

    async def authenticate(self, handler: Any, data: dict[str, Any] | None = None) -> dict:
        token = data or {}
        check_context(token, self.context_id)
        self.nonces.check_and_record(token)
        model = await super().authenticate(handler, token)
        roles = token.get(ROLES_CLAIM) or []
        model["groups"] = user_groups(
            model["name"], roles, self.graders_group, self.students_group, self.profile_groups
        )
        self.log.info(
            "LTI launch of %s (course %s): groups %s",
            model["name"],
            self.context_id,
            ", ".join(model["groups"]),
        )
        return model

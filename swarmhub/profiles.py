"""Profiles: the servers a student may choose from, read from the file PROFILES_FILE names.

A profiles file is TOML (Python's own tomllib reads it: no parser of ours):

    [groups]                      # JupyterHub groups, synced to the hub both ways
    ta = ["alice", "carol"]

    [[profile]]
    name = "python"               # short name: the spawn form's value, `opt-profile=python`
    display_name = "Python"
    description = "The course's stack"
    mem_limit = "512M"
    cpu_limit = 0.5

    [[profile]]
    name = "ta"
    display_name = "TA: bigger, with the grading packages"
    mem_limit = "1G"
    mem_guarantee = "768M"        # empty: the limit
    cpu_limit = 1
    pip = "ta-requirements.txt"   # course packages, a thin layer on the user image
    apt = "ta-apt.txt"            # Debian packages, one a line
    groups = ["ta"]               # only these groups' members may start it

    [[profile]]
    name = "r"
    image = "registry.example.edu/course/r:2026-09"   # a published image, pulled as it is

Paths are relative to the profiles file. Without PROFILES_FILE there is one profile, made of
USER_MEM_LIMIT, USER_MEM_GUARANTEE and USER_CPU_LIMIT, and students see no form.

Everything here is checked when the env file is read, before any host is touched: an unknown
key, two profiles with one name, a bad size, an allowed group the file does not declare, a
package file that is missing: one line naming the file and the profile.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from swarmhub.errors import SwarmhubError
from swarmhub.sizes import parse_size

PROFILE_KEYS = (
    "name",
    "display_name",
    "description",
    "mem_limit",
    "mem_guarantee",
    "cpu_limit",
    "pip",
    "apt",
    "image",
    "groups",
)
TOP_KEYS = ("profile", "groups")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:@-]*")
# A Debian package name (Debian policy 5.6.1), optionally with =version.
_DEB = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?")


@dataclass(frozen=True)
class Profile:
    """One server a student may choose."""

    name: str
    display_name: str
    description: str
    mem_limit: int
    mem_guarantee: int
    cpu_limit: float
    pip: str = ""  # the pip requirements' text (course packages), "" for none
    apt: tuple[str, ...] = ()  # Debian packages of the course layer
    image: str = ""  # a published image; "" for ours (with the course layer when packages)
    groups: tuple[str, ...] = ()  # empty: everyone

    @property
    def has_packages(self) -> bool:
        return bool(self.pip.strip() or self.apt)


@dataclass(frozen=True)
class ProfileSet:
    """The profiles of a deployment and the groups the profiles file declares."""

    profiles: tuple[Profile, ...]
    groups: dict[str, tuple[str, ...]]
    source: Path | None = None

    def named(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.profiles)
        raise SwarmhubError(f"no profile named {name!r}: the profiles are {known}")


def default_profiles(mem_limit: int, mem_guarantee: int | None, cpu_limit: float) -> ProfileSet:
    """The single profile of an env file without PROFILES_FILE (no form is shown)."""
    only = Profile(
        name="default",
        display_name="Default",
        description="",
        mem_limit=mem_limit,
        mem_guarantee=mem_guarantee or mem_limit,
        cpu_limit=cpu_limit,
    )
    return ProfileSet(profiles=(only,), groups={})


def _fail(path: Path, where: str, what: str) -> SwarmhubError:
    return SwarmhubError(f"{path}: {where}: {what}")


def _size(path: Path, where: str, key: str, value: object) -> int:
    try:
        size = parse_size(str(value))
    except ValueError as error:
        raise _fail(path, where, f"{key}={value!r}: {error}") from None
    if size <= 0:
        raise _fail(path, where, f"{key}={value!r}: give a size above 0, like 512M or 2G")
    return size


def _text(path: Path, where: str, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(path, where, f"{key} must be a string in quotes")
    return value.strip()


def _package_file(path: Path, where: str, key: str, value: object) -> str:
    relative = _text(path, where, key, value)
    file = (path.parent / relative).resolve()
    if not file.is_file():
        raise _fail(path, where, f"{key}={relative}: {file} does not exist")
    return file.read_text()


def apt_packages(path: Path, where: str, text: str) -> tuple[str, ...]:
    """Debian packages of an apt list: one a line, '#' starts a comment."""
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not _DEB.fullmatch(entry):
            raise _fail(path, where, f"apt line {number}: {entry!r} is not a Debian package name")
        names.append(entry)
    return tuple(names)


def parse_profile(
    path: Path, index: int, raw: object, groups: dict[str, tuple[str, ...]]
) -> Profile:
    where = f"profile {index}"
    if not isinstance(raw, dict):
        raise _fail(path, where, "write each profile as a [[profile]] table")
    if "name" in raw:
        where = f"profile {raw['name']!r}"
    for key in raw:
        if key not in PROFILE_KEYS:
            raise _fail(path, where, f"unknown key {key!r}: the keys are {', '.join(PROFILE_KEYS)}")
    name = _text(path, where, "name", raw.get("name", ""))
    if not _NAME.fullmatch(name):
        raise _fail(path, where, "name must be lower-case letters, digits, '-' or '_' (32 at most)")
    if "mem_limit" not in raw:
        raise _fail(path, where, 'mem_limit is required (like mem_limit = "2G")')
    mem_limit = _size(path, where, "mem_limit", raw["mem_limit"])
    mem_guarantee = (
        _size(path, where, "mem_guarantee", raw["mem_guarantee"])
        if str(raw.get("mem_guarantee", "")).strip()
        else mem_limit
    )
    if mem_guarantee > mem_limit:
        raise _fail(path, where, "mem_guarantee is above mem_limit: a server could never use it")
    cpu = raw.get("cpu_limit", 1.0)
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or cpu <= 0:
        raise _fail(path, where, f"cpu_limit={cpu!r}: give a positive number of CPUs, like 0.5")
    image = _text(path, where, "image", raw.get("image", ""))
    if image and not _IMAGE.fullmatch(image):
        raise _fail(path, where, f"image={image!r} is not an image reference")
    pip = _package_file(path, where, "pip", raw["pip"]) if "pip" in raw else ""
    apt = (
        apt_packages(path, where, _package_file(path, where, "apt", raw["apt"]))
        if "apt" in raw
        else ()
    )
    if image and (pip or apt):
        raise _fail(
            path, where, "a published image takes no course packages: give image, or pip/apt"
        )
    allowed = raw.get("groups", [])
    if not isinstance(allowed, list) or not all(isinstance(g, str) for g in allowed):
        raise _fail(path, where, 'groups must be a list of group names, like groups = ["ta"]')
    for group in allowed:
        if group not in groups:
            raise _fail(
                path,
                where,
                f"allowed group {group!r} exists nowhere: declare it under [groups] "
                f"({', '.join(groups) or 'none declared'})",
            )
    return Profile(
        name=name,
        display_name=_text(path, where, "display_name", raw.get("display_name", name)) or name,
        description=_text(path, where, "description", raw.get("description", "")),
        mem_limit=mem_limit,
        mem_guarantee=mem_guarantee,
        cpu_limit=float(cpu),
        pip=pip,
        apt=apt,
        image=image,
        groups=tuple(allowed),
    )


def parse_groups(path: Path, raw: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise _fail(path, "[groups]", 'write each group as name = ["user", ...]')
    groups = {}
    for name, members in raw.items():
        if not _GROUP.fullmatch(name):
            raise _fail(path, "[groups]", f"{name!r} is not a group name")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise _fail(path, f"group {name!r}", 'give a list of user names, like ["alice"]')
        for member in members:
            if not _GROUP.fullmatch(member):
                raise _fail(path, f"group {name!r}", f"{member!r} is not a user name")
        if len(set(members)) != len(members):
            raise _fail(path, f"group {name!r}", "lists a user twice")
        groups[name] = tuple(members)
    return groups


def load_profiles(path: Path) -> ProfileSet:
    """The profiles of a profiles file, or one line saying what is wrong in it."""
    if not path.is_file():
        raise SwarmhubError(f"PROFILES_FILE={path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SwarmhubError(f"{path}: not a TOML file: {error}") from None
    for key in data:
        if key not in TOP_KEYS:
            hint = " (each profile is a [[profile]] table)" if key == "profiles" else ""
            raise SwarmhubError(
                f"{path}: unknown key {key!r}: the keys are [groups] and [[profile]]{hint}"
            )
    groups = parse_groups(path, data.get("groups", {}))
    raws = data.get("profile", [])
    if not isinstance(raws, list) or not raws:
        raise SwarmhubError(f"{path}: no profile: add at least one [[profile]] table")
    profiles = [parse_profile(path, i, raw, groups) for i, raw in enumerate(raws, 1)]
    seen: set[str] = set()
    for profile in profiles:
        if profile.name in seen:
            raise SwarmhubError(f"{path}: two profiles are named {profile.name!r}: rename one")
        seen.add(profile.name)
    if all(profile.groups for profile in profiles):
        raise SwarmhubError(
            f"{path}: every profile is restricted to groups: leave one open to every student"
        )
    return ProfileSet(profiles=tuple(profiles), groups=groups, source=path)


def parse_pins(value: str) -> dict[str, str]:
    """IMAGE_PINS: ``profile=tag,...``, the tag each named profile's servers start on."""
    pins: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        name, sep, tag = part.strip().partition("=")
        if (
            not sep
            or not _NAME.fullmatch(name.strip())
            or not re.fullmatch(r"[0-9a-f]{12}", tag.strip())
        ):
            raise ValueError(
                f"{part.strip()!r}: write profile=tag (the 12-digit tag images.rollback prints)"
            )
        if name.strip() in pins:
            raise ValueError(f"pins profile {name.strip()} twice")
        pins[name.strip()] = tag.strip()
    return pins

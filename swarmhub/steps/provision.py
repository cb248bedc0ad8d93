"""provision: what every host needs before anything else — base packages, time sync, the
admin user's groups, trusted CAs, and the kernel and limit settings of a Docker host."""

from __future__ import annotations

import shlex

from swarmhub.ca import BUNDLE_PATH, DIGEST_FILE, ca_digest, split_pem_bundle, trust_command
from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import ensure_file, ensure_packages
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.templates import render

BASE_PACKAGES = [
    "ca-certificates",
    "curl",
    "gnupg",
    "openssl",
    "rsync",
    "python3",
    "systemd-timesyncd",
]
# Namespaced per host (or per container) and needed by Docker and Jupyter: forwarding for
# the overlay network, inotify watches for Jupyter's file browser and many servers per node.
SYSCTL_PATH = "/etc/sysctl.d/90-swarmhub.conf"
LIMITS_PATH = "/etc/security/limits.d/90-swarmhub.conf"


def ensure_extra_ca(host: HostView, pem: str) -> Steps:
    """The host trusts the certificates of the extra CA bundle (update-ca-certificates)."""
    digest = ca_digest(pem)
    # The digest file, written last by trust_command, says the host trusts this bundle.
    if not host.file_differs(DIGEST_FILE, f"{digest}\n"):
        yield Ok("extra CA bundle trusted")
        return
    yield Change(
        "trusting the extra CA bundle",
        [trust_command(BUNDLE_PATH, digest)],
        files=[FileWrite.of(BUNDLE_PATH, "".join(split_pem_bundle(pem)))],
    )


def ensure_sysctl(host: HostView) -> Steps:
    # Apply only this file; a setting the kernel refuses (a container) is not fatal.
    yield from ensure_file(
        host,
        SYSCTL_PATH,
        render("provision/90-swarmhub-sysctl.conf"),
        describe="kernel settings",
        then=(f"sysctl -q -p {SYSCTL_PATH} || true",),
    )


def ensure_admin_groups(host: HostView, user: str, groups: list[str]) -> Steps:
    """The admin user belongs to ``groups`` (created as system groups when missing)."""
    have = host.probe(f"id -nG {shlex.quote(user)}").stdout.split()
    missing = [g for g in groups if g not in have]
    if not missing:
        yield Ok(f"{user} in groups {', '.join(groups)}")
        return
    commands = [f"getent group {g} >/dev/null || groupadd --system {g}" for g in missing]
    commands.append(f"usermod -aG {','.join(missing)} {shlex.quote(user)}")
    yield Change(f"{user} added to {', '.join(missing)}", [" && ".join(commands)])


def apply(ctx: StepContext, host: HostView) -> Steps:
    settings = ctx.settings
    if settings.extra_ca_bundle:
        yield from ensure_extra_ca(host, settings.extra_ca_bundle.read_text())
    yield from ensure_packages(host, BASE_PACKAGES, "base")
    yield from ensure_sysctl(host)
    yield from ensure_file(
        host, LIMITS_PATH, render("provision/90-swarmhub-limits.conf"), describe="open-file limits"
    )
    # docker: run docker without sudo once it is installed; adm and systemd-journal: read logs.
    yield from ensure_admin_groups(host, settings.ssh_user, ["docker", "adm", "systemd-journal"])


STEP = Step(
    name="provision",
    roles=frozenset({"hub", "node", "proxy", "backup"}),
    apply=apply,
    parallel=True,
    summary="base packages, time sync, admin groups, CAs, kernel and limit settings",
    on_node_add="node",
)

"""provision: what every host needs before anything else — base packages, time sync, the
admin user's groups, trusted CAs, and the kernel and limit settings of a Docker host."""

from __future__ import annotations

import shlex

from swarmhub.ca import CA_DIR, ca_digest, split_pem_bundle, trust_command
from swarmhub.runbook.ensure import ensure_file, ensure_packages
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import Session, Step

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
SYSCTL = """\
# Written by swarmhub (provision): a Docker host running many Jupyter servers.
net.ipv4.ip_forward = 1
fs.inotify.max_user_instances = 8192
fs.inotify.max_user_watches = 524288
"""
LIMITS_PATH = "/etc/security/limits.d/90-swarmhub.conf"
LIMITS = """\
# Written by swarmhub (provision): enough open files for the admin's tools.
*    soft    nofile    16384
*    hard    nofile    16384
"""


def ensure_extra_ca(host: Host, pem: str) -> bool:
    """The host trusts the certificates of the extra CA bundle (update-ca-certificates)."""
    digest = ca_digest(pem)
    current = host.probe(f"cat {CA_DIR}/.digest 2>/dev/null").stdout.strip()
    if current == digest:
        return host.ok("extra CA bundle trusted")
    if host.plan:
        return host.changed("trust the extra CA bundle")
    bundle = f"{CA_DIR}.pem"
    host.put_text(bundle, "".join(split_pem_bundle(pem)), mode="0644")
    host.run(trust_command(bundle, digest))
    return host.changed("trusting the extra CA bundle")


def ensure_sysctl(host: Host) -> bool:
    changed = ensure_file(host, SYSCTL_PATH, SYSCTL, describe="kernel settings")
    if changed and not host.plan:
        # Apply only this file; a setting the kernel refuses (a container) is not fatal.
        host.run(f"sysctl -q -p {SYSCTL_PATH} || true")
    return changed


def ensure_admin_groups(host: Host, user: str, groups: list[str]) -> bool:
    """The admin user belongs to ``groups`` (created as system groups when missing)."""
    have = host.probe(f"id -nG {shlex.quote(user)}").stdout.split()
    missing = [g for g in groups if g not in have]
    if not missing:
        return host.ok(f"{user} in groups {', '.join(groups)}")
    commands = [f"getent group {g} >/dev/null || groupadd --system {g}" for g in missing]
    commands.append(f"usermod -aG {','.join(missing)} {shlex.quote(user)}")
    return host.change(f"{user} added to {', '.join(missing)}", " && ".join(commands))


def apply(session: Session, host: Host) -> None:
    settings = session.settings
    if settings.extra_ca_bundle:
        ensure_extra_ca(host, settings.extra_ca_bundle.read_text())
    ensure_packages(host, BASE_PACKAGES, "base")
    ensure_sysctl(host)
    ensure_file(host, LIMITS_PATH, LIMITS, describe="open-file limits")
    # docker: run docker without sudo once it is installed; adm and systemd-journal: read logs.
    ensure_admin_groups(host, settings.ssh_user, ["docker", "adm", "systemd-journal"])


STEP = Step(
    name="provision",
    roles=frozenset({"hub", "node", "proxy"}),
    apply=apply,
    parallel=True,
    summary="base packages, time sync, admin groups, CAs, kernel and limit settings",
)

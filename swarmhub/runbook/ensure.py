"""Small idempotent helpers: probe the host, compare with the wanted state, change only the gap.

Each returns True when it changed something (or would, in plan mode) and reports through
the `Host` either way.
"""

from __future__ import annotations

import hashlib
import shlex

from swarmhub.runbook.host import Host


def sha256(content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


def missing_packages_command(packages: list[str]) -> str:
    """Prints the names of the packages that are not installed, one per line."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (
        f"for p in {names}; do dpkg-query -W -f='${{Status}}\\n' \"$p\" 2>/dev/null "
        '| grep -q "install ok installed" || echo "$p"; done'
    )


def install_packages_command(packages: list[str]) -> str:
    names = " ".join(shlex.quote(p) for p in packages)
    return (
        "export DEBIAN_FRONTEND=noninteractive; "
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
        f"-o Dpkg::Options::=--force-confold {names}"
    )


def ensure_packages(host: Host, packages: list[str], why: str = "") -> bool:
    """The Debian packages are installed (apt-get only when one is missing)."""
    missing = host.probe(missing_packages_command(packages)).stdout.split()
    label = f" ({why})" if why else ""
    if not missing:
        return host.ok(f"packages present{label}: {' '.join(packages)}")
    return host.change(f"installed {' '.join(missing)}{label}", install_packages_command(missing))


def file_digest(host: Host, path: str) -> str | None:
    result = host.probe(f"sha256sum {shlex.quote(path)} 2>/dev/null")
    return result.stdout.split()[0] if result.ok and result.stdout.strip() else None


def file_state_command(path: str) -> str:
    """One round trip for a file's mode, owner and SHA-256 (nothing when it is missing)."""
    quoted = shlex.quote(path)
    return f"stat -c '%a %U' {quoted} 2>/dev/null && sha256sum {quoted} 2>/dev/null"


def parse_file_state(output: str) -> tuple[list[str], str | None]:
    """([mode, owner], digest) from file_state_command's output; ([], None) when missing."""
    lines = output.splitlines()
    meta = lines[0].split() if lines else []
    digest = lines[1].split()[0] if len(lines) > 1 and lines[1].strip() else None
    return meta, digest


def ensure_file(
    host: Host,
    path: str,
    content: str | bytes,
    *,
    mode: str = "0644",
    owner: str = "root",
    describe: str | None = None,
) -> bool:
    """``path`` holds ``content`` with ``mode`` and ``owner``; written only when it differs."""
    label = describe or path
    meta, digest = parse_file_state(host.probe(file_state_command(path)).stdout)
    same_content = digest == sha256(content)
    same_meta = meta == [mode.lstrip("0") or "0", owner]
    if same_content and same_meta:
        return host.ok(f"{label} up to date")
    if host.plan:
        return host.changed(f"{label} ({'content' if not same_content else 'permissions'})")
    host.put_text(path, content, mode=mode, owner=owner)
    return host.changed(f"wrote {label}")


def ensure_unit_file(host: Host, path: str, content: str, describe: str) -> bool:
    """A systemd unit file holds ``content``; systemd re-reads its units when it changed."""
    changed = ensure_file(host, path, content, describe=describe)
    if changed and not host.plan:
        host.run("systemctl daemon-reload")
    return changed


def ensure_directory(host: Host, path: str, mode: str = "0755", owner: str = "root") -> bool:
    stat = host.probe(f"stat -c '%a %U' {shlex.quote(path)} 2>/dev/null").stdout.split()
    if stat == [mode.lstrip("0"), owner]:
        return host.ok(f"directory {path}")
    quoted = shlex.quote(path)
    return host.change(
        f"directory {path} ({mode}, {owner})",
        f"mkdir -p {quoted} && chmod {mode} {quoted} && chown {owner}:{owner} {quoted}",
    )


def ensure_service_running(host: Host, unit: str) -> bool:
    """The systemd unit is enabled and active (started only when it is not)."""
    state = host.probe(
        f"systemctl is-enabled {unit} 2>/dev/null; systemctl is-active {unit} 2>/dev/null"
    ).stdout.split()
    if state[-2:] == ["enabled", "active"] or state == ["static", "active"]:
        return host.ok(f"{unit} running")
    return host.change(f"started {unit}", f"systemctl enable --now {unit}")


def ensure_secret(host: Host, path: str, nbytes: int = 32) -> bool:
    """A random hex secret at ``path`` (0600, root), made once and never shown."""
    quoted = shlex.quote(path)
    if host.probe(f"test -s {quoted} && stat -c %a {quoted}").stdout.strip() == "600":
        return host.ok(f"secret {path} kept")
    return host.change(
        f"generated secret {path}",
        f"mkdir -p $(dirname {quoted}) && umask 077 && "
        f"test -s {quoted} || openssl rand -hex {nbytes} > {quoted}; chmod 600 {quoted}",
    )

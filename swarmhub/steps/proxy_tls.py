"""The proxy's certificate material in every snapshot, and back on a proxy that lost it.

restic runs on the hub, where the homes are; the proxy faces the internet and gets neither the
repository's password nor its key. So the provisioner carries the proxy's TLS material (its key
and certificate in /etc/swarmhub/tls; with TLS_MODE=acme, certbot's /etc/letsencrypt: the ACME
account, the lineage, the renewal settings) to the hub, where every snapshot takes it:

- backup.proxy (after proxy.configure): a copy on the hub (PROXY_COPY, 0600, root), made again
  whenever the proxy's material changes (a new certificate, a renewal seen by cluster.all);
- proxy.restore (before proxy.configure): a proxy with no material of its own (a new VM of the
  same name) gets the hub's copy back, so that it serves the certificate it served (and, with
  ACME, keeps its account) instead of making a new one. recover.hub restores the hub's copy
  from the snapshot before this step runs.

The material travels as one tar archive in base64, armored as a PEM private key block, so that
recorded facts (which scrub private keys) never hold it.
"""

from __future__ import annotations

from swarmhub.runbook.change import Change, FileWrite, Later, Ok, Steps
from swarmhub.runbook.ensure import ensure_directory, ensure_file
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext

# What is kept of the proxy, relative to /: what exists of it.
MATERIAL = ("etc/swarmhub/tls", "etc/letsencrypt")
BEGIN = "-----BEGIN SWARMHUB PROXY TLS PRIVATE KEY-----"
END = "-----END SWARMHUB PROXY TLS PRIVATE KEY-----"
COPY_DIR = "/etc/swarmhub/proxy-tls"
PROXY_COPY = f"{COPY_DIR}/material.pem"  # the backup script takes COPY_DIR into each snapshot
UPLOAD = "/root/.swarmhub-proxy-tls.pem"


def archive_command() -> str:
    """The proxy's material as an armored base64 tar, the same bytes while it is unchanged
    (sorted, numeric owners, no times); nothing when the proxy has none."""
    wanted = " ".join(MATERIAL)
    return (
        f'cd / && set -- && for p in {wanted}; do [ -e "$p" ] && set -- "$@" "$p"; done; '
        "[ $# -gt 0 ] || exit 0; "
        f"echo {BEGIN!r} && tar --sort=name --numeric-owner --mtime=@0 --format=gnu "
        '--exclude=.certbot.lock -cf - "$@" | base64 -w 76 && '
        f"echo {END!r}"
    )


def unpack_command() -> str:
    """The uploaded copy unpacked on the proxy (owners and modes kept), then removed."""
    return (
        f"sed -e '1d' -e '$d' {UPLOAD} | base64 -d | tar -C / --numeric-owner -xpf - "
        f"&& rm -f {UPLOAD}"
    )


def armored(text: str) -> str:
    """The archive block of ``text`` (a probe's output), or '' when there is none."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(END)] + "\n"


def apply_copy(ctx: StepContext, hub: HostView) -> Steps:
    proxy = ctx.view(ctx.settings.proxy_host)
    material = armored(proxy.probe(archive_command()).stdout)
    if not material:
        if ctx.changes_pending:
            yield Later(f"{proxy.name}'s TLS material, once proxy.configure has made it")
        else:
            yield Ok(f"{proxy.name} has no TLS material to keep")
        return
    yield from ensure_directory(hub, COPY_DIR, "0700")
    yield from ensure_file(
        hub,
        PROXY_COPY,
        material,
        mode="0600",
        describe=f"the copy of {proxy.name}'s TLS key and certificate (in every snapshot)",
    )


def apply_restore(ctx: StepContext, proxy: HostView) -> Steps:
    if armored(proxy.probe(archive_command()).stdout):
        yield Ok("the proxy has its TLS material")
        return
    hub = ctx.view(ctx.settings.hub_host)
    copy = armored(hub.read(PROXY_COPY))
    if not copy:
        yield Ok(f"no TLS material of the proxy on {hub.name} (a first deploy): made anew")
        return
    yield Change(
        f"the TLS key and certificate put back from {hub.name}'s copy (a new proxy)",
        [unpack_command()],
        files=[FileWrite.of(UPLOAD, copy, "0600")],
    )


COPY = Step(
    name="backup.proxy",
    roles=frozenset({"hub"}),
    apply=apply_copy,
    summary="a copy of the proxy's TLS material on the hub, in every snapshot",
)

RESTORE = Step(
    name="proxy.restore",
    roles=frozenset({"proxy"}),
    apply=apply_restore,
    summary="a new proxy gets its TLS material back from the hub's copy",
)

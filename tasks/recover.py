"""recover: a lost hub rebuilt from the backups."""

import time

from invoke import task

from swarmhub import settings as env_settings
from swarmhub import trust as host_trust
from swarmhub.runbook.session import run_steps
from swarmhub.steps import recover
from tasks.cluster import login_hint


@task(
    help={
        "at": "the snapshot to restore (default: the latest; see backup.list)",
        "force": "restore over a hub that is up with users (its database is put aside)",
        "yes": "trust the new hub's SSH host keys shown without asking (checked already)",
    }
)
def hub(c, at=None, force=False, yes=False):
    """Rebuild a lost hub onto a new, bare VM of the same name: the runbook, and the snapshot.

    The hub's secrets, database and every home come back from the latest snapshot (or --at),
    then the hub starts on them; the nodes leave the old swarm and join the new one. The
    repository's password comes from this machine's copy (.swarmhub/<HUB_HOST>/). Refused
    when the hub is up with users (--force). The new VM's SSH host keys are shown first and,
    after a yes (or --yes), replace the old hub's in known_hosts, as hosts.trust does. See
    docs/recovery.md."""
    settings = env_settings.load()
    steps = recover.recovery_steps(at, force)
    started = time.monotonic()

    def confirm(question: str) -> bool:
        if yes:
            print(question + " yes (--yes)")
            return True
        return host_trust.ask(question)

    print(host_trust.trust(settings, settings.hub_host, confirm, replace=True))
    session = run_steps(settings, steps, command="recover.hub")
    restored = session.results.get(("recover.restore", settings.hub_host))
    if restored:
        print(str(restored).strip())
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    print(f"{settings.hub_host} recovered in {minutes} min {seconds} s")
    print(login_hint(settings))

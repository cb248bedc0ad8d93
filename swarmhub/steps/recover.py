"""recover.hub: a lost hub rebuilt onto a new, bare VM of the same name, from the latest
snapshot (or ``--at``).

The runbook runs in its order with one difference: the backup host and the hub's backup
script come before hub.deploy, and between them the snapshot is restored (the hub's secrets,
its database, every home, never overwriting a live file). hub.deploy then starts the hub on
the restored database and secrets, so that users, groups, API tokens and logins work as
before. The nodes leave the swarm that went with the old hub and join the new one
(swarm.join), and take the new storage host's keys (homes.mount). A hub that is up with users
is refused: recover.hub is for a lost hub (``--force`` to restore over it anyway).

With STORAGE_HOST apart from the hub, the homes are not the hub's: they stay on the storage
host, and the hub's snapshots (restic's --host swarmhub) bring back its secrets, database and
the proxy's TLS material only. A lost storage host is rebuilt by cluster.all and then
`backup.restore --homes` (docs/recovery.md).
"""

from __future__ import annotations

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Ok, Steps
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.steps import backup, hub, registry


def users_command(settings_db: str) -> str:
    """How many users the hub's database holds (0 without a database or sqlite3), and
    whether the hub's container runs: `USERS RUNNING`."""
    return (
        f"n=$(sqlite3 {settings_db} 'select count(*) from users' 2>/dev/null || echo 0); "
        "r=$(docker inspect --format '{{.State.Running}}' jupyterhub 2>/dev/null || echo false); "
        'echo "${n:-0} $r"'
    )


def check_step(force: bool) -> Step:
    def apply(ctx: StepContext, host: HostView) -> Steps:
        words = host.probe(users_command(f"{ctx.settings.hub_data_dir}/jupyterhub.sqlite"))
        count, running = [*words.stdout.split(), "0", "false"][:2]
        users = int(count) if count.isdigit() else 0
        if users and running == "true" and not force:
            raise SwarmhubError(
                f"{host.name} is up with {users} user(s): recover.hub rebuilds a lost hub; "
                "use backup.restore for files, or --force to restore the snapshot over it"
            )
        yield Ok(f"{host.name}: {users} user(s), hub {'up' if running == 'true' else 'down'}")

    return Step(name="recover.check", roles=frozenset({"hub"}), apply=apply, summary="the hub")


def restore_all_command(at: str | None = None) -> str:
    backup.check_snapshot(at)
    return f"{backup.SCRIPT} restore-all" + (f" --at {at}" if at else "")


def recovery_steps(at: str | None = None, force: bool = False) -> list[Step]:
    """The runbook, with the backup steps and the restore of the snapshot before hub.deploy."""
    restore = backup.operation(
        "recover.restore",
        restore_all_command(at),
        "restored the snapshot: secrets, database, homes",
    )
    steps = [check_step(force)]
    for step in registry.RUNBOOK:
        if step in (backup.TARGET, backup.STEP):
            continue
        if step is hub.STEP:
            steps += [backup.TARGET, backup.STEP, restore]
        steps.append(step)
    return steps

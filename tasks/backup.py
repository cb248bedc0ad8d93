"""backup: snapshots of the users' homes and the hub's database, and restores from them."""

import time

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import backup
from tasks._common import run_operation, run_operation_everywhere

STORAGE = frozenset({"storage"})


@task(name="run")
def run_(c):
    """Take a snapshot now (homes, incremental; the hub's database) and print its name.

    With STORAGE_HOST apart from the hub, the storage host snapshots the homes and the hub its
    database, secrets and the proxy's TLS material: two snapshots of one name."""
    settings = env_settings.load()
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    roles = frozenset({"hub", "storage"})
    step = backup.operation("backup.run", backup.run_command(name), "took a snapshot", roles=roles)
    results = run_operation_everywhere(step)
    names = {str(result).strip() for result in results.values()}
    if len(names) == 1 and len(results) == 1:
        print(names.pop())
        return
    for host, result in results.items():
        part = {"hub": "the hub's part", "homes": "the homes"}[backup.part_of(settings, host)]
        print(f"{str(result).strip()} ({host}: {part})")


@task(name="list")
def list_(c):
    """The snapshots in the repository, oldest first, with the new data each one holds."""
    step = backup.operation("backup.list", backup.list_command(), "backup.list", changes=False)
    print(run_operation(step, changes=False).rstrip())


@task(
    help={
        "user": "restore this user's home (the name they log in with)",
        "path": "only this file or directory inside the home",
        "at": "the snapshot to restore from (default: the latest; see backup.list)",
        "hub-db": "restore the hub's database instead (the hub restarts; servers keep running)",
        "homes": "restore every home (a rebuilt storage host), never overwriting a live file",
    }
)
def restore(c, user=None, path=None, at=None, hub_db=False, homes=False):
    """Restore a user's files (never overwriting a live file), every home, or the hub's database.

    The homes are restored on the storage host (the hub, or STORAGE_HOST), the database on
    the hub."""
    env_settings.load()  # the env file first: a bad one is its own one-line error
    if [bool(user), hub_db, homes].count(True) != 1:
        raise SwarmhubError(
            "backup.restore needs one of --user NAME, --hub-db or --homes (not more)"
        )
    if path and not user:
        raise SwarmhubError("--path goes with --user, not with --hub-db or --homes")
    if hub_db:
        command = backup.restore_hub_db_command(at)
        step = backup.operation(
            "backup.restore", command, "restored the hub's database", hub_restarts=True
        )
    elif homes:
        command = backup.restore_homes_command(at)
        step = backup.operation("backup.restore", command, "restored every home", roles=STORAGE)
    else:
        command = backup.restore_user_command(user, path, at)
        step = backup.operation(
            "backup.restore", command, f"restored files of {user}", roles=STORAGE
        )
    print(run_operation(step).rstrip())

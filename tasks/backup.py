"""backup: snapshots of the users' homes and the hub's database, and restores from them."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import backup
from tasks._common import run_operation


@task(name="run")
def run_(c):
    """Take a snapshot now (homes, incremental; the hub's database) and print its name."""
    step = backup.operation("backup.run", backup.run_command(), "took a snapshot")
    print(run_operation(step).strip())


@task(name="list")
def list_(c):
    """The snapshots in BACKUP_DIR, oldest first, with the new data each one holds."""
    step = backup.operation("backup.list", backup.list_command(), "backup.list", changes=False)
    print(run_operation(step, changes=False).rstrip())


@task(
    help={
        "user": "restore this user's home (the name they log in with)",
        "path": "only this file or directory inside the home",
        "at": "the snapshot to restore from (default: the latest; see backup.list)",
        "hub-db": "restore the hub's database instead (the hub restarts; servers keep running)",
    }
)
def restore(c, user=None, path=None, at=None, hub_db=False):
    """Restore a user's files (never overwriting a live file) or the hub's database."""
    env_settings.load()  # the env file first: a bad one is its own one-line error
    if hub_db == bool(user):
        raise SwarmhubError("backup.restore needs either --user NAME or --hub-db (not both)")
    if hub_db:
        if path:
            raise SwarmhubError("--path goes with --user, not with --hub-db")
        command = backup.restore_hub_db_command(at)
        step = backup.operation(
            "backup.restore", command, "restored the hub's database", hub_restarts=True
        )
    else:
        command = backup.restore_user_command(user, path, at)
        step = backup.operation("backup.restore", command, f"restored files of {user}")
    print(run_operation(step).rstrip())

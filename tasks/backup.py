"""backup: snapshots of the users' homes and the hub's database, and restores from them."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import backup
from tasks._common import PLAN_HELP, run


@task(help=PLAN_HELP)
def setup(c, plan=False):
    """Install the backup script and its systemd timer (BACKUP_SCHEDULE) on the hub."""
    run(c, [backup.STEP], plan)


def _settings() -> env_settings.Settings:
    settings = env_settings.load()
    env_settings.check_local_files(settings)
    return settings


@task(name="run")
def run_(c):
    """Take a snapshot now (homes, incremental; the hub's database) and print its name."""
    print(backup.run_on_hub(_settings(), backup.run_command(), "backup").strip())


@task(name="list")
def list_(c):
    """The snapshots in BACKUP_DIR, oldest first, with the new data each one holds."""
    print(backup.run_on_hub(_settings(), backup.list_command(), "backup.list").rstrip())


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
    settings = _settings()
    if hub_db == bool(user):
        raise SwarmhubError("backup.restore needs either --user NAME or --hub-db (not both)")
    if hub_db:
        if path:
            raise SwarmhubError("--path goes with --user, not with --hub-db")
        command = backup.restore_hub_db_command(at)
        print(backup.run_on_hub(settings, command, "restore", wait_for_hub=True).rstrip())
    else:
        command = backup.restore_user_command(user, path, at)
        print(backup.run_on_hub(settings, command, "restore").rstrip())

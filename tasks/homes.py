"""homes: users' home directories on the storage host, mounted on the nodes."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.output import table
from swarmhub.sizes import format_size
from swarmhub.steps import homes
from tasks._common import run_operation


@task
def usage(c):
    """Each user's home size on the storage host; those over HOME_SOFT_LIMIT marked."""
    settings = env_settings.load()
    output = run_operation(homes.USAGE, settings.storage_name, changes=False)
    limit = settings.home_soft_limit  # bytes, or None
    shown_limit = format_size(limit) if limit is not None else "(none)"
    rows = []
    for name, size in homes.parse_usage(output):
        over = limit is not None and size > limit
        rows.append([("! " if over else "") + name, format_size(size), "over" if over else ""])
    print(table(["HOME", "USED", f"SOFT LIMIT {shown_limit}"], rows))
    over = sum(1 for row in rows if row[2])
    if limit is not None:
        # A report, not a quota: sshfs cannot enforce one (NFS: use quotas on the storage host).
        print(f"{over} home(s) over the soft limit of {shown_limit}")

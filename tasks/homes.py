"""homes: users' home directories on the storage host, mounted on the nodes."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.output import table
from swarmhub.steps import homes
from tasks._common import run_operation


@task
def usage(c):
    """Each user's home size on the storage host; those over HOME_SOFT_LIMIT marked."""
    settings = env_settings.load()
    output = run_operation(homes.USAGE, settings.storage_name, changes=False)
    limit = homes.size_in_bytes(settings.home_soft_limit) if settings.home_soft_limit else None
    rows = []
    for name, size in homes.parse_usage(output):
        over = limit is not None and size > limit
        rows.append([("! " if over else "") + name, _human(size), "over" if over else ""])
    print(table(["HOME", "USED", f"SOFT LIMIT {settings.home_soft_limit or '(none)'}"], rows))
    over = sum(1 for row in rows if row[2])
    if limit is not None:
        # A report, not a quota: sshfs cannot enforce one (NFS: use quotas on the storage host).
        print(f"{over} home(s) over the soft limit of {settings.home_soft_limit}")


def _human(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"

"""interact: links that pull course material from git into a student's home and open it."""

from __future__ import annotations

from invoke import Context, task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.interact import APPS, interact_link


@task(
    help={
        "repo": "the git repository's URL, as a user's server can clone it",
        "path": "the file to open, relative to the repository's root (e.g. lab01/lab01.ipynb)",
        "branch": "the branch to pull (default: the repository's default branch)",
        "app": f"what opens the file: {' or '.join(APPS)} (default lab)",
        "profile": "start this profile (PROFILES_FILE) without the form, when no server runs",
    }
)
def link(
    c: Context,
    repo: str = "",
    path: str = "",
    branch: str = "",
    app: str = "lab",
    profile: str = "",
) -> None:
    """Print an nbgitpuller link through the proxy: pull a repository, then open a file.

    Following the link again merges upstream changes and keeps the student's edits. With
    --profile, a student without a running server starts that profile's, skipping the form.
    """
    settings = env_settings.load()
    if profile:
        if settings.profiles_file is None:
            raise SwarmhubError(
                f"--profile {profile}: {settings.source.name} has no PROFILES_FILE (one profile)"
            )
        settings.profile_set().named(profile)  # one line naming the profiles otherwise
    print(interact_link(settings.public_url(), repo, path, branch=branch, app=app, profile=profile))

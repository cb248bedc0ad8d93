"""Interact links: one URL that pulls course material from git into a student's home and opens
it, through nbgitpuller in the user image (the seed's Interact server, today).

A link is ``https://PROXY/hub/user-redirect/git-pull?repo=…&urlpath=…&branch=…``, the same as
nbgitpuller's link generator makes: the hub sends the student to their own server, whose
``git-pull`` handler clones the repository (or merges upstream changes into the student's
copy, never discarding the student's edits) and then opens ``urlpath``.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlencode, urlsplit

from swarmhub.errors import SwarmhubError

# What opens the file once pulled: JupyterLab, or Notebook 7's single-document view.
APPS = ("lab", "notebook")
URL_SCHEMES = ("https", "http", "git", "ssh")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_DIRECTORY = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@+-]*")


def clone_directory(repo: str) -> str:
    """The directory (in the student's home) that the repository is cloned into: the last part
    of its URL without ``.git`` (``…/course.git`` → ``course``)."""
    name = repo.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return name[: -len(".git")] if name.endswith(".git") and len(name) > 4 else name


def _server_default_directory(repo: str) -> str:
    """The directory nbgitpuller picks when the link names none: the last part, ``.git``
    included (nbgitpuller/handlers.py)."""
    return repo.rstrip("/").split("/")[-1]


def check_repo_url(repo: str) -> str:
    """``repo`` as a user's server can clone it, or one line saying what is wrong."""
    repo = repo.strip()
    example = "e.g. --repo https://github.com/data-8/materials-fa17"
    if not repo:
        raise SwarmhubError(f"--repo is required: the git repository's URL, {example}")
    parts = urlsplit(repo)
    if parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise SwarmhubError(
            f"--repo {repo!r} is not a repository URL: use {', '.join(URL_SCHEMES)} "
            f"with a host, {example}"
        )
    if re.search(r"\s", repo):
        raise SwarmhubError(f"--repo {repo!r} contains a space: quote or encode it as %20")
    if parts.query or parts.fragment:
        raise SwarmhubError(f"--repo {repo!r} has a ?query or #fragment: give the clone URL")
    directory = clone_directory(repo)
    if not parts.path.strip("/") or not _DIRECTORY.fullmatch(directory) or directory in (".", ".."):
        raise SwarmhubError(
            f"--repo {repo!r} does not end with a repository name: e.g. …/course or …/course.git"
        )
    return repo


def check_path(path: str) -> str:
    """``path`` as a clean path inside the repository, or one line saying what is wrong."""
    path = path.strip()
    if not path:
        raise SwarmhubError(
            "--path is required: the file to open, relative to the repository's root, "
            "e.g. --path lab01/lab01.ipynb"
        )
    clean = posixpath.normpath(path)
    if path.startswith("/") or clean == ".." or clean.startswith("../") or "\\" in path:
        raise SwarmhubError(
            f"--path {path!r} is not inside the repository: give it relative to the "
            "repository's root, e.g. --path lab01/lab01.ipynb"
        )
    if clean == ".":
        raise SwarmhubError(f"--path {path!r} names no file: e.g. --path lab01/lab01.ipynb")
    return clean


def check_branch(branch: str) -> str:
    """``branch`` (empty: the repository's default branch), or one line saying what is wrong."""
    branch = branch.strip()
    if branch and (
        not _BRANCH.fullmatch(branch) or ".." in branch or branch.endswith((".lock", "/", "."))
    ):
        raise SwarmhubError(f"--branch {branch!r} is not a git branch name: e.g. --branch main")
    return branch


def url_path(repo: str, path: str, app: str = "lab") -> str:
    """Where the student lands after the pull, relative to their server."""
    target = f"{clone_directory(repo)}/{path}"
    if app == "lab":
        return f"lab/tree/{target}"
    if app == "notebook":
        return f"notebooks/{target}" if target.endswith(".ipynb") else f"tree/{target}"
    raise SwarmhubError(f"--app {app!r} is not one of {', '.join(APPS)}: e.g. --app lab")


def interact_link(
    public_url: str,
    repo: str,
    path: str,
    branch: str = "",
    app: str = "lab",
    profile: str = "",
) -> str:
    """The link that pulls ``repo`` into a student's home and opens ``path`` in ``app``.

    ``public_url`` is the deployment's address (``https://PROXY/``). The query is encoded as
    nbgitpuller's link generator does (``repo``, ``urlpath``, ``branch``, ``targetPath``).
    ``targetPath`` is added only when nbgitpuller's own choice of directory (the last part of
    the URL, ``.git`` included) differs from the one ``urlpath`` opens.

    With ``profile`` (a name the caller checked against the profiles), the link goes through
    ``/hub/spawn?opt-profile=NAME&next=…`` (the `opt-` prefix of JupyterHub 6's spawn
    options): a student without a server gets that profile's, without the form, then the
    pull. A student whose server already runs keeps it, whatever its profile.
    """
    if app not in APPS:
        raise SwarmhubError(f"--app {app!r} is not one of {', '.join(APPS)}: e.g. --app lab")
    repo = check_repo_url(repo)
    path = check_path(path)
    branch = check_branch(branch)
    query = {"repo": repo, "urlpath": url_path(repo, path, app)}
    if branch:
        query["branch"] = branch
    if clone_directory(repo) != _server_default_directory(repo):
        query["targetPath"] = clone_directory(repo)
    pull = f"/hub/user-redirect/git-pull?{urlencode(query)}"
    if profile:
        spawn = urlencode({"opt-profile": profile, "next": pull})
        return f"{public_url.rstrip('/')}/hub/spawn?{spawn}"
    return f"{public_url.rstrip('/')}{pull}"

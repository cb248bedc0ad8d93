"""The sandbox: fake VMs on this machine to rehearse, teach and test the runbook."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from invoke import Context, task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.observe import health
from swarmhub.output import logger, table
from swarmhub.runbook.session import run_steps
from swarmhub.sandbox import cluster, git_server
from swarmhub.sandbox.plan import plan_vms


@task(help={"nodes": "how many node VMs (default: those of NODE_HOSTS in the env file)"})
def up(c: Context, nodes: str = "") -> None:
    """Create the sandbox's VMs (hub, nodes, proxy) or start them; a second run changes nothing."""
    settings = env_settings.load()
    if nodes and not nodes.isdigit():
        raise SwarmhubError(f"--nodes {nodes!r} is not a whole number: e.g. --nodes 4")
    log = logger("sandbox")
    vms = cluster.up(settings, int(nodes) if nodes else None, log)
    unlisted = [vm.name for vm in vms if vm.role == "node" and vm.name not in settings.node_hosts]
    print(
        table(
            ["NAME", "ROLE", "ADDRESS", "ID"],
            [[v.name, v.role, v.address, v.container_id[:12]] for v in vms],
        )
    )
    if unlisted:
        log(
            f"{', '.join(unlisted)} not in NODE_HOSTS of {settings.source.name}: add them there "
            "for the runbook to use them"
        )
    log(f"ready: try  fab -H {settings.hub_host} -- hostname")


@task
def status(c: Context) -> None:
    """Show each VM of the sandbox: name, address, state, and whether SSH answers."""
    settings = env_settings.load()
    rows = cluster.status(settings)
    if not rows:
        print("no sandbox VMs: run invoke sandbox.up")
        return
    print(
        table(
            ["NAME", "ROLE", "ADDRESS", "STATE", "SSH"],
            [
                [r.name, r.role, r.address, r.state, "ok" if r.ssh_ok else f"FAILED {r.detail}"]
                for r in rows
            ],
        )
    )
    if not all(r.ssh_ok for r in rows):
        raise SwarmhubError("some sandbox VMs do not answer over SSH: see the table above")


@task(positional=["host"])
def ssh(c: Context, host: str) -> None:
    """Open a shell on a sandbox VM over SSH (its key checked): invoke sandbox.ssh sam-node-1."""
    settings = env_settings.load()
    config = settings.sandbox_dir / cluster.SSH_CONFIG
    if not config.is_file():
        raise SwarmhubError("the sandbox is not up: run invoke sandbox.up")
    if host not in cluster.existing_vms(settings):
        raise SwarmhubError(f"{host} is not a sandbox VM: see invoke sandbox.status")
    if shutil.which("ssh") is None:
        raise SwarmhubError("the ssh client is not installed: run scripts/setup")
    os.execvp("ssh", ["ssh", "-F", str(config), host])


@task
def down(c: Context) -> None:
    """Remove the sandbox's VMs, network, volumes and keys; nothing else on Docker is touched."""
    settings = env_settings.load()
    cluster.down(settings, logger("sandbox"))


@task(
    help={
        "repo": "the repository's name, e.g. course (served as git://HUB-ADDRESS/course)",
        "from": "a directory whose files become the repository's next commit on main",
        "message": "the commit message (default: 'Course material from DIR')",
    }
)
def git(c: Context, repo: str = "", from_: str = "", message: str = "") -> None:
    """Serve a git repository from the sandbox's hub VM (git://, read-only) for interact links.

    With --from DIR, DIR's files become the repository's next commit (none when unchanged).
    Prints the URL that users' servers clone from.
    """
    settings = env_settings.load()
    name = git_server.repo_name(repo)
    directory = Path(from_).resolve() if from_ else None
    if directory is not None and not directory.is_dir():
        raise SwarmhubError(f"--from {from_} is not a directory: give the course material's")
    if settings.hub_host not in cluster.existing_vms(settings):
        raise SwarmhubError(
            f"{settings.hub_host} is not a sandbox VM: sandbox.git serves repositories in the "
            "sandbox only (run invoke sandbox.up); a real course uses its own git forge"
        )
    step = git_server.serve_step(name, directory, message or f"Course material from {from_}")
    run_steps(settings, [step], only=settings.hub_host, command="sandbox.git")
    hub = next(vm for vm in plan_vms(settings) if vm.name == settings.hub_host)
    print(git_server.repo_url(hub.address, name))


@task(
    positional=["name"],
    help={
        "name": "the student's user name, e.g. ada",
        "run": "Python code to run in a new kernel on the student's server; prints its output",
        "link": "an interact link (invoke interact.link) to follow as the student's browser does",
        "stop": "stop the student's server",
    },
)
def student(c: Context, name: str, run: str = "", link: str = "", stop: bool = False) -> None:
    """Be a sandbox student from the shell: log in, start the server, run code, follow a link.

    Through the proxy over HTTPS as a browser (its certificate checked), with the env file's
    DUMMY_PASSWORD. A kernel that dies running the code (over its memory limit, say) is
    reported as such, exit 1.
    """
    settings = env_settings.load()
    if settings.authenticator != "dummy":
        raise SwarmhubError("sandbox.student logs in with DUMMY_PASSWORD: set AUTHENTICATOR=dummy")
    # Imported here, not at the top: requests and websocket would slow every invoke command.
    import requests

    from swarmhub.student import KernelDied, Student, StudentError

    with tempfile.NamedTemporaryFile("w", suffix=".pem") as cert:
        cert.write(health.proxy_certificate(settings) or "")
        cert.flush()
        ca_file = cert.name if settings.tls_mode == "self-signed" else None
        who = Student(settings.public_url().rstrip("/"), name, settings.dummy_password, ca_file)
        try:
            who.login()
            if stop:
                who.stop_server()
                wait_until_stopped(who)
                print(f"{name}: server stopped")
                return
            who.start_server()
            print(f"{name}: logged in, server ready", flush=True)
            if link:
                opened, events = who.follow_link(link)
                for event in events:
                    print(event.get("output", "").rstrip() or event["phase"])
                print(f"{name}: JupyterLab opens {opened}")
            if run:
                print(who.run_code(run), end="", flush=True)
        except KernelDied as died:
            raise SwarmhubError(f"{died}: see invoke logs user:{name}") from None
        except StudentError as error:
            raise SwarmhubError(f"{name}: {error}") from None
        except requests.RequestException as error:
            # The proxy down, a timeout: one line, not requests' traceback.
            raise SwarmhubError(f"{name}: {who.base_url} did not answer: {error}") from None


def wait_until_stopped(who: Any, timeout: float = 120) -> None:
    """Until the hub no longer lists the student's server (its swarm service is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = who.api("GET", f"/users/{who.name}").json()
        if not model.get("servers") and not model.get("pending"):
            return
        time.sleep(1)
    raise SwarmhubError(f"{who.name}'s server did not stop in {timeout:.0f} s: see invoke status")

"""gradebook.database: nbgrader's gradebook in PostgreSQL (Debian's package) on the hub, for
a course (COURSE_ID; nothing without one). Concurrent graders need a database that takes
concurrent writers: not SQLite on the homes' network file system.

One database, `nbgrader_<COURSE_ID>`, owned by the role `nbgrader`, whose password is made on
the hub the first time (`secrets/gradebook_password` beside the hub's other secrets, 0600,
never printed nor on a command line) and given by the spawner to graders' servers alone
(NBGRADER_DB_URL). Who reaches the port is the firewalls' business, in one place each: the
hosts' (firewall.configure: 5432 on the hub from the cluster's hosts, and from containers)
and each server's own (students' servers reject 5432; graders' accept it). pg_hba.conf is
therefore made of this file's constants and the course id only, never of a listing of the
hosts' addresses: the same on every run, so a second run rewrites nothing and restarts
nothing.
"""

from __future__ import annotations

import shlex

from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Change, FileWrite, Ok, Steps
from swarmhub.runbook.ensure import ensure_packages, ensure_secret, file_differs
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import Settings
from swarmhub.steps.hub import GRADEBOOK_SECRET

PORT = 5432
ROLE = "nbgrader"
PASSWORD_FILE = GRADEBOOK_SECRET  # in the hub's secrets directory


def database_name(settings: Settings) -> str:
    return "nbgrader_" + settings.course_id.lower().replace("-", "_")  # hub.env's too


def pg_hba(settings: Settings) -> str:
    """The cluster's pg_hba.conf: local administration by peer, the gradebook by password
    over TCP (the firewalls decide who reaches the port)."""
    return (
        "# Written by swarmhub (gradebook.database): edit the env file, not this.\n"
        "local   all             postgres                                peer\n"
        "local   all             all                                     peer\n"
        f"host    {database_name(settings):<15} {ROLE:<15} 0.0.0.0/0               "
        "scram-sha-256\n"
    )


def server_conf() -> str:
    return (
        "# Written by swarmhub (gradebook.database).\n"
        "listen_addresses = '*'\n"
        "password_encryption = 'scram-sha-256'\n"
        "max_connections = 100\n"
    )


def cluster_of(host: HostView) -> tuple[str, str]:
    """The version and name of the host's one PostgreSQL cluster (pg_lsclusters); before the
    install, the one the package will make: Debian's `main` of the version it depends on, so
    that plan declares what apply will do."""
    found = host.probe(
        "pg_lsclusters --no-header 2>/dev/null | awk '{ print $1, $2 }' | grep . || "
        "apt-cache show --no-all-versions postgresql 2>/dev/null "
        "| sed -n 's/^Depends: postgresql-\\([0-9][0-9]*\\).*/\\1 main/p'"
    )
    lines = [line.split() for line in found.stdout.splitlines() if line.strip()]
    if len(lines) != 1 or len(lines[0]) != 2:
        raise SwarmhubError(
            f"{host.name}: gradebook.database wants one PostgreSQL cluster, found "
            f"{len(lines)} (pg_lsclusters): remove the others or create one"
        )
    return lines[0][0], lines[0][1]


def role_sql_command(password_path: str, database: str) -> str:
    """The role (its password from the file, through printf, a shell builtin: never on a
    command line) and the database, made or set again. echo and printf are builtins; psql's
    \\gexec runs the CREATE only when the SELECT finds it missing."""
    quoted = shlex.quote(password_path)
    return (
        f"pw=$(cat {quoted}) && {{ "
        f"echo \"SELECT 'CREATE ROLE {ROLE} LOGIN' WHERE NOT EXISTS "
        f"(SELECT FROM pg_roles WHERE rolname = '{ROLE}') \\gexec\"; "
        f'printf "ALTER ROLE {ROLE} LOGIN PASSWORD \'%s\';\\n" "$pw"; '
        f"echo \"SELECT 'CREATE DATABASE {database} OWNER {ROLE}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{database}') \\gexec\"; "
        "} | runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres"
    )


def role_current_command(password_path: str, database: str) -> str:
    """A probe: exit 0 when the role logs in with the file's password to the database."""
    quoted = shlex.quote(password_path)
    return (
        f"PGPASSWORD=$(cat {quoted}) psql -h 127.0.0.1 -U {ROLE} -d {database} "
        "-w -tAc 'SELECT 1' 2>/dev/null | grep -qx 1"
    )


def apply(ctx: StepContext, hub: HostView) -> Steps:
    settings = ctx.settings
    if not settings.course_id:
        yield Ok("no COURSE_ID: no gradebook")
        return
    version, name = cluster_of(hub)
    yield from ensure_packages(hub, ["postgresql"], "nbgrader's gradebook")
    conf_dir = f"/etc/postgresql/{version}/{name}"
    files = []
    for path, content, mode in (
        (f"{conf_dir}/pg_hba.conf", pg_hba(settings), "0640"),
        (f"{conf_dir}/conf.d/swarmhub.conf", server_conf(), "0644"),
    ):
        if file_differs(hub, path, content, mode, "postgres"):
            files.append(FileWrite(path, content.encode(), mode, "postgres"))
        else:
            yield Ok(f"{path} up to date")
    if files:
        yield Change(
            "PostgreSQL's settings for the gradebook written: "
            + ", ".join(f.path.rsplit("/", 1)[-1] for f in files)
            + f"; postgresql@{version}-{name} restarted",
            [f"systemctl restart postgresql@{version}-{name}"],
            files=files,
        )
    secrets_dir = f"{settings.hub_dir}/secrets"
    password = f"{secrets_dir}/{PASSWORD_FILE}"
    yield from ensure_secret(hub, password)
    database = database_name(settings)
    if hub.probe(role_current_command(password, database)).ok:
        yield Ok(f"database {database} and role {ROLE}")
    else:
        yield Change(
            f"database {database} and role {ROLE} (password from {password})",
            [role_sql_command(password, database)],
        )


STEP = Step(
    name="gradebook.database",
    roles=frozenset({"hub"}),
    apply=apply,
    summary="nbgrader's gradebook in PostgreSQL on the hub (COURSE_ID)",
)

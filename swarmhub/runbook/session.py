"""Running steps on hosts: which hosts, connecting first, in parallel where hosts are
independent, and a recap at the end (Ansible's PLAY RECAP is the model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fabric

from swarmhub import ssh
from swarmhub.errors import SwarmhubError
from swarmhub.output import table
from swarmhub.parallel import MAX_PARALLEL
from swarmhub.runbook.host import Host
from swarmhub.settings import Settings, check_local_files

ROLE_NAMES = {
    "hub": "the hub",
    "node": "the nodes",
    "proxy": "the proxy",
    "storage": "the storage host",
}


@dataclass(frozen=True)
class Step:
    """One step of the runbook: what it is called, on which roles, and what it does per host."""

    name: str
    roles: frozenset[str]
    apply: Callable[[Session, Host], None]
    parallel: bool = False
    summary: str = ""


def target_hosts(
    context: Any, settings: Settings, step: Step, only: str | None = None
) -> list[str]:
    """The hosts a step runs on: ``only``, the one given with ``fab -H``, or those of its roles."""
    if isinstance(context, fabric.Connection):
        only = only or context.original_host
    if only:
        name = only
        roles = settings.role_of(name)
        where = " and ".join(ROLE_NAMES[r] for r in sorted(step.roles))
        if not roles:
            raise SwarmhubError(
                f"{name} is not a host of {settings.source.name} (hosts: "
                f"{', '.join(settings.hosts)}): add it to the env file or pick one of those"
            )
        if not set(roles) & step.roles:
            owners = [h for h, r in settings.hosts.items() if set(r) & step.roles]
            raise SwarmhubError(
                f"{step.name} runs on {where} ({', '.join(owners)}), but {name} is "
                f"{' and '.join(ROLE_NAMES[r] for r in roles)} in {settings.source.name}"
            )
        return [name]
    return [host for host, roles in settings.hosts.items() if set(roles) & step.roles]


def steps_for_host(steps: list[Step], settings: Settings, host: str | None) -> list[Step]:
    """The steps of a task that concern ``host`` (given with ``fab -H``): a task of several
    roles (images.distribute: serve on the hub, pull on the nodes) runs its part there.
    When none concerns it, the first step stays, so that its refusal says why."""
    if not host or len(steps) < 2:
        return steps
    roles = set(settings.role_of(host))
    return [step for step in steps if roles & step.roles] or steps[:1]


def open_host(
    settings: Settings,
    name: str,
    *,
    plan: bool = False,
    quiet: bool = False,
    connect_timeout: int = 10,
) -> Host:
    """A checked connection to ``name`` whose user may sudo without a password."""
    connection = ssh.connect(
        name,
        ssh_config=settings.ssh_config,
        user=settings.ssh_user,
        port=settings.ssh_port,
        key_file=settings.ssh_key,
        connect_timeout=connect_timeout,
    )
    try:
        connection.open()
        check = connection.run("sudo -n true", hide=True, warn=True, in_stream=False)
    except SwarmhubError:
        raise
    except Exception as error:  # a connection that drops while opening
        raise SwarmhubError(f"{name}: SSH failed: {error}") from None
    if check.failed:
        connection.close()
        raise SwarmhubError(
            f"{name}: {settings.ssh_user} cannot run sudo without a password: give that user "
            "passwordless sudo (a line in /etc/sudoers.d), or set SSH_USER to one who has it"
        )
    return Host(name, settings.role_of(name), connection, plan=plan, quiet=quiet)


class Session:
    """Connections to the hosts of one run, and the tally of what happened on each."""

    def __init__(self, settings: Settings, *, plan: bool = False, quiet: bool = False) -> None:
        self.settings = settings
        self.plan = plan
        self.quiet = quiet
        self.hosts: dict[str, Host] = {}
        self.started = time.monotonic()
        self._memo: dict[str, Any] = {}
        # Steps run on several hosts at once may connect to a shared host (the hub) or
        # compute a shared fact (the join token): one thread at a time does it.
        self._lock = threading.RLock()

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """A fact shared by the hosts of this run, computed once."""
        with self._lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    def _open(self, name: str) -> Host:
        return open_host(self.settings, name, plan=self.plan, quiet=self.quiet)

    def connect(self, names: Iterable[str]) -> list[Host]:
        """Connect to every host before anything changes; one unreachable host stops all."""
        with self._lock:
            return self._connect(names)

    def _connect(self, names: Iterable[str]) -> list[Host]:
        names = list(names)
        wanted = [n for n in dict.fromkeys(names) if n not in self.hosts]
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(wanted)))) as pool:
            futures = {name: pool.submit(self._open, name) for name in wanted}
        errors = []
        for name, future in futures.items():
            try:
                self.hosts[name] = future.result()
            except SwarmhubError as error:
                errors.append(error)
        if errors:
            raise errors[0]
        return [self.hosts[n] for n in dict.fromkeys(names)]

    def host(self, name: str) -> Host:
        """A connected host, connecting on first use (e.g. the hub, for a node's join token)."""
        return self.connect([name])[0]

    def run_step(self, step: Step, names: list[str]) -> None:
        """Apply ``step`` to each host (in parallel when the hosts are independent)."""
        hosts = self.connect(names)
        print(f"== {step.name}{' (plan)' if self.plan else ''}: {step.summary}", flush=True)

        def apply(host: Host) -> SwarmhubError | None:
            try:
                step.apply(self, host)
            except SwarmhubError as error:
                host.failed(error.reason)
                return error
            return None

        if step.parallel and len(hosts) > 1:
            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
                errors = list(pool.map(apply, hosts))
        else:
            errors = []
            for host in hosts:
                errors.append(apply(host))
                if errors[-1]:
                    break
        failures = [e for e in errors if e]
        if failures:
            raise SwarmhubError(f"{step.name} failed: {failures[0].reason}")

    def recap(self) -> str:
        rows = [
            [
                h.name,
                ",".join(h.roles),
                f"ok={h.tally.ok}",
                f"changed={h.tally.changed}",
                f"failed={h.tally.failed}",
            ]
            for h in self.hosts.values()
        ]
        took = time.monotonic() - self.started
        return (
            f"RECAP ({took:.0f} s{', plan only: nothing changed' if self.plan else ''})\n"
            + table(["HOST", "ROLES", "OK", "CHANGED", "FAILED"], rows)
        )

    def close(self) -> None:
        for host in self.hosts.values():
            host.connection.close()


def run_steps(
    context: Any,
    settings: Settings,
    steps: list[Step],
    *,
    plan: bool = False,
    only: str | None = None,
    everywhere: frozenset[str] = frozenset(),
) -> Session:
    """Run ``steps`` in order on their hosts (or on ``only``; the steps named in
    ``everywhere`` still on all their hosts), print the recap, and fail if any host failed."""
    check_local_files(settings)
    session = Session(settings, plan=plan)
    try:
        if isinstance(context, fabric.Connection):
            only = only or context.original_host
        steps = steps_for_host(steps, settings, only)
        targets = [
            (step, target_hosts(context, settings, step, None if step.name in everywhere else only))
            for step in steps
        ]
        session.connect(name for _, names in targets for name in names)
        error: SwarmhubError | None = None
        for step, names in targets:
            try:
                session.run_step(step, names)
            except SwarmhubError as failure:
                error = failure
                break
        print(session.recap(), flush=True)
        if error:
            raise error
        return session
    finally:
        session.close()

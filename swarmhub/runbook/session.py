"""Running steps on hosts: which hosts, connecting first, in parallel where hosts are
independent, executing (or, in plan mode, listing) the changes the steps declare, and a recap
at the end (Ansible's PLAY RECAP is the model).

The session is the only code that changes a host. A step is a generator over read-only
views (`HostView`) that yields `Ok`s and `Change`s; `drive` sends each change to `execute`,
which runs it in apply mode and only reports it in plan mode, and sends the `Outcome` back.
Plan and apply therefore run the same code and declare the same changes; a fact that only
exists after a change says so (`Later`) instead of being guessed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import paramiko
from invoke.exceptions import CommandTimedOut

from swarmhub import ssh
from swarmhub.errors import SwarmhubError
from swarmhub.output import table
from swarmhub.parallel import pool_width
from swarmhub.runbook.change import Change, Later, Note, Ok, Outcome, Steps, Wait
from swarmhub.runbook.host import Answer, Host, HostView, Result
from swarmhub.runbook.record import Recorder
from swarmhub.settings import Settings, check_local_files

T = TypeVar("T")

ROLE_NAMES = {
    "hub": "the hub",
    "node": "the nodes",
    "proxy": "the proxy",
    "storage": "the storage host",
    "backup": "the backup host",
}

# A change that writes files and then runs commands (a restart, a reload) is recorded on its
# host before its files are written and cleared after its commands ran: a run cut short in
# between leaves the record, and the next run, finding the files as wanted, still runs the
# commands it owes (first thing in that step, declared as any change).
PENDING_DIR = "/var/lib/swarmhub/pending"
PENDING_LIST = f'for f in {PENDING_DIR}/*.json; do [ -f "$f" ] && {{ cat "$f"; echo; }}; done; true'

# What a dropped or broken connection raises from paramiko and invoke mid-step.
# (Not every OSError: a local file that cannot be read is a bug or a setting, not the network.)
CONNECTION_ERRORS = (
    ConnectionError,
    TimeoutError,
    EOFError,
    paramiko.SSHException,
    CommandTimedOut,
)


@dataclass(frozen=True)
class Step:
    """One step of the runbook: its task name, its roles, and what it declares per host.

    ``apply(context, view)`` is a generator of `Ok`/`Change`/`Later`/`Note`. ``on_node_add``
    says what `nodes.add` runs of it: "node" (on the new node), "all" (on every host of its
    roles: the others' firewalls let the new node in), or "" (nothing). ``restarts`` says
    the step may restart something students use on a node (its task then offers
    --restart-nodes).
    """

    name: str
    roles: frozenset[str]
    apply: Callable[[StepContext, HostView], Steps]
    parallel: bool = False
    summary: str = ""
    on_node_add: str = ""
    restarts: bool = False


def step_hosts(settings: Settings, step: Step, only: str | None = None) -> list[str]:
    """The hosts a step runs on: ``only`` (checked against the step's roles), or those of its
    roles in the env file."""
    if not only:
        return [host for host, roles in settings.hosts.items() if set(roles) & step.roles]
    roles = settings.role_of(only)
    if not roles:
        raise SwarmhubError(
            f"{only} is not a host of {settings.source.name} (hosts: "
            f"{', '.join(settings.hosts)}): add it to the env file or pick one of those"
        )
    if not set(roles) & step.roles:
        where = " and ".join(ROLE_NAMES[r] for r in sorted(step.roles))
        owners = [h for h, r in settings.hosts.items() if set(r) & step.roles]
        raise SwarmhubError(
            f"{step.name} runs on {where} ({', '.join(owners)}), but {only} is "
            f"{' and '.join(ROLE_NAMES[r] for r in roles)} in {settings.source.name}"
        )
    return [only]


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
        # The sudo check reads what a run cut short left owed here, in the same round trip.
        check = connection.run(
            f"sudo -n sh -c {shlex.quote(PENDING_LIST)}", hide=True, warn=True, in_stream=False
        )
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
    return Host(
        name, settings.role_of(name), connection, quiet=quiet, pending=parse_pending(check.stdout)
    )


class StepContext:
    """What a step sees of the run: the settings, read-only views of any host of the env
    file, and facts shared by the hosts of this run (computed once)."""

    def __init__(self, session: Session, recorder: Recorder | None, step: str = "") -> None:
        self.session = session
        self.step = step
        self.settings = session.settings
        self.recorder = recorder

    def view(self, name: str) -> HostView:
        """A read-only view of ``name`` (connected on first use)."""
        host = self.session.host(name)
        return HostView(host.name, host.roles, self)

    @property
    def hub(self) -> HostView:
        return self.view(self.settings.hub_host)

    def probe(self, host: str, command: str, sudo: bool) -> Result:
        result = self.session.host(host).probe(command, sudo=sudo)
        if self.recorder is not None:
            self.recorder.probe(host, command, sudo, result)
        return result

    def file_differs(self, host: str, path: str, content: bytes, mode: str, owner: str) -> str:
        why = self.session.host(host).file_differs(path, content, mode, owner)
        if self.recorder is not None:
            self.recorder.file(host, path, why)
        return why

    @property
    def changes_pending(self) -> bool:
        """Earlier changes of this run were only planned, not applied (plan mode): a fact they
        would make (Docker running, the swarm's join token) is not there yet."""
        return self.session.planned > 0

    def remember(self, key: str, compute: Callable[[], T]) -> T:
        """A fact shared by the hosts of this run (the join token), computed once; its probes
        are recorded for every host that uses it."""
        return self.session.remember(key, compute, self)


class Session:
    """Connections to the hosts of one run, the executor of their steps' changes, and the
    tally of what happened on each."""

    def __init__(
        self,
        settings: Settings,
        *,
        plan: bool = False,
        quiet: bool = False,
        restart_nodes: bool = False,
        opener: Callable[[Settings, str], Host] | None = None,
        record_to: str = "",
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.quiet = quiet
        self.restart_nodes = restart_nodes
        self.hosts: dict[str, Host] = {}
        self.planned = 0  # changes listed, not applied (plan mode)
        # What each step returned on each host (a one-off operation's output).
        self.results: dict[tuple[str, str], Any] = {}
        self.started = time.monotonic()
        self.record_to = record_to
        self._opener = opener or (lambda s, name: open_host(s, name, quiet=quiet))
        self._memo: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        # Steps run on several hosts at once may connect to a shared host (the hub) or
        # compute a shared fact (the join token): one thread at a time does it.
        self._lock = threading.RLock()
        # Changes that restart what students use on a node: one node at a time.
        self._restart_lock = threading.Lock()

    # --- hosts ---

    def connect(self, names: Iterable[str]) -> list[Host]:
        """Connect to every host before anything changes; one unreachable host stops all."""
        with self._lock:
            names = list(names)
            wanted = [n for n in dict.fromkeys(names) if n not in self.hosts]
            workers = pool_width(len(wanted))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {name: pool.submit(self._opener, self.settings, name) for name in wanted}
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
        found = self.hosts.get(name)  # no lock once connected: a shared fact's probes run
        return found if found is not None else self.connect([name])[0]  # in other threads

    def remember(self, key: str, compute: Callable[[], T], context: StepContext) -> T:
        with self._lock:
            if key not in self._memo:
                own, context.recorder = context.recorder, Recorder.scratch(context.recorder)
                try:
                    value = compute()
                finally:
                    scratch, context.recorder = context.recorder, own
                self._memo[key] = (value, scratch.probes if scratch else [])
                if own is not None and scratch is not None:
                    own.probes.extend(scratch.probes)
                return value
            value, probes = self._memo[key]
            if context.recorder is not None:
                context.recorder.probes.extend(probes)
            return value

    # --- steps ---

    def run_step(self, step: Step, names: list[str]) -> None:
        """Apply ``step`` to each host (in parallel when the hosts are independent)."""
        hosts = self.connect(names)
        if not self.quiet:
            print(f"== {step.name}{' (plan)' if self.plan else ''}: {step.summary}", flush=True)

        def apply(host: Host) -> SwarmhubError | None:
            try:
                self.drive(step, host)
            except SwarmhubError as error:
                self.hosts.get(error_host(error, host.name), host).failed(error.reason)
                return error
            return None

        if step.parallel and len(hosts) > 1:
            with ThreadPoolExecutor(max_workers=pool_width(len(hosts))) as pool:
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

    def drive(self, step: Step, host: Host) -> None:
        """Run ``step``'s generator for ``host``: items out, outcomes of its changes back in."""
        recorder = Recorder(step.name, host.name) if self.record_to else None
        context = StepContext(self, recorder, step.name)
        view = HostView(host.name, host.roles, context)
        body = _after(self._owed(step, host), step.apply(context, view))
        outcome: Outcome | None = None
        try:
            while True:
                item = body.send(outcome)
                outcome = None
                if isinstance(item, Change):
                    outcome = self.execute(item, host, context)
                    if recorder is not None:
                        recorder.change(item, item.host or host.name)
                elif isinstance(item, Ok):
                    host.tally.ok += 1
                    host.say("ok", item.message)
                elif isinstance(item, Later):
                    host.say("then", item.message)
                elif isinstance(item, Note):
                    host.say("note", item.message)
                else:
                    raise TypeError(f"{step.name} yielded {item!r}, not a change or an ok")
        except StopIteration as end:
            self.results[(step.name, host.name)] = end.value
        except CONNECTION_ERRORS as error:
            raise SwarmhubError(
                f"{host.name}: the connection broke during {step.name} "
                f"({type(error).__name__}: {error or 'closed'}): run it again once the host "
                "answers (a run cut short converges with one more)"
            ) from None
        finally:
            body.close()
            if recorder is not None:
                recorder.save(self.record_to, self.settings)

    def _owed(self, step: Step, host: Host) -> list[Change]:
        """The follow-ups a run cut short owes on ``host`` for ``step`` (first in the step)."""
        owed = [record for record in host.pending if record.get("step") == step.name]
        host.pending = [record for record in host.pending if record not in owed]
        # Run once, whatever it answers: the record goes with it, so that a follow-up that
        # fails (its cause fixed since, or not) is never replayed forever; the step after it
        # decides again from the facts.
        return [
            Change(
                f"finished what a run cut short left undone: {record['message']}",
                [
                    f"( {' && '.join(record['commands'])} ); status=$?; "
                    f"rm -f {PENDING_DIR}/{record['id']}.json; exit $status"
                ],
                restarts=record.get("restarts", ""),
                follow_up=False,
            )
            for record in owed
        ]

    def execute(self, change: Change, origin: Host, context: StepContext) -> Outcome:
        """Apply ``change`` (or, in plan mode, only report it) on its host."""
        target = self.host(change.host) if change.host else origin
        message = change.message
        node_restart = bool(change.restarts) and "node" in target.roles
        servers: list[str] = []
        if change.restarts:
            servers = self.servers_on(target.name, context) if node_restart else []
            message += f" — {restart_note(change.restarts, target.name, servers, node_restart)}"
        if self.plan:
            self.planned += 1
            target.tally.changed += 1
            target.say("would change", message)
            return Outcome(False)
        if node_restart and servers and not self.restart_nodes:
            raise SwarmhubError(
                f"{target.name}: {change.message}: this restarts {change.restarts} there, where "
                f"{len(servers)} student server(s) run ({', '.join(servers[:5])}): they would "
                "stop. Run the task again with --restart-nodes (one node at a time, each taking "
                f"no new servers meanwhile), or empty the node first (invoke nodes.drain "
                f"{target.name} --evict)"
            )
        if node_restart:
            with self._restart_lock:
                outputs = self._restart_node(target, change, context)
        else:
            outputs = self.apply_change(target, change, context)
        target.tally.changed += 1
        target.say("changed", message)
        return Outcome(True, tuple(outputs))

    def apply_change(self, target: Host, change: Change, context: StepContext) -> list[str]:
        """Write the change's files, run its commands, then wait for what follows it."""
        owed = pending_record(change, context.step) if owes(change) else None
        if owed is not None:
            target.run(mark_pending_command(owed))
        for file in change.files:
            target.write(file)
        outputs = [target.run(command).stdout for command in change.commands]
        if owed is not None:
            target.run(f"rm -f {PENDING_DIR}/{owed['id']}.json")
        for wait in change.then:
            self.wait(target, wait, context)
        return outputs

    def _restart_node(self, node: Host, change: Change, context: StepContext) -> list[str]:
        """A restart on a node: it takes no new servers meanwhile (swarm's "pause"), then it
        goes back to the availability it had."""
        hub = self.host(self.settings.hub_host)
        found = context.hub.probe(
            f"docker node inspect --format '{{{{.Spec.Availability}}}}' {shlex.quote(node.name)}"
        )
        availability = found.stdout.strip() if found.ok else ""
        if availability == "active":
            hub.run(f"docker node update --availability pause {shlex.quote(node.name)} >/dev/null")
        try:
            return self.apply_change(node, change, context)
        finally:
            if availability == "active":
                hub.run(
                    f"docker node update --availability active {shlex.quote(node.name)} >/dev/null"
                )

    def servers_on(self, node: str, context: StepContext) -> list[str]:
        """The students' servers (swarm services jupyter-*) running on ``node``; none when the
        hub is not a swarm manager yet."""
        out = context.hub.probe(
            f"docker node ps {shlex.quote(node)} --filter desired-state=running "
            "--format '{{.Name}}' 2>/dev/null"
        ).stdout
        return sorted({line.split(".")[0] for line in out.split() if line.startswith("jupyter-")})

    def wait(self, host: Host, wait: Wait, context: StepContext) -> None:
        """Poll the wait's probe until it succeeds; its last answer is recorded (not each
        poll), so that the steps' tests replay it at once."""
        deadline = time.monotonic() + wait.timeout
        while True:
            result = host.probe(wait.command, sudo=wait.sudo)
            if result.ok or time.monotonic() >= deadline:
                break
            time.sleep(wait.interval)
        if context.recorder is not None:
            context.recorder.probe(host.name, wait.command, wait.sudo, result)
        if result.ok:
            return
        why = ""
        if wait.explain:
            shown = context.probe(host.name, wait.explain, True).stdout.strip()
            why = ": " + shown.replace("\n", " | ")
        raise SwarmhubError(f"{host.name}: {wait.message}: not within {wait.timeout:.0f} s{why}")

    # --- the end ---

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
            with contextlib.suppress(*CONNECTION_ERRORS):
                host.connection.close()


def _after(first: list[Change], body: Steps) -> Steps:
    """``first``'s changes, then ``body``'s items (its outcomes sent through)."""
    for change in first:  # noqa: UP028 (their outcomes are not the body's)
        yield change
    return (yield from body)


def owes(change: Change) -> bool:
    """A change whose commands are owed once its files are written (see Change.follow_up)."""
    return bool(change.follow_up and change.files and change.commands)


def pending_record(change: Change, step: str) -> dict[str, Any]:
    """What a change owes its host once its files are written: its commands."""
    key = f"{step}\0{change.message}\0{chr(0).join(change.commands)}"
    return {
        "id": hashlib.sha256(key.encode()).hexdigest()[:16],
        "step": step,
        "message": change.message,
        "commands": list(change.commands),
        "restarts": change.restarts,
    }


def mark_pending_command(record: dict[str, Any]) -> str:
    """Write ``record`` (JSON, base64 on the command line: no quoting to get wrong)."""
    data = base64.b64encode(json.dumps(record).encode()).decode()
    path = f"{PENDING_DIR}/{record['id']}.json"
    return (
        f"mkdir -p {PENDING_DIR} && echo {data} | base64 -d > {path}.new && mv -f {path}.new {path}"
    )


def parse_pending(output: str) -> list[dict[str, Any]]:
    """The records PENDING_LIST printed (one JSON a line; anything else is ignored)."""
    records = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"id", "step", "message", "commands"} <= set(record):
            records.append(record)
    return records


def error_host(error: SwarmhubError, default: str) -> str:
    """The host an error line names first ("sam-hub: …"), else ``default``."""
    first = error.reason.split(":", 1)[0]
    return first if " " not in first else default


def restart_note(what: str, host: str, servers: list[str], on_node: bool) -> str:
    """What a restart costs, for plan and the output."""
    if not on_node:
        return f"restarts {what} on {host} (students' servers run on the nodes and keep running)"
    if not servers:
        return f"restarts {what} on {host} (no student server runs there)"
    return f"restarts {what} on {host}: {len(servers)} server(s) stop"


def probe_answer(stdout: str = "", exited: int = 0) -> Result:
    """A canned probe answer (tests, and probes that need no host)."""
    return Answer(stdout=stdout, exited=exited)


def run_steps(
    settings: Settings,
    steps: list[Step],
    *,
    plan: bool = False,
    only: str | None = None,
    everywhere: Iterable[str] = (),
    restart_nodes: bool = False,
    command: str = "",
    quiet: bool = False,
    lock: bool = True,
) -> Session:
    """Run ``steps`` in order on their hosts (or on the host ``only``; the steps named in
    ``everywhere`` still on all their hosts), print the recap, and fail if any host failed.

    A changing run (not ``plan``, ``lock``) holds the run lock on the hub, so that two staff
    cannot change the cluster at once."""
    from swarmhub.runbook.lock import RunLock, holder_line, lock_state_command, parse_lock_answer

    check_local_files(settings)
    session = Session(
        settings, plan=plan, quiet=quiet, restart_nodes=restart_nodes, record_to=_record_dir()
    )
    held = None
    try:
        steps = steps_for_host(steps, settings, only)
        wide = set(everywhere)
        targets = [
            (step, step_hosts(settings, step, None if step.name in wide else only))
            for step in steps
        ]
        names = [name for _, hosts in targets for name in hosts]
        locking = lock and not plan
        if locking:
            names.append(settings.hub_host)
        session.connect(names)
        if plan and settings.hub_host in session.hosts:
            # Plan takes no lock, but says when a run is changing the hosts it probes.
            state = session.host(settings.hub_host).probe(lock_state_command()).stdout
            answer = parse_lock_answer(state.splitlines()[0] if state.strip() else "")
            if answer.state == "busy":
                print(
                    f"note: another swarmhub run is changing the cluster ({answer.holder}): "
                    "this plan shows the hosts as they are now",
                    flush=True,
                )
        if locking:
            hub = session.host(settings.hub_host)
            holder = holder_line()  # who, from where, and the command line they typed
            held = RunLock.acquire(hub.connection, holder, hub=hub.name)
        error: SwarmhubError | None = None
        for step, hosts in targets:
            try:
                if held is not None:
                    held.ensure_held()
                session.run_step(step, hosts)
            except SwarmhubError as failure:
                error = failure
                break
        if not quiet or error:
            print(session.recap(), flush=True)
        if error:
            raise error
        return session
    finally:
        if held is not None:
            held.release()
        session.close()


def _record_dir() -> str:
    """Where the facts of this run are recorded (SWARMHUB_RECORD_FACTS), for the steps' tests."""
    import os

    return os.environ.get("SWARMHUB_RECORD_FACTS", "")

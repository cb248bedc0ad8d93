"""What every runbook task does: read the env file, resolve `fab -H` once, run the steps.

The tasks of the runbook's steps are made here from the registry (swarmhub/steps/registry.py):
one task per step or group, each with --plan, and --restart-nodes where a step may restart
what students use on a node.
"""

from __future__ import annotations

from typing import Any

import fabric
from invoke import Task

from swarmhub import settings as env_settings
from swarmhub.runbook.session import Session, Step, run_steps

PLAN_HELP = {"plan": "probe the hosts and list what would change, changing nothing"}
RESTART_HELP = {
    "restart-nodes": (
        "apply changes that restart Docker or the homes mount on nodes where servers run: one "
        "node at a time, each taking no new servers meanwhile (those servers stop)"
    )
}


def fab_host(context: Any) -> str | None:
    """The host given with `fab -H`, resolved once at the task's boundary (None for invoke)."""
    return context.original_host if isinstance(context, fabric.Connection) else None


def run(
    context: Any,
    steps: list[Step] | tuple[Step, ...],
    plan: bool,
    *,
    task: str = "",
    restart_nodes: bool = False,
) -> Session:
    """Validate the env file, connect to the steps' hosts, and run the steps in order."""
    return run_steps(
        env_settings.load(),
        list(steps),
        plan=plan,
        only=fab_host(context),
        restart_nodes=restart_nodes,
        command=task,
    )


def run_operation(step: Step, host: str | None = None, *, changes: bool = True) -> Any:
    """Run a one-off operation (backup.run, homes.usage) through the session, as steps run,
    quietly (its changes shown, no recap unless it fails), and return what it returned on
    its host (the first of its role, or ``host``). One that ``changes`` nothing (a report)
    does not take the run lock."""
    settings = env_settings.load()
    session = run_steps(settings, [step], only=host, quiet=True, command=step.name, lock=changes)
    return next(iter(session.results.values()), None)


def run_operation_everywhere(step: Step, *, changes: bool = True) -> dict[str, Any]:
    """run_operation on every host of the step's roles: what it returned, by host."""
    settings = env_settings.load()
    session = run_steps(settings, [step], quiet=True, command=step.name, lock=changes)
    return {host: result for (_, host), result in session.results.items()}


def step_task(name: str, steps: tuple[Step, ...], doc: str) -> Task:
    """The task `name` running ``steps``: --plan always, --restart-nodes where it matters."""
    if any(step.restarts for step in steps):

        def body(c, plan=False, restart_nodes=False):
            run(c, steps, plan, task=name, restart_nodes=restart_nodes)

        helps = {**PLAN_HELP, **RESTART_HELP}
    else:

        def body(c, plan=False):
            run(c, steps, plan, task=name)

        helps = PLAN_HELP
    body.__doc__ = doc
    body.__name__ = name.rsplit(".", 1)[-1]
    return Task(body, name=body.__name__, help=helps)

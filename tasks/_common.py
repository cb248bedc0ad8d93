"""What every runbook task does: read the env file, pick the hosts, run the steps."""

from __future__ import annotations

from typing import Any

from swarmhub import settings as env_settings
from swarmhub.runbook.session import Session, Step, run_steps

PLAN_HELP = {"plan": "probe the hosts and list what would change, changing nothing"}


def run(context: Any, steps: list[Step], plan: bool) -> Session:
    """Validate the env file, connect to the steps' hosts, and run the steps in order."""
    return run_steps(context, env_settings.load(), steps, plan=plan)

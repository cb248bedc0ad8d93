"""Every registered step on every set of facts recorded for it (tests/unit/facts/STEP/*.json):
facts in, changes out, in plan and in apply mode, on fake hosts.

The promises tested here hold for every step by construction of the session, and a step that
breaks them fails: apply executes exactly the changes the step declared; plan executes
nothing but probes; plan and apply declare the same changes; and those are the changes the
facts call for. Facts are recorded on the sandbox (scripts/record-facts, see CONTRIBUTING.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from swarmhub import settings as env_settings
from swarmhub.runbook.change import Change, Ok, Steps
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import PROJECT_ROOT
from swarmhub.steps import registry
from tests.unit.fakehost import (
    FACTS_DIR,
    expected_execution,
    fake_hosts,
    load_fixture,
    normalize,
    run_step,
    with_tags,
)

STEPS = {step.name: step for step in registry.all_steps()}
FIXTURES = sorted(FACTS_DIR.glob("*/*.json"))


def check(step: Step, fixture: dict[str, Any]) -> None:
    """The step's promises on one set of facts (AssertionError when one is broken)."""
    settings = env_settings.load(str(PROJECT_ROOT / fixture["env"]))
    fixture = with_tags(fixture, settings)
    probes = fixture["probes"]
    plan = run_step(step, settings, fixture["host"], fake_hosts(settings, probes), plan=True)
    assert plan.executed() == [], "plan executed more than probes"
    apply = run_step(step, settings, fixture["host"], fake_hosts(settings, probes), plan=False)
    assert apply.executed() == expected_execution(apply), "apply executed undeclared changes"
    assert plan.messages() == apply.messages(), "plan and apply declared different changes"
    wanted = [[c["host"], normalize(c["message"], secrets=False)] for c in fixture["changes"]]
    assert apply.messages() == wanted, "the changes differ from those the facts call for"


def test_every_registered_step_has_facts() -> None:
    recorded = {path.parent.name for path in FIXTURES}
    assert set(STEPS) <= recorded, f"steps without facts: {sorted(set(STEPS) - recorded)}"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_facts_in_changes_out(path: Path) -> None:
    fixture = load_fixture(path)
    check(STEPS[fixture["step"]], fixture)


# --- a step that breaks a promise fails the check ---


def _fixture_with_changes() -> dict[str, Any]:
    for path in FIXTURES:
        fixture = load_fixture(path)
        if fixture["changes"] and fixture["step"] == "docker.install":
            return fixture
    pytest.skip("no recorded docker.install facts with changes")


def test_a_step_that_changes_a_host_behind_the_sessions_back_fails() -> None:
    fixture = _fixture_with_changes()
    real = STEPS[fixture["step"]]

    def sneaky(ctx: StepContext, host: HostView) -> Steps:
        yield from real.apply(ctx, host)
        ctx.session.host(host.name).run("systemctl restart docker")  # not declared

    with pytest.raises(AssertionError, match="executed"):
        check(Step(real.name, real.roles, sneaky), fixture)


def test_a_step_whose_plan_differs_from_its_apply_fails() -> None:
    fixture = _fixture_with_changes()
    real = STEPS[fixture["step"]]

    def two_faced(ctx: StepContext, host: HostView) -> Steps:
        if ctx.session.plan:
            yield Ok("nothing to do")  # plan hides the change that apply makes
        else:
            yield from real.apply(ctx, host)

    with pytest.raises(AssertionError, match="different changes"):
        check(Step(real.name, real.roles, two_faced), fixture)


def test_a_step_that_asks_what_its_facts_do_not_say_fails() -> None:
    fixture = _fixture_with_changes()
    real = STEPS[fixture["step"]]

    def curious(ctx: StepContext, host: HostView) -> Steps:
        host.probe("cat /etc/shadow")
        yield Change("nothing", ["true"])

    with pytest.raises(AssertionError, match="no fact"):
        check(Step(real.name, real.roles, curious), fixture)


def test_no_fact_holds_a_secret() -> None:
    # Facts are committed: the homes key a node reads and the swarm's join token are scrubbed
    # when they are recorded (swarmhub/runbook/record.py).
    for path in FIXTURES:
        text = path.read_text()
        # Every private key block an answer holds (a line of its own, then the key) is ***.
        blocks = re.findall(r"BEGIN [A-Z ]*PRIVATE KEY-----\\n(.{0,5})", text)
        assert all(block.startswith("***\\n") for block in blocks), path
        assert not re.search(r"SWMTKN-1-[A-Za-z0-9]", text), path


def test_facts_recorded_where_the_image_tags_differ_replay_here() -> None:
    # A tag hashes the extra CAs' content: facts recorded on another machine name other tags.
    path = FACTS_DIR / "images.prune" / "w-hub-profiles.json"
    fixture = load_fixture(path)
    text = json.dumps(fixture).replace(fixture["tags"]["hub"], "0123456789ab")
    check(STEPS["images.prune"], json.loads(text))

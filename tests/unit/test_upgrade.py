"""JupyterHub's major version: hub.deploy never changes it, hub.upgrade does (copy, migrate,
the new hub), and status says which version runs and which servers are older. The recorded
facts (tests/unit/facts/hub.upgrade/) replay a real upgrade; these tests cover the decisions
the facts do not show (refusals, the setting that stops old servers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.monitor.agent import Line, alert_for_line
from swarmhub.observe import parse, report
from swarmhub.steps import hub, upgrade
from swarmhub.templates import render
from tests.unit.fakehost import answering, run_step

ENV = "HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\n"


def course(tmp_path: Path, extra: str = "") -> env_settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV + extra)
    return env_settings.load(str(path))


def test_the_hubs_version_is_read_from_its_api_or_its_image() -> None:
    assert hub.parse_hub_version('api {"version": "5.5.4"}\n') == "5.5.4"
    assert hub.parse_hub_version("image 6.1.1\n") == "6.1.1"
    assert hub.parse_hub_version("none\n") is None
    with pytest.raises(SwarmhubError, match="unreadable"):
        hub.parse_hub_version("image Error: No such image\n")


def test_hub_deploy_stays_within_the_major_version(tmp_path: Path) -> None:
    settings = course(tmp_path)  # the default series: 6.1
    assert hub.refuse_major_change(settings, "hub", None) == "6.1.1"  # a first deploy
    assert hub.refuse_major_change(settings, "hub", "6.1.0") == "6.1.1"  # a minor upgrade
    with pytest.raises(SwarmhubError) as up:
        hub.refuse_major_change(settings, "hub", "5.5.4")
    assert "invoke hub.upgrade" in up.value.reason and "JUPYTERHUB_SERIES=5.5" in up.value.reason
    assert "\n" not in up.value.reason
    with pytest.raises(SwarmhubError, match="no downgrade"):
        hub.refuse_major_change(course(tmp_path, "JUPYTERHUB_SERIES=5.5\n"), "hub", "6.1.1")


def hosts_answering(version_answer: str, services: str = "", state: str = "") -> dict:
    hub_host = answering(
        "hub",
        ("hub", "storage"),
        {
            "curl -fsS -m 5": version_answer,
            "docker service ls": services,
            "last.json": state,
            "docker image inspect": "",
            "date -u": "20261201T120000Z\n40960\n",
            "docker inspect --format '{{.Config.Image}}' chp": "",
        },
        {},
    )
    node = answering("node-1", ("node",), {"docker image inspect": ""}, {})
    proxy = answering("proxy", ("proxy",), {}, {})
    return {"hub": hub_host, "node-1": node, "proxy": proxy}


def test_hub_deploy_on_an_older_major_refuses_before_any_change(tmp_path: Path) -> None:
    hosts = hosts_answering('api {"version": "5.5.4"}')
    with pytest.raises(SwarmhubError, match=r"hub\.upgrade"):
        run_step(hub.STEP, course(tmp_path), "hub", hosts, plan=False)
    assert hosts["hub"].executed == []
    assert len(hosts["hub"].asked) == 1  # the version, first of all


def test_the_upgrade_copies_the_database_before_migrating(tmp_path: Path) -> None:
    settings = course(tmp_path)
    old_image = "hub:5000/swarmhub/user:b83ca971aa82"
    hosts = hosts_answering(
        'api {"version": "5.5.4"}', services=f"jupyter-ann|{old_image}@sha256:1\n"
    )
    run = run_step(upgrade.STEP, settings, "hub", hosts, plan=True)
    (change,) = [c for _, c in run.declared]
    copy = "/srv/swarmhub/data/jupyterhub.sqlite.pre-5.5.4-20261201T120000Z"
    assert change.message.startswith(f"JupyterHub 5.5.4 to 6.1.1: the database copied to {copy}")
    stage = "/srv/swarmhub/upgrade/5.5.4-to-6.1.1-20261201T120000Z"
    assert change.commands == (f"sh {stage}/upgrade.sh",)
    assert {f.path for f in change.files} == {
        f"{stage}/upgrade.sh",
        *(f"{stage}/new/{name}" for name in upgrade.UPGRADED_FILES),
    }
    script = next(f for f in change.files if f.path.endswith("upgrade.sh")).content.decode()
    # The copy before the migration, the migration before the new hub.
    order = [
        script.index(s) for s in ('cp -p "$db" "$copy.part"', "upgrade-db -f", "up -d --remove")
    ]
    assert order == sorted(order)
    assert '"user_image_before": "hub:5000/swarmhub/user:b83ca971aa82"' in script
    assert hosts["hub"].executed == []


def test_a_second_upgrade_keeps_old_servers_unless_asked(tmp_path: Path) -> None:
    old_image = "hub:5000/swarmhub/user:b83ca971aa82"
    state = json.dumps({"from": "5.5.4", "to": "6.1.1", "user_image_before": old_image})
    services = f"jupyter-ann|{old_image}\njupyter-dan|hub:5000/swarmhub/user:new\n"
    kept = run_step(
        upgrade.STEP,
        course(tmp_path),
        "hub",
        hosts_answering('api {"version": "6.1.1"}', services, state),
        plan=False,
    )
    assert kept.declared == []
    stopping = run_step(
        upgrade.STEP,
        course(tmp_path, "UPGRADE_RESTART_SERVERS=yes\n"),
        "hub",
        hosts_answering('api {"version": "6.1.1"}', services, state),
        plan=False,
    )
    (change,) = [c for _, c in stopping.declared]
    assert "stopped 1 server(s) started before the upgrade (ann)" in change.message
    assert "/hub/api/users/ann/server" in change.commands[0]
    assert "culler_token" in change.commands[0] and "DELETE" in change.commands[0]


def test_no_hub_no_upgrade(tmp_path: Path) -> None:
    with pytest.raises(SwarmhubError, match="no hub is deployed"):
        run_step(upgrade.STEP, course(tmp_path), "hub", hosts_answering("none"), plan=True)


def test_a_failed_migration_restores_the_copy_and_the_old_files() -> None:
    script = render(
        "hub/upgrade.sh.j2",
        hub_dir="/srv/swarmhub",
        stage="/s",
        data_dir="/srv/swarmhub/data",
        copy="/srv/swarmhub/data/jupyterhub.sqlite.pre-5.5.4-T",
        old="5.5.4",
        new="6.1.1",
        files=upgrade.UPGRADED_FILES,
        chp_changes=False,
        state="{}",
    )
    failure = script[script.index("if ! docker compose run") :]
    assert failure.index("restore") < failure.index("fail ")
    restore = script[script.index("restore() {") :]
    assert 'rm -f "$db-journal" "$db-wal" "$db-shm"' in restore  # no hot journal replayed
    assert "JupyterHub 5.5.4 runs again" in failure
    assert "docker exec chp" not in script  # chp untouched when its image is the same


def test_status_shows_the_version_and_flags_servers_from_before_the_upgrade() -> None:
    assert report.hub_api_row(200, version="6.1.1").note == "JupyterHub 6.1.1"
    assert parse.parse_hub_version('{"version": "6.1.1"}') == "6.1.1"
    images_of = parse.parse_service_images("jupyter-ann|u:old@sha256:1\njupyter-dan|u:new\n")
    last = parse.parse_upgrade('{"from": "5.5.4", "to": "6.1.1", "user_image_before": "u:old"}')
    now = datetime(2026, 12, 1, tzinfo=UTC)
    servers = [parse.UserServer(u, True, "", now, now) for u in ("ann", "dan")]
    tasks = {
        f"jupyter-{u}": parse.ServiceTask(f"jupyter-{u}", "node-1", "Running")
        for u in ("ann", "dan")
    }
    rows = report.server_rows(servers, tasks, now, lambda u: f"jupyter-{u}", str)
    report.flag_old_servers(rows, images_of, last)
    assert rows[0].note.startswith("JupyterHub 5.5.4 server, started before the upgrade to 6.1.1")
    assert rows[0].ok and rows[1].note == ""  # a note, not a failure


def test_a_refused_spawn_is_not_alerted_as_a_failure() -> None:
    # JupyterHub 6 logs a SpawnException (the cluster full) so: a refusal, its own alert.
    refused = Line(
        "jupyterhub",
        "[E 2026-12-01 12:00:00.000 JupyterHub user:1065] Not starting ann's server : "
        "HTTP 503: cluster_full (cluster full: no suitable node (insufficient resources))",
    )
    alert = alert_for_line(refused, "hub")
    assert alert is not None and alert.cause == "spawn-refused" and alert.subject == "ann"
    failed = Line("jupyterhub", "[E …] Unhandled error starting ann's server: boom")
    assert alert_for_line(failed, "hub").cause == "spawn-failed"


def test_the_upgrade_task_builds_and_pulls_before_the_hub() -> None:
    from swarmhub.steps import registry

    steps = [step.name for step in registry.OPERATIONS["hub.upgrade"]]
    assert steps == ["images.build", "images.serve", "images.pull", "hub.upgrade"]
    assert upgrade.STEP not in registry.RUNBOOK  # cluster.all never upgrades a major

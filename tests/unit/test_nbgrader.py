"""The course's nbgrader exchange (issue 20, docs/nbgrader.md): the mounts the spawner gives
a student's and a grader's server, the directories the hub makes for them, and the graders'
collect script that keeps a submission made as another student out of the gradebook.
Unit tests: the servers, nbgrader and the gradebook themselves are not run here."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.settings import PROJECT_ROOT
from swarmhub.steps import hub

COLLECT = PROJECT_ROOT / "images" / "user" / "swarmhub-collect-submissions"


def hub_env(homes: Path, course: str = "data8") -> str:
    return (
        "USER_IMAGE=u\nSWARM_NETWORK=n\nUSER_MEM_LIMIT=1073741824\nUSER_CPU_LIMIT=1.5\n"
        f"HOMES_DIR={homes}\nHOME_UID={os.getuid()}\nHOME_GID={os.getgid()}\n"
        "AUTHENTICATOR=dummy\nDUMMY_PASSWORD=x\nCULLER_API_TOKEN=t\nSPAWN_CONCURRENCY=\n"
        f"COURSE_ID={course}\nGRADERS_GROUP=graders\n"
    )


def spawner_of(config: Config, user: str, groups: tuple[str, ...] = ()) -> object:
    named = SimpleNamespace(name=user, groups=[SimpleNamespace(name=g) for g in groups])
    return config.JupyterHub.spawner_class(config=config, user=named)


def binds(spawner: object) -> dict[str, tuple[str, str]]:
    """Where each of the server's mounts shows (its path inside) -> (source, mode)."""
    return {v["bind"]: (k, v["mode"]) for k, v in spawner.volume_binds.items()}  # type: ignore[attr-defined]


def test_a_student_sees_the_released_assignments_and_only_their_own_submissions(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    homes = tmp_path / "homes"
    spawner = spawner_of(load_hub_config(hub_env(homes)), "alice")
    spawner.apply_course()  # type: ignore[attr-defined]
    root = homes / ".course" / "data8" / "exchange"
    ex = "/srv/nbgrader/exchange/data8"
    assert binds(spawner) == {
        "/home/jovyan": (str(homes / "alice"), "rw"),
        f"{ex}/outbound": (str(root / "outbound"), "ro"),
        f"{ex}/inbound": (str(root / "inbound" / "alice"), "rw"),
        f"{ex}/feedback": (str(root / "feedback" / "alice"), "ro"),
    }
    env = spawner.environment  # type: ignore[attr-defined]
    assert env["NBGRADER_COURSE_ID"] == "data8" and env["SWARMHUB_COURSE_ROLE"] == "student"
    assert env["JUPYTER_CONFIG_PATH"].endswith("/swarmhub-roles/student")
    assert "NBGRADER_DB_URL" not in env
    # the hub made every mounted source (a swarm bind mount fails on a missing one)
    for source, _ in binds(spawner).values():
        if ".course" in source:
            assert Path(source).is_dir()
    assert (root / "names" / "alice").read_text() == "alice"


def test_a_grader_gets_the_course_and_every_submission_read_only(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    homes = tmp_path / "homes"
    spawner = spawner_of(load_hub_config(hub_env(homes)), "prof", ("graders",))
    spawner.apply_course()  # type: ignore[attr-defined]
    root = homes / ".course" / "data8"
    ex = "/srv/nbgrader/exchange/data8"
    seen = binds(spawner)
    assert seen["/srv/nbgrader/course"] == (str(root / "course"), "rw")
    assert seen["/srv/nbgrader/submissions"] == (str(root / "exchange" / "inbound"), "ro")
    assert seen["/srv/nbgrader/students"] == (str(root / "exchange" / "names"), "ro")
    assert seen[f"{ex}/inbound"] == (str(root / "exchange" / "collected"), "rw")
    assert seen[f"{ex}/outbound"] == (str(root / "exchange" / "outbound"), "rw")
    assert spawner.environment["SWARMHUB_COURSE_ROLE"] == "grader"  # type: ignore[attr-defined]


def test_a_grader_removed_from_the_group_loses_the_course_at_the_next_start(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    homes = tmp_path / "homes"
    config = load_hub_config(hub_env(homes))
    spawner = spawner_of(config, "ta", ("graders",))
    spawner.apply_course()  # type: ignore[attr-defined]
    spawner.user.groups = []  # type: ignore[attr-defined]
    spawner.apply_course()  # type: ignore[attr-defined]
    seen = binds(spawner)
    assert "/srv/nbgrader/course" not in seen and "/srv/nbgrader/submissions" not in seen
    assert seen["/srv/nbgrader/exchange/data8/outbound"][1] == "ro"


def test_no_course_no_exchange(tmp_path: Path, load_hub_config: Callable[[str], Config]) -> None:
    homes = tmp_path / "homes"
    spawner = spawner_of(load_hub_config(hub_env(homes, course="")), "alice", ("graders",))
    spawner.apply_course()  # type: ignore[attr-defined]
    assert list(binds(spawner)) == ["/home/jovyan"]
    assert not (homes / ".course").exists()
    assert spawner.environment["JUPYTER_CONFIG_PATH"].endswith("/none")  # type: ignore[attr-defined]


def test_the_course_is_no_users_home(
    tmp_path: Path, load_hub_config: Callable[[str], Config]
) -> None:
    """No user name escapes to ".course": a user's home never is the course's directory."""
    spawner = spawner_of(load_hub_config(hub_env(tmp_path)), ".course")
    assert not spawner.escaped_name.startswith(".")  # type: ignore[attr-defined]


def env_file(tmp_path: Path, extra: str) -> str:
    path = tmp_path / "course.env"
    path.write_text("HUB_HOST=hub\nNODE_HOSTS=n1,n2\nPROXY_HOST=proxy\n" + extra)
    return str(path)


def test_the_course_reaches_the_hub_env(tmp_path: Path) -> None:
    loaded = settings.load(env_file(tmp_path, "COURSE_ID=data8\nGRADERS_GROUP=staff\n"))
    text = hub.hub_settings_env(loaded)
    assert "COURSE_ID=data8\n" in text and "GRADERS_GROUP=staff\n" in text
    assert "COURSE_ID" not in hub.hub_settings_env(settings.load(env_file(tmp_path, "")))


@pytest.mark.parametrize("bad", ["data 8", "../x", "+x", "a+b"])
def test_a_bad_course_id_is_one_clear_line(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SwarmhubError, match="COURSE_ID"):
        settings.load(env_file(tmp_path, f"COURSE_ID={bad}\n"))


def submitted(root: Path, directory: str, entry: str) -> Path:
    path = root / "inbound" / directory / entry
    path.mkdir(parents=True)
    (path / "ps1.ipynb").write_text("{}")
    return path


def test_collect_keeps_a_students_own_and_refuses_one_made_as_another(tmp_path: Path) -> None:
    (tmp_path / "names").mkdir()
    (tmp_path / "names" / "alice").write_text("alice")
    (tmp_path / "names" / "bob").write_text("bob")
    (tmp_path / "collected").mkdir()
    submitted(tmp_path, "alice", "alice+ps1+2026-12-02 10:00:00.000000 UTC")
    submitted(tmp_path, "alice", "bob+ps1+2026-12-02 10:01:00.000000 UTC")  # forged as bob
    submitted(tmp_path, "bob", "bob+ps1+2026-12-02 10:02:00.000000 UTC")
    submitted(tmp_path, "mallory", "mallory+ps1+2026-12-02 10:03:00.000000 UTC")  # no name
    args = [
        sys.executable, str(COLLECT), "--submissions", str(tmp_path / "inbound"),
        "--students", str(tmp_path / "names"), "--inbound", str(tmp_path / "collected"),
    ]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode == 3, run.stderr
    assert sorted(p.name for p in (tmp_path / "collected").iterdir()) == [
        "alice+ps1+2026-12-02 10:00:00.000000 UTC",
        "bob+ps1+2026-12-02 10:02:00.000000 UTC",
    ]
    assert "refused alice/bob+ps1" in run.stderr and "not theirs to submit" in run.stderr
    assert "refused mallory/" in run.stderr
    again = subprocess.run(args, capture_output=True, text=True)
    assert "0 new submission(s) copied" in again.stdout  # never rewritten


def test_collect_copies_a_students_link_as_a_link(tmp_path: Path) -> None:
    module = runpy.run_path(str(COLLECT))
    (tmp_path / "names").mkdir()
    (tmp_path / "names" / "alice").write_text("alice")
    entry = submitted(tmp_path, "alice", "alice+ps1+t")
    (entry / "other").symlink_to("/etc/hostname")
    kept, refused = module["sort_submissions"](tmp_path / "inbound", tmp_path / "names")
    assert refused == [] and [name for _, name in kept] == ["alice+ps1+t"]
    (tmp_path / "out").mkdir()
    module["copy_kept"](kept, tmp_path / "out")
    assert (tmp_path / "out" / "alice+ps1+t" / "other").is_symlink()


def test_collect_refuses_a_missing_directory_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(COLLECT), "--submissions", str(tmp_path / "nope")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1


def test_status_names_the_course_and_its_exchange(tmp_path: Path) -> None:
    from swarmhub.course import course_line

    assert course_line(settings.load(env_file(tmp_path, ""))) == ""
    line = course_line(settings.load(env_file(tmp_path, "COURSE_ID=data8\n")))
    assert line.startswith("course: data8 (nbgrader; exchange: per-student mounts")
    assert "/srv/swarmhub/homes/.course/data8 on hub" in line


def test_grades_csv_has_one_row_a_student_and_no_zero_for_a_missing_one() -> None:
    from swarmhub.course import grades_csv

    text = grades_csv(
        [("bob", "ps1", 3.0, 5.0), ("alice", "ps1", 5.0, 5.0), ("bob", "ps2", 1.5, 2.0)]
    )
    assert text == "Student,ps1 (5 pts),ps2 (2 pts)\nalice,5,\nbob,3,1.5\n"


# --- gradebook.database (its facts on the sandbox: tests/unit/facts/gradebook.database) ---


def gradebook_ctx(tmp_path: Path, extra: str = "COURSE_ID=data8\n") -> object:
    return SimpleNamespace(settings=settings.load(env_file(tmp_path, extra)))


def test_pg_hba_is_made_of_the_course_alone(tmp_path: Path) -> None:
    """The earlier attempt's pitfall: pg_hba.conf from the live address listing, rewritten
    (and PostgreSQL restarted) on a second run. Here no address of any host is in it."""
    from swarmhub.steps import gradebook

    one = gradebook.pg_hba(gradebook_ctx(tmp_path).settings)  # type: ignore[attr-defined]
    assert one == gradebook.pg_hba(gradebook_ctx(tmp_path).settings)  # type: ignore[attr-defined]
    assert "nbgrader_data8  nbgrader" in one and "scram-sha-256" in one
    assert "10." not in one and "trust" not in one


def test_no_course_no_gradebook(tmp_path: Path) -> None:
    from swarmhub.runbook.change import Ok
    from swarmhub.steps import gradebook

    from .fakehost import answering, declared, view_of

    host = view_of(answering("hub", ("hub",), {}, {}))
    items = declared(gradebook.apply(gradebook_ctx(tmp_path, ""), host))  # type: ignore[arg-type]
    assert items == [Ok("no COURSE_ID: no gradebook")]


def test_a_second_run_changes_nothing_and_a_new_one_never_prints_the_password(
    tmp_path: Path,
) -> None:
    from swarmhub.runbook.change import Change
    from swarmhub.steps import gradebook

    from .fakehost import answering, declared, view_of

    conf = "/etc/postgresql/17/main"
    done = {
        "dpkg-query": "",
        "pg_lsclusters": "17 main\n",
        "test -s": "600\n",
        "PGPASSWORD": "",
    }
    files = {f"{conf}/pg_hba.conf": "", f"{conf}/conf.d/swarmhub.conf": ""}
    ctx = gradebook_ctx(tmp_path)
    again = declared(gradebook.apply(ctx, view_of(answering("hub", ("hub",), done, files))))  # type: ignore[arg-type]
    assert not [i for i in again if isinstance(i, Change)], again
    changed = {f"{conf}/pg_hba.conf": "content", f"{conf}/conf.d/swarmhub.conf": ""}
    host = answering("hub", ("hub",), done, changed)
    items = declared(gradebook.apply(ctx, view_of(host)))  # type: ignore[arg-type]
    changes = [i for i in items if isinstance(i, Change)]
    assert len(changes) == 1 and "postgresql@17-main restarted" in changes[0].message
    command = gradebook.role_sql_command("/srv/x/secrets/gradebook_password", "nbgrader_data8")
    assert command.startswith("pw=$(cat ") and 'printf "' in command  # a builtin, not argv


def test_only_graders_servers_pass_to_the_gradebook(tmp_path: Path) -> None:
    from swarmhub.steps import firewall

    with_course = settings.load(env_file(tmp_path, "COURSE_ID=data8\n"))
    server = hub.server_firewall(with_course)
    assert "tcp dport 5432 reject" in server
    assert "5432" not in hub.server_firewall(settings.load(env_file(tmp_path, "")))
    rules = firewall.render_rules(with_course, ("hub",), ["10.0.0.1"], ["10.0.0.2"])
    assert "5432" in rules
    start = (PROJECT_ROOT / "images" / "user" / "swarmhub-server-start").read_text()
    assert 'SWARMHUB_COURSE_ROLE:-}" = grader' in start and "tcp dport 5432 accept" in start


def test_the_gradebooks_rows_become_the_csv() -> None:
    from swarmhub.course import grades_command, grades_csv, parse_grades

    rows = parse_grades("alice|ps1|2|2\nbob|ps1|0|2\ncarol|ps1||2\n")
    assert rows == [
        ("alice", "ps1", 2.0, 2.0),
        ("bob", "ps1", 0.0, 2.0),
        ("carol", "ps1", None, 2.0),
    ]
    assert grades_csv(rows) == "Student,ps1 (2 pts)\nalice,2\nbob,0\ncarol,\n"
    assert grades_command("nbgrader_data8").startswith("runuser -u postgres -- psql")


def test_course_grades_without_a_course_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SWARMHUB_ENV": env_file(tmp_path, "")}
    run = subprocess.run(
        [str(PROJECT_ROOT / ".venv/bin/invoke"), "course.grades"],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert run.returncode == 1
    assert (
        run.stderr.strip() == "course.grades: no COURSE_ID in the env file: there is no gradebook"
    )

"""nbgrader across nodes with students kept apart (issue 20, docs/nbgrader.md), on a sandbox
with a course (COURSE_ID=data8) and its graders (prof and ta, the profiles file's group):
an instructor releases an assignment; two students whose servers run on different nodes
fetch, edit and submit it; the instructor collects; two graders on two nodes autograde at
once; the gradebook (PostgreSQL on the hub) holds both grades and the CSV has them. From
student A's kernel: B's submission cannot be listed, read or deleted, `nbgrader submit
--student B` does not land as B, the course's source, solutions and gradebook are out of
reach.

Its own sandbox: tests/unit/facts-g.env (a copy of tests/e2e/sandbox.env with COURSE_ID and
PROFILES_FILE): `SWARMHUB_E2E_ENV=tests/unit/facts-g.env .venv/bin/pytest -m e2e
tests/e2e/test_6c_nbgrader.py`; skipped without a COURSE_ID (the shared suite's sandbox.env).
Every user it makes is its own (prof, ta, alice6c, bob6c), and it starts by putting back what
an earlier run left (the `fresh_course` fixture: ps1's files, every inbound entry, the
gradebook's ps1 and students), so that it runs again on the same sandbox.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarmhub.course import grades_csv
from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import ADDRESSES, HUB, NODE_LIST, SETTINGS
from tests.e2e.test_7b_isolation import start_on

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not SETTINGS.course_id, reason="the sandbox has no COURSE_ID"),
]

COURSE = SETTINGS.course_id
EXCHANGE = f"/srv/nbgrader/exchange/{COURSE}"

# Python run in a kernel: a shell command's exit status and output, as one JSON line.
SHELL = """
import json, subprocess
def sh(command):
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd="/home/jovyan")
    return {"rc": done.returncode, "out": done.stdout[-3000:], "err": done.stderr[-3000:]}
"""

MAKE_ASSIGNMENT = r"""
import os, nbformat
from nbformat.v4 import new_notebook, new_code_cell
source = "/srv/nbgrader/course/source/ps1"
os.makedirs(source, exist_ok=True)
nb = new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
meta = {"schema_version": 3, "task": False}
nb.cells = [
    new_code_cell(
        "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
        metadata={"nbgrader": {**meta, "grade": False, "grade_id": "square", "locked": False,
                               "solution": True}},
    ),
    new_code_cell(
        "assert square(3) == 9",
        metadata={"nbgrader": {**meta, "grade": True, "grade_id": "test_square", "locked": True,
                               "points": 2, "solution": False}},
    ),
]
nbformat.write(nb, f"{source}/ps1.ipynb")
"""


def shell(who: Student, *commands: str, timeout: float = 300) -> list[dict]:
    code = SHELL + f"print(json.dumps([sh(c) for c in {list(commands)!r}]))"
    return json.loads(who.run_code(code, timeout=timeout).strip().splitlines()[-1])


def ok(who: Student, *commands: str, timeout: float = 300) -> list[dict]:
    answers = shell(who, *commands, timeout=timeout)
    for command, answer in zip(commands, answers, strict=True):
        assert answer["rc"] == 0, (who.name, command, answer)
    return answers


def answer_with(body: str) -> str:
    """Shell: the fetched notebook's answer cell replaced by ``body``."""
    source = "def square(x):\n    " + body
    edit = (
        "import nbformat; p = 'ps1/ps1.ipynb'; nb = nbformat.read(p, 4); "
        f"nb.cells[0].source = {source!r}; nbformat.write(nb, p)"
    )
    return f"python3 -c {shlex.quote(edit)}"


@pytest.fixture(scope="module")
def people(cluster: Path) -> dict[str, Student]:
    one, two = NODE_LIST[0], NODE_LIST[1]
    return {
        "prof": start_on(cluster, "prof", one),
        "ta": start_on(cluster, "ta", two),
        "alice": start_on(cluster, "alice6c", one),
        "bob": start_on(cluster, "bob6c", two),
    }


# What a run leaves, put back before the next (a failed run too: done first, not last). Each
# through the server that may: a student empties her own inbound (read-only to graders) and
# nbgrader's cache of her submissions in her home (the forged bob6c+ps1 one among them); the
# grader the course, the graders' exchange and the gradebook's ps1 and students (nbgrader's
# own `db ... remove`; missing ones are no error).
STUDENT_RESET = (
    f"rm -rf ps1 .local/share/jupyter/nbgrader_cache/{COURSE} && "
    f"find {EXCHANGE}/inbound -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +"
)
GRADER_RESET = (
    "cd /srv/nbgrader/course && rm -rf source/ps1 release/ps1 submitted autograded feedback "
    f"{EXCHANGE}/outbound/ps1 && "
    f"find {EXCHANGE}/inbound {EXCHANGE}/feedback -mindepth 1 -maxdepth 1 -exec rm -rf {{}} + && "
    "{ nbgrader db assignment remove ps1 --force || true; } && "
    "{ nbgrader db student remove alice6c --force || true; } && "
    "{ nbgrader db student remove bob6c --force || true; } && "
    "nbgrader db student list && nbgrader db assignment list"
)


@pytest.fixture(scope="module")
def fresh_course(people: dict[str, Student]) -> dict[str, Student]:
    for who in (people["alice"], people["bob"]):
        ok(who, STUDENT_RESET)
    listed = ok(people["prof"], GRADER_RESET)[0]["out"]
    assert "alice6c" not in listed and "bob6c" not in listed and "ps1" not in listed, listed
    return people


def assert_assignment_list_and_validate(student: Student) -> None:
    """The student's server serves nbgrader's assignment list (ps1 fetched and submitted)
    and validates a notebook, as JupyterLab's nbgrader panel and button ask them."""
    server = f"{student.base_url}/user/{student.name}"
    xsrf = {"X-XSRFToken": student._xsrf(f"/user/{student.name}/")}
    listed = student.http.get(f"{server}/assignments", params={"course_id": COURSE}, timeout=60)
    assert listed.status_code == 200 and listed.json()["success"], listed.text[:300]
    assert "ps1" in {a["assignment_id"] for a in listed.json()["value"]}, listed.text[:300]
    version = student.http.get(f"{server}/nbgrader_version", params={"version": "0"}, timeout=30)
    assert version.status_code == 200 and not version.json()["success"], version.text[:300]
    checked = student.http.post(
        f"{server}/assignments/validate", data={"path": "ps1/ps1.ipynb"}, headers=xsrf, timeout=120
    )
    assert checked.status_code == 200 and checked.json()["success"], checked.text[:300]


def test_release_submit_collect_autograde_across_nodes(
    cluster: Path, fresh_course: dict[str, Student]
) -> None:
    prof, ta, alice, bob = (fresh_course[k] for k in ("prof", "ta", "alice", "bob"))
    prof.run_code(MAKE_ASSIGNMENT)
    ok(
        prof,
        "cd /srv/nbgrader/course && nbgrader db student add alice6c && "
        "nbgrader db student add bob6c",
        "cd /srv/nbgrader/course && nbgrader generate_assignment ps1 --force",
        "cd /srv/nbgrader/course && nbgrader release_assignment ps1 --force",
    )
    # the students fetch on their own nodes, answer (bob wrongly) and submit
    for who, body in ((alice, "return x * x"), (bob, "return x + x")):
        ok(who, "rm -rf ps1 && nbgrader fetch_assignment ps1", answer_with(body))
        ok(who, "nbgrader submit ps1")
    # nbgrader's student extensions, loaded at their first request (swarmhub_nbgrader_lazy):
    # the assignment list JupyterLab shows, and its Validate button, through the proxy
    assert_assignment_list_and_validate(alice)

    # --- from alice's kernel: nothing of bob's, nothing of the course's ---
    seen = shell(
        alice,
        f"ls -A {EXCHANGE}/inbound",
        "ls /srv/nbgrader/submissions /srv/nbgrader/course /srv/nbgrader/course/source",
        "find /srv /home /tmp -path '*bob6c+ps1*' 2>/dev/null | head -n1",
        f"touch {EXCHANGE}/outbound/ps1/forged",
        "nbgrader submit ps1 --student bob6c",
        "env | grep -c NBGRADER_DB_URL",
        f"timeout 5 bash -c 'echo > /dev/tcp/{ADDRESSES[HUB]}/5432'",
    )
    inbound, course, found, outbound, forged, db_env, db_port = seen
    entries = inbound["out"].splitlines()  # names hold spaces: one a line
    assert inbound["rc"] == 0 and entries, inbound
    assert all(entry.startswith("alice6c+ps1+") for entry in entries), inbound
    assert course["rc"] != 0 and "No such file" in course["err"], course
    assert "bob6c+ps1" not in found["out"] and "bob" not in found["out"], found
    assert outbound["rc"] != 0 and "Read-only" in outbound["err"], outbound
    assert forged["rc"] == 0, forged  # nbgrader writes it ... into alice's own directory
    assert db_env["out"].strip() == "0", db_env
    assert db_port["rc"] != 0, db_port  # rejected by her server's own firewall

    # --- the graders collect: the forged one refused, bob's own kept ---
    collect = shell(prof, "swarmhub-collect-submissions")[0]
    assert collect["rc"] == 3 and "refused alice6c/bob6c+ps1" in collect["err"], collect
    assert "2 new submission(s) copied, 2 kept, 1 refused" in collect["out"], collect
    ok(prof, "cd /srv/nbgrader/course && nbgrader collect ps1 --update")
    answers = ok(
        prof,
        "cd /srv/nbgrader/course && cat submitted/bob6c/ps1/ps1.ipynb | grep -c 'x + x'",
    )
    assert answers[0]["out"].strip() == "1"  # bob's own answer, not alice's forgery

    # --- two graders at once, on two nodes ---
    def grade(who: Student, student: str) -> list[dict]:
        return ok(
            who,
            f"cd /srv/nbgrader/course && nbgrader autograde ps1 --student {student} --force",
            timeout=600,
        )

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(grade, prof, "alice6c"), pool.submit(grade, ta, "bob6c")]
        for future in runs:
            future.result()
    scores = shell(
        prof,
        'python3 -c "import json, os; from nbgrader.api import Gradebook; '
        f"gb = Gradebook(os.environ['NBGRADER_DB_URL'], course_id='{COURSE}'); "
        "print(json.dumps([[s.student.id, s.assignment.name, s.score, s.max_score] "
        "for s in gb.assignment_submissions('ps1')])); gb.close()\"",
        "cd /srv/nbgrader/course && nbgrader export --to /tmp/grades.csv && cat /tmp/grades.csv",
    )
    assert scores[0]["rc"] == 0, scores[0]
    rows = sorted(tuple(r) for r in json.loads(scores[0]["out"].strip().splitlines()[-1]))
    assert rows == [("alice6c", "ps1", 2.0, 2.0), ("bob6c", "ps1", 0.0, 2.0)], rows
    assert grades_csv(rows) == "Student,ps1 (2 pts)\nalice6c,2\nbob6c,0\n"
    assert scores[1]["rc"] == 0 and "alice6c" in scores[1]["out"] and "bob6c" in scores[1]["out"]

    # --- the grades out, from this machine: `invoke course.grades` reads the gradebook ---
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "grades.csv"
        done = run("invoke", "course.grades", "--out", str(path), env_file=cluster, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 student(s), 1 assignment(s)" in done.stdout, done.stdout
        assert path.read_text() == "Student,ps1 (2 pts)\nalice6c,2\nbob6c,0\n"


def test_a_student_cannot_read_the_gradebook_or_another_students_feedback(
    fresh_course: dict[str, Student],
) -> None:
    bob = fresh_course["bob"]
    seen = shell(
        bob, "ls /srv/nbgrader/students /srv/nbgrader/course/gradebook.db", "ls -A /srv/nbgrader"
    )
    assert seen[0]["rc"] != 0, seen[0]
    assert seen[1]["out"].split() == ["exchange"], seen[1]

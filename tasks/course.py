"""course: the nbgrader course's grades (docs/nbgrader.md)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, task
from invoke.exceptions import Exit

from swarmhub import settings as env_settings
from swarmhub.course import grades_command, grades_csv, parse_grades
from swarmhub.errors import SwarmhubError
from swarmhub.observe.remote import open_host
from swarmhub.steps.gradebook import database_name


@task(help={"out": "the CSV file to write; default grades-<COURSE_ID>.csv"})
def grades(c: Context, out: str = "") -> None:
    """Write the course's grades from the gradebook as a CSV the LMS gradebook imports.

    One row a student, one column an assignment (its points in the header); a missing
    submission is an empty cell. Reads the gradebook on the hub (gradebook.database); changes
    nothing. LTI grade passback is not done.
    """
    settings = env_settings.load()
    if not settings.course_id:
        raise Exit("course.grades: no COURSE_ID in the env file: there is no gradebook", 1)
    try:
        hub = open_host(settings, settings.hub_host)
    except SwarmhubError as error:
        raise Exit(f"course.grades: {error.reason}", 1) from None
    try:
        answer = hub.probe(grades_command(database_name(settings)))
    finally:
        hub.connection.close()
    if not answer.ok:
        why = (answer.stderr.strip().splitlines() or ["no answer"])[-1]
        raise Exit(f"course.grades: {settings.hub_host}: cannot read the gradebook: {why}", 1)
    rows = parse_grades(answer.stdout)
    path = Path(out or f"grades-{settings.course_id}.csv")
    path.write_text(grades_csv(rows))
    students = len({row[0] for row in rows})
    print(
        f"course.grades: {students} student(s), {len({r[1] for r in rows})} assignment(s): {path}"
    )

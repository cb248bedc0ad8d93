"""The course (COURSE_ID, docs/nbgrader.md): what `status` says of it, and the grades' CSV
the LMS gradebook imports."""

from __future__ import annotations

import csv
import io
import shlex
from collections.abc import Iterable

from swarmhub.settings import Settings

EXCHANGE = "per-student mounts"


def course_line(settings: Settings) -> str:
    """One line naming the course and its exchange; empty without a course."""
    if not settings.course_id:
        return ""
    where = f"{settings.homes_dir}/.course/{settings.course_id}"
    return (
        f"course: {settings.course_id} (nbgrader; exchange: {EXCHANGE} of {where} on "
        f"{settings.storage_name}; graders: group {settings.graders_group})"
    )


def grades_csv(rows: Iterable[tuple[str, str, float | None, float]]) -> str:
    """(student, assignment, score or None, max score) rows as the CSV an LMS gradebook
    imports: one row a student, one column an assignment (its points), in name order; a
    missing submission is an empty cell, not a zero."""
    scores: dict[str, dict[str, float | None]] = {}
    maximum: dict[str, float] = {}
    for student, assignment, score, max_score in rows:
        scores.setdefault(student, {})[assignment] = score
        maximum[assignment] = max_score
    assignments = sorted(maximum)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Student", *(f"{a} ({maximum[a]:g} pts)" for a in assignments)])
    for student in sorted(scores):
        cells = [scores[student].get(a) for a in assignments]
        writer.writerow([student, *("" if s is None else f"{s:g}" for s in cells)])
    return out.getvalue()


# nbgrader's schema (nbgrader.api, 0.9): a submission's score is the sum of its grades (the
# manual score where a grader gave one, else the automatic one, plus extra credit); an
# assignment's maximum the sum of its grade cells' points. Every student of the gradebook
# with every assignment: no submission is NULL (an empty cell, not a zero).
GRADES_SQL = """
SELECT st.id, a.name,
  CASE WHEN sa.id IS NULL THEN NULL ELSE (
    SELECT COALESCE(SUM(COALESCE(g.manual_score, g.auto_score, 0)
                        + COALESCE(g.extra_credit, 0)), 0)
    FROM grade g JOIN submitted_notebook sn ON g.notebook_id = sn.id
    WHERE sn.assignment_id = sa.id) END,
  (SELECT COALESCE(SUM(gc.max_score), 0)
   FROM grade_cells gc JOIN base_cell bc ON gc.id = bc.id
   JOIN notebook n ON bc.notebook_id = n.id WHERE n.assignment_id = a.id)
FROM student st CROSS JOIN assignment a
LEFT JOIN submitted_assignment sa ON sa.student_id = st.id AND sa.assignment_id = a.id
"""


def grades_command(database: str) -> str:
    """psql on the hub, as postgres (peer: no password), one `|`-separated row a line."""
    sql = " ".join(GRADES_SQL.split())
    return (
        f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {shlex.quote(database)} "
        f"-At -F '|' -c {shlex.quote(sql)}"
    )


def parse_grades(output: str) -> list[tuple[str, str, float | None, float]]:
    rows = []
    for line in output.splitlines():
        if not line.strip():
            continue
        student, assignment, score, maximum = line.split("|")
        rows.append((student, assignment, float(score) if score else None, float(maximum)))
    return rows

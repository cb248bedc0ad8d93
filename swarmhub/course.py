"""The course (COURSE_ID, docs/nbgrader.md): what `status` says of it, and the grades' CSV
the LMS gradebook imports."""

from __future__ import annotations

import csv
import io
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

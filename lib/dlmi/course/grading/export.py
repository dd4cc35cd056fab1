"""``dlmi-course export``: a CSV of grades per student and unit, with the outcome and its reason,
and nbgrader's own CSV export next to it.

Scores come from the gradebook (so manual grades entered in formgrader count); the outcome
and the reason come from ``autograded/<student>/<unit>/grading.json``. A student without a
submission of a unit appears with outcome ``missing``.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from ..layout import Course
from .autograde import GradingError
from .outcome import GRADED, MISSING, read_record
from .settings import course_settings, sqlite_path

COLUMNS = ["student", "unit", "score", "max_score", "outcome", "reason"]


def export(course: Course, to: Path, units=None, nbgrader_csv: Path | None = None, out=None) -> list[dict]:
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.plugins import CsvExportPlugin

    out = out or sys.stdout
    course_id, db_url = course_settings(course)
    path = sqlite_path(db_url)
    if path is not None and not path.is_file():
        raise GradingError(f"no gradebook at {path}: run `dlmi-course autograde` first")
    wanted = course.resolve_units(units) if units else None
    rows = []
    with Gradebook(db_url, course_id) as gb:
        assignments = [a.name for a in gb.assignments if wanted is None or a.name in wanted]
        if wanted:
            absent = [u for u in wanted if u not in assignments]
            if absent:
                raise GradingError(f"the gradebook has no grades for {', '.join(absent)}")
        students = sorted(s.id for s in gb.students)
        for unit in sorted(assignments):
            for student in students:
                try:
                    sub = gb.find_submission(unit, student)
                except MissingEntry:
                    rows.append({"student": student, "unit": unit, "score": 0, "max_score": None,
                                 "outcome": MISSING, "reason": "no submission"})
                    continue
                record = read_record(course.root / "autograded" / student / unit) or {}
                rows.append({"student": student, "unit": unit, "score": sub.score, "max_score": sub.max_score,
                             "outcome": record.get("outcome", GRADED), "reason": record.get("reason", "")})
        to = Path(to)
        to.parent.mkdir(parents=True, exist_ok=True)
        with open(to, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if nbgrader_csv is not None:
            Path(nbgrader_csv).parent.mkdir(parents=True, exist_ok=True)
            CsvExportPlugin(to=str(nbgrader_csv), assignment=assignments).export(gb)
    print(f"wrote {len(rows)} rows to {to}" + (f" and nbgrader's export to {nbgrader_csv}" if nbgrader_csv else ""),
          file=out)
    return rows

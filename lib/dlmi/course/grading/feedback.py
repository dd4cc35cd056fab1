"""``dlmi-course feedback``: nbgrader's generate_feedback for each autograded student.

The HTML is nbgrader's own. What we add reaches it through the autograded notebook: a first cell
that names the outcome and the reason when a submission was not simply graded (a timeout, the
memory cap, a crash, a malformed file, a cell matched or put back), and the test cells' own
error outputs ("this test cell was not run to its end: ..."). ``grading.json`` travels with it.
"""
from __future__ import annotations

import sys

from ..layout import Course
from .autograde import GradingError
from .outcome import fmt_score, read_record, table
from .settings import course_settings, nbgrader_api


def feedback(course: Course, unit: str, students=None, out=None) -> list[dict]:
    out = out or sys.stdout
    unit = course.resolve_units([unit])[0]
    course_id, db_url = course_settings(course)
    graded_root = course.root / "autograded"
    if not graded_root.is_dir():
        raise GradingError(f"{graded_root} does not exist: run `dlmi-course autograde {unit}` first")
    graded = sorted(p.name for p in graded_root.iterdir() if (p / unit).is_dir())
    unknown = [s for s in (students or []) if s not in graded]
    if unknown:
        raise GradingError(f"no autograded {unit} for student(s) {', '.join(unknown)}; "
                           f"autograded: {', '.join(graded) or 'none'}")
    chosen = list(dict.fromkeys(students)) if students else graded
    if not chosen:
        raise GradingError(f"nobody's {unit} is autograded yet")
    api = nbgrader_api(course.root, db_url, course_id)
    rows = []
    for student in _progress(chosen):
        result = api.generate_feedback(unit, student, force=True)
        record = read_record(graded_root / student / unit) or {}
        files = sorted((course.root / "feedback" / student / unit).glob("*.html"))
        log = "" if result.get("success") else (result.get("error") or result.get("log") or "")
        error = log.strip().splitlines()[-1:]
        rows.append({"student": student, "ok": bool(result.get("success")) and bool(files),
                     "files": [str(f) for f in files], "outcome": record.get("outcome", "graded"),
                     "score": record.get("score"), "max_score": record.get("max_score"),
                     "error": error[0] if error else ""})
    print(table([[r["student"], fmt_score(r["score"], r["max_score"] or 0), r["outcome"],
                  ", ".join(p.rsplit("/", 1)[-1] for p in r["files"]) if r["ok"] else f"FAILED: {r['error']}"]
                 for r in rows], ["student", "score", "outcome", "feedback"]), file=out)
    print(f"\nfeedback in {course.root / 'feedback'}/<student>/{unit}/", file=out)
    return rows


def _progress(items):
    from tqdm.auto import tqdm

    return tqdm(items, desc="feedback", unit="student", file=sys.stderr)

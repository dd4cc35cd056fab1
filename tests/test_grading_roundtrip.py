"""The grading round trip through nbgrader's own commands and gradebook.

The solution notebook submitted as a student scores full marks, the blank release scores zero,
and a partly correct submission scores strictly in between. Submissions are never modified.
"""
import hashlib
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbgrader.api import Gradebook

from dlmi.course import Course
from dlmi.course.release import nbgrader_command, nbgrader_env

pytestmark = pytest.mark.slow


def _nbgrader(course_root, *args):
    proc = subprocess.run(nbgrader_command(*args, f"--CourseDirectory.root={course_root}",
                                           f"--CourseDirectory.db_url=sqlite:///{course_root / 'gradebook.db'}"),
                          cwd=course_root, capture_output=True, text=True, env=nbgrader_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _assignments(root):
    course = Course(root)
    for unit in course.units():
        for nb in course.notebooks(unit):
            if nb.is_assignment:
                yield unit, nb.name


def _partial(solution_path, release_path, keep_first: int):
    """The release with only the first ``keep_first`` solution cells filled in from the solution."""
    sol = nbformat.read(solution_path, as_version=4)
    rel = nbformat.read(release_path, as_version=4)
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source for c in sol.cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    filled = 0
    for cell in rel.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and filled < keep_first:
            cell.source = "\n".join(line for line in solved[meta["grade_id"]].splitlines()
                                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
            filled += 1
    return rel


@pytest.mark.parametrize("unit,notebook", list(_assignments(__import__("pathlib").Path(__file__).resolve().parents[1])))
def test_solution_full_blank_zero_partial_between(unit, notebook, root, tmp_path):
    shutil.copytree(root / "solutions" / unit, tmp_path / "source" / unit)
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'dlmi'\n"
        "c.Execute.timeout = 300  # per cell; nbgrader's 30 s default is flaky on a busy 2-core machine\n")
    _nbgrader(tmp_path, "generate_assignment", unit, "--force")
    release_nb = tmp_path / "release" / unit / notebook
    students = {
        "solution": (root / "solutions" / unit / notebook).read_bytes(),
        "blank": release_nb.read_bytes(),
        "partial": nbformat.writes(_partial(root / "solutions" / unit / notebook, release_nb, keep_first=1)).encode(),
    }
    digests = {}
    for student, content in students.items():
        folder = tmp_path / "submitted" / student / unit
        folder.mkdir(parents=True)
        (folder / notebook).write_bytes(content)
        digests[student] = hashlib.sha256(content).hexdigest()
    _nbgrader(tmp_path, "autograde", unit, "--force")

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission_notebook(notebook.removesuffix(".ipynb"), unit, s).score,
                      gb.find_submission_notebook(notebook.removesuffix(".ipynb"), unit, s).max_score)
                  for s in students}
    max_score = scores["solution"][1]
    assert max_score > 0
    assert scores["solution"][0] == max_score, scores
    assert scores["blank"][0] == 0, scores
    assert 0 < scores["partial"][0] < max_score, scores
    for student in students:  # grading never modifies a submission
        data = (tmp_path / "submitted" / student / unit / notebook).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digests[student], f"{student}'s submission was modified"

"""Release: ``course/<unit>`` is what ``nbgrader generate_assignment`` makes of ``solutions/<unit>``.

We call nbgrader's own command (not a re-implementation) with the course directories spelled out,
so the result is the same whoever runs it and from wherever. The gradebook used for a release is
a throw-away one unless ``db_url`` is given: releasing must not depend on, or change, grades.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from .layout import Course


class ReleaseError(RuntimeError):
    pass


def check_sources(course: Course, unit: str) -> None:
    """Refuse inconsistent nbgrader metadata before nbgrader does something surprising with it."""
    seen = {}
    for nb_path in sorted((course.solutions / unit).glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for index, cell in enumerate(nb.cells):
            meta = cell.metadata.get("nbgrader")
            if not meta:
                continue
            where = f"{nb_path.relative_to(course.root)} cell {index}"
            grade_id = meta.get("grade_id")
            if not grade_id:
                raise ReleaseError(f"{where}: nbgrader cell without a grade_id")
            key = (nb_path.name, grade_id)
            if key in seen:
                raise ReleaseError(f"{where}: duplicate grade_id {grade_id!r} (also {seen[key]})")
            seen[key] = where
            if meta.get("grade") and not isinstance(meta.get("points"), (int, float)):
                raise ReleaseError(f"{where}: graded cell {grade_id!r} has no points")
            if meta.get("grade") and meta.get("points", 0) <= 0:
                raise ReleaseError(f"{where}: graded cell {grade_id!r} must have points > 0")
            if meta.get("solution") and cell.cell_type == "code" and "### BEGIN SOLUTION" not in cell.source:
                raise ReleaseError(f"{where}: solution cell {grade_id!r} has no ### BEGIN SOLUTION region")


def nbgrader_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nbgrader", *args]


def nbgrader_env() -> dict:
    """The environment for nbgrader subprocesses: it calls ``alembic`` and ``jupyter`` by name, so the
    folder of this interpreter (the venv's bin/) must be on PATH even when the venv is not activated."""
    import os

    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def generate(course: Course, unit: str, release_dir: Path, db_url: str | None = None) -> None:
    """Run ``nbgrader generate_assignment unit`` writing into ``release_dir/unit``."""
    check_sources(course, unit)
    with tempfile.TemporaryDirectory(prefix="dlmi-release-") as tmp:
        db_url = db_url or f"sqlite:///{Path(tmp) / 'gradebook.db'}"
        cmd = nbgrader_command(
            "generate_assignment", unit, "--force",
            f"--CourseDirectory.root={course.root}",
            "--CourseDirectory.source_directory=solutions",
            f"--CourseDirectory.release_directory={release_dir}",
            f"--CourseDirectory.db_url={db_url}",
            "--log-level=WARN",
        )
        proc = subprocess.run(cmd, cwd=course.root, capture_output=True, text=True, env=nbgrader_env())
        if proc.returncode != 0:
            raise ReleaseError(f"nbgrader generate_assignment {unit} failed:\n{proc.stdout}\n{proc.stderr}")


def release(course: Course, units=None, into: Path | None = None) -> list[Path]:
    """Regenerate the student release of ``units`` (all by default) into ``into`` (default course/).

    The old release folder of a unit is replaced as a whole, so files deleted from solutions/
    disappear from course/ too.
    """
    into = Path(into) if into is not None else course.release
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in course.resolve_units(units):
        target = into / unit
        with tempfile.TemporaryDirectory(prefix="dlmi-release-") as tmp:
            generate(course, unit, Path(tmp))
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(Path(tmp) / unit, target)
        written.append(target)
    return written

"""The grading bundle of a unit: everything a per-submission job needs, made once per run.

    BUNDLE/gradebook.db        a fresh gradebook holding only this assignment (nbgrader's
                               generate_assignment wrote it: no student, no grade in it)
    BUNDLE/release/<unit>/     the release made at the same time (Realign matches cells against it)
    BUNDLE/source/<unit>/      the unit's non-notebook files (data a notebook reads); no solutions
    BUNDLE/nbgrader_config.py  the course's nbgrader configuration
    BUNDLE/paths.json          what the sandbox may read (the system, Python, the library)
    BUNDLE/guard.json          what the in-kernel guard protects, read off the instructor's cells

Jobs only read it; it holds nothing a student may not see except the hidden tests inside the
gradebook, which no sandboxed kernel can reach.
"""
from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import nbformat

from ..layout import Course
from ..release import ReleaseError, check_sources
from .settings import nbgrader_api

ALWAYS_GUARDED = ("math",)
# Of the standard library, only modules a test might compare or compute with are guarded; the
# rest (sys, os, subprocess, ...) change by themselves and are no shortcut to passing a test.
STDLIB_GUARDED = {"math", "cmath", "statistics", "operator", "functools", "itertools", "numbers",
                  "decimal", "fractions", "random", "unittest", "collections"}
EXTRA_MODULES = {"torch": ("torch.testing", "numpy", "numpy.testing"), "numpy": ("numpy.testing",)}
EXTRA_CLASSES = {"torch": ("torch.Tensor",)}


def assignment_notebooks(course: Course, unit: str) -> list[str]:
    """File names of the unit's graded notebooks (lectures are never executed by the grader)."""
    names = [nb.name for nb in course.notebooks(unit) if nb.is_assignment]
    if not names:
        raise ValueError(f"unit {unit!r} has no graded notebook (no nbgrader cells in solutions/{unit})")
    return names


def _imports(source: str) -> list[tuple[str, str, str | None]]:
    """(name bound, module, attribute) for the import statements of a cell."""
    clean = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(clean)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found.append((alias.asname, alias.name, None))
                else:
                    found.append((alias.name.split(".")[0], alias.name.split(".")[0], None))
                    found.append(("", alias.name, None))  # protect the submodule too, bind nothing
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    found.append((alias.asname or alias.name, node.module, alias.name))
    return found


def guard_plan(notebooks: list[Path]) -> dict:
    """Modules, classes and names the guard protects: those the instructor's cells import."""
    modules, classes, rebind = list(ALWAYS_GUARDED), [], {}
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or meta.get("solution") or not (meta.get("locked") or meta.get("grade")):
                continue
            for name, module, attr in _imports(cell.source):
                root = module.split(".")[0]
                if root not in sys.stdlib_module_names or root in STDLIB_GUARDED:
                    modules.append(module)
                modules.extend(EXTRA_MODULES.get(root, ()))
                classes.extend(EXTRA_CLASSES.get(root, ()))
                if name:
                    rebind[name] = [module, attr]
    return {"modules": list(dict.fromkeys(modules)), "classes": list(dict.fromkeys(classes)), "rebind": rebind}


def generate(course: Course, unit: str, release_dir: Path, db_url: str, course_id: str) -> None:
    """nbgrader's generate_assignment of ``solutions/<unit>`` into ``release_dir/<unit>``, recording
    the assignment in the gradebook ``db_url`` (in this process, like ``dlmi-course release``
    does in a subprocess)."""
    check_sources(course, unit)
    api = nbgrader_api(course.root, db_url, course_id, source_directory="solutions", release_directory=release_dir)
    result = api.generate_assignment(unit, force=True, create=True)
    if not result["success"]:
        raise ReleaseError(f"nbgrader generate_assignment {unit} failed:\n{result.get('error') or result.get('log')}")


def build(course: Course, unit: str, folder: Path, expose: list[str], course_id: str) -> Path:
    """Make the bundle of ``unit`` in ``folder`` (which must not exist)."""
    folder = Path(folder)
    folder.mkdir(parents=True, mode=0o700)
    generate(course, unit, folder / "release", f"sqlite:///{folder / 'gradebook.db'}", course_id)
    source = folder / "source" / unit
    source.mkdir(parents=True)
    for item in (course.solutions / unit).iterdir():
        if item.is_file() and item.suffix != ".ipynb":
            shutil.copy2(item, source / item.name)
    if (course.root / "nbgrader_config.py").is_file():
        shutil.copy2(course.root / "nbgrader_config.py", folder / "nbgrader_config.py")
    (folder / "paths.json").write_text(json.dumps({"expose": expose}, indent=1))
    notebooks = [course.solutions / unit / name for name in assignment_notebooks(course, unit)]
    (folder / "guard.json").write_text(json.dumps({unit: guard_plan(notebooks)}, indent=1))
    return folder

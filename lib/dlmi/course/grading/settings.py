"""The course's nbgrader settings, and nbgrader's API object built from them.

Every grading command reads ``nbgrader_config.py`` the way nbgrader does (so ``course_id``,
``db_url`` and the instructor's other settings apply) and then pins the course directories,
so that the result does not depend on the folder the command is run from.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..layout import Course


def load_config(folder: Path):
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    cfg = Config()
    if (Path(folder) / "nbgrader_config.py").is_file():
        cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config())
    return cfg


def course_settings(course: Course) -> tuple[str, str]:
    """(course_id, db_url) as nbgrader reads them for this course."""
    cd = load_config(course.root).get("CourseDirectory", {})
    course_id = cd.get("course_id", "default_course")
    db_url = cd.get("db_url", "") or f"sqlite:///{course.root / 'gradebook.db'}"
    return course_id, db_url


def sqlite_path(db_url: str) -> Path | None:
    return Path(db_url[len("sqlite:///"):]) if db_url.startswith("sqlite:///") else None


def put_python_on_path() -> None:
    """nbgrader runs ``alembic`` by name when it creates a gradebook: this interpreter's bin/ (the
    venv's) must be on PATH even when the venv is not activated (see release.nbgrader_env). It
    asks alembic for the same constant (its schema version) in a new process every time; once
    per process is enough."""
    import functools

    from nbgrader import api

    from ..release import nbgrader_env

    os.environ["PATH"] = nbgrader_env()["PATH"]
    if not hasattr(api.get_alembic_version, "cache_info"):
        api.get_alembic_version = functools.lru_cache(maxsize=None)(api.get_alembic_version)


def nbgrader_api(root: Path, db_url: str, course_id: str, config_folder: Path | None = None, **directories):
    """nbgrader's ``NbGraderAPI`` for the course at ``root`` (in this process: no subprocess)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    put_python_on_path()
    cfg = load_config(config_folder or root)
    cfg.CourseDirectory.root = str(root)
    cfg.CourseDirectory.db_url = db_url
    cfg.CourseDirectory.course_id = course_id
    for name, value in directories.items():
        cfg.CourseDirectory[name] = str(value)
    cfg.NbGrader.logfile = ""
    return NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)

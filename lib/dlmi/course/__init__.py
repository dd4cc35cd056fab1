"""The instructor side of the course: find the course, release it, run it, grade it.

Everything here drives nbgrader and nbclient through their own APIs; the command-line entry
point is ``dlmi-course`` (:mod:`dlmi.course.cli`).
"""
from .layout import Course, Notebook, find_root  # noqa: F401  (nbformat: a Jupyter dependency)

__all__ = ["Course", "Notebook", "find_root"]

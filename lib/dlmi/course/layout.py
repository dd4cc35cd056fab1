"""Where things are: units in ``solutions/``, their release in ``course/``, notebook kinds.

A unit is a folder ``solutions/NN_name``. Its notebooks are *lectures* (no nbgrader cells) or
*assignments* (at least one cell with nbgrader metadata). ``course/NN_name`` is generated from
it by ``nbgrader generate_assignment`` and never edited by hand.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nbformat

UNIT_PATTERN = re.compile(r"^\d\d_[a-z0-9_]+$")


def find_root(start: str | Path | None = None) -> Path:
    """The course root: the nearest folder at or above ``start`` with nbgrader_config.py and solutions/."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").is_file() and (folder / "solutions").is_dir():
            return folder
    raise FileNotFoundError(f"no course root (a folder with nbgrader_config.py and solutions/) at or above {here}")


@dataclass(frozen=True)
class Notebook:
    unit: str
    path: Path  # in solutions/

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_assignment(self) -> bool:
        nb = nbformat.read(self.path, as_version=4)
        return any("nbgrader" in cell.metadata for cell in nb.cells)

    @property
    def kind(self) -> str:
        return "assignment" if self.is_assignment else "lecture"


class Course:
    """The course folder: ``Course(root).units()``, ``.notebooks(unit)``, ``.repository_url``."""

    def __init__(self, root: str | Path | None = None):
        self.root = find_root(root) if root is None else Path(root).resolve()
        if not (self.root / "solutions").is_dir():
            raise FileNotFoundError(f"{self.root} has no solutions/ folder; is it the course root?")
        self.solutions = self.root / "solutions"
        self.release = self.root / "course"

    def units(self) -> list[str]:
        return sorted(p.name for p in self.solutions.iterdir() if p.is_dir() and UNIT_PATTERN.match(p.name))

    def resolve_units(self, names=None) -> list[str]:
        """Units by full name or by number prefix ("01"); all units when ``names`` is empty."""
        units = self.units()
        if not names:
            return units
        chosen = []
        for name in names:
            match = [u for u in units if u == name or u.split("_", 1)[0] == name]
            if not match:
                raise ValueError(f"unknown unit {name!r}; the course has: {', '.join(units) or 'none'}")
            chosen.extend(m for m in match if m not in chosen)
        return chosen

    def notebooks(self, unit: str) -> list[Notebook]:
        folder = self.solutions / unit
        if not folder.is_dir():
            raise ValueError(f"unknown unit {unit!r}; the course has: {', '.join(self.units())}")
        # Lectures first, then assignments; each in name order (names carry the lecture order).
        nbs = [Notebook(unit, p) for p in sorted(folder.glob("*.ipynb"))]
        return sorted(nbs, key=lambda n: (n.is_assignment, n.name))

    @property
    def repository_url(self) -> str:
        data = tomllib.loads((self.root / "pyproject.toml").read_text())
        try:
            url = data["project"]["urls"]["Repository"]
        except KeyError as err:
            raise KeyError("pyproject.toml needs [project.urls] Repository = 'https://github.com/OWNER/REPO'") from err
        if not re.match(r"^https://github\.com/[^/]+/[^/]+$", url.rstrip("/")):
            raise ValueError(f"[project.urls] Repository must be https://github.com/OWNER/REPO, got {url!r}")
        return url.rstrip("/")

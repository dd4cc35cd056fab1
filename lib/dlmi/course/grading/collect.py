"""``dlmi-course collect``: submissions as an instructor gets them -> ``submitted/<student>/<unit>/``.

Accepted in the inbox folder (or given directly as one ``.zip``):

* a folder per student (``inbox/alice/...``), notebooks anywhere inside;
* a zip per student (``inbox/alice.zip``);
* an LMS bulk export: one zip whose top-level folders are the students (Moodle, Blackboard);
  a student's folder may itself hold a zip.

The student id is the folder or zip name, or the ``student`` group of ``--student-pattern``
matched against it (e.g. ``'_(?P<student>\\d+)_assignsubmission'`` for Moodle folders).

Every notebook is checked before it is laid out; one that is not valid JSON or not a valid
notebook is still copied byte for byte (so that ``autograde`` records it as *malformed* and it
shows in the grade table) and reported. Files that are not notebooks are reported and left
where they are. Archives are read in memory, never extracted: an entry that would land outside
the folder (``../``, an absolute path, a link) rejects the whole archive, as does one that is
too large (a zip bomb). Nothing in the inbox is modified, and an existing, different
``submitted/`` copy is kept unless ``--force``.
"""
from __future__ import annotations

import io
import re
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..layout import Course
from .autograde import STUDENT_ID, GradingError
from .bundle import assignment_notebooks
from .outcome import table

MAX_ARCHIVE_BYTES = 512 * 2**20
MAX_FILE_BYTES = 64 * 2**20
MAX_ENTRIES = 10_000
IGNORED_PARTS = {"__MACOSX", ".ipynb_checkpoints", ".DS_Store"}


class ArchiveRejected(Exception):
    pass


@dataclass
class Row:
    source: str
    student: str
    file: str
    status: str
    detail: str = ""


@dataclass
class Item:
    """A file of a student's submission, wherever it came from (folder or archive)."""

    path: str                  # shown in the report
    name: str                  # file name
    read: object = None        # () -> bytes; None for what is never read (links)
    kind: str = "file"         # file | zip (an archive in a student's folder) | link


def safe_entries(archive: zipfile.ZipFile, label: str) -> list[zipfile.ZipInfo]:
    """The archive's file entries, or ArchiveRejected if any entry could escape or is too big."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ArchiveRejected(f"{label}: {len(infos)} entries (more than {MAX_ENTRIES})")
    total = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise ArchiveRejected(f"{label}: entry {info.filename!r} points outside the folder (zip-slip)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveRejected(f"{label}: entry {info.filename!r} is a symbolic link")
        if info.file_size > MAX_FILE_BYTES:
            raise ArchiveRejected(f"{label}: entry {info.filename!r} is {info.file_size} bytes (over {MAX_FILE_BYTES})")
        total += info.file_size
        if total > MAX_ARCHIVE_BYTES:
            raise ArchiveRejected(f"{label}: more than {MAX_ARCHIVE_BYTES} bytes uncompressed")
    return [i for i in infos if not i.is_dir() and not IGNORED_PARTS & set(PurePosixPath(i.filename).parts)]


def _zip_items(data_or_path, label: str, depth: int = 0) -> list[Item]:
    """Items of an archive (and of the archives inside it, one level down)."""
    try:
        archive = zipfile.ZipFile(data_or_path if not isinstance(data_or_path, bytes) else io.BytesIO(data_or_path))
    except zipfile.BadZipFile:
        raise ArchiveRejected(f"{label}: not a zip archive") from None
    with archive:
        items = []
        for info in safe_entries(archive, label):
            inner = f"{label}:{info.filename}"
            if info.filename.lower().endswith(".zip") and depth == 0:
                items.extend(_zip_items(archive.read(info), inner, depth + 1))
            else:
                items.append(Item(inner, PurePosixPath(info.filename).name,
                                  lambda archive_path=data_or_path, n=info.filename: _read_member(archive_path, n)))
        return items


def _read_member(archive_path, name: str) -> bytes:
    source = archive_path if not isinstance(archive_path, bytes) else io.BytesIO(archive_path)
    with zipfile.ZipFile(source) as archive:
        return archive.read(name)


def _folder_items(folder: Path) -> list[Item]:
    items = []
    for path in sorted(folder.rglob("*")):
        if IGNORED_PARTS & set(path.relative_to(folder).parts) or path.is_dir():
            continue
        if path.is_symlink():
            items.append(Item(str(path), path.name, kind="link"))  # reported, never followed
        elif path.suffix.lower() == ".zip":
            items.append(Item(str(path), path.name, lambda p=path: p, kind="zip"))
        else:
            items.append(Item(str(path), path.name, lambda p=path: p.read_bytes()))
    return items


def _student_id(name: str, pattern: re.Pattern | None) -> str | None:
    stem = name[:-4] if name.lower().endswith(".zip") else name
    if pattern is not None:
        m = pattern.search(stem)
        if not m:
            return None
        stem = m.group("student")
    return stem if STUDENT_ID.match(stem) else None


def _submissions(inbox: Path, pattern) -> tuple[list[tuple[str, str, list[Item]]], list[Row]]:
    """(source label, student, items) for every submission in the inbox, and the problems found."""
    found, rows = [], []

    def add(label, name, items_fn):
        student = _student_id(name, pattern)
        if student is None:
            rows.append(Row(label, "?", "", "skipped", f"cannot read a student id from {name!r}"
                            + (" with --student-pattern" if pattern else "")))
            return
        try:
            found.append((label, student, items_fn()))
        except ArchiveRejected as err:
            rows.append(Row(label, student, "", "rejected", str(err)))

    if inbox.is_file() and inbox.suffix.lower() == ".zip":
        try:
            items = _zip_items(inbox, inbox.name)
        except ArchiveRejected as err:
            return [], [Row(str(inbox), "?", "", "rejected", str(err))]
        by_folder: dict[str, list[Item]] = {}
        for item in items:
            top = item.path.split(":", 1)[1].replace("\\", "/").split("/")[0]
            by_folder.setdefault(top, []).append(item)
        for top, its in sorted(by_folder.items()):
            if len(its) == 1 and its[0].path.endswith(top):  # a loose file at the top of the export
                rows.append(Row(its[0].path, "?", its[0].name, "skipped", "not inside a student's folder"))
                continue
            add(f"{inbox.name}:{top}", top, lambda its=its: its)
        return found, rows
    if not inbox.is_dir():
        raise GradingError(f"{inbox} is neither a folder nor a .zip file")
    for entry in sorted(inbox.iterdir()):
        if entry.name in IGNORED_PARTS or entry.name.startswith("."):
            continue
        if entry.is_symlink():
            rows.append(Row(str(entry), "?", entry.name, "skipped", "a symbolic link (not followed)"))
        elif entry.is_dir():
            add(str(entry), entry.name, lambda e=entry: _expand(_folder_items(e)))
        elif entry.suffix.lower() == ".zip":
            add(str(entry), entry.name, lambda e=entry: _zip_items(e, e.name))
        else:
            rows.append(Row(str(entry), "?", entry.name, "skipped",
                            "a loose file: put each student's files in a folder or zip named after them"))
    return found, rows


def _expand(items: list[Item]) -> list[Item]:
    """Open the zips found in a student's folder (one level)."""
    out = []
    for item in items:
        if item.kind == "zip":
            out.extend(_zip_items(item.read(), item.path, depth=1))
        else:
            out.append(item)
    return out


def _match(expected: list[str], items: list[Item]) -> tuple[dict[str, Item], list[Row]]:
    """Which submitted file is which expected notebook (exact name, then a name containing the
    expected one such as ``assignment_01_rnn (2).ipynb``, then the only notebook for the only
    expected name)."""
    notebooks = [i for i in items if i.name.lower().endswith(".ipynb") and i.kind == "file"]
    chosen, notes = {}, []
    for name in expected:
        stem = name.removesuffix(".ipynb")
        exact = [i for i in notebooks if i.name == name]
        near = [i for i in notebooks if stem in i.name and i not in exact]
        pick = exact or near
        if len(pick) > 1:
            notes.append(Row(", ".join(i.path for i in pick), "", name, "ambiguous",
                             f"{len(pick)} files could be {name}; none collected"))
            continue
        if pick:
            chosen[name] = pick[0]
    rest = [i for i in notebooks if i not in chosen.values()]
    missing = [n for n in expected if n not in chosen and not any(r.file == n for r in notes)]
    if len(missing) == 1 and len(rest) == 1 and len(expected) == 1:
        chosen[missing[0]] = rest.pop()
        missing = []
    for item in rest:
        notes.append(Row(item.path, "", item.name, "ignored", "a notebook this unit does not have"))
    return chosen, notes


def collect(course: Course, unit: str, inbox: Path, student_pattern: str | None = None,
            force: bool = False, out=None) -> list[Row]:
    from .job import parse_notebook
    from .preprocessors import MalformedSubmission

    out = out or sys.stdout
    unit = course.resolve_units([unit])[0]
    expected = assignment_notebooks(course, unit)
    inbox = Path(inbox)
    if not inbox.exists():
        raise GradingError(f"no inbox at {inbox}")
    pattern = re.compile(student_pattern) if student_pattern else None
    if pattern is not None and "student" not in pattern.groupindex:
        raise GradingError("--student-pattern needs a named group (?P<student>...)")
    submissions, rows = _submissions(inbox, pattern)
    seen: dict[str, str] = {}
    for label, student, items in submissions:
        if student in seen:
            rows.append(Row(label, student, "", "skipped", f"student {student} already came from {seen[student]}"))
            continue
        seen[student] = label
        chosen, notes = _match(expected, items)
        for row in notes:
            row.student = student
        rows.extend(notes)
        for item in items:
            if not item.name.lower().endswith(".ipynb") or item.kind == "link":
                rows.append(Row(item.path, student, item.name, "ignored",
                                "a symbolic link (not followed)" if item.kind == "link" else "not a notebook"))
        if not chosen and not any(r.status == "ambiguous" for r in notes):
            rows.append(Row(label, student, "", "missing", f"no notebook of {unit} ({', '.join(expected)})"))
        for name, item in chosen.items():
            data = item.read()
            status, detail = "collected", "" if item.name == name else f"renamed from {item.name}"
            try:
                parse_notebook(data, name)
            except MalformedSubmission as err:
                status, detail = "malformed", f"{err} (collected as it is: autograde will record it)"
            dest = course.root / "submitted" / student / unit / name
            if dest.exists():
                if dest.read_bytes() == data:
                    rows.append(Row(item.path, student, name, "unchanged", ""))
                    continue
                if not force:
                    rows.append(Row(item.path, student, name, "kept",
                                    f"{dest.relative_to(course.root)} exists and differs; --force replaces it"))
                    continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            rows.append(Row(item.path, student, name, status, detail))
    print(table([[r.student, r.file, r.status, r.detail or r.source] for r in rows],
                ["student", "file", "status", "detail"]), file=out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"\n{len(seen)} student(s); " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=out)
    return rows

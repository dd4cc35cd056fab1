"""``dlmi-course collect``: folders, zips and LMS exports into nbgrader's submitted/ layout.

Good submissions are laid out byte for byte; malformed notebooks are reported and still laid out
(autograde records them); non-notebooks, zip-slip archives, links and broken zips are reported
and nothing of them is written; the inbox is never modified.
"""
import hashlib
import io
import shutil
import stat
import zipfile

import pytest

from dlmi.course import Course
from dlmi.course.cli import main
from dlmi.course.grading.autograde import GradingError
from dlmi.course.grading.collect import collect

NB = "assignment_01_rnn.ipynb"


@pytest.fixture()
def course(root, tmp_path):
    folder = tmp_path / "course"
    (folder / "solutions" / "01_rnn").mkdir(parents=True)
    shutil.copy(root / "solutions" / "01_rnn" / NB, folder / "solutions" / "01_rnn" / NB)
    shutil.copy(root / "nbgrader_config.py", folder / "nbgrader_config.py")
    return Course(folder)


@pytest.fixture()
def release_bytes(root):
    return (root / "course" / "01_rnn" / NB).read_bytes()


def _zip(entries: dict, links=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


def _tree(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _status(rows):
    return {(r.student, r.file or "", r.status) for r in rows}


def test_folders_and_zips_are_laid_out_and_problems_reported(course, release_bytes, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "alice" / "deep").mkdir(parents=True)
    (inbox / "alice" / "deep" / NB).write_bytes(release_bytes)
    (inbox / "alice" / "notes.txt").write_text("please be kind")
    (inbox / "bob.zip").write_bytes(_zip({"work/assignment_01_rnn (1).ipynb": release_bytes}))
    (inbox / "carol").mkdir()
    (inbox / "carol" / NB).write_text('{"cells": [ not json')
    (inbox / "dave.zip").write_bytes(_zip({NB: release_bytes, "../../evil.ipynb": release_bytes}))
    (inbox / "erin").mkdir()
    (inbox / "erin" / "answers.py").write_text("print(1)")
    (inbox / "frank.zip").write_bytes(b"this is not a zip file")
    (inbox / "gina.zip").write_bytes(_zip({NB: release_bytes}, links=[("link.ipynb", "/etc/passwd")]))
    (inbox / "loose.ipynb").write_bytes(release_bytes)
    before = _tree(inbox)

    rows = collect(course, "01", inbox)
    status = _status(rows)
    submitted = course.root / "submitted"
    assert (submitted / "alice" / "01_rnn" / NB).read_bytes() == release_bytes
    assert ("alice", "notes.txt", "ignored") in status
    assert (submitted / "bob" / "01_rnn" / NB).read_bytes() == release_bytes
    assert any(r.student == "bob" and r.status == "collected" and "renamed" in r.detail for r in rows)
    assert (submitted / "carol" / "01_rnn" / NB).read_text() == '{"cells": [ not json'  # as it was
    assert ("carol", NB, "malformed") in status
    assert ("dave", "", "rejected") in status and not (submitted / "dave").exists()
    assert any("zip-slip" in r.detail for r in rows if r.student == "dave")
    assert ("erin", "answers.py", "ignored") in status and ("erin", "", "missing") in status
    assert ("frank", "", "rejected") in status
    assert ("gina", "", "rejected") in status and not (submitted / "gina").exists()
    assert any(r.status == "skipped" and r.file == "loose.ipynb" for r in rows)
    assert not list(tmp_path.rglob("evil.ipynb")), "a zip-slip entry was written"
    assert _tree(inbox) == before, "collect modified the inbox"
    assert sorted(p.name for p in submitted.iterdir()) == ["alice", "bob", "carol"]


def test_collect_again_keeps_what_is_there_unless_forced(course, release_bytes, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "alice").mkdir(parents=True)
    (inbox / "alice" / NB).write_bytes(release_bytes)
    collect(course, "01", inbox)
    assert ("alice", NB, "unchanged") in _status(collect(course, "01", inbox))
    changed = release_bytes.replace(b"YOUR CODE HERE", b"MY CODE HERE")
    (inbox / "alice" / NB).write_bytes(changed)
    dest = course.root / "submitted" / "alice" / "01_rnn" / NB
    assert ("alice", NB, "kept") in _status(collect(course, "01", inbox))
    assert dest.read_bytes() == release_bytes
    assert ("alice", NB, "collected") in _status(collect(course, "01", inbox, force=True))
    assert dest.read_bytes() == changed


def test_an_lms_bulk_export_with_nested_zips_and_a_student_pattern(course, release_bytes, tmp_path):
    export = tmp_path / "moodle-export.zip"
    export.write_bytes(_zip({
        f"Jane Doe_123456_assignsubmission_file_/{NB}": release_bytes,
        "John Roe_654321_assignsubmission_file_/upload.zip": _zip({f"x/{NB}": release_bytes}),
        "Max Mustermann_111_assignsubmission_file_/readme.md": b"no notebook",
    }))
    rows = collect(course, "01", export, student_pattern=r"_(?P<student>\d+)_assignsubmission")
    submitted = course.root / "submitted"
    assert (submitted / "123456" / "01_rnn" / NB).read_bytes() == release_bytes
    assert (submitted / "654321" / "01_rnn" / NB).read_bytes() == release_bytes
    assert ("111", "", "missing") in _status(rows)


def test_a_zip_slip_bulk_export_is_rejected_whole(course, release_bytes, tmp_path):
    export = tmp_path / "export.zip"
    export.write_bytes(_zip({f"alice/{NB}": release_bytes, f"/etc/{NB}": release_bytes}))
    rows = collect(course, "01", export)
    assert [r.status for r in rows] == ["rejected"]
    assert not (course.root / "submitted").exists()


def test_bad_input_is_a_clear_error(course, tmp_path, capsys):
    with pytest.raises(GradingError, match="no inbox"):
        collect(course, "01", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown unit"):
        collect(course, "99", tmp_path)
    with pytest.raises(GradingError, match="named group"):
        collect(course, "01", tmp_path, student_pattern=r"\d+")
    assert main(["--root", str(course.root), "collect", "99", str(tmp_path)]) == 2
    assert "unknown unit" in capsys.readouterr().err
    assert main(["--root", str(tmp_path / "no-course"), "collect", "01", str(tmp_path)]) == 2

"""End to end: a realistic class of assignment 01, graded in one ``autograde`` run, then feedback
and export.

The class: the solution (full marks), the blank release (zero), partly correct work (in between),
honest mistakes that cost nothing (stderr warnings and a tqdm bar in test cells, duplicated
cells, a deleted test cell, all cell metadata cleared: one notebook), tampering that earns
nothing (edited test cells, monkeypatched ``torch.allclose`` and builtins, silenced tracebacks,
an input transformer, fake output, a function that patches ``torch.allclose`` while the test
runs), one submission of each hostile kind that costs only its own points (an infinite loop with
a ``sys.exit`` further on, a memory bomb, ``os._exit``, a fork bomb; the two bombs end in a kernel
killed from outside, by the sandbox's watchdog) and a file that is not a notebook.

Limits are tight, and kinds that can share a notebook share one, so that the run stays short:
every submission costs a kernel start and a torch import.
"""
import contextlib
import copy
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlmi.course import Course
from dlmi.course.cli import main
from dlmi.course.grading import autograde as ag
from dlmi.course.grading import isolation, sandbox
from dlmi.course.grading.export import export
from dlmi.course.grading.feedback import feedback
from dlmi.course.grading.outcome import read_record

pytestmark = pytest.mark.slow

NB = "assignment_01_rnn.ipynb"
OUTPUTS = {"gradebook.db", "autograded", "feedback"}  # what grading is meant to write in the course
LIMITS = isolation.Limits(cell_timeout=10, notebook_timeout=60, memory_bytes=isolation.GiB)

# student -> (score, outcome); None: any score from 0 to the given maximum
EXPECTED = {
    "solution": (10, "graded"), "blank": (0, "graded"), "partial": (3, "graded"),
    "honest": (10, "graded"), "cheat": (0, "graded"),
    "loop": (2, "timeout"), "memory": ((0, 7), "memory"), "os_exit": (0, "crashed"),
    "forkbomb": (0, "crashed"),
    "malformed": (0, "malformed"),
}


def _outcomes(student, level):
    """The outcomes ``student`` may end with. Run as root without a uid of its own (level rlimits), a
    fork bomb is bounded only by the watchdog, and on a loaded machine the cell's time limit can fire
    before the watchdog's kill: then it ends as a timeout, not crashed. Either costs it its points."""
    outcome = EXPECTED[student][1]
    return {outcome, "timeout"} if student == "forkbomb" and level == "rlimits" else {outcome}


def _answers(sol):
    markers = ("### BEGIN SOLUTION", "### END SOLUTION")
    return {c.metadata.nbgrader["grade_id"]: "\n".join(x for x in c.source.splitlines() if x.strip() not in markers)
            for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution")}


def _cell(nb, gid):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)


def build_class(root, course_root, writes=True):
    """Write the class's submissions under course_root/submitted (nbgrader's layout). With
    ``writes`` one of them tries to write into the course (not where the sandbox level is only
    ``rlimits``: there student code runs as the grader, as the summary warns)."""
    sol = nbformat.read(root / "solutions" / "01_rnn" / NB, as_version=4)
    rel = nbformat.read(root / "course" / "01_rnn" / NB, as_version=4)
    answers = _answers(sol)

    def solved(keep=("rnn_forward", "output_backward", "rnn_backward")):
        nb = copy.deepcopy(rel)
        for gid in keep:
            _cell(nb, gid).source = answers[gid]
        return nb

    def first(nb, gid, code):
        _cell(nb, gid).source = code + "\n" + _cell(nb, gid).source
        return nb

    subs = {"solution": sol, "blank": rel, "partial": solved(keep=("rnn_forward",))}

    nb = solved()
    fwd, bwd = _cell(nb, "rnn_forward"), _cell(nb, "rnn_backward")
    fwd.source = fwd.source.replace("    return torch.stack", "    import sys, warnings\n"
                                    "    print('progress 50%', file=sys.stderr)\n"
                                    "    warnings.warn('a harmless warning')\n    return torch.stack")
    bwd.source = bwd.source.replace("    B, T, D = x.shape", "    from tqdm.auto import tqdm\n"
                                    "    for _ in tqdm(range(3)): pass\n    B, T, D = x.shape")
    bwd.source += "\nprint('debug ' * 2_000_000)  # a forgotten debug print: 12 MB of output"
    for original in (fwd, _cell(nb, "imports")):               # an answer cell and a locked cell duplicated
        twin = copy.deepcopy(original)
        twin.id = original.id + "-copy"
        nb.cells.insert(nb.cells.index(original), twin)
    nb.cells.remove(_cell(nb, "test_output_backward"))         # a test cell deleted
    for c in nb.cells:
        c.metadata = {}                                        # a tool that drops cell metadata
    subs["honest"] = nb

    nb = copy.deepcopy(rel)
    snoop = (f"import os\nfor p in [{str(course_root / 'solutions' / '01_rnn' / NB)!r}, "
             f"{str(course_root / 'gradebook.db')!r}, {str(course_root / 'submitted' / 'solution')!r}]:\n"
             "    print('SNOOP', 'read' if os.path.exists(p) else 'hidden', p)\n"
             f"for p in {[str(course_root / 'pwned.txt'), str(course_root / 'submitted' / 'pwned.txt')] if writes else []}:\n"
             "    try:\n        open(p, 'w').write('x')\n        print('SNOOP wrote', p)\n"
             "    except OSError:\n        print('SNOOP refused', p)\n")
    cheat = ("import builtins, sys, torch\n"
             "torch.allclose = lambda *a, **k: True\n"
             "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
             "ip = get_ipython()\n"
             "ip.showtraceback = lambda *a, **k: None\n"
             "sys.excepthook = lambda *a: None\n"
             "ip.set_custom_exc((BaseException,), lambda *a, **k: None)\n"
             "ip.input_transformers_post.append(lambda lines: ['print(\"all tests passed\")\\n'])\n"
             "print('all tests passed')\n")
    _cell(nb, "rnn_forward").source = snoop + cheat + (
        "def rnn_forward(x, U, V, c, h0=None):\n    return torch.zeros(x.shape[0], x.shape[1], U.shape[0])")
    _cell(nb, "output_backward").source = (
        "def output_backward(hs, dy, W):\n    import torch\n    torch.allclose = lambda *a, **k: True\n"
        "    return torch.zeros_like(W), torch.zeros(W.shape[0]), torch.zeros_like(hs)")
    _cell(nb, "rnn_backward").source = (  # a tensor subclass that says "equal": nothing patched
        "class Agrees(torch.Tensor):\n    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if func in (torch.allclose, torch.equal):\n            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n"
        "def rnn_backward(x, hs, dh, U, V, h0=None):\n    H, D = U.shape\n"
        "    z = lambda *shape: torch.zeros(*shape).as_subclass(Agrees)\n"
        "    return {'dU': z(H, D), 'dV': z(H, H), 'dc': z(H), 'dh0': z(x.shape[0], H), 'dU_steps': z(x.shape[1], H, D)}")
    for gid in ("test_rnn_forward", "test_output_backward", "test_rnn_backward"):
        _cell(nb, gid).source = "pass  # edited by the student"
    subs["cheat"] = nb

    subs["loop"] = first(first(solved(), "rnn_forward", "while True:\n    pass"),
                         "rnn_backward", "import sys\nsys.exit(1)")
    subs["memory"] = first(solved(), "rnn_forward", "hog = []\nwhile True:\n    hog.append(b'x' * (64 * 2**20))")
    subs["os_exit"] = first(solved(), "rnn_forward", "import os\nos._exit(3)")
    subs["forkbomb"] = first(solved(), "rnn_forward", "import os\nwhile True:\n    os.fork()")
    for student, nb in subs.items():
        folder = course_root / "submitted" / student / "01_rnn"
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NB)
    folder = course_root / "submitted" / "malformed" / "01_rnn"
    folder.mkdir(parents=True)
    (folder / NB).write_text('{"cells": [ this is not json')


def _tree(folder, skip=()):
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[0] in skip:
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def graded(root, tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    course_root = base / "course"
    (course_root / "solutions" / "01_rnn").mkdir(parents=True)
    shutil.copy(root / "solutions" / "01_rnn" / NB, course_root / "solutions" / "01_rnn" / NB)
    shutil.copytree(root / "course" / "01_rnn", course_root / "course" / "01_rnn")
    shutil.copy(root / "nbgrader_config.py", course_root)
    scratch = base / "scratch"
    scratch.mkdir(mode=0o711)
    private = [course_root, scratch, Path.home()]
    level, _ = isolation.choose_level("auto", scratch, private,
                                      isolation.exposed_paths(isolation.python_paths(), private))
    build_class(root, course_root, writes=level != "rlimits")
    (course_root / "submitted" / "partial" / "01_rnn" / "timestamp.txt").write_text("2025-01-15 12:00:00 UTC")
    before = _tree(course_root)
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (course_root / "submitted").rglob("*") if p.is_file()}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the command line, as an instructor runs it
        code = main(["--root", str(course_root), "autograde", "01", "--workers", "3",  # 3 on 2 cores: overlap waits
                     "--cell-timeout", str(LIMITS.cell_timeout), "--notebook-timeout", str(LIMITS.notebook_timeout),
                     "--memory", "1GiB", "--scratch", str(base / "scratch")])
    print(out.getvalue())
    assert code == 0, out.getvalue()
    results = {p.parent.parent.name: read_record(p.parent)
               for p in (course_root / "autograded").glob("*/01_rnn/grading.json")}
    return {"root": course_root, "results": results, "before": before,
            "digests": digests, "out": out.getvalue(), "scratch": base / "scratch"}


def test_every_submission_ends_with_its_expected_outcome(graded):
    results = graded["results"]
    assert sorted(results) == sorted(EXPECTED)
    for student, (score, outcome) in EXPECTED.items():
        r = results[student]
        assert r["outcome"] in _outcomes(student, r.get("isolation")), (student, r["outcome"], r["reason"])
        low, high = score if isinstance(score, tuple) else (score, score)
        assert low <= r["score"] <= high, (student, r["score"], r["reason"])
        assert r["max_score"] == 10, student
        if outcome != "graded":
            assert r["reason"], f"{student}: a failure needs a reason"


def test_honest_mistakes_are_graded_and_noted(graded):
    honest = graded["results"]["honest"]
    assert honest["notebooks"][NB]["tests"] == {t: "passed" for t in ("test_rnn_forward", "test_output_backward",
                                                                       "test_rnn_backward")}
    assert any("put back from the release: test_output_backward" in n for n in honest["notes"])
    assert any("lost their nbgrader metadata and were matched" in n for n in honest["notes"])
    notebook = graded["root"] / "autograded" / "honest" / "01_rnn" / NB
    assert notebook.stat().st_size < 3 * 2**20 and "[the grader kept the first" in notebook.read_text()


def test_a_hung_cell_and_sys_exit_cost_only_their_own_questions(graded):
    tests = graded["results"]["loop"]["notebooks"][NB]["tests"]
    assert tests == {"test_rnn_forward": "failed: NameError", "test_output_backward": "passed",
                     "test_rnn_backward": "failed: NameError"}, tests


def test_tampering_earns_nothing(graded):
    tests = graded["results"]["cheat"]["notebooks"][NB]["tests"]
    assert tests["test_rnn_forward"] == "failed: AssertionError"  # patches undone, edited test restored
    assert tests["test_output_backward"] == "failed: TamperingDetected"  # allclose patched during the test
    assert tests["test_rnn_backward"] == "failed: TamperingDetected"  # a Tensor subclass that agrees with anything
    nb = nbformat.read(graded["root"] / "autograded" / "cheat" / "01_rnn" / NB, as_version=4)
    test_sources = [c.source for c in nb.cells
                    if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith("test_")]
    assert all("BEGIN HIDDEN TESTS" in s for s in test_sources), "edited test cells were not restored"


def test_student_code_could_not_reach_the_course(graded):
    nb = nbformat.read(graded["root"] / "autograded" / "cheat" / "01_rnn" / NB, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    lines = [line for line in text.splitlines() if line.startswith("SNOOP")]
    assert len(lines) == (3 if graded["results"]["cheat"]["isolation"] == "rlimits" else 5), text
    assert not (graded["root"] / "pwned.txt").exists() and not (graded["root"] / "submitted" / "pwned.txt").exists()
    assert all(" refused " in line for line in lines if "pwned" in line)
    if graded["results"]["cheat"]["isolation"] == "namespace":
        assert all(" hidden " in line for line in lines if "pwned" not in line), lines


def test_submitted_files_are_byte_identical(graded):
    for path, digest in graded["digests"].items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was modified"


def test_nothing_outside_the_scratch_copies_was_written(graded):
    after = _tree(graded["root"])
    unexpected = {k: v for k, v in after.items() if k.split("/")[0] not in OUTPUTS and graded["before"].get(k) != v}
    assert not unexpected, f"grading wrote into the course: {sorted(unexpected)}"
    assert {k for k in graded["before"]} <= set(after), "grading removed files from the course"
    assert not list(graded["scratch"].glob("jobs/*/*/run")), "a job left its scratch course behind"
    for slot in range(3):
        assert not sandbox.pids_of(isolation.UID_BASE + slot), "a sandboxed process outlived its job"


def test_the_gradebook_holds_the_scores(graded):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded['root'] / 'gradebook.db'}", "dlmi") as gb:
        for student, r in graded["results"].items():
            assert gb.find_submission("01_rnn", student).score == r["score"], student
        assert gb.find_submission("01_rnn", "partial").timestamp.year == 2025  # timestamp.txt, as nbgrader reads it


def test_the_summary_table_names_every_outcome(graded):
    out = graded["out"]
    assert "isolation:" in out
    for student in EXPECTED:
        outcomes = _outcomes(student, graded["results"][student].get("isolation"))
        assert any(line.split()[:1] == [student] and any(o in line for o in outcomes)
                   for line in out.splitlines()), student
    assert f"{len(EXPECTED)} submissions" in out


def test_feedback_carries_the_reason(graded):
    course = Course(graded["root"])
    rows = feedback(course, "01", ["loop", "malformed", "solution"], out=io.StringIO())
    assert all(r["ok"] for r in rows), rows
    html = {r["student"]: open(r["files"][0], encoding="utf-8").read() for r in rows}
    assert "Autograder: timeout." in html["loop"] and "ran longer than 10 s" in html["loop"]
    assert "Autograder: malformed." in html["malformed"] and "not a Jupyter notebook" in html["malformed"]
    assert "Autograder:" not in html["solution"]
    with pytest.raises(ag.GradingError, match="no autograded 01_rnn for student"):
        feedback(course, "01", ["nobody"], out=io.StringIO())


def test_export_writes_scores_outcomes_and_reasons(graded, tmp_path):
    ours, theirs = tmp_path / "grades.csv", tmp_path / "nbgrader.csv"
    export(Course(graded["root"]), ours, nbgrader_csv=theirs, out=io.StringIO())
    rows = {r["student"]: r for r in csv.DictReader(open(ours))}
    assert set(rows) == set(EXPECTED)
    for student, r in rows.items():
        assert r["unit"] == "01_rnn" and r["outcome"] == graded["results"][student]["outcome"]
        assert r["outcome"] in _outcomes(student, graded["results"][student].get("isolation"))
        assert float(r["score"]) == graded["results"][student]["score"] and float(r["max_score"]) == 10
    assert "MiB cap" in rows["memory"]["reason"] or "MemoryError" in rows["memory"]["reason"]
    assert len(list(csv.DictReader(open(theirs)))) == len(EXPECTED)  # nbgrader's own export
    assert read_record(graded["root"] / "autograded" / "loop" / "01_rnn")["outcome"] == "timeout"


def test_bad_input_is_refused_and_changes_nothing(graded, tmp_path, capsys):
    course = Course(graded["root"])
    before = _tree(graded["root"])
    with pytest.raises(ValueError, match="unknown unit"):
        ag.autograde(course, "42", out=io.StringIO())
    with pytest.raises(ag.GradingError, match="no submission of 01_rnn for student"):
        ag.autograde(course, "01", ["nobody"], out=io.StringIO())
    assert main(["--root", str(tmp_path / "missing"), "autograde", "01"]) == 2
    assert main(["--root", str(graded["root"]), "feedback", "01", "--student", "nobody"]) == 2
    bare = tmp_path / "bare"
    shutil.copytree(graded["root"] / "solutions", bare / "solutions")
    shutil.copy(graded["root"] / "nbgrader_config.py", bare)
    with pytest.raises(ag.GradingError, match="does not exist: lay submissions out"):
        ag.autograde(Course(bare), "01", out=io.StringIO())
    with pytest.raises(ag.GradingError, match="no gradebook"):
        export(Course(bare), tmp_path / "g.csv", out=io.StringIO())
    assert _tree(graded["root"]) == before
    capsys.readouterr()


def test_a_gradebook_of_another_course_is_refused_untouched(graded, tmp_path):
    from nbgrader.api import Gradebook

    from dlmi.course.grading.settings import put_python_on_path

    put_python_on_path()
    other = tmp_path / "other.db"
    with Gradebook(f"sqlite:///{other}", "radiology-101") as gb:
        gb.add_assignment("01_rnn")
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    with pytest.raises(ag.GradingError, match="gradebook of course radiology-101"):
        ag.autograde(Course(graded["root"]), "01", ["solution"], db_url=f"sqlite:///{other}", out=io.StringIO())
    assert hashlib.sha256(other.read_bytes()).hexdigest() == digest
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ag.GradingError, match="not an nbgrader gradebook"):
        ag.autograde(Course(graded["root"]), "01", ["solution"], db_url=f"sqlite:///{junk}", out=io.StringIO())


def test_the_same_jobs_run_elsewhere_prepare_grade_job_merge(graded, tmp_path):
    """At course scale: --prepare-only writes self-contained job folders, `dlmi-course grade-job`
    runs one in a fresh process (as a batch task would), --merge-only merges what it left."""
    root, scratch = graded["root"], tmp_path / "shared"
    args = ["--root", str(root), "autograde", "01", "--scratch", str(scratch)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--student", "partial", "--prepare-only", "--cell-timeout", "10",
                     "--notebook-timeout", "60", "--memory", "1GiB"]) == 0
    jobs = (scratch / "jobs" / "01_rnn" / "jobs.txt").read_text().split()
    assert len(jobs) == 1 and json.loads((Path(jobs[0]) / "job.json").read_text())["isolation"] == "auto"
    proc = subprocess.run([sys.executable, "-m", "dlmi.course.cli", "grade-job", jobs[0]],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((Path(jobs[0]) / "out" / "result.json").read_text())
    assert (result["score"], result["outcome"]) == (3, "graded") and result["isolation"] in sandbox.LEVELS
    merged = io.StringIO()
    with contextlib.redirect_stdout(merged):
        assert main([*args, "--merge-only"]) == 0
    assert "partial" in merged.getvalue() and "1 submission: 1 graded" in merged.getvalue()
    assert read_record(root / "autograded" / "partial" / "01_rnn")["isolation"] == result["isolation"]



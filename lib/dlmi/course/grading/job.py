"""One submission, graded on its own: ``python -m dlmi.course.grading.job JOB_DIR [--slot N]``.

A job folder is self-contained, so that the same command runs in a local worker (``dlmi-course
autograde``) or as one task of a batch array / Kubernetes job on any machine with the same
Python environment and the two folders mounted at the same paths::

    JOB_DIR/job.json       student, unit, notebooks, limits, isolation level, course id, bundle path
    JOB_DIR/submission/    copies of the student's files (the originals are never opened for writing)
    BUNDLE/                one per unit and grading run (see :mod:`.bundle`): gradebook.db holding
                           only the assignment, release/, source/, nbgrader_config.py, paths.json

The job builds a private nbgrader course in ``JOB_DIR/run/`` (its own copy of the gradebook,
the submission copied in), runs nbgrader's own ``autograde`` there with our two preprocessors and
the sandboxed kernel, and writes ``JOB_DIR/out/result.json`` (scores per cell, outcome, reason)
and ``JOB_DIR/out/<notebook>.ipynb`` (the autograded notebooks). Merging into the course's
gradebook is the caller's job (:func:`.autograde.merge`), done by one process, one submission at
a time. The scratch folder is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from . import isolation
from .outcome import ERROR, GRADED, MALFORMED, MISSING, worst


def parse_notebook(data: bytes, name: str):
    """A submitted notebook's bytes, upgraded to nbformat 4 and validated, or MalformedSubmission."""
    import nbformat
    from nbformat.validator import ValidationError

    from .preprocessors import MalformedSubmission

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedSubmission(f"{name} is not UTF-8 text: {err}") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # noqa: BLE001 - NotJSONError, ValueError, KeyError on odd JSON
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise MalformedSubmission(f"{name} is not a Jupyter notebook ({type(err).__name__}: {first})") from None
    try:
        nbformat.validate(nb)
    except ValidationError as err:
        raise MalformedSubmission(f"{name} is not a valid notebook: {err.message[:200]}") from None
    return nb


def read_notebook(path: Path):
    return parse_notebook(Path(path).read_bytes(), Path(path).name)


def _config(course: Path, bundle: Path, run: Path, spec: dict, ipc_prefix: str):
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute, OverwriteCells

    from .preprocessors import GuardedExecute, Realign
    from .settings import load_config

    cfg = load_config(bundle)
    limits = spec["limits"]
    cfg.CourseDirectory.root = str(course)
    cfg.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    cfg.CourseDirectory.course_id = spec["course_id"]
    cfg.CourseDirectory.source_directory = "source"
    cfg.CourseDirectory.submitted_directory = "submitted"
    cfg.CourseDirectory.autograded_directory = "autograded"
    cfg.NbGrader.logfile = ""
    # nbgrader's own stages, with Execute replaced and Realign in front of OverwriteCells
    sanitize = list(Autograde.class_traits()["sanitize_preprocessors"].default())
    sanitize.insert(sanitize.index(OverwriteCells), Realign)
    autograde = [GuardedExecute if pp is Execute else pp
                 for pp in Autograde.class_traits()["autograde_preprocessors"].default()]
    cfg.Autograde.sanitize_preprocessors = sanitize
    cfg.Autograde.autograde_preprocessors = autograde
    cfg.OverwriteCells.add_missing_cells = False  # Realign puts deleted cells back (nbgrader's own trips on duplicates)
    cfg.Realign.release_directory = str(bundle / "release")
    cfg.Realign.report_directory = str(run / "reports")
    # ZMQ over Unix sockets in the kernel's work folder: the only channel into its network
    # namespace (nbclient hands this config to the kernel manager it makes)
    cfg.KernelManager.transport = "ipc"
    cfg.KernelManager.ip = ipc_prefix
    g = cfg.GuardedExecute
    g.kernel_name = isolation.KERNEL_NAME
    g.cell_timeout = limits["cell_timeout"]
    g.notebook_timeout = limits["notebook_timeout"]
    g.setup_timeout = limits["setup_timeout"]
    g.startup_timeout = limits["setup_timeout"]
    g.iopub_timeout = 10
    g.extra_arguments = ["--HistoryManager.enabled=False"]  # no history database for test sources to linger in
    g.work_directory = str(run / "work")
    g.events_file = str(run / "events.jsonl")
    g.report_directory = str(run / "reports")
    guard = json.loads((bundle / "guard.json").read_text()).get(spec["unit"], {})
    g.guard_modules = guard.get("modules", [])
    g.guard_classes = guard.get("classes", [])
    g.guard_rebind = guard.get("rebind", {})
    return cfg


def _notebook_result(name: str, gb, unit: str, student: str) -> dict:
    nb_id = name.removesuffix(".ipynb")
    sub = gb.find_submission_notebook(nb_id, unit, student)
    grades = {g.name: {"auto_score": g.auto_score, "max_score": g.max_score} for g in sub.grades}
    comments = {c.name: c.auto_comment for c in sub.comments}
    score = sum((g["auto_score"] or 0) for g in grades.values())
    max_score = sum(g["max_score"] for g in grades.values())
    return {"grades": grades, "comments": comments, "score": score, "max_score": max_score,
            "late_penalty": sub.late_submission_penalty}


def _note_cell(result_nb: dict):
    import nbformat

    lines = [f"**Autograder: {result_nb['outcome']}.** {result_nb['reason']}".rstrip()]
    lines += [f"- {note}" for note in result_nb.get("notes", [])]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines))
    cell.metadata["dlmi"] = {"autograder_note": True}
    return cell


def grade(job_dir: Path, slot: int = 0, keep: bool = False) -> dict:
    """Grade the submission of ``job_dir``; write and return its result."""
    job_dir = Path(job_dir).resolve()
    spec = json.loads((job_dir / "job.json").read_text())
    started = time.monotonic()
    run, out = _fresh_folders(job_dir)
    course = _scratch_course(run, Path(spec["bundle"]))
    results = _place_submission(job_dir / "submission", course / "submitted" / spec["student"] / spec["unit"], spec)
    spec["isolation"] = _kernel_world(run, course, spec, slot)
    log = ""
    if any(name not in results for name in spec["notebooks"]):
        log = _autograde(run, course, spec, results)
    _scores(run, course, spec, results)
    _autograded_notebooks(course, Path(spec["bundle"]), spec, results, out)
    outcome = worst(e["outcome"] for e in results.values())
    reasons = [f"{name}: {e['reason']}" if len(results) > 1 else e["reason"]
               for name, e in results.items() if e["outcome"] != GRADED and e["reason"]]
    result = {
        "student": spec["student"], "unit": spec["unit"], "outcome": outcome, "reason": "; ".join(reasons),
        "score": sum(e.get("score") or 0 for e in results.values()),
        "max_score": sum(e.get("max_score") or 0 for e in results.values()),
        "notebooks": results, "isolation": spec["isolation"], "seconds": round(time.monotonic() - started, 2),
        "notes": [n for e in results.values() for n in e.get("notes", [])],
        "timestamp": _timestamp(course / "submitted" / spec["student"] / spec["unit"]),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    (out / "nbgrader.log").write_text(log)
    if os.geteuid() == 0 and spec["isolation"] in ("namespace", "uid"):
        isolation.kill_uid(isolation.UID_BASE + slot)
    if not keep:
        shutil.rmtree(run, ignore_errors=True)
    return result


def _fresh_folders(job_dir: Path) -> tuple[Path, Path]:
    run, out = job_dir / "run", job_dir / "out"
    for folder in (run, out):
        if folder.exists():
            shutil.rmtree(folder)
    run.mkdir()
    os.chmod(run, 0o711)  # the sandbox uid may pass through to work/, and see nothing else
    out.mkdir(mode=0o700)
    (run / "reports").mkdir()
    return run, out


def _scratch_course(run: Path, bundle: Path) -> Path:
    """A private nbgrader course: the unit's files and a copy of the bundle's gradebook."""
    course = run / "course"
    shutil.copytree(bundle / "source", course / "source")
    os.chmod(course, 0o700)
    shutil.copy2(bundle / "gradebook.db", course / "gradebook.db")
    return course


def _place_submission(src: Path, submitted: Path, spec: dict) -> dict[str, dict]:
    """Copy the submission, validated, into nbgrader's layout; what cannot be graded gets its
    outcome here (missing, malformed)."""
    import nbformat

    from .preprocessors import MalformedSubmission

    results: dict[str, dict] = {}
    submitted.mkdir(parents=True)
    for name in spec["notebooks"]:
        if not (src / name).is_file():
            results[name] = {"outcome": MISSING, "reason": f"{name} was not submitted"}
            continue
        try:
            nbformat.write(read_notebook(src / name), submitted / name)
        except MalformedSubmission as err:
            results[name] = {"outcome": MALFORMED, "reason": str(err)}
    if (src / "timestamp.txt").is_file():
        shutil.copy(src / "timestamp.txt", submitted / "timestamp.txt")
    return results


def _kernel_world(run: Path, course: Path, spec: dict, slot: int) -> str:
    """The kernel's work folder, its sandbox spec and the kernelspec nbgrader will start; returns
    the isolation level. A job prepared for another machine ("auto") chooses it here."""
    level, unit = spec["isolation"], spec["unit"]
    expose = json.loads((Path(spec["bundle"]) / "paths.json").read_text())["expose"]
    if level == "auto":
        scratch = run.parents[3] if run.parents[2].name == "jobs" else run.parent  # every job, not just this one
        private = [scratch, Path(spec["bundle"]), Path.home()]
        expose = isolation.exposed_paths(isolation.python_paths(), private)
        level, _ = isolation.choose_level("auto", run, private, expose)
    work = run / "work"
    work.mkdir()
    for item in (course / "source" / unit).iterdir():  # data files the notebook reads; no notebooks
        if item.suffix != ".ipynb" and item.is_file():
            shutil.copy(item, work / item.name)
    isolation.prepare_work(level, work, slot)
    root = run / "root"
    root.mkdir(mode=0o700)
    sb = isolation.sandbox_spec(level, slot, work, root, run / "events.jsonl",
                                isolation.Limits(**spec["limits"]), expose)
    (run / "sandbox.json").write_text(json.dumps(sb))
    os.chmod(run / "sandbox.json", 0o600)
    isolation.write_kernelspec(run / "jupyter", run / "sandbox.json")
    os.environ["JUPYTER_PATH"] = str(run / "jupyter")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(run / "runtime")
    os.environ["JUPYTER_CONFIG_DIR"] = str(run / "jupyter-config")
    os.environ["JUPYTER_DATA_DIR"] = str(run / "jupyter-data")
    return level


def _autograde(run: Path, course: Path, spec: dict, results: dict) -> str:
    """nbgrader's autograde of the scratch course, in this process; returns nbgrader's log."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    prefix, fd = isolation.ipc_prefix(run / "work")
    try:
        cfg = _config(course, Path(spec["bundle"]), run, spec, prefix)
        api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
        answer = api.autograde(spec["unit"], spec["student"], force=True, create=True)
    finally:
        if fd is not None:
            os.close(fd)
    if not answer.get("success"):
        error = answer.get("error") or answer.get("log", "")
        malformed = [line for line in error.splitlines() if "MalformedSubmission" in line]
        last = [line for line in error.splitlines() if line.strip()][-1:] or ["unknown error"]
        for name in spec["notebooks"]:
            if name in results:
                continue
            if malformed:
                results[name] = {"outcome": MALFORMED, "reason": malformed[-1].split(":", 1)[-1].strip()}
            else:
                results[name] = {"outcome": ERROR, "reason": f"nbgrader autograde failed: {last[0][:300]}"}
    return answer.get("log", "")


def _scores(run: Path, course: Path, spec: dict, results: dict) -> None:
    """Scores from the job's gradebook (nbgrader's SaveAutoGrades wrote them), and the outcome
    and notes our preprocessors reported."""
    from nbgrader.api import Gradebook, MissingEntry

    unit, student = spec["unit"], spec["student"]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", spec["course_id"]) as gb:
        for name in spec["notebooks"]:
            entry = results.setdefault(name, {"outcome": GRADED, "reason": ""})
            try:
                entry.update(_notebook_result(name, gb, unit, student))
            except MissingEntry:  # never autograded (malformed, missing): every graded cell scores 0
                cells = gb.find_notebook(name.removesuffix(".ipynb"), unit).grade_cells
                entry.update(grades={c.name: {"auto_score": 0, "max_score": c.max_score} for c in cells},
                             comments={}, score=0, max_score=sum(c.max_score for c in cells), late_penalty=None)
            if entry["outcome"] != GRADED:  # a notebook nbgrader could not grade earns nothing
                for g in entry["grades"].values():
                    g["auto_score"] = 0
                entry["score"] = 0
            report_path = run / "reports" / f"{name.removesuffix('.ipynb')}.json"
            report = json.loads(report_path.read_text()) if report_path.exists() else {}
            execute = report.get("execute", {})
            entry["notes"] = report.get("realign", [])
            entry["tests"] = execute.get("tests", {})
            flags = execute.get("flags", [])
            if entry["outcome"] == GRADED and flags:  # points earned before a crash are kept
                entry["outcome"] = worst(o for o, _ in flags)
                entry["reason"] = "; ".join(r for _, r in flags)


def _autograded_notebooks(course: Path, bundle: Path, spec: dict, results: dict, out: Path) -> None:
    """The autograded notebooks (the release as a stand-in when nbgrader made none), with a
    first cell naming the outcome when it is not simply "graded"."""
    import nbformat

    autograded = course / "autograded" / spec["student"] / spec["unit"]
    for name, entry in results.items():
        path = autograded / name
        source = path if path.is_file() else bundle / "release" / spec["unit"] / name
        if not source.is_file():
            continue
        nb = nbformat.read(source, as_version=4)
        if entry["outcome"] != GRADED or entry.get("notes"):
            nb.cells.insert(0, _note_cell(entry))
        nbformat.write(nb, out / name)


def _timestamp(submitted: Path) -> str | None:
    path = submitted / "timestamp.txt"
    return path.read_text().strip() if path.is_file() else None


def failed_result(spec: dict, outcome: str, reason: str, seconds: float = 0.0) -> dict:
    """What the caller records when a job itself could not finish (hard time limit, crash)."""
    return {"student": spec["student"], "unit": spec["unit"], "outcome": outcome, "reason": reason,
            "score": 0, "max_score": None, "notebooks": {}, "isolation": spec.get("isolation"),
            "seconds": round(seconds, 2), "notes": [], "timestamp": None}


def skip_slow_imports() -> None:
    """jsonschema builds an IRI grammar with lark when ``rfc3987_syntax`` is installed (seconds per
    process); notebook validation never checks IRIs, so each job skips it."""
    sys.modules.setdefault("rfc3987_syntax", None)


def grade_or_record_failure(job_dir: Path, slot: int, keep: bool) -> dict:
    """:func:`grade`, and when the job itself breaks, a result that says so (never nothing)."""
    try:
        return grade(job_dir, slot, keep)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        spec = json.loads((job_dir / "job.json").read_text())
        (job_dir / "out").mkdir(exist_ok=True)
        result = failed_result(spec, ERROR, "the grading job failed: "
                               + traceback.format_exc().strip().splitlines()[-1][:300])
        (job_dir / "out" / "result.json").write_text(json.dumps(result, indent=1))
        return result


def serve(slot: int, keep: bool) -> int:
    """Grade the job folders named on stdin, one a line, answering ``DONE <folder>`` on stdout.

    A local worker keeps nbgrader imported between submissions (seconds each); every submission
    still gets its own scratch course and its own sandboxed kernel. Children write to stderr, so
    that stdout carries nothing but the answers.
    """
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for line in sys.stdin:
        if line.strip():
            job_dir = Path(line.strip())
            grade_or_record_failure(job_dir, slot, keep)
            answers.write(f"DONE {job_dir}\n")
    return 0


def main(argv=None) -> int:
    skip_slow_imports()
    parser = argparse.ArgumentParser(prog="python -m dlmi.course.grading.job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_dirs", type=Path, nargs="*", help="job folders to grade, one after the other")
    parser.add_argument("--slot", type=int, default=0, help="worker slot: the sandbox runs as uid 61000+slot")
    parser.add_argument("--keep", action="store_true", help="keep each job's scratch folder JOB_DIR/run")
    parser.add_argument("--serve", action="store_true", help="read job folders from stdin (local workers)")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.slot, args.keep)
    failed = 0
    for job_dir in args.job_dirs:
        result = grade_or_record_failure(job_dir.resolve(), args.slot, args.keep)
        failed += result["outcome"] == ERROR
        print(json.dumps({k: result[k] for k in ("student", "unit", "outcome", "score", "max_score", "seconds")}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

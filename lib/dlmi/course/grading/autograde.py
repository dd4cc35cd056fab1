"""``dlmi-course autograde``: grade a unit's submissions in parallel, each in its own sandbox.

Three phases, so that the middle one can run anywhere (see the README, "Grading at scale"):

1. **prepare** (here): check the course and its gradebook, make the unit's bundle
   (:mod:`.bundle`), register the assignment in the course gradebook with nbgrader's
   ``generate_assignment``, and copy each student's submission into a job folder;
2. **grade**: one ``python -m dlmi.course.grading.job JOB_DIR`` per submission (:mod:`.job`),
   N at a time (default: one per core), each under a hard time limit;
3. **merge** (here, one submission at a time): copy each job's scores into the course gradebook
   with nbgrader's Gradebook API, its autograded notebooks to ``autograded/<student>/<unit>/``
   together with ``grading.json`` (outcome and reason), and print the summary table.

Nothing under ``submitted/`` is ever opened for writing, and the student's code only ever sees
its job's ``work/`` folder.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import Course
from . import bundle as bundles
from . import isolation
from .outcome import ERROR, RECORD, TIMEOUT, fmt_score, table, write_record
from .settings import course_settings, sqlite_path

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class GradingError(ValueError):
    """Bad input (unknown unit or student, missing folders, a foreign gradebook): nothing was changed."""


@dataclass
class Options:
    workers: int = 0                      # 0: one per core
    limits: isolation.Limits = field(default_factory=isolation.Limits)
    isolation: str = "auto"               # auto | namespace | uid | rlimits
    scratch: Path | None = None           # where job folders go (default: a temporary folder)
    keep_scratch: bool = False
    progress: bool = True
    phase: str = "all"                    # all | prepare (job folders only) | merge (their results only)


def check_gradebook(db_url: str, course_id: str, unit: str, grade_ids: set[str], scratch: Path) -> None:
    """Refuse a gradebook of another course, on a copy (the real one is not even opened for writing)."""
    from nbgrader import api
    from sqlalchemy.exc import DatabaseError

    path = sqlite_path(db_url)
    if path is None:
        return  # a server database: nbgrader's own course id check applies
    if not path.exists():
        if not path.parent.is_dir():
            raise GradingError(f"the gradebook's folder {path.parent} does not exist")
        return
    copy = scratch / "gradebook-check.db"
    shutil.copy2(path, copy)
    try:
        with api.Gradebook(f"sqlite:///{copy}", "default_course") as gb:
            courses = {c.id for c in gb.db.query(api.Course).all()} - {"default_course"}
            if courses and course_id not in courses:
                raise GradingError(f"{path} is the gradebook of course {', '.join(sorted(courses))}, not of "
                                   f"{course_id!r} (nbgrader_config.py); pass --db to use another gradebook")
            try:
                assignment = gb.find_assignment(unit)
            except api.MissingEntry:
                return
            if assignment.course_id not in (course_id, "default_course"):
                raise GradingError(f"assignment {unit!r} in {path} belongs to course {assignment.course_id!r}")
            known = {cell.name for nb in assignment.notebooks for cell in nb.grade_cells}
            if known and grade_ids and not known & grade_ids:
                raise GradingError(f"assignment {unit!r} in {path} has graded cells {sorted(known)}, none of "
                                   f"which are in solutions/{unit} ({sorted(grade_ids)}): is it another course's "
                                   "gradebook?")
    except DatabaseError as err:
        raise GradingError(f"{path} is not an nbgrader gradebook ({err.orig})") from None
    finally:
        copy.unlink(missing_ok=True)


def source_grade_ids(course: Course, unit: str) -> set[str]:
    import nbformat

    ids = set()
    for name in bundles.assignment_notebooks(course, unit):
        for cell in nbformat.read(course.solutions / unit / name, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade"):
                ids.add(meta["grade_id"])
    return ids


def find_students(course: Course, unit: str, wanted=None) -> list[str]:
    """Students with a ``submitted/<student>/<unit>/`` folder (all, or the ``wanted`` ones)."""
    submitted = course.root / "submitted"
    if not submitted.is_dir():
        raise GradingError(f"{submitted} does not exist: lay submissions out with `dlmi-course collect` first")
    found = sorted(p.name for p in submitted.iterdir() if (p / unit).is_dir() and STUDENT_ID.match(p.name))
    odd = sorted(p.name for p in submitted.iterdir() if (p / unit).is_dir() and not STUDENT_ID.match(p.name))
    if odd:
        raise GradingError(f"submitted/ has folders that are not student ids: {', '.join(map(repr, odd))} "
                           "(letters, digits and ._@+- only); rename or remove them")
    if not wanted:
        if not found:
            raise GradingError(f"no submissions for {unit} under {submitted}")
        return found
    unknown = [s for s in wanted if s not in found]
    if unknown:
        raise GradingError(f"no submission of {unit} for student(s) {', '.join(unknown)}; "
                           f"submitted: {', '.join(found) or 'none'}")
    return list(dict.fromkeys(wanted))


# ------------------------------------------------------------------ phase 1: prepare

def register_assignment(course: Course, unit: str, db_url: str, course_id: str, scratch: Path) -> None:
    """nbgrader's generate_assignment against the course gradebook (into a throw-away release)."""
    bundles.generate(course, unit, scratch / "release-register", db_url, course_id)


def prepare(course: Course, unit: str, students: list[str], scratch: Path, options: Options,
            course_id: str) -> tuple[list[Path], str, list[str]]:
    """The bundle and one job folder per student. Jobs run here get the isolation level chosen
    here; jobs prepared for elsewhere (``phase="prepare"``) keep "auto" and choose where they run."""
    private = [course.root, scratch, Path.home()]
    expose = isolation.exposed_paths(isolation.python_paths(), private)
    if options.phase == "prepare" and options.isolation == "auto":
        level, notes = "auto", []
    else:
        level, notes = isolation.choose_level(options.isolation, scratch, private, expose)
    bundle = bundles.build(course, unit, scratch / f"bundle-{unit}", expose, course_id)
    notebooks = bundles.assignment_notebooks(course, unit)
    jobs = []
    for student in students:
        job = scratch / "jobs" / unit / student
        (job / "submission").mkdir(parents=True, mode=0o700)  # one student's files: the grader's only
        os.chmod(job, 0o711)  # a sandbox may pass through to its own work folder, and list nothing
        src = course.root / "submitted" / student / unit
        for name in [*notebooks, "timestamp.txt"]:
            if (src / name).is_file() and not (src / name).is_symlink():
                shutil.copyfile(src / name, job / "submission" / name)
        (job / "job.json").write_text(json.dumps({
            "student": student, "unit": unit, "notebooks": notebooks, "course_id": course_id,
            "bundle": str(bundle), "isolation": level, "limits": options.limits.as_dict()}, indent=1))
        os.chmod(job / "job.json", 0o600)
        jobs.append(job)
    for folder in (scratch / "jobs", scratch / "jobs" / unit):
        os.chmod(folder, 0o711)
    return jobs, level, notes


# ------------------------------------------------------------------ phase 2: grade

def worker_command(*args: str) -> list[str]:
    """``python -m dlmi.course.grading.job ARGS``: ``import dlmi`` is cheap (torch loads only when a
    device helper is first used), so a worker imports the package as any program does. Run it with
    :func:`worker_env`, which puts this very dlmi first on the path."""
    return [sys.executable, "-m", "dlmi.course.grading.job", *args]


def worker_env() -> dict:
    """The grader's environment minus Jupyter's and pytest's variables, with the folder holding this
    dlmi first on ``PYTHONPATH``: the worker grades with the library that started it, installed or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "JPY_", "PYTEST_"))}
    here = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    return env


class Worker:
    """One local worker process (``job --serve``) for one slot: it grades the jobs it is given, one
    at a time, each under the job's hard time limit; past it the worker and everything its slot's
    uid runs are killed, the job is recorded as a timeout, and a fresh worker takes the next job."""

    def __init__(self, slot: int, log: Path):
        self.slot, self.log_path, self.proc = slot, log, None
        self.answers: queue.Queue[str] = queue.Queue()

    def _start(self):
        env = worker_env()
        self.log = open(self.log_path, "a")
        os.chmod(self.log_path, 0o600)  # kernels' stderr: the grader's eyes only
        self.proc = subprocess.Popen(
            worker_command("--serve", "--slot", str(self.slot)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
            start_new_session=True, env=env)
        answers, stdout = self.answers, self.proc.stdout

        def read():
            for line in stdout:
                answers.put(line.strip())
            answers.put("EOF")

        threading.Thread(target=read, daemon=True).start()

    def grade(self, job: Path, limits: isolation.Limits) -> dict:
        from .job import failed_result

        spec = json.loads((job / "job.json").read_text())
        started = time.monotonic()
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(f"{job}\n")
        self.proc.stdin.flush()
        hard_limit = limits.job_seconds(len(spec["notebooks"]))
        deadline = started + hard_limit
        while True:
            try:
                answer = self.answers.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                reason = f"the grading job ran past its hard limit of {hard_limit} s and was stopped"
                return failed_result(spec, TIMEOUT, reason, time.monotonic() - started)
            if answer == f"DONE {job}":
                break
            if answer == "EOF":
                self.kill()
                return failed_result(spec, ERROR, "the grading worker died (see worker-*.log in the scratch folder)",
                                     time.monotonic() - started)
        try:
            return json.loads((job / "out" / "result.json").read_text())
        except (OSError, ValueError) as err:
            return failed_result(spec, ERROR, f"the grading job left no result ({err})", time.monotonic() - started)

    def kill(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
            self.answers = queue.Queue()
        isolation.kill_uid(isolation.UID_BASE + self.slot)

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None


def run_jobs(jobs: list[Path], workers: int, limits: isolation.Limits, logs: Path, on_done) -> None:
    """``workers`` local workers, each with its own slot (and sandbox uid); ``on_done(result)`` is
    called in this thread, one result at a time, as jobs finish."""
    idle: queue.Queue[Worker] = queue.Queue()
    pool = [Worker(slot, logs / f"worker-{slot}.log") for slot in range(workers)]
    for worker in pool:
        idle.put(worker)

    def one(job):
        worker = idle.get()
        try:
            return worker.grade(job, limits)
        finally:
            idle.put(worker)

    try:
        with ThreadPoolExecutor(max_workers=workers) as threads:
            for future in as_completed([threads.submit(one, job) for job in jobs]):
                on_done(future.result())
    finally:
        for worker in pool:
            worker.close()


# ------------------------------------------------------------------ phase 3: merge

def merge(course: Course, db_url: str, course_id: str, job: Path, result: dict) -> None:
    """Copy one job's scores into the course gradebook and its notebooks into autograded/."""
    from nbgrader.api import Gradebook

    unit, student = result["unit"], result["student"]
    with warnings.catch_warnings(), Gradebook(db_url, course_id) as gb:
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy autoflush warnings
        gb.update_or_create_student(student)
        gb.update_or_create_submission(unit, student, **_timestamp(result.get("timestamp")))
        for name, nb in (result.get("notebooks") or {}).items():
            nb_id = name.removesuffix(".ipynb")
            for grade_id, g in (nb.get("grades") or {}).items():
                grade = gb.find_grade(grade_id, nb_id, unit, student)
                grade.auto_score = g["auto_score"]
                grade.needs_manual_grade = grade.manual_score is not None or g["auto_score"] is None
            for cell_id, text in (nb.get("comments") or {}).items():
                gb.find_comment(cell_id, nb_id, unit, student).auto_comment = text
            if nb.get("late_penalty") is not None:
                gb.find_submission_notebook(nb_id, unit, student).late_submission_penalty = nb["late_penalty"]
        if not result.get("notebooks"):  # the job failed as a whole: every graded cell scores 0
            for nb in gb.find_submission(unit, student).notebooks:
                for grade in nb.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = grade.manual_score is not None
        gb.db.commit()
    target = course.root / "autograded" / student / unit
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((job / "out").glob("*.ipynb")):
        shutil.copyfile(path, target / path.name)
    write_record(target, result)


def _timestamp(text: str | None) -> dict:
    """nbgrader's reading of a timestamp.txt (for late penalties); none if it cannot be read."""
    from nbgrader.utils import parse_utc

    try:
        return {"timestamp": parse_utc(text)} if text else {}
    except (ValueError, TypeError, OverflowError):
        return {}


# ------------------------------------------------------------------ the command

def autograde(course: Course, unit: str, students=None, options: Options | None = None,
              db_url: str | None = None, out=None) -> list[dict]:
    """Grade ``unit`` for all (or the given) students; returns one result per submission.

    ``options.phase``: ``"all"`` (prepare, grade here with local workers, merge), ``"prepare"``
    (only make the job folders, for a scheduler to run with ``dlmi-course grade-job``) or
    ``"merge"`` (only merge the results those jobs left in ``options.scratch``).
    """
    out = out or sys.stdout
    options = options or Options()
    units = course.resolve_units([unit])
    if len(units) != 1:
        raise GradingError(f"{unit!r} names {len(units)} units; grade one unit at a time")
    unit = units[0]
    course_id, default_db = course_settings(course)
    db_url = db_url or default_db
    if options.phase != "all" and options.scratch is None:
        raise GradingError(f"--{options.phase}-only needs --scratch (a folder the jobs can reach)")
    if options.phase == "merge":
        jobs = sorted(p for p in (Path(options.scratch) / "jobs" / unit).glob("*") if (p / "job.json").is_file())
        if not jobs:
            raise GradingError(f"no job folders under {Path(options.scratch) / 'jobs' / unit}")
        return _merge_all(course, unit, db_url, course_id, jobs, out)
    students = find_students(course, unit, students)
    made_scratch = options.scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="dlmi-grading-")) if made_scratch else Path(options.scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    os.chmod(scratch, 0o711)
    try:
        check_gradebook(db_url, course_id, unit, source_grade_ids(course, unit), scratch)
        jobs, level, notes = prepare(course, unit, students, scratch, options, course_id)
        register_assignment(course, unit, db_url, course_id, scratch)
        if options.phase == "prepare":
            listing = scratch / "jobs" / unit / "jobs.txt"
            listing.write_text("".join(f"{job}\n" for job in jobs))
            print(f"{len(jobs)} job folder(s) for {unit} listed in {listing}; run each with\n"
                  f"    dlmi-course grade-job JOB_DIR\nthen merge with\n"
                  f"    dlmi-course autograde {unit} --merge-only --scratch {scratch}", file=out)
            return []
        workers = min(options.workers or len(os.sched_getaffinity(0)), len(jobs))
        print(f"grading {len(jobs)} submission(s) of {unit} ({', '.join(bundles.assignment_notebooks(course, unit))}) "
              f"with {workers} worker(s); isolation: {level}", file=out, flush=True)
        for note in notes:
            print(f"  sandbox {note}", file=out)
        if level == "rlimits":
            print("  WARNING: only resource limits here: student code runs as this user and can read and write "
                  "what this user can (run as root, or allow user namespaces, for the namespace level)", file=out)
        results = []
        bar = _progress(len(jobs), options.progress)

        def done(result):
            merge(course, db_url, course_id, scratch / "jobs" / unit / result["student"], result)
            results.append(result)
            if bar is not None:
                bar.set_postfix_str(f"{result['student']}: {result['outcome']}")
                bar.update()

        run_jobs(jobs, workers, options.limits, scratch, done)
        if bar is not None:
            bar.close()
    finally:
        if made_scratch and not options.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return _report(course, unit, db_url, results, out)


def _merge_all(course: Course, unit: str, db_url: str, course_id: str, jobs: list[Path], out) -> list[dict]:
    """Merge what jobs run elsewhere left behind; a job without a result is recorded as such."""
    from .job import failed_result

    results = []
    for job in jobs:
        try:
            result = json.loads((job / "out" / "result.json").read_text())
        except (OSError, ValueError):
            spec = json.loads((job / "job.json").read_text())
            result = failed_result(spec, ERROR, "the grading job left no result (did it run?)")
        merge(course, db_url, course_id, job, result)
        results.append(result)
    return _report(course, unit, db_url, results, out)


def _report(course: Course, unit: str, db_url: str, results: list[dict], out) -> list[dict]:
    results.sort(key=lambda r: r["student"])
    print(file=out)
    print(summary(results), file=out)
    print(f"\nscores are in {db_url}; autograded notebooks and {RECORD} in "
          f"{course.root / 'autograded'}/<student>/{unit}/", file=out)
    return results


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="autograde", unit="submission", file=sys.stderr)


def summary(results: list[dict]) -> str:
    rows = [[r["student"], fmt_score(r.get("score"), r.get("max_score") or 0), r["outcome"],
             f"{r.get('seconds') or 0:.0f}", _short(r.get("reason") or "")] for r in results]
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    tail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    noun = "submission" if len(results) == 1 else "submissions"
    return table(rows, ["student", "score", "outcome", "seconds", "reason"]) + f"\n{len(results)} {noun}: {tail}"


def _short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."

"""``dlmi-course``: the instructor's command line.

    dlmi-course release [UNIT ...]      regenerate course/ from solutions/ (nbgrader generate_assignment)
    dlmi-course run [UNIT ...]          execute every lecture and solution notebook; print the table
    dlmi-course map                     regenerate the README course map (Binder / Colab links)
    dlmi-course setup-cells [--check]   write (or check) the canonical setup cell in every source notebook

Grading (nbgrader underneath; see the README, "Grading"):

    dlmi-course collect UNIT INBOX      LMS export / per-student folders -> submitted/<student>/<unit>/
    dlmi-course autograde UNIT          grade every submission in parallel, each in its own sandbox
    dlmi-course feedback UNIT           nbgrader's HTML feedback, with the reason for any failure
    dlmi-course export [UNIT ...]       grades.csv (score, outcome, reason) and nbgrader's own CSV
    dlmi-course grade-job JOB_DIR ...   one self-contained grading job (for a batch scheduler)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .layout import Course


def _table(rows, headers) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def cmd_release(args) -> int:
    course = Course(args.root)
    from .release import release

    for path in release(course, args.units):
        print(f"released {path.relative_to(course.root)}")
    return 0


def cmd_run(args) -> int:
    from .execute import BUDGET_BYTES, BUDGET_SECONDS, execute

    course = Course(args.root)
    build = Path(args.build).resolve()
    rows, failures = [], []
    for unit in course.resolve_units(args.units):
        for nb in course.notebooks(unit):
            print(f"running {unit}/{nb.name} ...", flush=True)
            run = execute(nb.path, build / unit / nb.name, timeout=args.timeout)
            over = []
            if run.seconds > BUDGET_SECONDS:
                over.append("time")
            if run.peak_bytes > BUDGET_BYTES:
                over.append("memory")
            headline = "; ".join(f"{k} = {v}" for k, v in run.results[-2:]) or "-"
            status = "ok" if run.ok else "FAILED"
            if over:
                status += " (over budget: " + ", ".join(over) + ")"
            rows.append([unit.split("_", 1)[0], nb.name, nb.kind, f"{run.seconds:.1f}",
                         f"{run.peak_bytes / 2**20:.0f}", status, headline])
            if not run.ok:
                failures.append((f"{unit}/{nb.name}", run.error))
    print()
    print(_table(rows, ["unit", "notebook", "kind", "wall s", "peak MiB", "status", "headline result"]))
    print(f"\nexecuted notebooks and HTML in {build}")
    for name, error in failures:
        print(f"\n==== {name} FAILED ====\n{error}", file=sys.stderr)
    return 1 if failures else 0


def cmd_map(args) -> int:
    from .coursemap import update_readme

    course = Course(args.root)
    print("README course map " + ("updated" if update_readme(course) else "already up to date"))
    return 0


def cmd_setup_cells(args) -> int:
    import nbformat

    from .setup_cell import MARKER, first_code_cell, setup_cell_source

    course = Course(args.root)
    want = setup_cell_source(course.repository_url)
    stale = []
    for unit in course.units():
        for nb_info in course.notebooks(unit):
            nb = nbformat.read(nb_info.path, as_version=4)
            cell = first_code_cell(nb)
            if cell is not None and cell.source == want:
                continue
            stale.append(nb_info.path)
            if args.check:
                continue
            if cell is not None and cell.source.startswith(MARKER):
                cell.source = want
            else:
                new = nbformat.v4.new_code_cell(want)
                new.metadata["tags"] = ["setup"]
                first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
                nb.cells.insert(first_code, new)
            nbformat.write(nb, nb_info.path)
    for path in stale:
        print(("stale setup cell: " if args.check else "rewrote setup cell: ") + str(path.relative_to(course.root)))
    return 1 if (args.check and stale) else 0


def _grading_imports() -> None:
    """Before the grading commands import nbformat: skip a grammar jsonschema builds for nothing."""
    from .grading.job import skip_slow_imports

    skip_slow_imports()


def cmd_collect(args) -> int:
    _grading_imports()
    from .grading.collect import collect

    rows = collect(Course(args.root), args.unit, Path(args.inbox), args.student_pattern, args.force)
    return 0 if any(r.status in ("collected", "malformed", "unchanged") for r in rows) else 1


def cmd_autograde(args) -> int:
    _grading_imports()
    from .grading.autograde import GradingError, Options, autograde
    from .grading.isolation import Limits, parse_bytes
    from .release import ReleaseError

    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    memory_bytes=parse_bytes(args.memory))
    phase = "prepare" if args.prepare_only else "merge" if args.merge_only else "all"
    options = Options(workers=args.workers, limits=limits, isolation=args.isolation,
                      scratch=Path(args.scratch) if args.scratch else None,
                      keep_scratch=args.keep_scratch, progress=not args.no_progress, phase=phase)
    try:
        results = autograde(Course(args.root), args.unit, args.student, options, db_url=args.db)
    except ReleaseError as err:
        raise GradingError(str(err)) from None
    return 1 if any(r["outcome"] == "error" for r in results) else 0


def cmd_feedback(args) -> int:
    _grading_imports()
    from .grading.feedback import feedback

    rows = feedback(Course(args.root), args.unit, args.student)
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_export(args) -> int:
    _grading_imports()
    from .grading.export import export

    export(Course(args.root), Path(args.to), args.units, Path(args.nbgrader_csv) if args.nbgrader_csv else None)
    return 0


def cmd_grade_job(args) -> int:
    from .grading.job import main as job_main

    return job_main([*map(str, args.job_dirs), "--slot", str(args.slot), *(["--keep"] if args.keep else [])])


def _add_grading_commands(sub) -> None:
    p = sub.add_parser("collect", help="lay out submissions (folders, zips, LMS exports) for nbgrader")
    p.add_argument("unit")
    p.add_argument("inbox", help="a folder of per-student folders or zips, or one LMS export .zip")
    p.add_argument("--student-pattern", help="regex with a (?P<student>...) group, matched on folder/zip names")
    p.add_argument("--force", action="store_true", help="replace existing, different submitted/ copies")
    p.set_defaults(func=cmd_collect)
    p = sub.add_parser("autograde", help="grade a unit's submissions in parallel, each sandboxed")
    p.add_argument("unit")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    p.add_argument("--workers", type=int, default=0, help="parallel submissions (default: one per core)")
    p.add_argument("--cell-timeout", type=int, default=60, help="wall seconds per cell (default 60)")
    p.add_argument("--notebook-timeout", type=int, default=300, help="wall seconds per notebook (default 300)")
    p.add_argument("--memory", default="2GiB", help="memory cap per submission (default 2GiB)")
    p.add_argument("--isolation", choices=["auto", "namespace", "uid", "rlimits"], default="auto",
                   help="sandbox level (default: the strongest that works here)")
    p.add_argument("--db", help="gradebook URL (default: the course's, from nbgrader_config.py)")
    p.add_argument("--scratch", help="folder for the bundle and job folders (default: a temporary one)")
    p.add_argument("--keep-scratch", action="store_true", help="keep job folders and worker logs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    phase = p.add_mutually_exclusive_group()
    phase.add_argument("--prepare-only", action="store_true",
                       help="only write the job folders (in --scratch) for a scheduler to run with grade-job")
    phase.add_argument("--merge-only", action="store_true", help="only merge the results of jobs run elsewhere")
    p.set_defaults(func=cmd_autograde)
    p = sub.add_parser("feedback", help="nbgrader's HTML feedback per student, with failure reasons")
    p.add_argument("unit")
    p.add_argument("--student", action="append", help="only this student (repeatable)")
    p.set_defaults(func=cmd_feedback)
    p = sub.add_parser("export", help="grades.csv (score, outcome, reason) and nbgrader's CSV")
    p.add_argument("units", nargs="*")
    p.add_argument("--to", default="grades.csv")
    p.add_argument("--nbgrader-csv", default="grades-nbgrader.csv", help="nbgrader's own export ('' to skip)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("grade-job", help="run self-contained grading job folders (for batch schedulers)")
    p.add_argument("job_dirs", nargs="+", type=Path)
    p.add_argument("--slot", type=int, default=0, help="sandbox uid = 61000 + slot")
    p.add_argument("--keep", action="store_true")
    p.set_defaults(func=cmd_grade_job)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="dlmi-course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="course root (default: found from the current folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="regenerate course/ from solutions/")
    p.add_argument("units", nargs="*")
    p.set_defaults(func=cmd_release)
    p = sub.add_parser("run", help="execute lecture and solution notebooks, print the table")
    p.add_argument("units", nargs="*")
    p.add_argument("--build", default="build")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("map", help="regenerate the README course map")
    p.set_defaults(func=cmd_map)
    p = sub.add_parser("setup-cells", help="write the canonical setup cell into every source notebook")
    p.add_argument("--check", action="store_true", help="only report stale cells (exit 1 if any)")
    p.set_defaults(func=cmd_setup_cells)
    _add_grading_commands(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"dlmi-course: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: ``dlmi-course autograde`` with 1 worker (the reference) and with 2 workers, same run,
same class.

A class of N submissions of assignment 01 (solutions, partly correct and blank notebooks in
turn) is graded twice, each time into a fresh copy of the course, sandbox and all. The script
prints the wall time of each run, the seconds per submission and the ratio time(1 worker) /
time(2 workers) (2.0 would be perfectly linear in cores). The machine's load average is printed
too: on a shared machine, other work takes cores away from the second worker.

    python bench/grading.py [--submissions 50] [--workers 1,2]
"""
from __future__ import annotations

import argparse
import copy
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))  # run from a checkout without installing

import nbformat  # noqa: E402

from dlmi.course import Course  # noqa: E402
from dlmi.course.grading import autograde as ag  # noqa: E402
from dlmi.course.grading import isolation  # noqa: E402

NB = "assignment_01_rnn.ipynb"


def make_class(folder: Path, count: int) -> None:
    """A course folder with ``count`` submissions: full, partial (first answer only) and blank."""
    (folder / "solutions" / "01_rnn").mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / "01_rnn" / NB, folder / "solutions" / "01_rnn" / NB)
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    sol = nbformat.read(ROOT / "solutions" / "01_rnn" / NB, as_version=4)
    rel = nbformat.read(ROOT / "course" / "01_rnn" / NB, as_version=4)
    partial = copy.deepcopy(rel)
    answer = next(c for c in sol.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "rnn_forward")
    stub = next(c for c in partial.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "rnn_forward")
    stub.source = answer.source
    kinds = [sol, partial, rel]
    for i in range(count):
        target = folder / "submitted" / f"student{i:03d}" / "01_rnn"
        target.mkdir(parents=True)
        nbformat.write(kinds[i % 3], target / NB)


def grade(folder: Path, workers: int) -> tuple[float, list[dict]]:
    options = ag.Options(workers=workers, progress=False,
                         limits=isolation.Limits(cell_timeout=60, notebook_timeout=300))
    start = time.perf_counter()
    results = ag.autograde(Course(folder), "01", options=options, out=io.StringIO())
    return time.perf_counter() - start, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts; the first is the reference")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(f"grading {args.submissions} submissions of assignment 01 on {os.cpu_count()} cores; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    times = {}
    with tempfile.TemporaryDirectory(prefix="dlmi-bench-grading-") as tmp:
        for workers in counts:
            folder = Path(tmp) / f"course-{workers}"
            make_class(folder, args.submissions)
            seconds, results = grade(folder, workers)
            outcomes = sorted({r["outcome"] for r in results})
            scores = sorted({r["score"] for r in results})
            times[workers] = seconds
            print(f"  {workers} worker(s): {seconds:7.1f} s   {seconds / args.submissions:5.2f} s/submission   "
                  f"outcomes {outcomes}, scores {scores}, isolation {results[0]['isolation']}, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            shutil.rmtree(folder)
    reference = counts[0]
    for workers in counts[1:]:
        print(f"speed-up {workers} vs {reference} worker(s): {times[reference] / times[workers]:.2f}x "
              f"(linear would be {workers / reference:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

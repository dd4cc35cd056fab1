"""The course as students meet it: every notebook in a fresh kernel, against the budget.

Budget (Binder's size): <= 120 s and <= 2 GiB peak resident memory per notebook on 2 CPU cores,
the whole course <= 20 minutes. Each notebook runs exactly as a student runs it (no smoke mode),
via dlmi.course.execute: one fresh process and kernel per notebook, peak RSS of the kernel from
getrusage of that process's children.

    python bench/course.py [UNIT ...] [--build DIR] [--jobs N] [--json FILE]

``--jobs N`` runs N notebooks at a time (for a many-core GPU machine; the budget is about one at a
time on 2 cores, so measure the budget with the default, 1). ``--json`` saves every run with the
headline results the notebook reported, so runs on two machines (CPU, GPU) can be compared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from dlmi.course import Course  # noqa: E402
from dlmi.course.execute import BUDGET_BYTES, BUDGET_SECONDS, execute  # noqa: E402

COURSE_BUDGET_SECONDS = 20 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("units", nargs="*")
    parser.add_argument("--build", default=None)
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at a time (default 1)")
    parser.add_argument("--json", default=None, help="write every run (times, memory, results) here")
    args = parser.parse_args()
    course = Course(Path(__file__).resolve().parents[1])
    build = Path(args.build or tempfile.mkdtemp(prefix="dlmi-bench-course-"))
    print(f"cores: {os.cpu_count()}  jobs: {args.jobs}  budget: {BUDGET_SECONDS} s and "
          f"{BUDGET_BYTES / 2**30:.0f} GiB per notebook, {COURSE_BUDGET_SECONDS // 60} min in all")
    print(f"{'notebook':58s} {'wall s':>8s} {'x budget':>8s} {'peak MiB':>9s} {'x budget':>8s}  status")
    notebooks = [(unit, nb) for unit in course.resolve_units(args.units) for nb in course.notebooks(unit)]
    lock, runs, over = threading.Lock(), {}, 0
    start = time.perf_counter()

    def save():  # after every notebook, so that an interrupted run keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps({"jobs": args.jobs, "cores": os.cpu_count(),
                                                   "seconds_so_far": time.perf_counter() - start,
                                                   "runs": runs}, indent=1))

    def one(item):
        nonlocal over
        unit, nb = item
        run = execute(nb.path, build / unit / nb.name)
        t_ratio, m_ratio = run.seconds / BUDGET_SECONDS, run.peak_bytes / BUDGET_BYTES
        status = "ok" if run.ok else ("FAILED: " + run.error.strip().splitlines()[-1][:200]) if run.error.strip() else "FAILED"
        with lock:
            if run.ok and (t_ratio > 1 or m_ratio > 1):
                status, over = "OVER BUDGET", over + 1
            runs[f"{unit}/{nb.name}"] = asdict(run)
            print(f"{unit + '/' + nb.name:58s} {run.seconds:8.1f} {t_ratio:8.2f} {run.peak_bytes / 2**20:9.0f} "
                  f"{m_ratio:8.2f}  {status}", flush=True)
            save()

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, notebooks))
    total = time.perf_counter() - start
    print(f"whole course: {total:.0f} s = {total / COURSE_BUDGET_SECONDS:.2f} x the {COURSE_BUDGET_SECONDS // 60}-minute "
          f"budget; {over} notebook(s) over budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())

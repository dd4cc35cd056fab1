"""``dlmi-course``: the instructor's command line.

    dlmi-course release [UNIT ...]      regenerate course/ from solutions/ (nbgrader generate_assignment)
    dlmi-course run [UNIT ...]          execute every lecture and solution notebook; print the table
    dlmi-course map                     regenerate the README course map (Binder / Colab links)
    dlmi-course setup-cells [--check]   write (or check) the canonical setup cell in every source notebook
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"dlmi-course: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

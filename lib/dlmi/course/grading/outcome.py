"""How a graded submission ended, in words an instructor (and the export) can use.

Every submission ends with exactly one outcome: ``graded`` (a score, possibly zero) or a named
reason the score is incomplete or zero. When several things went wrong, the most severe one
names the outcome and the others stay in the reason text.
"""
from __future__ import annotations

import json
from pathlib import Path

GRADED = "graded"
TIMEOUT = "timeout"      # a cell or the notebook ran past its wall-time limit
MEMORY = "memory"        # the memory cap was hit (MemoryError, or the sandbox stopped the kernel)
CRASHED = "crashed"      # the kernel exited or was killed (os._exit, a signal, too many processes)
MALFORMED = "malformed"  # not a notebook, not valid JSON, or cells that cannot be matched to the release
MISSING = "missing"      # the notebook was not submitted
ERROR = "error"          # the grader itself failed on this submission (a bug to report)

# Most severe first.
SEVERITY = (ERROR, MALFORMED, CRASHED, MEMORY, TIMEOUT, MISSING, GRADED)

RECORD = "grading.json"  # written next to each autograded notebook


def worst(outcomes) -> str:
    outcomes = set(outcomes) or {GRADED}
    return next(o for o in SEVERITY if o in outcomes)


def write_record(folder: Path, result: dict) -> Path:
    path = Path(folder) / RECORD
    keep = {k: result.get(k) for k in ("student", "unit", "outcome", "reason", "score", "max_score",
                                        "isolation", "seconds", "notes")}
    keep["notebooks"] = {name: {k: nb.get(k) for k in ("outcome", "reason", "score", "max_score", "tests")}
                         for name, nb in (result.get("notebooks") or {}).items()}
    path.write_text(json.dumps(keep, indent=1))
    return path


def read_record(folder: Path) -> dict | None:
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table(rows, headers) -> str:
    """A plain text table (no dependency), as the other ``dlmi-course`` commands print."""
    rows = [[str(x) for x in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def fmt_score(score, max_score) -> str:
    if score is None:
        return "-"
    return f"{score:g}/{max_score:g}"

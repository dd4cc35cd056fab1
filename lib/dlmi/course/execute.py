"""Execute a notebook the way a student does, and measure it.

Each notebook runs in a fresh kernel started by a fresh process (``python -m dlmi.course.execute``),
so that the peak resident memory of that process's children is exactly the kernel's peak
(``getrusage(RUSAGE_CHILDREN)`` after the kernel has exited). The executed notebook and an HTML
rendering are written next to each other; the headline results the notebook reported with
:func:`dlmi.show_result` are collected from its outputs.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..results import MIME

BUDGET_SECONDS = 120
BUDGET_BYTES = 2 * 1024**3


@dataclass
class Run:
    notebook: str
    ok: bool
    seconds: float
    peak_bytes: int
    results: list = field(default_factory=list)
    error: str = ""
    executed: str = ""
    html: str = ""


def headline_results(nb) -> list[tuple[str, str]]:
    """(name, value) pairs from the outputs of :func:`dlmi.show_result`, in notebook order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if MIME in data:
                found.append((data[MIME]["name"], data[MIME]["value"]))
            elif out.get("output_type") == "stream":
                for line in out.get("text", "").splitlines():
                    if line.startswith("RESULT ") and ":" in line:
                        name, value = line[len("RESULT "):].split(":", 1)
                        found.append((name.strip(), value.strip()))
    return found


def _execute_here(src: Path, out_ipynb: Path, timeout: int) -> dict:
    """Run in the child process: execute, save, render; return what the parent needs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(src.parent)}})
    error = ""
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err)
    except Exception as err:  # kernel died, timeout, ...
        error = f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    out_ipynb.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_ipynb)
    html_path = out_ipynb.with_suffix(".html")
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nb)
        html_path.write_text(body, encoding="utf-8")
    except Exception as err:  # rendering must not hide the execution result
        error = error or f"HTML rendering failed: {err}"
    return asdict(Run(notebook=str(src), ok=not error, seconds=seconds, peak_bytes=peak,
                      results=headline_results(nb), error=error[-4000:],
                      executed=str(out_ipynb), html=str(html_path)))


def execute(src: Path, out_ipynb: Path, timeout: int = 600, env: dict | None = None) -> Run:
    """Execute ``src`` in a fresh process and kernel; write ``out_ipynb`` and its ``.html``."""
    src, out_ipynb = Path(src).resolve(), Path(out_ipynb).resolve()
    if not src.is_file():
        raise FileNotFoundError(f"no notebook at {src}")
    report = out_ipynb.with_suffix(".run.json")
    cmd = [sys.executable, "-m", "dlmi.course.execute", str(src), str(out_ipynb), str(timeout), str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0 or not report.exists():
        return Run(notebook=str(src), ok=False, seconds=0.0, peak_bytes=0,
                   error=f"runner failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(report.read_text())
    report.unlink()
    data["results"] = [tuple(r) for r in data["results"]]
    return Run(**data)


if __name__ == "__main__":  # the child process
    _src, _out, _timeout, _report = sys.argv[1:5]
    Path(_report).write_text(json.dumps(_execute_here(Path(_src), Path(_out), int(_timeout))))

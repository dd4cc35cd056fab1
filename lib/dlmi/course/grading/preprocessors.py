"""The two nbgrader preprocessors we add to ``nbgrader autograde``; everything else is nbgrader's.

:class:`Realign` (sanitising stage, before nbgrader's ``OverwriteCells``)
    gives back the nbgrader metadata of cells whose metadata a student's tool cleared, by matching
    them to the release (same source for locked cells and untouched stubs; position between
    matched neighbours for answer cells), and puts back cells the student deleted, so that
    ``OverwriteCells`` can restore every locked and test cell from the gradebook as usual. A
    notebook that cannot be matched is refused by name (:class:`MalformedSubmission`).

:class:`GuardedExecute` (autograding stage, replacing nbgrader's ``Execute``)
    runs the notebook in the sandboxed kernel with a time limit per cell and per notebook, and
    keeps going when a kernel dies or hangs, so that every test cell ends with an outcome
    nbgrader's ``SaveAutoGrades`` can score: cells that did not run get an error output (and
    score 0) instead of no output (which nbgrader would score as full marks). Around each test
    cell it runs the in-kernel :mod:`.guard`; a test cell keeps its outputs for nbgrader to
    grade only if the guard's token shows that it ran to its last line. Output a test cell
    writes to stderr (a torch warning, a tqdm bar) is kept as ordinary output, so that it no
    longer zeroes a correct answer.

Both write what they saw to ``report_directory/<notebook>.json`` for the grading job.
"""
from __future__ import annotations

import ast
import copy
import json
import secrets
import time
from pathlib import Path

from nbformat.notebooknode import NotebookNode, from_dict
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Dict, Integer, List, Unicode

from . import guard
from .outcome import CRASHED, ERROR, MEMORY, TIMEOUT


class MalformedSubmission(Exception):
    """A notebook that cannot be graded as it is (reported by name; it scores zero)."""


class _NoKernel(Exception):
    """The kernel could not be started or prepared (before any student code ran)."""


def _report(directory: str, notebook: str, key: str, value) -> None:
    if not directory:
        return
    path = Path(directory) / f"{notebook}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1))


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return from_dict({"output_type": "error", "ename": ename, "evalue": evalue,
                      "traceback": [f"{ename}: {evalue}"]})


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


# ---------------------------------------------------------------------------- Realign

class Realign(NbGraderPreprocessor):
    """Match cells without nbgrader metadata to the release; put back deleted release cells."""

    release_directory = Unicode("", help="folder holding <assignment>/<notebook>.ipynb as released").tag(config=True)
    report_directory = Unicode("", help="where to write what was changed").tag(config=True)
    min_matched = Integer(2, help="locked cells that must match by source before a notebook without any "
                                  "nbgrader metadata is graded rather than refused").tag(config=True)

    def preprocess(self, nb, resources):
        import nbformat

        notebook_id = resources["nbgrader"]["notebook"]
        release = Path(self.release_directory) / resources["nbgrader"]["assignment"] / f"{notebook_id}.ipynb"
        if not release.is_file():
            return nb, resources
        reference = [c for c in nbformat.read(release, as_version=4).cells
                     if c.metadata.get("nbgrader", {}).get("grade_id")]
        notes: list[str] = []
        anchors, had_metadata = _anchor_by_metadata(nb, reference, notes)
        by_source = _anchor_by_source(nb, reference, anchors)
        locked = sum(1 for c in reference if c.metadata.nbgrader.get("locked"))
        if not had_metadata and by_source < min(self.min_matched, locked):
            raise MalformedSubmission(
                f"{notebook_id}.ipynb has no nbgrader metadata and its cells do not match the release "
                f"({by_source} of {locked} locked cells found): is it the right notebook?")
        by_position = _anchor_by_position(nb, reference, anchors)
        if by_source or by_position:
            notes.append(f"{by_source + by_position} cells had lost their nbgrader metadata and were matched "
                         f"to the release ({by_source} by source, {by_position} by position)")
        restored = _put_back(nb, reference, anchors)
        if restored:
            notes.append("cells missing from the submission were put back from the release: " + ", ".join(restored))
        _report(self.report_directory, notebook_id, "realign", notes)
        return nb, resources


def _ids(cells) -> list[str]:
    return [c.metadata.nbgrader["grade_id"] for c in cells]


def _anchor_by_metadata(nb, reference, notes) -> tuple[dict[str, int], bool]:
    """grade_id -> cell index for cells whose metadata names a release cell; other nbgrader
    metadata (unknown ids, second copies, the ``{}`` DeduplicateIds leaves) is dropped."""
    known, anchors, had_metadata = set(_ids(reference)), {}, False
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        if not meta:
            cell.metadata.pop("nbgrader", None)
            continue
        had_metadata = True
        gid = meta.get("grade_id")
        if gid in known and gid not in anchors:
            anchors[gid] = i
            continue
        del cell.metadata["nbgrader"]  # an ordinary cell from now on
        if gid not in known:
            notes.append(f"cell {i} carried unknown nbgrader id {gid!r}; graded as an ordinary cell")
    return anchors, had_metadata


def _claim(nb, i: int, ref, anchors: dict) -> None:
    anchors[ref.metadata.nbgrader["grade_id"]] = i
    nb.cells[i].metadata["nbgrader"] = copy.deepcopy(ref.metadata.nbgrader)


def _anchor_by_source(nb, reference, anchors: dict) -> int:
    """Cells without metadata whose source is exactly a release cell's (locked cells, stubs)."""
    found = 0
    for ref in reference:
        if ref.metadata.nbgrader["grade_id"] in anchors:
            continue
        for i, cell in enumerate(nb.cells):
            if ("nbgrader" not in cell.metadata and i not in anchors.values()
                    and cell.cell_type == ref.cell_type and _normal(cell.source) == _normal(ref.source)):
                _claim(nb, i, ref, anchors)
                found += 1
                break
    return found


def _anchor_by_position(nb, reference, anchors: dict) -> int:
    """Answer cells: the first free cell between the matched neighbours (one that defines what
    the stub defines, if there is one)."""
    order, found = _ids(reference), 0
    for k, ref in enumerate(reference):
        gid = order[k]
        if gid in anchors or not ref.metadata.nbgrader.get("solution"):
            continue
        lo = max((anchors[g] for g in order[:k] if g in anchors), default=-1)
        hi = min((anchors[g] for g in order[k + 1:] if g in anchors and anchors[g] > lo), default=len(nb.cells))
        head = next((line for line in ref.source.splitlines() if line.strip()), "").split("(")[0]
        free = [i for i in range(lo + 1, hi)
                if "nbgrader" not in nb.cells[i].metadata and nb.cells[i].cell_type == ref.cell_type]
        free.sort(key=lambda i: head not in nb.cells[i].source)
        if free:
            _claim(nb, free[0], ref, anchors)
            found += 1
    return found


def _put_back(nb, reference, anchors: dict) -> list[str]:
    """Release cells still missing (deleted), inserted after their matched predecessor."""
    order, restored = _ids(reference), []
    for k, ref in enumerate(reference):
        gid = order[k]
        if gid in anchors:
            continue
        after = max((anchors[g] for g in order[:k] if g in anchors), default=-1)
        cell = copy.deepcopy(ref)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        nb.cells.insert(after + 1, cell)
        for g, i in anchors.items():
            if i > after:
                anchors[g] = i + 1
        anchors[gid] = after + 1
        restored.append(gid)
    return restored


# ---------------------------------------------------------------------------- GuardedExecute

def instrument(source: str, epilogue: str) -> str:
    """``source`` with ``epilogue`` as its last statement, keeping the value of a final expression
    (nbgrader reads partial credit from it)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (magics): append; the cell still has to reach it
        return f"{source}\n{epilogue}\n"
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr) or source.rstrip().endswith(";"):
        return f"{source}\n{epilogue}\n"
    lines = source.splitlines(keepends=True)
    head = "".join(lines[:last.lineno - 1]) + lines[last.lineno - 1].encode()[:last.col_offset].decode()
    expr = ast.get_source_segment(source, last)
    return f"{head}__dlmi_value__ = (\n{expr}\n)\n{epilogue}\n__dlmi_value__\n"


def guard_setup(key: str, modules, classes, rebind) -> str:
    """The kernel's first cell: :mod:`.guard` run in a private namespace, bound to ``__dlmi_guard__``."""
    source = Path(guard.__file__).read_text()
    args = (key, list(modules), list(classes), {k: list(v) for k, v in rebind.items()})
    return ("__dlmi_guard__ = (lambda ns: (exec(compile({src!r}, '<dlmi-grader-guard>', 'exec'), ns), "
            "ns['install'](*{args!r}))[1])({{'__name__': 'dlmi_grader_guard'}})").format(src=source, args=args)


class GuardedExecute(Execute):
    """nbgrader's Execute with the sandbox, the guard and per-notebook limits."""

    cell_timeout = Integer(60, help="seconds a cell may run").tag(config=True)
    notebook_timeout = Integer(600, help="seconds the whole notebook may run").tag(config=True)
    setup_timeout = Integer(120, help="seconds for the guard's set-up (imports torch)").tag(config=True)
    start_attempts = Integer(3, help="kernels to try before giving up on a start (no student code ran yet)"
                             ).tag(config=True)
    max_output_bytes = Integer(2**20, help="output kept per cell: a flood of prints must not fill the grader's "
                                           "memory").tag(config=True)
    work_directory = Unicode("", help="the kernel's working folder (the sandbox's only writable one)").tag(config=True)
    events_file = Unicode("", help="the sandbox's event log").tag(config=True)
    report_directory = Unicode("", help="where to write the outcome").tag(config=True)
    guard_modules = List([], help="modules whose public functions the guard protects").tag(config=True)
    guard_classes = List([], help="classes whose attributes the guard protects").tag(config=True)
    guard_rebind = Dict({}, help="name -> [module, attr]: names instructor cells bind by import").tag(config=True)

    # -- the notebook

    def preprocess(self, nb, resources):
        self._notebook = resources["nbgrader"]["notebook"]
        metadata = resources.setdefault("metadata", {})
        original_path = metadata.get("path")
        if self.work_directory:
            metadata["path"] = self.work_directory
        started = time.monotonic()
        try:
            for attempt in range(1, self.start_attempts + 1):
                self._reset()
                try:
                    nb, resources = super().preprocess(nb, resources)
                    break
                except _NoKernel as err:
                    # Nothing of the student's has run yet (a kernel port taken by another process,
                    # a slow start): a fresh kernel is fair, up to start_attempts times.
                    if attempt < self.start_attempts:
                        self.log.warning("kernel start failed (%s); starting another", err)
                        time.sleep(attempt)
                        continue
                    self._stop(ERROR, f"the sandboxed kernel did not start ({err})")
                except Exception as err:  # noqa: BLE001 - the kernel died in between cells
                    if not self._guarded and attempt < self.start_attempts:
                        self.log.warning("kernel start failed (%s); starting another", err)
                        time.sleep(attempt)
                        continue
                    self._stop(*self._death_reason(f"{type(err).__name__}: {err}"))
                for cell in nb.cells:
                    self._mark_not_run(cell)
                break
        finally:
            metadata["path"] = original_path
        _report(self.report_directory, self._notebook, "execute", {
            "flags": self._flags, "tests": self._tests, "seconds": round(time.monotonic() - started, 2)})
        return nb, resources

    def _reset(self):
        self._flags: list[tuple[str, str]] = []
        self._stopped: tuple[str, str] | None = None
        self._tests: dict[str, str] = {}
        self._key = secrets.token_hex(16)
        self._count = 0
        self._guarded = False
        self._deadline = None  # set once the guard is in: the notebook's own time starts then
        self._output_bytes: dict[int, int] = {}
        self._token = None
        if self.events_file and Path(self.events_file).exists():
            Path(self.events_file).write_text("")  # a new kernel, a new log

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return cell, resources
        if not self._guarded and not self._stopped:
            self._install_guard()  # before any of the student's code; raises _NoKernel
        if self._stopped:
            self._mark_not_run(cell)
            return cell, resources
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self._stop(TIMEOUT, f"the notebook ran longer than {self.notebook_timeout} s")
            self._kill()
            self._mark_not_run(cell)
            return cell, resources
        self.timeout = max(1, int(min(self.cell_timeout, remaining)))
        try:
            if is_test_cell(cell):
                self._run_test(cell, index)
            else:
                self.execute_cell(cell, index, store_history=True)
        except Exception as err:  # noqa: BLE001 - DeadKernelError, CellTimeoutError (IOPub), ...
            self._stop(*self._death_reason(f"{type(err).__name__}: {err}"))
            self._kill()
            self._mark_not_run(cell, keep_outputs=True)
            return cell, resources
        self._after(cell, index)
        return cell, resources

    # -- test cells

    def _run_test(self, cell, index):
        gid = cell.metadata.nbgrader["grade_id"]
        self._count += 1
        n = self._count
        status = self._silent("", timeout=min(self.timeout, 30), begin=f"__dlmi_guard__.begin({n})",
                              expect=repr(guard.token(self._key, f"begin:{n}")))
        if status != "ok":
            cell.outputs = [_error_output(
                "TamperingDetected", "the grader could not restore its environment before this test cell "
                                     f"({status}); it gets no credit")]
            self._tests[gid] = "failed: the grader's preparation did not run"
            return
        source = cell.source
        cell.source = instrument(source, f"__dlmi_guard__.finish({n})")
        self._token = guard.token(self._key, n)
        try:
            self.execute_cell(cell, index, store_history=True)
        finally:
            cell.source = source
            self._token = None
        self._silent("", timeout=min(self.timeout, 30), begin="__dlmi_guard__.scrub()",
                     expect=repr(guard.token(self._key, "scrub")))
        token = guard.token(self._key, n)
        found = False
        for out in cell.outputs:
            if out.output_type == "stream" and token in out.text:
                out.text = out.text.replace(f"\n{token}\n", "").replace(token, "")
                found = True
            if out.output_type == "stream" and out.name == "stderr":
                out.name = "stdout"  # warnings and progress bars are not failures
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and not o.text)]
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            self._tests[gid] = f"failed: {errors[0].ename}"
        elif not found:
            cell.outputs.append(_error_output(
                "TestDidNotFinish", "this test cell did not run to its end in the grader's environment "
                                    "(its output was suppressed or faked); it gets no credit"))
            self._tests[gid] = "failed: did not run to its end"
        else:
            self._tests[gid] = "passed"

    def _install_guard(self):
        code = guard_setup(self._key, self.guard_modules, self.guard_classes, self.guard_rebind)
        status = self._silent(code, timeout=self.setup_timeout)
        if status != "ok":
            raise _NoKernel(f"the grader's guard could not be set up in the kernel: {status}")
        self._guarded = True
        self._deadline = time.monotonic() + self.notebook_timeout

    def _silent(self, code: str, timeout: int, begin: str | None = None, expect: str | None = None) -> str:
        """Run grader code in the kernel without a cell: 'ok', or what went wrong. ``begin`` is an
        expression evaluated through ``user_expressions`` (after ``code``: no input transformer
        or patched ``run_cell`` sees it), whose value must be ``expect``."""
        saved = self.timeout
        self.timeout = timeout
        try:
            msg_id = self.kc.execute(code, silent=True, store_history=False, stop_on_error=False,
                                     user_expressions={"begin": begin} if begin else None)
            reply = self.wait_for_reply(msg_id)
        except Exception:  # noqa: BLE001 - DeadKernelError
            return "the kernel died"
        finally:
            self.timeout = saved
        if reply is None:
            return "no answer in time"
        content = reply["content"]
        if content["status"] != "ok":
            return f"error: {content.get('ename')}: {content.get('evalue')}"
        if begin:
            got = content.get("user_expressions", {}).get("begin", {})
            if got.get("status") != "ok":
                return f"error: {got.get('ename')}: {got.get('evalue')}"
            if got.get("data", {}).get("text/plain") != expect:
                return "the kernel answered for the grader"
        return "ok"

    def output(self, outs, msg, display_id, cell_index):
        """nbclient's output handling, up to ``max_output_bytes`` per cell (the guard's token
        always gets through); past it one note says that the rest was dropped."""
        content = msg.get("content", {})
        text = content.get("text") or ""
        if self._token and self._token in text:
            return super().output(outs, msg, display_id, cell_index)
        size = len(text) + sum(len(str(v)) for v in (content.get("data") or {}).values())
        size += sum(len(line) for line in content.get("traceback") or [])
        used = self._output_bytes.get(cell_index, 0) + size
        self._output_bytes[cell_index] = used
        if used <= self.max_output_bytes:
            return super().output(outs, msg, display_id, cell_index)
        if used - size <= self.max_output_bytes:
            outs.append(from_dict({"output_type": "stream", "name": "stdout",
                                   "text": f"\n[the grader kept the first {self.max_output_bytes} bytes of output]\n"}))
        return None

    # -- after each cell: name what went wrong, and stop a kernel that no longer answers

    def _after(self, cell, index):
        for out in cell.get("outputs", []):
            if out.output_type != "error":
                continue
            text = f"{out.ename}: {out.evalue}"
            if out.ename == "MemoryError" or "can't allocate memory" in text or "not enough memory" in text:
                self._flag(MEMORY, f"cell {index} ran out of memory ({out.ename})")
            elif out.ename == "CellTimeoutError":
                self._flag(TIMEOUT, f"cell {index} ran longer than {self.timeout} s and was interrupted")
                if self._silent("", timeout=10) != "ok":
                    self._stop(TIMEOUT, f"cell {index} ran longer than {self.timeout} s and the kernel did "
                                        "not answer an interrupt; the rest of the notebook was not run")
                    self._kill()

    def _flag(self, outcome, reason):
        if (outcome, reason) not in self._flags:
            self._flags.append((outcome, reason))

    def _stop(self, outcome, reason):
        self._flag(outcome, reason)
        if not self._stopped:
            self._stopped = (outcome, reason)

    def _kill(self):
        try:
            from jupyter_core.utils import run_sync

            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _mark_not_run(self, cell, keep_outputs=False):
        if cell.cell_type != "code":
            return
        if not keep_outputs:
            cell.outputs = []
        if is_test_cell(cell) and not any(o.output_type == "error" for o in cell.outputs):
            outcome, reason = self._stopped or (ERROR, "not run")
            cell.outputs.append(_error_output("NotRun", f"this test cell was not run to its end: {reason}"))
            self._tests[cell.metadata.nbgrader["grade_id"]] = f"not run ({outcome})"

    def _events(self) -> list[dict]:
        path = Path(self.events_file) if self.events_file else None
        if not path or not path.exists():
            return []
        events = []
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def _death_reason(self, detail: str, default: str = CRASHED) -> tuple[str, str]:
        """Why the kernel is gone, from the sandbox's events (memory, processes, signal, exit code)."""
        time.sleep(0.3)  # the launcher logs just before it exits
        events = self._events()
        for event in events:
            if event.get("event") == "memory":
                return MEMORY, (f"the kernel used {event['bytes'] / 2**20:.0f} MiB, over the "
                                f"{event['limit'] / 2**20:.0f} MiB cap, and was stopped")
            if event.get("event") == "processes":
                return CRASHED, (f"the kernel started {event['processes']} processes (limit {event['limit']}) "
                                 "and was stopped")
            if event.get("event") == "sandbox-error":
                return ERROR, f"the sandbox could not start the kernel: {event.get('detail')}"
        exits = [e for e in events if e.get("event") == "exit"]
        if exits and not exits[-1].get("stopped_by"):
            code = exits[-1].get("code")
            if code == 128 + 24:  # SIGXCPU
                return TIMEOUT, "the kernel used up its CPU time limit and was stopped"
            if isinstance(code, int) and code > 128:
                return CRASHED, f"the kernel was killed by signal {code - 128}"
            return CRASHED, f"the kernel exited (exit code {code}) before the notebook was finished"
        if "DeadKernel" in detail or "Kernel died" in detail:
            return CRASHED, "the kernel died before the notebook was finished"
        if "Timeout" in detail or "timed out" in detail:
            return TIMEOUT, detail
        return default, detail

"""The grading pieces that need no kernel: instrumenting test cells, matching cells to the release,
what the guard protects, outcomes and sizes."""
import copy

import nbformat
import pytest

from dlmi.course.grading import bundle, guard, isolation
from dlmi.course.grading.outcome import CRASHED, GRADED, MALFORMED, MEMORY, TIMEOUT, worst
from dlmi.course.grading.preprocessors import MalformedSubmission, Realign, instrument

NB = "assignment_01_rnn.ipynb"


class _Guard:
    def __init__(self):
        self.finished = []

    def finish(self, n):
        self.finished.append(n)


def _run(source):
    g = _Guard()
    ns = {"__dlmi_guard__": g}
    code = instrument(source, "__dlmi_guard__.finish(7)")
    tree_last = compile(code, "<cell>", "exec")
    exec(tree_last, ns)
    return ns, g.finished


def test_instrumented_cells_end_with_the_guard_and_keep_their_value():
    ns, finished = _run("x = 2\nx * 21")
    assert finished == [7] and ns["__dlmi_value__"] == 42  # the partial-credit value survives
    assert instrument("x = 2\nx * 21", "END").rstrip().endswith("__dlmi_value__")
    assert instrument("f(1);", "END").rstrip().endswith("END")  # a silenced value stays silent
    assert instrument("%time x = 1", "END") == "%time x = 1\nEND\n"  # IPython syntax: appended
    ns, finished = _run("def f():\n    return 1\nassert f() == 1")
    assert finished == [7]
    with pytest.raises(AssertionError):
        _run("assert False\n1")


def test_the_guard_token_is_keyed():
    assert guard.token("k1", 3) == guard.token("k1", 3) != guard.token("k2", 3) != guard.token("k1", 4)


def _realign(release_path, nb):
    pp = Realign(release_directory=str(release_path.parent.parent))
    resources = {"nbgrader": {"notebook": NB[:-6], "assignment": "01_rnn"}}
    return pp.preprocess(nb, resources)[0]


def _ids(nb):
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]


@pytest.fixture()
def release(root):
    return root / "course" / "01_rnn" / NB


def test_cleared_metadata_is_matched_to_the_release(release):
    ref = nbformat.read(release, as_version=4)
    nb = copy.deepcopy(ref)
    for c in nb.cells:
        c.metadata = {}
    nb.cells[4].source = "def rnn_forward(x, U, V, c, h0=None):\n    return 'my answer'"  # an answered stub
    fixed = _realign(release, nb)
    assert _ids(fixed) == _ids(ref)
    assert fixed.cells[4].metadata.nbgrader["solution"] and "my answer" in fixed.cells[4].source


def test_deleted_and_duplicated_cells(release):
    ref = nbformat.read(release, as_version=4)
    nb = copy.deepcopy(ref)
    test_cell = next(c for c in nb.cells if c.metadata.nbgrader["grade_id"] == "test_output_backward")
    nb.cells.remove(test_cell)
    dup = copy.deepcopy(nb.cells[2])
    dup.metadata["nbgrader"] = {}  # what nbgrader's DeduplicateIds leaves on the extra copy
    nb.cells.insert(3, dup)
    fixed = _realign(release, nb)
    ids = _ids(fixed)
    assert ids.index("test_output_backward") == ids.index("output_backward") + 1
    assert ids.count("imports") == 1 and "nbgrader" not in fixed.cells[3].metadata


def test_a_notebook_that_is_not_the_assignment_is_refused_by_name(release, root):
    lecture = nbformat.read(root / "solutions" / "01_rnn" / "lecture_01_rnn.ipynb", as_version=4)
    with pytest.raises(MalformedSubmission, match="assignment_01_rnn.ipynb has no nbgrader metadata"):
        _realign(release, lecture)


def test_the_guard_protects_what_the_instructor_cells_import(root):
    plan = bundle.guard_plan([root / "solutions" / "01_rnn" / NB])
    assert {"torch", "torch.testing", "dlmi.testing", "dlmi.rnn.recurrence", "math"} <= set(plan["modules"])
    assert "sys" not in plan["modules"] and "subprocess" not in plan["modules"]  # they change by themselves
    assert plan["classes"] == ["torch.Tensor"]
    assert plan["rebind"]["forbid_autograd"] == ["dlmi.testing", "forbid_autograd"]
    assert plan["rebind"]["F"] == ["torch.nn.functional", None]


@pytest.mark.parametrize("events,outcome,words", [
    ([{"event": "memory", "bytes": 2**31, "limit": 2**30, "processes": 1}], MEMORY, "2048 MiB, over the 1024 MiB cap"),
    ([{"event": "processes", "processes": 40, "limit": 32}], CRASHED, "40 processes (limit 32)"),
    ([{"event": "exit", "code": 137, "stopped_by": None}], CRASHED, "killed by signal 9"),
    ([{"event": "exit", "code": 3, "stopped_by": None}], CRASHED, "exited (exit code 3)"),
    ([{"event": "exit", "code": 152, "stopped_by": None}], TIMEOUT, "CPU time limit"),
    ([], CRASHED, "died"),
])
def test_why_a_kernel_died_is_read_from_the_sandbox_events(tmp_path, events, outcome, words):
    import json

    from dlmi.course.grading.preprocessors import GuardedExecute

    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    got = GuardedExecute(events_file=str(path))._death_reason("DeadKernelError: Kernel died")
    assert got[0] == outcome and words in got[1], got


def test_outcomes_and_sizes():
    assert worst([GRADED, TIMEOUT, MEMORY]) == MEMORY
    assert worst([CRASHED, MALFORMED]) == MALFORMED
    assert worst([]) == GRADED
    assert isolation.parse_bytes("1GiB") == 2**30 == isolation.parse_bytes("1g")
    assert isolation.parse_bytes("512M") == 512 * 2**20 and isolation.parse_bytes(1000) == 1000

"""Objects that only look like tensors or numbers earn nothing in a graded test (issue 9).

A student's answer can return a ``torch.Tensor`` subclass whose ``__torch_function__`` or
``__eq__`` says "equal", a tensor whose ``tolist`` was replaced, a number that equals everything,
or leave a torch mode on that answers ``torch.allclose`` itself: nothing the guard's snapshot
watches is patched. These tests drive the real guard the way the grader does in the kernel
(install, ``begin(n)``, the instrumented test cell, ``scrub()``) in an in-process IPython shell,
and check that each such trick fails its test cell while honest results (``nn.Parameter``,
numpy, namedtuples, ``torch.Size``, ...) keep full credit. Each hostile test cell is first run
without the guard, to show that the trick really passes an unguarded test. The last test sends
one small notebook through :class:`GuardedExecute` in a real kernel.
"""
import gc
import unittest.mock
from collections import namedtuple

import nbformat
import numpy as np
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from dlmi.course.grading import guard
from dlmi.course.grading.preprocessors import GuardedExecute, guard_setup, instrument
from dlmi.testing import plain

KEY = "0123456789abcdef"
MODULES = ["torch", "torch.testing", "numpy", "dlmi.testing"]


@pytest.fixture(scope="module")
def shell():
    config = Config()
    config.HistoryManager.enabled = False
    return InteractiveShell.instance(config=config)


class Kernel:
    """The student's kernel as the grader drives it: every call is a cell, as in ipykernel."""

    def __init__(self, shell):
        shell.reset(new_session=False)  # (the guard trusts tensor classes made before it, like torch's own)
        self.shell, self.n, self.printed = shell, 0, []
        self.run(guard_setup(KEY, MODULES, ["torch.Tensor"], {}))  # the grader's own first cell
        self.guard = shell.user_ns["__dlmi_guard__"]
        self.guard._write = self.printed.append  # where the token goes (the cell's stdout in a kernel)
        self.modes = self.guard.values.modes()

    def run(self, source):
        result = self.shell.run_cell(source, silent=True)
        assert result.success, result.error_in_exec

    def unguarded(self, source):
        """The test cell as a plain kernel runs it."""
        result = self.shell.run_cell(source, silent=True)
        return "passed" if result.success else f"failed: {type(result.error_in_exec).__name__}"

    def test(self, source):
        """A graded test cell: 'passed' only if it ran to its end and the guard printed its token."""
        self.n += 1
        self.run(f"assert __dlmi_guard__.begin({self.n}) == {guard.token(KEY, f'begin:{self.n}')!r}")
        result = self.shell.run_cell(instrument(source, f"__dlmi_guard__.finish({self.n})"), silent=True)
        self.run("__dlmi_guard__.scrub()")
        if not result.success:
            return f"failed: {type(result.error_in_exec).__name__}: {result.error_in_exec}"
        assert any(guard.token(KEY, self.n) in text for text in self.printed)
        return "passed"

    def close(self):
        C = torch._C
        functions, dispatch = self.guard.values.modes()
        for _ in functions[len(self.modes[0]):]:
            C._pop_torch_function_stack()
        for _ in dispatch[len(self.modes[1]):]:
            C._pop_torch_dispatch_stack(None)


@pytest.fixture()
def kernel(shell):
    k = Kernel(shell)
    yield k
    k.close()
    assert torch._C._is_torch_function_enabled(), "the guard left __torch_function__ dispatch off"


HONEST = '''
import functools
from collections import Counter, namedtuple
import numpy as np
import torch

Scores = namedtuple("Scores", "precision recall fmeasure")
layer = torch.nn.Linear(3, 2)

def double(x):
    return 2 * x

def weight():
    return layer.weight                     # an nn.Parameter, as a model hands it out

def as_parameter(x):
    return torch.nn.Parameter(2 * x)

def grads(x):
    return {"dW": 2 * x, "db": (x.sum(), x.shape), "steps": [x, x.max(0)]}

def rouge(x):
    return Scores(0.5, 0.25, 1 / 3)

def counts(words):
    return Counter(zip(words, words[1:]))

def as_numpy(x):
    return (2 * x).numpy(), np.float64(x.sum())

@functools.lru_cache(maxsize=None)
def param_count(kind, d, n):
    return 4 * n * (d + n + 1)

class Rows(torch.utils.data.Dataset):       # the student's own helpers may return anything to each other
    def __init__(self, x):
        self.x = x
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i]

def rows(x):
    return Rows(x)

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
    def forward(self, x):
        return self.fc(x)

def build():
    return Net()

def ratio():
    from fractions import Fraction
    return Fraction(1, 3)

def column_sums(x):
    data = rows(x)
    return sum(data[i] for i in range(len(data)))
'''

HONEST_TEST = '''
x = torch.randn(4, 3, dtype=torch.float64)
assert not torch._C._is_torch_function_enabled()      # the guard's: no subclass dispatch in a test
want = torch.stack([x[i] * 2 for i in range(4)])       # torch functions in the test itself still work
assert torch.allclose(double(x), want) and torch.equal(double(x), want)
torch.testing.assert_close(double(x), want)
assert (double(x) == want).all() and double(x).tolist() == want.tolist()
assert torch.equal(weight(), layer.weight) and type(weight()) is torch.nn.Parameter
assert torch.allclose(as_parameter(x), want)
g = grads(x)
assert torch.allclose(g["dW"], want) and g["db"][1] == (4, 3) and torch.equal(g["steps"][1].values, x.max(0).values)
assert all(abs(a - b) < 1e-12 for a, b in zip(rouge(x), (0.5, 0.25, 1 / 3)))
assert counts("a b a b".split()) == Counter({("a", "b"): 2, ("b", "a"): 1})
a, s = as_numpy(x)
assert np.allclose(a, want.numpy()) and abs(s - x.sum().item()) < 1e-9
assert param_count("LSTM", 64, 128) == 98_816
assert torch.allclose(column_sums(x), x.sum(0))
assert build()(x.float()).shape == (4, 2) and abs(ratio() - 1 / 3) < 1e-12
with torch.device("meta"):                               # torch's own modes stay on
    assert torch.zeros(1).device.type == "meta"
'''


def test_honest_results_keep_full_credit(kernel):
    kernel.run(HONEST)
    originals = {name: kernel.shell.user_ns[name] for name in ("double", "weight", "param_count")}
    assert kernel.test(HONEST_TEST) == "passed"
    assert kernel.test(HONEST_TEST) == "passed"                 # and again: the guard leaves no trace
    assert all(kernel.shell.user_ns[name] is fn for name, fn in originals.items())
    assert torch._C._is_torch_function_enabled()                # the student's next cell runs as usual
    kernel.run("def double(x):\n    return x + x")              # a changed answer is checked afresh
    assert kernel.test("x = torch.ones(2)\nassert torch.equal(double(x), 2 * x)") == "passed"


FAKES = {
    # __torch_function__ answers every torch function: allclose, equal, assert_close, ...
    "torch_function": ('''
class Fake(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True
def answer(x):
    return torch.zeros_like(x).as_subclass(Fake)
''', "assert torch.allclose(answer(x), 2 * x) and torch.equal(answer(x), 2 * x)",
        "a torch.Tensor subclass of class Fake, which overrides __torch_function__"),
    # Python-level overrides: ==, bool(), tolist(), item(), all()
    "python_overrides": ('''
class Always(list):
    def __eq__(self, other):
        return True
class Fake(torch.Tensor):
    __torch_function__ = torch._C._disabled_torch_function_impl
    def __eq__(self, other):
        return torch.ones((), dtype=torch.bool).as_subclass(Fake)
    def __bool__(self):
        return True
    def all(self):
        return self
    def tolist(self):
        return Always()
def answer(x):
    return torch.zeros_like(x).as_subclass(Fake)
''', "assert (answer(x) == 2 * x).all() and answer(x).tolist() == (2 * x).tolist()",
        "a torch.Tensor subclass of class Fake, which overrides __torch_function__, __eq__, __bool__, all, ..."),
    # a subclass of nn.Parameter: the Parameter is trusted, what the notebook adds is not
    "parameter_subclass": ('''
class Fake(torch.nn.Parameter):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True
def answer(x):
    return Fake(torch.zeros_like(x))
''', "assert torch.allclose(answer(x), 2 * x)", "a torch.Tensor subclass of class Fake"),
    # a plain tensor whose tolist was replaced on the tensor itself (tensors carry a __dict__)
    "shadowed_method": ('''
class Always(list):
    def __eq__(self, other):
        return True
def answer(x):
    t = torch.zeros_like(x)
    t.tolist = lambda: Always()
    return t
''', "assert answer(x).tolist() == (2 * x).tolist()", "a tensor whose tolist was replaced on the tensor itself"),
    # not a tensor at all, but torch still calls its __torch_function__
    "torch_function_object": ('''
class Fake:
    shape = (4, 3)
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True
def answer(x):
    return Fake()
''', "got = answer(x)\nassert got.shape == (4, 3) and torch.allclose(got, 2 * x)",
        "an object of class Fake, which overrides __torch_function__"),
    # numbers that equal everything
    "int_subclass": ('''
import functools
class Count(int):
    def __eq__(self, other):
        return True
@functools.lru_cache(maxsize=None)          # (a C object wrapping the function: checked all the same)
def answer(x):
    return Count(0)
''', "assert answer(x) == 98_816", "an object of class Count, which overrides __eq__"),
    "mock_any": ('''
from unittest import mock
def answer(x):
    return (mock.ANY, mock.ANY)
''', "assert answer(x) == (0.5, 0.25)", "an object of class _ANY, which overrides __eq__"),
}


@pytest.mark.parametrize("kind", sorted(FAKES))
def test_an_object_that_only_looks_equal_earns_nothing(kernel, kind):
    answer, check, why = FAKES[kind]
    kernel.run("import torch")
    assert kernel.test("def _check(f, x):\n    return f(x)\n_check(torch.zeros, 3)") == "passed"  # a test's helper
    kernel.run(answer)
    cell = "x = torch.randn(4, 3)\n" + check
    assert kernel.unguarded(cell) == "passed", "the trick does not even fool an unguarded test"
    outcome = kernel.test(cell)
    assert outcome.startswith("failed: TamperingDetected: answer() returned " + why), outcome
    # caught even where the test itself swallows errors: finish() fails the cell
    caught = "try:\n    " + check.replace("\n", "\n    ") + "\nexcept Exception:\n    pass"
    outcome = kernel.test("x = torch.randn(4, 3)\n" + caught)
    assert outcome.startswith("failed: TamperingDetected: this test cell compared objects that only look like"), outcome
    assert why in outcome
    # and through the helper that an earlier test cell defined
    outcome = kernel.test("x = torch.randn(4, 3)\n" + check.replace("answer(x)", "_check(answer, x)"))
    assert outcome.startswith("failed: TamperingDetected: answer() returned " + why), outcome


def test_a_fake_tensor_that_bypasses_the_return_check_still_earns_nothing(kernel):
    # answer is a callable object (not a function the guard checks); its Fake says "equal"
    kernel.run("import torch\n" + FAKES["torch_function"][0].replace("def answer(x):", "def _make(x):") + '''
class Answer:
    def __call__(self, x):
        return _make(x)
answer = Answer()
''')
    cell = "x = torch.randn(4, 3)\nassert torch.allclose(answer(x), 2 * x)"
    assert kernel.unguarded(cell) == "passed"
    # in the test, torch compares the Fake's numbers (zeros) instead of asking Fake
    assert kernel.test(cell) == "failed: AssertionError: "
    # and the notebook's overriding tensor class alone costs every test while it exists
    kernel.run("def double(x):\n    return 2 * x")
    outcome = kernel.test("x = torch.randn(4, 3)\nassert torch.allclose(double(x), 2 * x)")
    assert "the notebook defines the torch.Tensor subclass Fake (overrides __torch_function__)" in outcome, outcome
    kernel.run("del answer, Answer, _make, Fake")
    gc.collect()
    assert kernel.test("x = torch.randn(4, 3)\nassert torch.allclose(double(x), 2 * x)") == "passed"


MODES = '''
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

class SaysEqual(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return func(*args, **(kwargs or {}))

class DispatchSaysEqual(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.allclose.default, torch.ops.aten.equal.default):
            return True
        return func(*args, **(kwargs or {}))

def answer(x):
    return torch.zeros_like(x)
'''


@pytest.mark.parametrize("mode", ["SaysEqual", "DispatchSaysEqual"])
def test_a_torch_mode_left_on_earns_nothing(kernel, mode):
    kernel.run(MODES)
    cell = "x = torch.randn(4, 3)\nassert torch.allclose(answer(x), 2 * x) and torch.equal(answer(x), 2 * x)"
    kernel.run(f"_on = {mode}()\n_on.__enter__()")        # left on by an answer cell
    assert kernel.unguarded(cell) == "passed"
    assert kernel.test(cell) == "failed: AssertionError: "  # begin() took it off: numbers compared
    kernel.run(f"def answer(x):\n    {mode}().__enter__()\n    return torch.zeros_like(x)")  # on during the test
    outcome = kernel.test(cell)
    assert outcome.startswith("failed: TamperingDetected") and f"the torch mode {mode} was active" in outcome, outcome


def test_a_kernel_registered_for_a_torch_operator_earns_nothing(kernel):
    kernel.run("import torch, warnings\nwarnings.simplefilter('ignore')\n"          # torch warns about the override
               "_lib = torch.library.Library('aten', 'IMPL')\n"
               "_lib.impl('allclose', lambda *args, **kwargs: True, 'CPU')\n"
               "def answer(x):\n    return torch.zeros_like(x)")
    cell = "x = torch.randn(4, 3)\nassert torch.allclose(answer(x), 2 * x)"
    try:
        assert kernel.unguarded(cell) == "passed"
        outcome = kernel.test(cell)
        assert "the notebook gave torch's aten::allclose (CPU) a kernel of its own" in outcome, outcome
    finally:
        kernel.run("del _lib")  # torch drops the kernel with its Library
    assert kernel.test("assert not torch.allclose(torch.zeros(2), torch.ones(2))") == "passed"


def test_turning_subclass_dispatch_back_on_earns_nothing(kernel):
    kernel.run("import torch\ndef answer(x):\n    torch._C.DisableTorchFunction().__exit__(None, None, None)\n"
               "    return 2 * x")
    outcome = kernel.test("x = torch.randn(3)\nassert torch.allclose(answer(x), 2 * x)")
    assert "__torch_function__ dispatch was turned back on" in outcome, outcome


def test_torch_wrapping_its_own_function_mid_test_is_not_tampering(kernel):
    # importing torch._dynamo (an optimizer step may) puts torch._disable_dynamo(torch.manual_seed)
    # in torch.manual_seed's place; unit 09's train_step test lost its points to that
    original = torch.manual_seed
    try:
        cell = "torch.manual_seed = torch._disable_dynamo(torch.manual_seed)\ntorch.manual_seed(0)"
        assert kernel.test("import torch\n" + cell) == "passed"
        assert kernel.test("torch.manual_seed(0)") == "passed"
        outcome = kernel.test("import functools\n"
                              "torch.manual_seed = functools.wraps(torch.manual_seed)(lambda seed: None)")
        assert outcome.startswith("failed: TamperingDetected") and "torch.manual_seed" in outcome, outcome
    finally:
        torch.manual_seed = original


def test_plain_checks_what_a_hidden_test_compares():
    x = torch.randn(3, 2)
    value = {"dW": x, "steps": [torch.nn.Parameter(x), x.shape], "n": 3, "p": (0.5, None, "a"),
             "array": x.numpy(), "scalar": np.float32(1.0), "max": x.max(0)}
    assert plain(value) is value and plain(x) is x

    class Fake(torch.Tensor):
        pass

    shadowed = torch.zeros(2)
    shadowed.tolist = lambda: [0.0, 0.0]
    for bad, words in [(x.as_subclass(Fake), r"value is a \S*Fake, not a plain tensor"),
                       ((x, [x, {"dh": x.as_subclass(Fake)}]), r"value\[1\]\[1\]\['dh'\] is a \S*Fake"),
                       (shadowed, "value has its tolist replaced on the tensor itself"),
                       (unittest.mock.ANY, "value is a unittest.mock._ANY"),
                       (namedtuple("P", "a b")(1, 2), r"value is a \S*P, not"),
                       (np.array([x], dtype=object), "value is a numpy array of Python objects")]:
        with pytest.raises(AssertionError, match=words):
            plain(bad)
    with pytest.raises(AssertionError, match=r"^rnn_forward\(x\) is a \S*Fake"):
        plain(x.as_subclass(Fake), "rnn_forward(x)")


def _test_cell(source, gid, points=1):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": gid, "points": points, "solution": False,
                                 "locked": True, "schema_version": 3}
    return cell


@pytest.mark.slow
def test_in_a_real_kernel(tmp_path):
    """The same guard through GuardedExecute and ipykernel: begin() and the test cell are separate
    requests, and torch's dispatch switch is per thread, so it must hold across them."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\ntorch.set_num_threads(1)\n" + HONEST),
        _test_cell(HONEST_TEST, "honest"),
        nbformat.v4.new_code_cell("import torch\n" + FAKES["torch_function"][0]),
        _test_cell("x = torch.randn(4, 3)\n" + FAKES["torch_function"][1], "fake"),
    ]
    pp = GuardedExecute(guard_modules=MODULES, guard_classes=["torch.Tensor"], cell_timeout=60,
                        setup_timeout=120, extra_arguments=["--HistoryManager.enabled=False"])
    resources = {"nbgrader": {"notebook": "nb", "assignment": "a"}, "metadata": {"path": str(tmp_path)}}
    nb, _ = pp.preprocess(nb, resources)
    assert pp._tests == {"honest": "passed", "fake": "failed: TamperingDetected"}, (pp._tests, nb.cells[3].outputs)
    assert "answer() returned a torch.Tensor subclass of class Fake" in nb.cells[3].outputs[-1].evalue

"""The grader's guard inside the student's kernel: a test cell counts only if it really ran.

The grader sends this file's text as the kernel's first cell, before any student code, and runs
it in a private namespace (not the notebook's). ``install(key, modules, classes, rebind)``
snapshots what graded tests rely on: the builtins, the public functions of the modules the
instructor's cells import (``torch.allclose``, ``dlmi.testing.forbid``, ...) including their
code objects, a few classes (``torch.Tensor``, IPython's shell and kernel, the output streams),
``sys.stdout``/``excepthook``/``displayhook``, IPython's input and AST transformers, custom
exception handlers and event callbacks, and the names the instructor's cells bind by ``import``.

Around every graded test cell the grader runs

* ``begin(n)`` (its own execution, before the cell): put all of that back, so that whatever a
  student's answer cell patched (``torch.allclose = lambda *a, **k: True``, a new
  ``AssertionError``, a silenced ``showtraceback``, an input transformer that rewrites the test,
  a tracer) is undone before the test runs;
* ``finish(n)`` (a line appended to the test cell): check that nothing was patched *during* the
  test (a student function that patches ``torch.allclose`` when called, turns on a tracer to
  jump over ``assert`` lines, ...) and only then print the token ``HMAC(key, n)``. A library
  that puts its own wrapper of one of its functions in its place has not patched it
  (``torch._dynamo``, which an optimizer step may import mid-test, wraps ``torch.manual_seed``).

The grader gives the test cell its points only if that token appears, which needs the cell to
reach its last line: a swallowed exception, a skipped cell or a faked output does not print it,
and the key is not in any cell the student's code can read back (its linecache entry is removed).

A test also counts only if its comparisons compared numbers. Hidden tests compare the student's
results with the library's (``torch.allclose(got, want)``, ``got.tolist() == want``,
``param_count(...) == 98_816``), and a result can answer such a comparison itself without any
patch: a ``torch.Tensor`` subclass whose ``__torch_function__`` returns True, or whose
``__eq__``/``__bool__``/``tolist``/``item`` lie, a tensor with ``tolist`` replaced on the tensor,
``unittest.mock.ANY``, an ``int`` subclass equal to everything; or a torch function/dispatch mode
left on answers ``torch.allclose`` for every tensor, as does a kernel registered for
``aten::allclose`` through ``torch.library``. So ``begin(n)`` also

* turns torch's ``__torch_function__`` dispatch for tensor subclasses and other objects off
  until ``scrub()`` after the cell (``torch._C.DisableTorchFunctionSubclass``; it is per thread,
  and cells run on the kernel's main thread): torch functions then read a subclass's numbers as
  a plain tensor's and refuse other objects, while torch's own modes (``torch.device(...)``,
  ``set_default_device``) keep working;
* takes the modes the notebook pushed off torch's function and dispatch mode stacks;
* has the notebook's public functions (``def``, lambda, method, partial, ``lru_cache``) return
  through a check, undone by ``scrub()``: what they hand the test's code must be plain data
  (:class:`Values`: Python's atoms and containers, tensors of torch's classes, ``nn.Parameter``
  included, numpy arrays, ``torch.Size``, namedtuples, models, ...), else the call raises
  :class:`TamperingDetected`. Values passed between the student's own functions are not checked.

and ``finish(n)`` fails the cell if such a call was caught (also when the test swallowed the
error), if the notebook defines a ``torch.Tensor`` subclass that overrides tensor behaviour
(every test fails while it exists), if a mode of the notebook's is on a stack, if dispatch was
turned back on, or if the notebook gave an ``aten``/``prims`` operator a kernel of its own. The
cost is a few microseconds per call of a student's function from a test, and well under a
millisecond per test cell.

Not caught: a look-alike that reaches the test other than as the return value of a call of one
of the notebook's public functions (a callable object's or a class's result, a global set before
the test) and is not a tensor of an overriding class; kernels registered through
``torch._C._dispatch_library`` directly. Hidden tests can state the check themselves with
``dlmi.testing.plain(result)``. Test cells must not call ``dlmi.testing.forbid`` on a student's
function (it is wrapped during the test) nor define ``torch.Tensor`` subclasses that override
tensor methods (their code cannot be told from the student's).

This is a guard against the tricks a student can play from answer cells, not a proof against
code written to attack this file in particular: the kernel is the student's process. What an
attacker can do there is bounded by the sandbox (:mod:`.sandbox`), not by this file.
"""
import functools
import hashlib
import hmac
import importlib
import linecache
import os
import sys
import sysconfig
import threading
import types

_MISSING = object()
_TRUSTED_CALLBACK_MODULES = ("IPython", "ipykernel", "matplotlib", "matplotlib_inline", "ipywidgets", "comm")
_SYS_NAMES = ("stdout", "stderr", "excepthook", "displayhook", "unraisablehook", "breakpointhook")
_PER_REQUEST = {("builtins", "input"), ("builtins", "raw_input"), ("builtins", "getpass")}  # ipykernel sets these
_SHELL_LISTS = ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")


def _same(a, b):
    """Identity, except that a bound method is the same as another binding of it to the same object
    (IPython puts a fresh ``shell.excepthook`` binding in ``sys.excepthook`` for every cell)."""
    if a is b:
        return True
    fa, fb = getattr(a, "__func__", _MISSING), getattr(b, "__func__", _MISSING)
    return fa is not _MISSING and fa is fb and getattr(a, "__self__", None) is getattr(b, "__self__", None)


class TamperingDetected(AssertionError):
    """Raised at the end of a test cell when the test did not run in the grader's environment."""


def _resolve(dotted):
    """``"torch.Tensor"`` -> the object (importing the longest module prefix)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _public(name):
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


# -- plain data: what a student's function may hand a test to compare

_ATOMS = frozenset({int, float, bool, complex, str, bytes, type(None)})  # exact types: nothing to override
_SEQUENCES = (tuple, list, set, frozenset)
# What a class may define without changing how its instances compare, convert or read: making,
# showing, pickling and attribute bookkeeping. Every other dunder counts as an override.
_HARMLESS = frozenset({
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__slots__", "__annotations__",
    "__firstlineno__", "__static_attributes__", "__orig_bases__", "__parameters__", "__match_args__",
    "__init__", "__new__", "__del__", "__init_subclass__", "__class_getitem__", "__repr__", "__format__",
    "__sizeof__", "__dir__", "__setattr__", "__delattr__", "__hash__", "__getnewargs__", "__getnewargs_ex__",
    "__getstate__", "__setstate__", "__reduce__", "__reduce_ex__", "__abstractmethods__", "_abc_impl",
    "__dataclass_fields__", "__dataclass_params__",
})
# a class's own namespace, flags and bases, read past any property of the same name on its metaclass
_class_dict = type.__dict__["__dict__"].__get__
_flags = type.__dict__["__flags__"].__get__
_mro = type.__dict__["__mro__"].__get__
_subclasses = type.__subclasses__


def _in_python(cls):
    """Made by a class statement or type(): a heap type (Py_TPFLAGS_HEAPTYPE) that is not immutable
    (Py_TPFLAGS_IMMUTABLETYPE, which C extensions set on their heap types and Python code cannot)."""
    return _flags(cls) & (1 << 9 | 1 << 8) == 1 << 9


def _codes(value):
    """The code objects behind a class attribute (a function, a classmethod, a property)."""
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f.__code__ for f in (value.fget, value.fset, value.fdel) if type(f) is types.FunctionType]
    return [value.__code__] if type(value) is types.FunctionType else []


def _own(obj):
    """An object's instance attributes, read past any ``__getattribute__`` of its class."""
    try:
        return object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return {}


def _names(names):
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


class Values:
    """Tells plain data from objects that only look like it.

    Hidden tests compare a student's result with the library's (``torch.allclose(got, want)``,
    ``got.tolist() == want``, ``param_count(...) == 98_816``). An object whose class overrides
    ``__torch_function__``, ``__eq__``, ``__bool__``, ``tolist``, ... can make such a comparison say
    "equal" without comparing a number, and patches nothing the guard watches. Plain data is
    what such comparisons can trust: Python's atoms and containers, tensors of torch's own classes
    (``nn.Parameter`` included), C types (``torch.Size``, numpy arrays and scalars, ``OrderedDict``)
    and instances of classes that add methods and fields but override none of the operators,
    conversions or the methods of the data type they extend (a namedtuple, a model class).

    Tensor subclasses, torch function/dispatch modes and nn.Module classes are trusted by where
    they were defined (a file under the Python installation or a guarded package); any other
    class by what it defines, wherever it comes from (``unittest.mock.ANY`` equals everything).
    """

    def __init__(self, roots, root_files):
        self.roots = tuple(roots)
        self.root_files = frozenset(root_files)
        self._file_cache = {}
        self._trusted = set()
        self._plain = set()  # trusted classes found to override nothing
        self._kernels_ok = set()
        self._bases = (None, None, None)  # (torch, numpy, (data bases, families)) as last seen
        # data classes of the standard library written in Python (C types are trusted anyway)
        self._containers = {importlib.import_module("collections").Counter,
                            importlib.import_module("fractions").Fraction}

    # torch and numpy are looked up when needed: a notebook may import them after the guard
    def _torch(self):
        return sys.modules.get("torch")

    def _kinds(self):
        """(data types a class may extend, torch's class families trusted by where they are defined)."""
        torch, numpy = self._torch(), sys.modules.get("numpy")
        if self._bases[:2] != (torch, numpy):
            data = {int, float, complex, str, bytes, tuple, list, dict, set, frozenset}
            families = ()
            if torch is not None:
                data.add(torch.Tensor)
                families = (torch.Tensor, torch.nn.Module)
            if numpy is not None:
                data.update((numpy.ndarray, numpy.generic))
            self._bases = (torch, numpy, (frozenset(data), families))
        return self._bases[2]

    def trusted_file(self, filename):
        known = self._file_cache.get(filename)
        if known is None:
            if filename.startswith("<"):
                known = filename == "<dlmi-grader-guard>" or filename.startswith("<frozen ")
            else:
                path = os.path.realpath(filename)
                known = path in self.root_files or path.startswith(self.roots)
            self._file_cache[filename] = known
        return known

    def trusted_class(self, cls):
        """Defined in a file of the library, torch or Python, not in the notebook (the test cells
        included: their code is compiled where the student's is, so it cannot be told apart)."""
        if cls in self._trusted or not _in_python(cls):
            return True
        namespace = _class_dict(cls)
        codes = [code for value in list(namespace.values()) for code in _codes(value)]
        module = sys.modules.get(namespace.get("__module__") or "")
        file = getattr(module, "__file__", None)
        if not (isinstance(file, str) and self.trusted_file(file)):
            return False
        if not all(self.trusted_file(c.co_filename) for c in codes):
            return False
        self._trusted.add(cls)
        return True

    def overrides(self, cls):
        """What ``cls`` (and its untrusted bases) override of the operators, the conversions and
        the data type it extends; ``[]`` for a trusted or plain class."""
        data, families = self._kinds()
        mro = _mro(cls)
        bases = [b for b in mro if b in data]
        names, vouched = [], set()
        for c in mro:
            if c in self._containers or (families and issubclass(c, families) and self.trusted_class(c)):
                vouched.update(_mro(c))  # a trusted class answers for its own bases (Fraction's numbers ABCs)
            if c is object or not _in_python(c) or c in data or c in vouched:
                continue
            for name in list(_class_dict(c)):
                if name in _HARMLESS or name in names:
                    continue
                if (name.startswith("__") and name.endswith("__")) or any(hasattr(b, name) for b in bases):
                    names.append(name)
        return names

    def problem(self, value, limit=10_000):
        """Why ``value`` is not plain data, or None (looks at ``limit`` objects at most)."""
        torch = self._torch()
        tensor = torch.Tensor if torch is not None else None
        todo, seen = [value], 0
        while todo and seen < limit:
            obj = todo.pop()
            seen += 1
            cls = type(obj)
            if cls in _ATOMS:
                continue
            if cls in _SEQUENCES:
                todo.extend(obj)
                continue
            if cls is dict:
                todo.extend(obj.keys())
                todo.extend(obj.values())
                continue
            made_in_python = _in_python(cls)
            is_tensor = cls is tensor or (made_in_python and tensor is not None and issubclass(cls, tensor))
            if made_in_python and cls is not tensor and cls not in self._plain:
                names = self.overrides(cls)
                if names:
                    kind = "a torch.Tensor subclass" if is_tensor else "an object"
                    return f"{kind} of class {cls.__qualname__}, which overrides {_names(names)}"
                if self.trusted_class(cls):
                    self._plain.add(cls)  # a library's class: read once
                elif not is_tensor:
                    todo.extend(_own(obj).values())  # the fields of the notebook's own class
            if is_tensor:
                # a tensor carries a __dict__: t.tolist = lambda: ... shadows the method
                shadowed = [k for k in _own(obj) if hasattr(cls, k)]
                if shadowed:
                    return f"a tensor whose {_names(shadowed)} was replaced on the tensor itself"
            elif issubclass(cls, _SEQUENCES):  # torch.Size, torch.return_types, namedtuples
                todo.extend(obj)
            elif issubclass(cls, dict):  # Counter, OrderedDict, defaultdict
                todo.extend(obj.keys())
                todo.extend(obj.values())
        return None

    def _tensor_subclasses(self):
        torch = self._torch()
        todo, seen = list(_subclasses(torch.Tensor)) if torch is not None else [], []
        while todo:
            cls = todo.pop()
            if cls not in seen:
                seen.append(cls)
                todo.extend(_subclasses(cls))
        return seen

    def trust_existing(self):
        """Tensor subclasses and operator kernels made before the notebook's first cell are not the notebook's."""
        self._trusted.update(self._tensor_subclasses())
        self._kernels_ok = set(self._python_kernels())

    def _python_kernels(self):
        impls = getattr(getattr(self._torch(), "library", None), "_impls", None)
        return impls if isinstance(impls, set) else set()

    def kernels(self):
        """torch's own operators (aten, prims) given a kernel by the notebook through torch.library
        (``Library("aten", "IMPL").impl("allclose", lambda *a, **k: True, "CPU")``)."""
        found = []
        for entry in self._python_kernels() - self._kernels_ok:
            ns, _, rest = entry.partition("/")
            op, _, key = rest.rpartition("/")
            where = ""
            try:
                for line in self._torch()._C._dispatch_dump(f"{ns}::{op}").splitlines():
                    if line.startswith((f"{key}: ", f"{key}[alias]: ")) and " registered at " in line:
                        where = line.split(" registered at ", 1)[1].split(" :: ", 1)[0].rpartition(":")[0]
            except Exception:  # noqa: BLE001 - an operator torch no longer has
                pass
            if ns not in ("aten", "prims") or not where or where.endswith((".cpp", ".h")) or self.trusted_file(where):
                self._kernels_ok.add(entry)  # torch registering its own kernels lazily, or the notebook's own ops
            else:
                found.append(f"{ns}::{op} ({key})")
        return found

    def tensor_classes(self):
        """The notebook's torch.Tensor subclasses that override tensor behaviour."""
        found = []
        for cls in self._tensor_subclasses():
            if not self.trusted_class(cls):
                names = self.overrides(cls)
                if names:
                    found.append(f"{cls.__qualname__} (overrides {_names(names)})")
        return found

    # -- torch's own ways to change what every torch function does

    def modes(self):
        """(torch function modes, torch dispatch modes) on the stacks, innermost last."""
        torch = self._torch()
        C = getattr(torch, "_C", None)
        try:
            return ([C._get_function_stack_at(i) for i in range(C._len_torch_function_stack())],
                    [C._get_dispatch_stack_at(i) for i in range(C._len_torch_dispatch_stack())])
        except Exception:  # noqa: BLE001 - no torch, or a torch without mode stacks
            return [], []

    def untrusted_modes(self):
        functions, dispatch = self.modes()
        return [type(m).__qualname__ for m in functions + dispatch if not self.trusted_class(type(m))]

    def drop_untrusted_modes(self):
        """Take the notebook's modes off the stacks, keeping torch's own (``set_default_device``)."""
        functions, dispatch = self.modes()
        C = self._torch()._C if functions or dispatch else None
        if any(not self.trusted_class(type(m)) for m in functions):
            for _ in functions:
                C._pop_torch_function_stack()
            for m in functions:
                if self.trusted_class(type(m)):
                    C._push_on_torch_function_stack(m)
        if any(not self.trusted_class(type(m)) for m in dispatch):
            for _ in dispatch:
                C._pop_torch_dispatch_stack(None)
            for m in dispatch:
                if self.trusted_class(type(m)):
                    C._push_on_torch_dispatch_stack(m)


def _trusted_roots(modules):
    """Folders whose code is not the student's: the Python installation and the guarded packages
    (dlmi may live outside site-packages); single-file guarded modules by their file."""
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} | {os.path.dirname(os.__file__)}
    files = set()
    for module in modules:
        path = getattr(module, "__path__", None)
        if path is not None:
            roots.update(p for p in path if isinstance(p, str))
        elif isinstance(getattr(module, "__file__", None), str):
            files.add(os.path.realpath(module.__file__))
    return [os.path.realpath(r) + os.sep for r in roots if r], files


class Guard:
    def __init__(self, key, modules, classes, rebind):
        import IPython

        self._key = key.encode()
        self.shell = IPython.get_ipython()
        self.kernel = getattr(self.shell, "kernel", None)
        self.active = False
        self.events = []
        self.modules = {}
        for name in ("builtins", *modules):
            try:
                module = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a module the notebook cannot import is not ours to guard
                continue
            values = {k: v for k, v in vars(module).items() if _public(k)}
            codes = {k: v.__code__ for k, v in values.items() if type(v).__name__ == "function"}
            self.modules[name] = (module, values, codes)
        class_names = list(classes)
        for obj in (self.shell, self.kernel, sys.stdout, sys.stderr):
            if obj is not None:
                class_names.extend(f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__ if c is not object)
        self.classes = {}
        for name in dict.fromkeys(class_names):
            try:
                cls = _resolve(name)
            except Exception:  # noqa: BLE001
                continue
            if isinstance(cls, type):
                self.classes[name] = (cls, dict(vars(cls)))
        self.instances = [(obj, set(vars(obj))) for obj in (self.shell, self.kernel, sys.stdout, sys.stderr)
                          if obj is not None and hasattr(obj, "__dict__")]
        self.sys_values = {name: getattr(sys, name, None) for name in _SYS_NAMES}
        self.shell_lists = {name: list(getattr(self.shell, name, [])) for name in _SHELL_LISTS}
        self.custom_tb = (self.shell.custom_exceptions, getattr(self.shell, "CustomTB", None))
        self.callbacks = {event: list(cbs) for event, cbs in self.shell.events.callbacks.items()}
        self.rebind = dict(rebind)
        self._write = sys.stdout.write
        self._flush = sys.stdout.flush
        tops = {name.split(".")[0] for name in self.modules}
        self.values = Values(*_trusted_roots([sys.modules[t] for t in tops if t in sys.modules]))
        self.values.trust_existing()
        self.returned = []  # what the student's functions handed the current test that is not plain data
        self._wrapped = {}
        self._plain_torch = None
        self.test_files = set()  # where the graded test cells' code ran (a student cell naming the marker too)
        self._cell_file = None
        sys.addaudithook(self._audit)  # cannot be removed: sees tracers turned on during a test

    # -- what "the grader's environment" is

    def _audit(self, event, args):
        if self.active and event in ("sys.settrace", "sys.setprofile"):
            self.events.append(event)

    def _callback_trusted(self, event, cb):
        if cb in self.callbacks.get(event, ()):
            return True
        module = getattr(cb, "__module__", "") or ""
        return module.split(".")[0] in _TRUSTED_CALLBACK_MODULES

    def _rebind_target(self, name):
        module, attr = self.rebind[name]
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj

    def _rewrapped(self, value, original):
        """A library's own wrapper of a function it exports, put in its place when it is first
        imported (``torch._dynamo`` wraps ``torch.manual_seed``; an optimizer step can import it
        in the middle of a test): a function from the library's files whose ``__wrapped__`` is it."""
        return (type(value) is types.FunctionType and getattr(value, "__wrapped__", None) is original
                and self.values.trusted_file(value.__code__.co_filename))

    def problems(self, fix=False):
        """What differs from the snapshot (fixing it on the way when ``fix``)."""
        found = []
        for name, (module, values, codes) in self.modules.items():
            if sys.modules.get(name) is not module:
                found.append(f"sys.modules[{name!r}]")
                if fix:
                    sys.modules[name] = module
            current = vars(module)
            for key, value in values.items():
                now = current.get(key, _MISSING)
                if (name, key) not in _PER_REQUEST and not _same(now, value) and not self._rewrapped(now, value):
                    found.append(f"{name}.{key}")
                    if fix:
                        setattr(module, key, value)
            for key, code in codes.items():
                if values[key].__code__ is not code:
                    found.append(f"{name}.{key}.__code__")
                    if fix:
                        values[key].__code__ = code
        for name, (cls, values) in self.classes.items():
            current = dict(vars(cls))
            for key, value in values.items():
                if current.get(key, _MISSING) is not value:
                    found.append(f"{name}.{key}")
                    if fix:
                        try:
                            setattr(cls, key, value)
                        except (TypeError, AttributeError):
                            pass
            for key in current.keys() - values.keys():
                if key.startswith("__") and key.endswith("__"):
                    found.append(f"{name}.{key}")
                    if fix:
                        try:
                            delattr(cls, key)
                        except (TypeError, AttributeError):
                            pass
        for obj, keys in self.instances:
            for key in set(vars(obj)) - keys:
                if any(key in vars(c) and callable(vars(c)[key]) for c in type(obj).__mro__):
                    found.append(f"{type(obj).__name__}().{key}")
                    if fix:
                        delattr(obj, key)
        for name, value in self.sys_values.items():
            if not _same(getattr(sys, name, None), value):
                found.append(f"sys.{name}")
                if fix:
                    setattr(sys, name, value)
        if sys.gettrace() is not None or sys.getprofile() is not None:
            found.append("sys.settrace/setprofile")
            if fix:
                sys.settrace(None)
                sys.setprofile(None)
        if fix:
            threading.settrace(None)
            threading.setprofile(None)
        for name, items in self.shell_lists.items():
            if list(getattr(self.shell, name, [])) != items:
                found.append(f"shell.{name}")
                if fix:
                    setattr(self.shell, name, list(items))
        if (self.shell.custom_exceptions, getattr(self.shell, "CustomTB", None)) != self.custom_tb:
            found.append("shell.set_custom_exc")
            if fix:
                self.shell.custom_exceptions, self.shell.CustomTB = self.custom_tb
        for event, cbs in self.shell.events.callbacks.items():
            for cb in list(cbs):
                if not self._callback_trusted(event, cb):
                    found.append(f"shell.events[{event!r}]")
                    if fix:
                        cbs.remove(cb)
        user_ns = self.shell.user_ns
        for name in self.rebind:
            if name not in user_ns:
                continue
            try:
                want = self._rebind_target(name)
            except Exception:  # noqa: BLE001
                continue
            if user_ns[name] is not want:
                found.append(f"the name {name!r}")
                if fix:
                    user_ns[name] = want
        if self.events:
            found.append(" and ".join(sorted(set(self.events))) + " during the test")
        return found

    # -- plain data in the test (see Values)

    def _student_function(self, value):
        """A function of the notebook's (a def, a lambda, a method, a partial, an lru_cache)."""
        kind = type(value)
        if kind is types.MethodType:
            value, kind = value.__func__, type(value.__func__)
        if kind is functools.partial:
            return True
        if kind is not types.FunctionType:
            # C callables that wrap a Python function (functools.lru_cache, functools.cache)
            if _in_python(kind) or not callable(value) or isinstance(value, type):
                return False
            inner = getattr(value, "__wrapped__", None)
            return type(inner) is types.FunctionType and not self.values.trusted_file(inner.__code__.co_filename)
        return not self.values.trusted_file(value.__code__.co_filename)

    def _from_test(self, frame):
        """Is ``frame`` the code of a graded test cell (this one, or a helper an earlier one defined)?"""
        filename = frame.f_code.co_filename
        if filename in self.test_files:
            return True
        if self._cell_file is None:
            # the current test cell: the outermost frame running in the notebook's namespace
            ns, cell = self.shell.user_global_ns, None
            while frame is not None:
                if frame.f_globals is ns:
                    cell = frame
                frame = frame.f_back
            self._cell_file = cell.f_code.co_filename if cell is not None else ""
        return filename == self._cell_file

    def _checked(self, name, fn):
        guard = self

        def checked(*args, **kwargs):
            result = fn(*args, **kwargs)
            if guard.active:
                problem = guard.values.problem(result)
                # only what reaches the test counts: the student's own code may pass itself anything
                if problem and guard._from_test(sys._getframe(1)):
                    guard.returned.append(f"{name}() returned {problem}")
                    raise TamperingDetected(
                        f"{name}() returned {problem}: a graded function must return plain tensors, numbers, "
                        "strings and tuples, lists or dicts of them; this test gets no credit")
            return result

        try:
            functools.update_wrapper(checked, fn)
        except (AttributeError, TypeError):
            pass
        return checked

    def _arm(self):
        """Before a test: the notebook's public functions return-checked, torch's subclass dispatch
        (``__torch_function__`` of tensor subclasses and of any other object) off, the notebook's
        torch function/dispatch modes off the stacks."""
        self._disarm()
        self.returned = []
        self._cell_file = None
        ns = self.shell.user_ns
        for name, value in list(ns.items()):
            try:
                student = not name.startswith("_") and self._student_function(value)
            except Exception:  # noqa: BLE001 - an object that will not say what it is is no function
                student = False
            if student:
                wrapper = self._checked(name, value)
                ns[name] = wrapper
                self._wrapped[name] = (value, wrapper)
        torch = self.values._torch()
        if torch is not None:
            self.values.drop_untrusted_modes()
            off = getattr(torch._C, "DisableTorchFunctionSubclass", None) or torch._C.DisableTorchFunction
            self._plain_torch = off()
            self._plain_torch.__enter__()

    def _disarm(self):
        """After a test: the notebook's functions and torch's dispatch as they were."""
        if self._plain_torch is not None:
            try:
                self._plain_torch.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - torch's own state is restored on a best-effort basis
                pass
            self._plain_torch = None
        ns = self.shell.user_ns
        for name, (original, wrapper) in self._wrapped.items():
            if ns.get(name) is wrapper:
                ns[name] = original
        self._wrapped = {}

    def value_problems(self):
        """What the test compared that only looked like data."""
        found = list(self.returned)
        found += [f"the notebook defines the torch.Tensor subclass {c}" for c in self.values.tensor_classes()]
        found += [f"the torch mode {m} was active" for m in self.values.untrusted_modes()]
        found += [f"the notebook gave torch's {k} a kernel of its own" for k in self.values.kernels()]
        torch = self.values._torch()
        if self._plain_torch is not None and torch._C._is_torch_function_enabled():
            found.append("torch's __torch_function__ dispatch was turned back on")
        return found

    # -- the two calls around a test cell

    def begin(self, n):
        """Called by the grader through ``user_expressions`` (no cell, so no input transformer or
        patched ``run_cell`` can swallow it); returns a token the grader checks."""
        self.problems(fix=True)
        self.events = []
        self.shell.user_ns["__dlmi_guard__"] = self
        self._arm()
        self.active = True
        return token(self._key, f"begin:{n}")

    def scrub(self):
        """Called by the grader (``user_expressions``) after each test cell."""
        self.test_files.update(scrub_test_sources(self.shell))
        self._disarm()
        return token(self._key, "scrub")

    def finish(self, n):
        found = self.problems(fix=False)
        compared = self.value_problems()
        self.active = False
        if found:
            self.problems(fix=True)
            shown = ", ".join(dict.fromkeys(found + compared))
            raise TamperingDetected(f"this test cell changed the grader's environment ({shown}); "
                                    "it gets no credit")
        if compared:
            shown = "; ".join(dict.fromkeys(compared))
            raise TamperingDetected(f"this test cell compared objects that only look like tensors or numbers "
                                    f"({shown}); it gets no credit")
        self._write(f"\n{token(self._key, n)}\n")
        self._flush()


_HIDDEN = "# a graded test cell: its source is not kept in the kernel\n"


def scrub_test_sources(shell, marker="__dlmi_guard__.finish("):
    """Forget the source of the test cells that ran (linecache, In/_ih, _i*, IPython's history), so
    that code run after them cannot read the hidden tests back from the kernel; returns the file
    names their code ran under."""
    names = [n for n, entry in linecache.cache.items()
             if isinstance(entry, tuple) and len(entry) > 2 and any(marker in line for line in entry[2] or ())]
    for name in names:
        del linecache.cache[name]
    history = getattr(shell, "history_manager", None)
    for lines in (getattr(history, "input_hist_parsed", []), getattr(history, "input_hist_raw", [])):
        for i, source in enumerate(lines):
            if marker in source:
                lines[i] = _HIDDEN
    cache = getattr(history, "db_input_cache", None)
    if cache:
        cache[:] = [tuple(_HIDDEN if isinstance(x, str) and marker in x else x for x in row) for row in cache]
    for key, value in list(shell.user_ns.items()):
        if key.startswith("_i") and isinstance(value, str) and marker in value:
            shell.user_ns[key] = _HIDDEN
    return names


def token(key, n):
    """The line ``finish(n)`` prints; the grader computes the same outside the kernel."""
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, str(n).encode(), hashlib.sha256).hexdigest()[:32]


def install(key, modules, classes, rebind):
    guard = Guard(key, modules, classes, rebind)
    for name in [n for n, entry in linecache.cache.items() if any(key in line for line in entry[2] or ())]:
        del linecache.cache[name]  # the cell that carried the key
    return guard

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
  jump over ``assert`` lines, ...) and only then print the token ``HMAC(key, n)``.

The grader gives the test cell its points only if that token appears, which needs the cell to
reach its last line: a swallowed exception, a skipped cell or a faked output does not print it,
and the key is not in any cell the student's code can read back (its linecache entry is removed).

This is a guard against the tricks a student can play from answer cells, not a proof against
code written to attack this file in particular: the kernel is the student's process. What an
attacker can do there is bounded by the sandbox (:mod:`.sandbox`), not by this file.
"""
import hashlib
import hmac
import importlib
import linecache
import sys
import threading

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
                if (name, key) not in _PER_REQUEST and not _same(current.get(key, _MISSING), value):
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

    # -- the two calls around a test cell

    def begin(self, n):
        """Called by the grader through ``user_expressions`` (no cell, so no input transformer or
        patched ``run_cell`` can swallow it); returns a token the grader checks."""
        self.problems(fix=True)
        self.events = []
        self.shell.user_ns["__dlmi_guard__"] = self
        self.active = True
        return token(self._key, f"begin:{n}")

    def scrub(self):
        """Called by the grader (``user_expressions``) after each test cell."""
        scrub_test_sources(self.shell)
        return token(self._key, "scrub")

    def finish(self, n):
        found = self.problems(fix=False)
        self.active = False
        if found:
            self.problems(fix=True)
            shown = ", ".join(dict.fromkeys(found))
            raise TamperingDetected(f"this test cell changed the grader's environment ({shown}); "
                                    "it gets no credit")
        self._write(f"\n{token(self._key, n)}\n")
        self._flush()


_HIDDEN = "# a graded test cell: its source is not kept in the kernel\n"


def scrub_test_sources(shell, marker="__dlmi_guard__.finish("):
    """Forget the source of the test cells that ran (linecache, In/_ih, _i*, IPython's history), so
    that code run after them cannot read the hidden tests back from the kernel."""
    for name in [n for n, entry in linecache.cache.items()
                 if isinstance(entry, tuple) and len(entry) > 2 and any(marker in line for line in entry[2] or ())]:
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


def token(key, n):
    """The line ``finish(n)`` prints; the grader computes the same outside the kernel."""
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, str(n).encode(), hashlib.sha256).hexdigest()[:32]


def install(key, modules, classes, rebind):
    guard = Guard(key, modules, classes, rebind)
    for name in [n for n, entry in linecache.cache.items() if any(key in line for line in entry[2] or ())]:
        del linecache.cache[name]  # the cell that carried the key
    return guard

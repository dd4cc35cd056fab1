"""Helpers for graded test cells: make sure a student's function does the work itself.

``forbid_autograd()`` makes autograd (``Tensor.backward``, ``torch.autograd.grad``,
``torch.autograd.backward``) raise while a student's hand-written backward pass runs, so it
cannot be autograd in disguise; ``forbid(f, ...)`` does the same for library reference functions.

The functions' code objects are swapped rather than their module attributes, so that every alias
(``from dlmi.rnn import rnn_bptt as mine``) is caught too; everything is restored on exit.

``plain(result)`` checks that a result is plain data before a test compares it: a tensor
subclass (or a tensor whose ``tolist`` was replaced) can make ``torch.allclose`` or ``==`` say
"equal" without comparing a number. The autograder's guard checks what the student's functions
return in any case; ``plain`` says so in the test itself, with the place in the result.
"""
from __future__ import annotations

import contextlib

import torch


def _forbidden(*args, **kwargs):
    # This code object runs with the *victim's* globals, so it may only use builtins.
    raise RuntimeError("forbidden call: this function may not be used here; the exercise asks you to "
                       "compute it yourself")


@contextlib.contextmanager
def forbid(*functions):
    """While active, calling any of ``functions`` (plain Python functions) raises RuntimeError."""
    saved = []
    for fn in functions:
        fn = getattr(fn, "__func__", fn)
        if not hasattr(fn, "__code__") or fn.__code__.co_freevars:
            raise TypeError(f"forbid() needs plain Python functions without closures, got {fn!r}")
        saved.append((fn, fn.__code__))
    try:
        for fn, _ in saved:
            fn.__code__ = _forbidden.__code__
        yield
    finally:
        for fn, code in saved:
            fn.__code__ = code


def forbid_autograd():
    """Context manager: no autograd inside (``Tensor.backward``, ``torch.autograd.grad/backward``)."""
    return forbid(torch.Tensor.backward, torch.autograd.grad, torch.autograd.backward)


# Py_TPFLAGS_HEAPTYPE and Py_TPFLAGS_IMMUTABLETYPE: a class made in Python is a heap type and never
# immutable (C types are static, or heap types that C extensions make immutable)
_HEAPTYPE, _IMMUTABLE = 1 << 9, 1 << 8


def _plain_types():
    types = {torch.Tensor, torch.nn.Parameter, int, float, bool, complex, str, bytes, type(None), torch.Size,
             torch.dtype, torch.device}
    buffer = getattr(torch.nn, "Buffer", None)
    return types | ({buffer} if isinstance(buffer, type) else set())


def plain(value, what="value"):
    """``value`` itself, once checked to be plain data; AssertionError naming the first part that is not.

    Plain: ``torch.Tensor`` and ``nn.Parameter`` (exact classes, no method replaced on the tensor),
    Python numbers, strings and None, ``torch.Size``, numpy arrays (not of dtype object) and
    scalars, and tuples, lists and dicts of these (also ``torch.return_types``, ``OrderedDict``
    and ``Counter``). Other classes are refused, namedtuples included: where an exercise allows
    one, check ``plain(tuple(result))``. Use it where a hidden test compares a student's result::

        got = plain(rnn_forward(x, U, V, c), "rnn_forward(x, U, V, c)")
        assert torch.allclose(got, want)
    """
    import collections

    import numpy as np

    exact = _plain_types()
    todo, seen = [(value, what)], set()
    while todo:
        obj, where = todo.pop()
        cls = type(obj)
        if id(obj) in seen:  # a container holding itself
            continue
        seen.add(id(obj))
        static = type.__dict__["__flags__"].__get__(cls) & (_HEAPTYPE | _IMMUTABLE) != _HEAPTYPE  # a C type
        if cls in exact:
            if issubclass(cls, torch.Tensor):
                shadowed = [k for k in getattr(obj, "__dict__", {}) if hasattr(cls, k)]
                if shadowed:
                    raise AssertionError(f"{where} has its {', '.join(shadowed)} replaced on the tensor itself")
            continue
        if cls is np.ndarray:
            if obj.dtype == object:
                raise AssertionError(f"{where} is a numpy array of Python objects, not of numbers")
            continue
        if static and issubclass(cls, np.generic):
            continue
        if cls in (tuple, list) or (static and issubclass(cls, tuple)):
            todo.extend((x, f"{where}[{i}]") for i, x in enumerate(obj))
            continue
        if cls in (dict, collections.Counter) or (static and issubclass(cls, dict)):
            todo.extend((k, f"a key of {where}") for k in obj)
            todo.extend((v, f"{where}[{k!r}]") for k, v in obj.items())
            continue
        name = cls.__qualname__.rpartition("<locals>.")[2]
        if cls.__module__ not in ("builtins", "__main__"):
            name = f"{cls.__module__}.{name}"
        raise AssertionError(f"{where} is a {name}, not a plain tensor or Python value: return torch.Tensor "
                             "objects, numbers, strings, and tuples, lists or dicts of them")
    return value

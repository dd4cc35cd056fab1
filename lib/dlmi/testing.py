"""Helpers for graded test cells: make sure a student's function does the work itself.

``forbid_autograd()`` makes autograd (``Tensor.backward``, ``torch.autograd.grad``,
``torch.autograd.backward``) raise while a student's hand-written backward pass runs, so it
cannot be autograd in disguise; ``forbid(f, ...)`` does the same for library reference functions.

The functions' code objects are swapped rather than their module attributes, so that every alias
(``from dlmi.rnn import rnn_bptt as mine``) is caught too; everything is restored on exit.
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

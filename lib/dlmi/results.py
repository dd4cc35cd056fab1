"""Headline results: the one number a notebook is about.

``show_result("final loss", 0.012)`` prints ``RESULT final loss: 0.012`` and, inside Jupyter,
tags the output so that ``dlmi-course run`` can collect it into the course table.
"""
from __future__ import annotations

import math
import numbers

MIME = "application/vnd.dlmi.result+json"


def _format(value) -> str:
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5) and math.isfinite(v):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(value)


class _Shown(str):
    """The result line, as a ``str``, that IPython does not echo: it was displayed already, and
    a bare ``show_result(...)`` at the end of a cell would otherwise show it a second time."""

    def _ipython_display_(self) -> None:
        pass


def show_result(name: str, value, unit: str = "") -> str:
    """Print (and tag) a notebook's headline result; returns the printed line (a ``str`` that
    Jupyter does not echo again as the cell's value)."""
    if not isinstance(name, str) or not name:
        raise TypeError("show_result(name, value): name must be a non-empty string")
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    text = f"{_format(value)}{(' ' + unit) if unit else ''}"
    line = f"RESULT {name}: {text}"
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"text/plain": line, MIME: {"name": name, "value": text}}, raw=True)
            return _Shown(line)
    except ImportError:  # pragma: no cover - IPython is optional for library use
        pass
    print(line)
    return line

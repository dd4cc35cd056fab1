"""Plots every notebook uses. Each returns the matplotlib Axes it drew on."""
from __future__ import annotations

import matplotlib.pyplot as plt


def plot_history(history, keys=None, ax=None, logy: bool = False, title: str | None = None):
    """Learning curves: one line per (split, key) of a :class:`dlmi.train.History`."""
    if not hasattr(history, "train") or not hasattr(history, "val"):
        raise TypeError(f"plot_history expects a dlmi.train.History, got {type(history).__name__}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    keys = keys or sorted(set(history.train) | set(history.val), key=lambda k: (k != "loss", k))
    for split, store, style in (("train", history.train, "-"), ("val", history.val, "--")):
        for k in keys:
            if k in store:
                ax.plot(range(1, len(store[k]) + 1), store[k], style, marker=".", label=f"{split} {k}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(", ".join(keys))
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return ax


def plot_sequences(series: dict, ax=None, title: str | None = None, xlabel: str = "time step t"):
    """Several 1-D sequences on one axis: ``{"label": values}``."""
    if not isinstance(series, dict) or not series:
        raise TypeError("plot_sequences expects a non-empty dict {label: 1-D values}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.8))
    for label, values in series.items():
        values = values.detach().cpu().numpy() if hasattr(values, "detach") else values
        ax.plot(values, label=label, lw=1.2)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper right")
    if title:
        ax.set_title(title)
    return ax

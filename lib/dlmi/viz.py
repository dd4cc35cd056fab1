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


def draw_detections(ax, image, target=None, prediction=None, classes=None, min_score: float = 0.5,
                    title: str = ""):
    """A grey-scale image with its ground-truth boxes (green) and detections (red, with class
    and score), in torchvision's format: ``target = {"boxes", "labels"}``, ``prediction =
    {"boxes", "scores", "labels"}`` with xyxy pixel boxes. Detections below ``min_score`` are
    not drawn; ``classes[label]`` names a label (``classes[0]`` the background)."""
    from matplotlib.patches import Rectangle

    if getattr(image, "ndim", 0) not in (2, 3):
        raise ValueError(f"image must be [H, W] or [1, H, W], got shape {tuple(getattr(image, 'shape', ()))}")
    pixels = image[0] if image.ndim == 3 else image
    pixels = pixels.detach().cpu() if hasattr(pixels, "detach") else pixels
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)

    def name(label) -> str:
        return classes[int(label)][:5] if classes is not None else str(int(label))

    for box in (target["boxes"] if target else []):
        x1, y1, x2, y2 = box.tolist()
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", lw=1.5))
    if prediction:
        keep = prediction["scores"] >= min_score
        for box, label, score in zip(prediction["boxes"][keep], prediction["labels"][keep],
                                     prediction["scores"][keep]):
            x1, y1, x2, y2 = box.tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=1))
            ax.text(x1, y1 - 1, f"{name(label)} {float(score):.2f}", color="red", fontsize=6)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return ax

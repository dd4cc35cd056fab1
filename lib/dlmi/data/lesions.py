"""Lesion detection phantoms: chest radiographs whose lesion boxes follow the real NIH boxes (unit 10).

No annotated chest radiographs can ship offline, but the 984 boxes that radiologists drew on
ChestX-ray14 images for 8 findings can (Wang et al. 2017, :func:`dlmi.data.load_nih_bboxes`).
This module draws detection data from them:

* **where and how big** — every lesion copies one real box of its class (relative size and
  centre in the 1024×1024 frame, slightly jittered) and is scaled to the phantom; the classes
  are drawn with their frequencies in the NIH table (``class_weights="nih"``) or uniformly.
  So a nodule is small and anywhere in the lungs, cardiomegaly is a wide box over the heart,
  a pneumothorax sits high and lateral, an effusion low, as in the real data
  (:func:`plot_nih_box_statistics` shows it);
* **what it looks like** — each class has its own rendering inside its box, soft-edged and
  textured, added to (or, for pneumothorax and cardiomegaly, blended into) the anatomy so that
  ribs, heart and lung markings show through, then quantum-like noise on top:

  ============  ===============================================================================
  atelectasis   a thin tilted plate-like band across the box (linear atelectasis)
  cardiomegaly  the heart silhouette enlarged to fill the box
  effusion      homogeneous fluid at the bottom of the box below a meniscus rising laterally
  infiltration  a faint, ill-defined, mottled opacity
  mass          a dense lobulated opacity
  nodule        a small round, fairly sharp opacity
  pneumonia     a denser patchy consolidation
  pneumothorax  a crescent of dark air without lung markings along the wall, with the
                bright visceral pleural line at its inner edge
  ============  ===============================================================================

* **the anatomy** — the chest phantom of :func:`dlmi.data.cxr.make_cxr_phantom` (body, lungs,
  heart, ribs, spine), drawn once per split for a small bank of "patients" and then shifted
  and re-contrasted for every image, which keeps an image at ~1-3 ms.

Splits are disjoint at every level: the real boxes are split **by NIH patient** (70/15/15 %,
fixed), each split has its own anatomy bank, and every image has its own random stream
``SeedSequence([seed, split, 0, index])``, so an image depends only on ``(seed, split, index)``,
not on the order it is asked for.

Conventions are torchvision's: a pixel ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)``;
boxes are float32 ``(x1, y1, x2, y2)`` pixels; labels are int64 ``1..C`` (0 = background) in
the order of the dataset's ``classes``. Every lesion's pixels lie inside its box (each rendering
is zero outside the ellipse, band or region inscribed in the box).

Data source and licence of the boxes: see :mod:`dlmi.data.nih`. The phantoms are synthetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .ct import _check_int

__all__ = [
    "LESION_CLASSES", "SPLITS", "LesionCase", "LesionDataset", "collate_detection",
    "make_lesion_image", "nih_box_reference", "plot_nih_box_statistics",
]

#: The 8 NIH box findings, lowercase; detection label ``k`` is ``classes[k - 1]``.
LESION_CLASSES = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                  "pneumonia", "pneumothorax")
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)          # of the NIH *patients* with boxes
_SPLIT_PERMUTATION_SEED = 2017                # fixed: the split of the real boxes never changes
_DEFAULT_N = {"train": 1000, "val": 250, "test": 250}
_MIN_SIZE = 32                                # the anatomy phantom's smallest image


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------



def _check_fraction(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_split(split) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _check_classes(classes) -> tuple:
    if isinstance(classes, str):
        classes = (classes,)
    try:
        classes = tuple(classes)
    except TypeError:
        raise TypeError(f"classes must be a sequence of names from {LESION_CLASSES}, "
                        f"got {type(classes).__name__}") from None
    if not classes:
        raise ValueError(f"classes must name at least one of {LESION_CLASSES}")
    unknown = [c for c in classes if c not in LESION_CLASSES]
    if unknown:
        raise ValueError(f"unknown lesion classes {unknown}; choose from {LESION_CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must not repeat a name, got {classes}")
    return classes


def _check_n_lesions(n_lesions) -> tuple[int, int]:
    if isinstance(n_lesions, (int, np.integer)) and not isinstance(n_lesions, bool):
        n_lesions = (n_lesions, n_lesions)
    try:
        low, high = n_lesions
    except (TypeError, ValueError):
        raise TypeError(f"n_lesions must be an int or a pair (low, high), got {n_lesions!r}") from None
    low, high = _check_int("n_lesions[0]", low, 0, 8), _check_int("n_lesions[1]", high, 0, 8)
    if low > high:
        raise ValueError(f"n_lesions must have low <= high, got {n_lesions!r}")
    return low, high


# ----------------------------------------------------------------------------------------------
# The real boxes
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _reference_table():
    from .nih import NIH_IMAGE_SIZE, load_nih_bboxes

    boxes = load_nih_bboxes()
    s = float(NIH_IMAGE_SIZE)
    table = boxes[["image", "patient_id", "finding", "x1", "y1", "x2", "y2"]].copy()
    table.insert(2, "lesion", table["finding"].str.lower())
    table["w"] = (table["x2"] - table["x1"]) / s
    table["h"] = (table["y2"] - table["y1"]) / s
    table["cx"] = (table["x1"] + table["x2"]) / (2 * s)
    table["cy"] = (table["y1"] + table["y2"]) / (2 * s)
    # Split by patient: a patient's boxes all land in one split.
    patients = np.sort(table["patient_id"].unique())
    patients = np.random.default_rng(_SPLIT_PERMUTATION_SEED).permutation(patients)
    cuts = np.round(np.cumsum(SPLIT_FRACTIONS)[:-1] * len(patients)).astype(int)
    split_of = {}
    for name, part in zip(SPLITS, np.split(patients, cuts)):
        split_of.update(dict.fromkeys(part.tolist(), name))
    table["split"] = table["patient_id"].map(split_of)
    return table


def nih_box_reference(split: str | None = None):
    """The real NIH ChestX-ray14 boxes the phantoms copy, one row per box (a pandas DataFrame).

    Columns: ``image``, ``patient_id``, ``lesion`` (a name of :data:`LESION_CLASSES`),
    ``finding`` (the NIH spelling), ``x1, y1, x2, y2`` (pixels of the 1024×1024 image),
    ``w, h`` (box width and height as fractions of the image side), ``cx, cy`` (box centre, same
    fractions; ``x`` to the image's right = the patient's left), ``split``. The index is the
    row number in the full 984-row table (the ``source`` of a :class:`LesionCase`).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` for the boxes of that split's patients,
            ``None`` for all 984.
    """
    table = _reference_table()
    if split is not None:
        table = table[table["split"] == _check_split(split)]
    return table.copy()


@lru_cache(maxsize=32)
def _sampler(split: str, classes: tuple, class_weights: str):
    """Per class: the split's real (w, h, cx, cy) rows and their table indices; class probabilities."""
    table = _reference_table()
    table = table[table["split"] == split]
    rows, counts = [], []
    for name in classes:
        part = table[table["lesion"] == name]
        if len(part) == 0:
            raise ValueError(f"the {split} split has no NIH boxes of {name!r}")
        rows.append((part[["w", "h", "cx", "cy"]].to_numpy(np.float64), part.index.to_numpy()))
        counts.append(len(part))
    if class_weights == "nih":
        probs = np.asarray(counts, float)
    elif class_weights == "uniform":
        probs = np.ones(len(classes))
    else:
        raise ValueError(f"class_weights must be 'nih' (the frequencies of the NIH boxes) or "
                         f"'uniform', got {class_weights!r}")
    return rows, probs / probs.sum()


# ----------------------------------------------------------------------------------------------
# Anatomy
# ----------------------------------------------------------------------------------------------

_SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}


@lru_cache(maxsize=12)
def _anatomy_bank(size: int, split: str, seed: int, count: int) -> np.ndarray:
    """``count`` noise-free chest phantoms ``(count, size, size)`` float32, one bank per split."""
    from .cxr import make_cxr_phantom

    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], 1, 0]))
    bank = np.stack([make_cxr_phantom(size=size, rng=rng, noise=0.0).image for _ in range(count)])
    bank.setflags(write=False)
    return bank


def _shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """A float32 copy of the image moved by (dy, dx) pixels, edge rows/columns repeated."""
    h, w = image.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[rows[:, None], cols[None, :]]


def _smooth_noise(rng, shape, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (FFT filter, last two axes)."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[-2])[:, None]
    fx = np.fft.rfftfreq(shape[-1])[None, :]
    out = np.fft.irfft2(np.fft.rfft2(noise) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2)),
                        s=shape[-2:])
    return out / (out.std(axis=(-2, -1), keepdims=True) + 1e-8)


@lru_cache(maxsize=12)
def _texture_bank(size: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine and coarse lesion textures, ``(4, 2·size, 2·size)`` each; an image reads a random
    ``size × size`` crop of one of them (filtering fresh noise for every image would cost more
    than all the rest of the drawing)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], 2, 0]))
    shape = (4, 2 * size, 2 * size)
    fine = _smooth_noise(rng, shape, sigma=max(0.8, size / 80))
    coarse = _smooth_noise(rng, shape, sigma=max(2.0, size / 25))
    for t in (fine, coarse):
        t.setflags(write=False)
    return fine, coarse


# ----------------------------------------------------------------------------------------------
# Lesions
# ----------------------------------------------------------------------------------------------

def _iou(box, others: np.ndarray) -> np.ndarray:
    if len(others) == 0:
        return np.zeros(0)
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter)


def _sample_boxes(rng, k: int, size: int, rows, probs, max_overlap: float = 0.3):
    """``k`` (class index, box, source row) triples copied from real boxes, jittered and scaled.

    Size jitter: a common log-normal factor (sd 0.08) and a small independent one per side
    (sd 0.04); centre jitter: sd 2 % of the image side. At most one cardiomegaly per image, and
    a new box may overlap an earlier one by IoU <= ``max_overlap`` (else it is drawn again, up to
    20 times, then left out).
    """
    min_px = 3.0
    cumulative = np.cumsum(probs)
    classes, boxes, sources = [], [], []
    for _ in range(k):
        for _attempt in range(20):
            c = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(probs) - 1)
            values, index = rows[c]
            j = int(rng.integers(len(values)))
            w, h, cx, cy = values[j]
            common = rng.normal(0.0, 0.08)
            w = w * math.exp(common + rng.normal(0.0, 0.04)) * size
            h = h * math.exp(common + rng.normal(0.0, 0.04)) * size
            cx = (cx + rng.normal(0.0, 0.02)) * size
            cy = (cy + rng.normal(0.0, 0.02)) * size
            w, h = max(w, min_px), max(h, min_px)
            cx = min(max(cx, min_px / 2), size - min_px / 2)
            cy = min(max(cy, min_px / 2), size - min_px / 2)
            box = np.array([max(cx - w / 2, 0.0), max(cy - h / 2, 0.0),
                            min(cx + w / 2, size), min(cy + h / 2, size)])
            if _iou(box, np.asarray(boxes).reshape(-1, 4)).max(initial=0.0) > max_overlap:
                continue
            classes.append(c)
            boxes.append(box)
            sources.append(int(index[j]))
            break
    return classes, np.asarray(boxes, np.float64).reshape(-1, 4), sources



def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _render(name: str, image: np.ndarray, box, rng, fine: np.ndarray, coarse: np.ndarray):
    """Draw one lesion into ``image`` (in place) inside ``box``; return its pixel mask as
    ``((row0, col0), window mask)``.

    Works on the window of pixels the box touches; every rendering is a function of the
    normalised coordinates ``u, v`` (-1..1 across the box) that vanishes outside the box.
    """
    size = image.shape[0]
    x1, y1, x2, y2 = box
    r0, r1 = int(math.floor(y1)), min(int(math.ceil(y2)), size)
    c0, c1 = int(math.floor(x1)), min(int(math.ceil(x2)), size)
    win = image[r0:r1, c0:c1]
    yy = (np.arange(r0, r1) + 0.5)[:, None]
    xx = (np.arange(c0, c1) + 0.5)[None, :]
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    u, v = (xx - cx) / hw, (yy - cy) / hh
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    r = np.sqrt(u * u + v * v)
    tf, tc = fine[r0:r1, c0:c1], coarse[r0:r1, c0:c1]
    # The lateral side (towards the nearer chest wall): image left for the patient's right lung.
    lateral = -1.0 if cx < size / 2 else 1.0

    def ellipse(edge, rr=r):
        return _smoothstep((1.0 - rr) / edge)

    if name == "nodule":
        delta = rng.uniform(0.16, 0.3) * ellipse(rng.uniform(0.25, 0.45)) * (1 + 0.1 * tf)
    elif name == "mass":
        theta = np.arctan2(v, u)
        lobes = rng.uniform(0.08, 0.22) * (0.5 + 0.5 * np.cos(rng.integers(3, 6) * theta + rng.uniform(0, 6.3)))
        delta = rng.uniform(0.18, 0.32) * ellipse(rng.uniform(0.15, 0.3), r / (1 - lobes)) * (1 + 0.12 * tf)
    elif name == "infiltration":
        mottle = np.clip(0.55 + 0.45 * tf, 0.1, 1.0)
        delta = rng.uniform(0.12, 0.2) * ellipse(rng.uniform(0.5, 0.8)) * mottle
    elif name == "pneumonia":
        patch = np.clip(0.8 + 0.35 * tc, 0.35, 1.15)
        delta = rng.uniform(0.17, 0.27) * ellipse(rng.uniform(0.3, 0.5)) * patch * (1 + 0.08 * tf)
    elif name == "atelectasis":
        # A plate from one corner region to the opposite one, thickness a fraction of the height.
        t = rng.uniform(0.35, 0.6)                 # band thickness, in units of the box height
        slope = (1.0 - t) * (1 if rng.random() < 0.5 else -1)
        bow = rng.uniform(-0.15, 0.15) * (1 - u * u)
        d = np.abs(v - slope * u - bow)
        band = _smoothstep((t - d) / t)
        delta = rng.uniform(0.09, 0.16) * band * _smoothstep((1 - np.abs(u)) / 0.35) * (1 + 0.1 * tf)
    elif name == "effusion":
        s = np.clip((u * lateral + 1) / 2, 0.0, 1.0)  # 0 at the medial edge, 1 at the lateral edge
        floor_level = rng.uniform(0.3, 0.6)        # fluid height at the medial edge (of the box)
        top = 1 - 2 * (floor_level + (1 - floor_level) * s ** rng.uniform(1.5, 3.0))  # in v units
        alpha = _smoothstep((v - top) / 0.25) * _smoothstep(s / 0.15) * _smoothstep((1 - v) / 0.1)
        delta = rng.uniform(0.2, 0.32) * alpha * (0.75 + 0.25 * (v + 1) / 2) * (1 + 0.04 * tf)
    elif name == "pneumothorax":
        outer = ellipse(0.12)
        shift = rng.uniform(0.25, 0.45)
        ri = np.sqrt(((u + lateral * shift) / (1 - 0.3 * shift)) ** 2 + ((v - 0.5 * shift) / (1 - 0.2 * shift)) ** 2)
        air = outer * _smoothstep((ri - 1) / 0.12)
        line = outer * np.exp(-((ri - 1) / 0.07) ** 2)
        dark = 0.05 + 0.01 * tf
        delta = air * rng.uniform(0.6, 0.85) * (dark - win) + rng.uniform(0.08, 0.14) * line
    elif name == "cardiomegaly":
        level = rng.uniform(0.6, 0.7) + 0.015 * tc
        delta = ellipse(rng.uniform(0.06, 0.12)) * np.clip(level - win, 0.0, None)
    else:  # pragma: no cover - the names are checked on entry
        raise ValueError(name)
    delta = np.where(inside, delta, 0.0)
    win += delta
    return (r0, c0), np.abs(delta) > 1e-4


@dataclass
class LesionCase:
    """One phantom: ``image`` (H, W) float32 in [0, 1]; ``boxes`` (N, 4) float32 xyxy pixels;
    ``labels`` (N,) int64 in ``1..C``; ``classes`` (the C names); ``sources`` (N,) int64, the
    row of each lesion's real box in :func:`nih_box_reference`; ``anatomy`` (the bank index);
    ``masks`` (N, H, W) bool, each lesion's pixels (only with ``return_masks=True``)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    classes: tuple
    sources: np.ndarray
    anatomy: int
    masks: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        return [self.classes[k - 1] for k in self.labels]

    def target(self) -> dict:
        """torchvision target ``{"boxes": float32 (N, 4), "labels": int64 (N,)}``."""
        import torch

        return {"boxes": torch.from_numpy(self.boxes.copy()), "labels": torch.from_numpy(self.labels.copy())}


def make_lesion_image(size: int = 128, n_lesions=(1, 3), classes=LESION_CLASSES, split: str = "train",
                      seed: int | None = 0, rng=None, p_empty: float = 0.0, class_weights: str = "nih",
                      noise: float = 0.025, anatomy_seed: int = 0, n_anatomies: int = 16,
                      return_masks: bool = False) -> LesionCase:
    """Draw one chest phantom with lesions whose boxes copy real NIH boxes of the ``split``.

    Args:
        size: image side in pixels (square, >= 32); 96-128 is plenty for CPU training.
        n_lesions: number of lesions, an int or an inclusive range ``(low, high)`` (uniform);
            fewer are drawn when no place is left (boxes overlap by IoU <= 0.3).
        classes: lesion classes to draw, a subset of :data:`LESION_CLASSES`; the labels number
            them ``1..C`` in this order.
        split: whose real boxes and anatomies to use (``"train"``, ``"val"``, ``"test"``).
        seed, rng: the random stream, ``rng`` (a ``numpy.random.Generator``) or ``default_rng(seed)``.
        p_empty: probability of an image without lesions (a negative example).
        class_weights: ``"nih"`` (class frequencies of the real boxes) or ``"uniform"``.
        noise: standard deviation of the image noise (each image draws 0.6-1.4 times it).
        anatomy_seed, n_anatomies: the bank of base anatomies (one per split and seed).
        return_masks: also return each lesion's pixel mask.

    Returns:
        a :class:`LesionCase`.
    """
    size = _check_int("size", size, _MIN_SIZE, 1024)
    low, high = _check_n_lesions(n_lesions)
    classes = _check_classes(classes)
    _check_split(split)
    p_empty = _check_fraction("p_empty", p_empty)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 0.5:
        raise ValueError(f"noise must be a standard deviation in [0, 0.5], got {noise!r}")
    anatomy_seed = _check_int("anatomy_seed", anatomy_seed, 0)
    n_anatomies = _check_int("n_anatomies", n_anatomies, 1, 1024)
    if rng is None:
        rng = np.random.default_rng(seed)
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    rows, probs = _sampler(split, classes, class_weights)
    bank = _anatomy_bank(size, split, anatomy_seed, n_anatomies)

    # The patient: one bank anatomy, moved by up to 3 % of the side, re-contrasted.
    anatomy = int(rng.integers(n_anatomies))
    m = max(1, round(0.03 * size))
    dy, dx = (int(d) for d in rng.integers(-m, m + 1, size=2))
    image = _shifted(bank[anatomy], dy, dx)
    image *= np.float32(rng.uniform(0.9, 1.1))
    image += np.float32(rng.uniform(-0.04, 0.04))
    k = 0 if rng.random() < p_empty else int(rng.integers(low, high + 1))
    cls, boxes, sources = _sample_boxes(rng, k, size, rows, probs)
    masks = []
    if len(cls):
        fine, coarse = _texture_bank(size, split, anatomy_seed)
        t, oy, ox = (int(v) for v in rng.integers((4, size, size)))
        fine, coarse = fine[t, oy:oy + size, ox:ox + size], coarse[t, oy:oy + size, ox:ox + size]
        # Draw the large background findings first, focal opacities last (on top).
        order = sorted(range(len(cls)), key=lambda i: _DRAW_ORDER.index(classes[cls[i]]))
        drawn = {}
        for i in order:
            drawn[i] = _render(classes[cls[i]], image, boxes[i], rng, fine, coarse)
        if return_masks:
            for i in range(len(cls)):
                (r0, c0), window = drawn[i]
                mask = np.zeros((size, size), dtype=bool)
                mask[r0:r0 + window.shape[0], c0:c0 + window.shape[1]] = window
                masks.append(mask)
    grain = rng.standard_normal(image.shape, dtype=np.float32)
    grain *= np.float32(noise * rng.uniform(0.6, 1.4))
    image += grain
    np.clip(image, 0.0, 1.0, out=image)
    return LesionCase(
        image=image,
        boxes=boxes.astype(np.float32),
        labels=np.asarray(cls, dtype=np.int64) + 1,
        classes=classes,
        sources=np.asarray(sources, dtype=np.int64),
        anatomy=anatomy,
        masks=(np.asarray(masks, dtype=bool).reshape(len(cls), size, size) if return_masks else None),
    )


_DRAW_ORDER = ("cardiomegaly", "effusion", "pneumothorax", "atelectasis", "infiltration", "pneumonia",
               "mass", "nodule")


# ----------------------------------------------------------------------------------------------
# torch Dataset
# ----------------------------------------------------------------------------------------------

try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover - torch is a dependency of dlmi
    _TorchDataset = object


class LesionDataset(_TorchDataset):
    """Detection phantoms for one split: ``dataset[i]`` -> ``(image, target)``.

    ``image`` is a float32 tensor ``(1, size, size)`` in ``[0, 1]``; ``target`` is torchvision's
    ``{"boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,) in 1..C}`` (``N`` may be 0).
    Images are drawn on first access from ``(seed, split, i)`` alone and kept (``cache=True``),
    so any order, any worker, any run gives the same data.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint: other NIH patients' boxes, other
            anatomies, other random streams).
        n: number of images (default 1000 / 250 / 250).
        size: image side in pixels (>= 32).
        seed: the data set's seed.
        classes, n_lesions, p_empty, class_weights, noise, n_anatomies: as in
            :func:`make_lesion_image` (here ``p_empty`` defaults to 0.1).
        cache: keep the drawn images in memory (``size² × 4`` bytes each).

    Attributes:
        classes: the ``C`` class names, label ``k`` is ``classes[k - 1]``.
        categories: ``("__background__", *classes)``, indexed by label.
        num_classes: ``C + 1``, *including* the background, what torchvision's
            ``FasterRCNN(num_classes=...)`` expects.
    """

    def __init__(self, split: str = "train", n: int | None = None, size: int = 128, seed: int = 0,
                 classes=LESION_CLASSES, n_lesions=(1, 3), p_empty: float = 0.1,
                 class_weights: str = "nih", noise: float = 0.025, n_anatomies: int = 16,
                 cache: bool = True) -> None:
        self.split = _check_split(split)
        self.n = _DEFAULT_N[split] if n is None else _check_int("n", n, 1)
        self.seed = _check_int("seed", seed, 0)
        self._options = dict(size=size, n_lesions=n_lesions, classes=classes, split=split,
                             p_empty=p_empty, class_weights=class_weights, noise=noise,
                             anatomy_seed=self.seed, n_anatomies=n_anatomies)
        # Check every option now rather than at the first item.
        first = make_lesion_image(**self._options, rng=np.random.default_rng(0))
        self.size = first.image.shape[0]
        self.classes = first.classes
        self.categories = ("__background__",) + self.classes
        self.num_classes = len(self.classes) + 1
        self.cache = bool(cache)
        self._items: dict = {}

    def __len__(self) -> int:
        return self.n

    def _index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a {self.split} set of {self.n} images")
        return int(i) % self.n

    def case(self, i, return_masks: bool = False) -> LesionCase:
        """Image ``i`` as a :class:`LesionCase` (with ``sources``, ``anatomy``, optional masks)."""
        i = self._index(i)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_CODE[self.split], 0, i]))
        return make_lesion_image(**self._options, rng=rng, return_masks=return_masks)

    def __getitem__(self, i):
        import torch

        i = self._index(i)
        item = self._items.get(i)
        if item is None:
            case = self.case(i)
            item = (torch.from_numpy(case.image)[None], case.target())
            if self.cache:
                self._items[i] = item
        image, target = item
        # Copies of the target tensors: a training loop editing them cannot change the cache.
        return image, {key: value.clone() for key, value in target.items()}

    def __repr__(self) -> str:
        return (f"LesionDataset(split={self.split!r}, n={self.n}, size={self.size}, seed={self.seed}, "
                f"classes={len(self.classes)})")


def collate_detection(batch, stack: bool = False):
    """Collate ``(image, target)`` pairs for a DataLoader: ``(images, targets)``.

    ``images`` is a list of ``(C, H, W)`` tensors, torchvision's detection input (or, with
    ``stack=True``, one ``(N, C, H, W)`` tensor; the images must then share their size);
    ``targets`` is the list of target dicts. Detection targets have a different number of boxes
    per image, so the default collate (which stacks) cannot batch them.
    """
    import torch

    if not isinstance(batch, (list, tuple)) or not batch:
        raise ValueError("batch must be a non-empty list of (image, target) pairs")
    for item in batch:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], dict):
            raise TypeError(f"each batch item must be an (image, target dict) pair, got {type(item).__name__}")
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if stack:
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"stack=True needs images of one shape, got {sorted(shapes)}")
        images = torch.stack(images)
    return images, targets


# ----------------------------------------------------------------------------------------------
# The plot for the lecture
# ----------------------------------------------------------------------------------------------

def plot_nih_box_statistics(reference=None, classes=LESION_CLASSES, axes=None):
    """Where and how big the real NIH expert boxes are, per finding (3 panels).

    (a) every box centre in the image frame (x to the right = the patient's left, y down);
    (b) box width against height, as fractions of the image side (log scales);
    (c) the distribution of the relative box size ``sqrt(w·h)`` per finding, with its count.

    Args:
        reference: a frame from :func:`nih_box_reference` (default: all 984 boxes).
        classes: which findings to show.
        axes: three matplotlib Axes to draw on (default: a new 1×3 figure).

    Returns:
        the three Axes.
    """
    import matplotlib.pyplot as plt

    classes = _check_classes(classes)
    table = nih_box_reference() if reference is None else reference
    if not hasattr(table, "columns") or not {"lesion", "w", "h", "cx", "cy"} <= set(table.columns):
        raise TypeError("reference must be a DataFrame from nih_box_reference()")
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    axes = list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"axes must be three Axes, got {len(axes)}")
    colours = plt.get_cmap("tab10").colors
    sizes = []
    for i, name in enumerate(classes):
        part = table[table["lesion"] == name]
        colour = colours[i % len(colours)]
        axes[0].scatter(part["cx"], part["cy"], s=10, color=colour, alpha=0.6, label=f"{name} ({len(part)})")
        axes[1].scatter(part["w"], part["h"], s=10, color=colour, alpha=0.6, label=name)
        sizes.append(np.sqrt(part["w"] * part["h"]).to_numpy())
    axes[0].set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xlabel="box centre x / image width",
                ylabel="box centre y / image height", title="(a) where: box centres")
    axes[0].legend(fontsize=7, frameon=False, loc="lower center", ncol=2)
    axes[1].set(xscale="log", yscale="log", xlabel="box width / image side", ylabel="box height / image side",
                title="(b) shape: width vs height")
    axes[1].plot([0.02, 1], [0.02, 1], color="0.6", lw=0.8, ls="--")
    import matplotlib

    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecated vert).
    horizontal = ({"orientation": "horizontal"} if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
                  else {"vert": False})
    bp = axes[2].boxplot(sizes, patch_artist=True, showfliers=True, flierprops={"markersize": 2}, **horizontal)
    for patch, i in zip(bp["boxes"], range(len(classes))):
        patch.set_facecolor(colours[i % len(colours)])
        patch.set_alpha(0.6)
    axes[2].set_yticks(range(1, len(classes) + 1), [f"{c} ({len(s)})" for c, s in zip(classes, sizes)])
    axes[2].set(xscale="log", xlabel="relative box size sqrt(w·h)", title="(c) how big: size per finding")
    for ax in axes:
        ax.grid(alpha=0.3)
    return axes

"""Region proposals without learning: selective search and sliding windows (lecture unit 10).

R-CNN (Girshick et al. 2014) and Fast R-CNN (Girshick 2015) do not look at every box an image
could hold; they classify ~2,000 *proposals* per image, boxes likely to hold an object.

**Sliding windows** (:func:`sliding_windows`) are the brute-force answer: boxes of a few sizes
and shapes on a regular grid. They know nothing about the image, so at a fixed budget they
cover objects only as well as the grid happens to fall.

**Selective search** (Uijlings et al. 2013, :func:`selective_search`) starts from an
over-segmentation — Felzenszwalb & Huttenlocher's graph-based segmentation (2004,
``skimage.segmentation.felzenszwalb``) — and greedily merges the two most *similar* neighbouring
regions until one region is left. Every region ever formed is a proposal: objects, which are
regions of similar intensity and texture, appear somewhere in that hierarchy at every scale.
Similarity is the sum of

* intensity: histogram intersection ``Σ_k min(c_i^k, c_j^k)`` of 25-bin histograms per channel;
* texture: the same on histograms of oriented derivatives (8 orientations × 10 bins per channel);
* size: ``1 - (size_i + size_j) / size(image)`` — merge small regions first;
* fill: ``1 - (size(BB_ij) - size_i - size_j) / size(image)`` — merge regions that fill each
  other's bounding box.

The merged region's histograms are the size-weighted average of its parts, so every step costs
one vectorised similarity computation against the new region's neighbours; a heap gives the
next most similar pair. Several segmentation scales ``k`` and similarity sets ("strategies")
are run and their boxes combined; each box is ranked by its position in its hierarchy (1 = the
whole image) times a random number, so every strategy's large regions come first and the
strategies interleave (Uijlings et al. §3.3).

:func:`proposal_recall` measures what matters: the fraction of ground-truth boxes that some
proposal overlaps with IoU ≥ 0.5 — a detector can never find an object no proposal covers.
"""
from __future__ import annotations

import heapq

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from .boxes import box_iou, check_boxes

__all__ = ["selective_search", "sliding_windows", "proposal_recall", "SelectiveSearch",
           "SlidingWindows"]

_COLOUR_BINS = 25
_TEXTURE_BINS = 10
_ORIENTATIONS = 8
SIMILARITIES = ("colour", "texture", "size", "fill")


def _as_image(image) -> np.ndarray:
    """``(H, W, C)`` float64 in ``[0, 1]`` from a ``(C, H, W)`` tensor or an ``(H, W[, C])`` array."""
    if isinstance(image, Tensor):
        if image.ndim != 3:
            raise ValueError(f"image must be a Tensor[C, H, W], got shape {list(image.shape)}")
        if not image.is_floating_point():
            image = image.float()
        array = image.detach().cpu().permute(1, 2, 0).double().numpy()
    elif isinstance(image, np.ndarray):
        array = image.astype(np.float64)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"image must be an array (H, W) or (H, W, C), got shape {image.shape}")
    else:
        raise TypeError(f"image must be a torch.Tensor [C, H, W] or a numpy array, got {type(image).__name__}")
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise ValueError(f"image is too small to segment: {array.shape[:2]}")
    if not np.isfinite(array).all():
        raise ValueError("image must be finite, got NaN or inf")
    lo, hi = array.min(), array.max()
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def _histograms(values: np.ndarray, labels: np.ndarray, count: int, bins: int) -> np.ndarray:
    """``[count, bins]`` histogram of ``values`` in ``[0, 1]`` per region label (one bincount)."""
    index = np.minimum((values * bins).astype(np.int64), bins - 1)
    return np.bincount(labels * bins + index, minlength=count * bins).reshape(count, bins).astype(np.float64)


def _region_features(image: np.ndarray, segments: np.ndarray):
    """Sizes ``[R]``, boxes ``[R, 4]`` (x1, y1, x2, y2; x2/y2 one past the last pixel),
    L1-normalised colour ``[R, 25C]`` and texture ``[R, 80C]`` histograms."""
    count = int(segments.max()) + 1
    flat = segments.ravel()
    sizes = np.bincount(flat, minlength=count).astype(np.float64)
    boxes = np.zeros((count, 4))
    for label, sl in enumerate(ndimage.find_objects(segments + 1)):
        if sl is not None:
            boxes[label] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    colour, texture = [], []
    for c in range(image.shape[2]):
        channel = image[:, :, c]
        colour.append(_histograms(channel.ravel(), flat, count, _COLOUR_BINS))
        # Oriented first derivatives of a Gaussian-smoothed channel (σ = 1), as in the paper.
        gy = ndimage.gaussian_filter(channel, 1.0, order=(1, 0))
        gx = ndimage.gaussian_filter(channel, 1.0, order=(0, 1))
        angles = np.arange(_ORIENTATIONS) * (2 * np.pi / _ORIENTATIONS)
        response = np.maximum(gx[..., None] * np.cos(angles) + gy[..., None] * np.sin(angles), 0)
        response = response / (response.max() + 1e-12)
        for o in range(_ORIENTATIONS):
            texture.append(_histograms(response[:, :, o].ravel(), flat, count, _TEXTURE_BINS))
    colour = np.concatenate(colour, axis=1)
    texture = np.concatenate(texture, axis=1)
    colour /= colour.sum(1, keepdims=True)
    texture /= texture.sum(1, keepdims=True)
    return sizes, boxes, colour, texture


def _adjacent_pairs(segments: np.ndarray) -> np.ndarray:
    """Unique ``(i, j)``, ``i < j``, of regions that touch horizontally or vertically."""
    pairs = np.concatenate((
        np.stack((segments[:, :-1].ravel(), segments[:, 1:].ravel()), 1),
        np.stack((segments[:-1, :].ravel(), segments[1:, :].ravel()), 1)))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0)


def _hierarchical_grouping(sizes, boxes, colour, texture, pairs, image_size: float,
                           similarities) -> np.ndarray:
    """Greedy merging; returns the boxes of all ``2R - 1`` regions in the order they were formed."""
    count = len(sizes)
    total = 2 * count - 1
    size = np.zeros(total)
    box = np.zeros((total, 4))
    col = np.zeros((total, colour.shape[1]))
    tex = np.zeros((total, texture.shape[1]))
    size[:count], box[:count], col[:count], tex[:count] = sizes, boxes, colour, texture
    alive = np.zeros(total, dtype=bool)
    alive[:count] = True
    neighbours = [set() for _ in range(total)]
    for i, j in pairs:
        neighbours[i].add(j)
        neighbours[j].add(i)

    def similarity(i: int, others: np.ndarray) -> np.ndarray:
        s = np.zeros(len(others))
        if "colour" in similarities:
            s += np.minimum(col[i], col[others]).sum(1)
        if "texture" in similarities:
            s += np.minimum(tex[i], tex[others]).sum(1)
        if "size" in similarities:
            s += 1 - (size[i] + size[others]) / image_size
        if "fill" in similarities:
            union = np.concatenate((np.minimum(box[i, :2], box[others, :2]),
                                    np.maximum(box[i, 2:], box[others, 2:])), axis=1)
            area = (union[:, 2] - union[:, 0]) * (union[:, 3] - union[:, 1])
            s += 1 - (area - size[i] - size[others]) / image_size
        return s

    heap = []
    if len(pairs):
        for (i, j), s in zip(pairs, _pairwise(similarity, pairs)):
            heap.append((-s, int(i), int(j)))
    heapq.heapify(heap)
    new = count
    while heap and new < total:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue                                   # a stale entry: one side was merged
        t = new
        new += 1
        size[t] = size[i] + size[j]
        box[t, :2] = np.minimum(box[i, :2], box[j, :2])
        box[t, 2:] = np.maximum(box[i, 2:], box[j, 2:])
        col[t] = (size[i] * col[i] + size[j] * col[j]) / size[t]
        tex[t] = (size[i] * tex[i] + size[j] * tex[j]) / size[t]
        alive[i] = alive[j] = False
        alive[t] = True
        around = (neighbours[i] | neighbours[j]) - {i, j}
        neighbours[t] = around
        for n in around:
            neighbours[n].discard(i)
            neighbours[n].discard(j)
            neighbours[n].add(t)
        if around:
            others = np.fromiter(around, dtype=np.int64)
            for n, s in zip(others, similarity(t, others)):
                heapq.heappush(heap, (-s, int(n), t))
    return box[:new]


def _pairwise(similarity, pairs: np.ndarray) -> np.ndarray:
    """Initial similarities of all adjacent pairs, grouped by the first region (vectorised)."""
    out = np.zeros(len(pairs))
    order = np.argsort(pairs[:, 0], kind="stable")
    firsts, starts = np.unique(pairs[order, 0], return_index=True)
    ends = np.append(starts[1:], len(order))
    for first, a, b in zip(firsts, starts, ends):
        rows = order[a:b]
        out[rows] = similarity(int(first), pairs[rows, 1])
    return out


def selective_search(image, *, scales=(50, 150), sigma: float = 0.8, min_size: int = 10,
                     strategies=(("colour", "texture", "size", "fill"), ("texture", "size", "fill")),
                     max_proposals: int | None = 2000, min_box: float = 2.0, seed: int = 0) -> Tensor:
    """Selective search (Uijlings et al. 2013) on graph-based segments.

    Args:
        image: ``Tensor[C, H, W]`` or array ``(H, W)`` / ``(H, W, C)``; scaled to ``[0, 1]``.
        scales: Felzenszwalb's ``k`` (``scale``) values, one segmentation each (larger: fewer,
            bigger initial regions).
        sigma, min_size: Felzenszwalb's smoothing and smallest segment (pixels).
        strategies: similarity sets, each a tuple of names from
            ``("colour", "texture", "size", "fill")``; each scale is grouped with each set.
        max_proposals: keep the first this many boxes of the ranking (``None``: all).
        min_box: drop boxes narrower or lower than this (pixels).
        seed: for the random factor of the ranking.

    Returns:
        ``Tensor[P, 4]`` float32 xyxy boxes in pixels, unique, best-ranked first.
    """
    from skimage.segmentation import felzenszwalb

    array = _as_image(image)
    height, width = array.shape[:2]
    for strategy in strategies:
        unknown = set(strategy) - set(SIMILARITIES)
        if not strategy or unknown:
            raise ValueError(f"each strategy must be a non-empty tuple of {SIMILARITIES}, got {strategy!r}")
    rng = np.random.default_rng(seed)
    boxes, ranks = [], []
    for k in scales:
        segments = felzenszwalb(array if array.shape[2] > 1 else array[:, :, 0], scale=k, sigma=sigma,
                                min_size=min_size, channel_axis=-1 if array.shape[2] > 1 else None)
        features = _region_features(array, segments)
        pairs = _adjacent_pairs(segments)
        for strategy in strategies:
            formed = _hierarchical_grouping(*features, pairs, float(height * width), strategy)
            # Position in the hierarchy: 1 for the last region formed (the top), then down.
            position = np.arange(len(formed), 0, -1, dtype=np.float64)
            boxes.append(formed)
            ranks.append(position * rng.random(len(formed)))
    boxes = np.concatenate(boxes)
    ranks = np.concatenate(ranks)
    order = np.argsort(ranks, kind="stable")
    boxes = boxes[order]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box) & ((boxes[:, 3] - boxes[:, 1]) >= min_box)
    boxes = boxes[keep]
    # Unique boxes, first occurrence (best rank) kept.
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]
    if max_proposals is not None:
        boxes = boxes[:max_proposals]
    return torch.as_tensor(boxes, dtype=torch.float32)


def sliding_windows(image_size, *, sizes=(8, 16, 32), aspect_ratios=(0.5, 1.0, 2.0),
                    stride_fraction: float = 0.5, max_windows: int | None = None) -> Tensor:
    """Boxes of each size (square root of the area) and aspect ratio (h / w) on a grid.

    Args:
        image_size: ``(height, width)``.
        stride_fraction: the grid step of a window is this fraction of its width / height.
        max_windows: if given, the step is widened (×1.1 at a time) until at most this many
            windows are made — "sliding windows with the same budget".

    Returns:
        ``Tensor[P, 4]`` float32 xyxy windows inside the image, largest windows first.
    """
    height, width = (int(s) for s in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive (height, width), got {tuple(image_size)}")
    while True:
        windows = []
        for size in sorted(sizes, reverse=True):
            for ratio in aspect_ratios:
                w = min(size / np.sqrt(ratio), width)
                h = min(size * np.sqrt(ratio), height)
                xs = np.arange(0, width - w + 1e-6, max(w * stride_fraction, 1.0))
                ys = np.arange(0, height - h + 1e-6, max(h * stride_fraction, 1.0))
                x, y = np.meshgrid(xs, ys)
                windows.append(np.stack((x.ravel(), y.ravel(), x.ravel() + w, y.ravel() + h), 1))
        windows = np.concatenate(windows)
        if max_windows is None or len(windows) <= max_windows:
            return torch.as_tensor(windows, dtype=torch.float32)
        stride_fraction *= 1.1


def proposal_recall(proposals, gt_boxes, iou_threshold: float = 0.5) -> float:
    """Fraction of ground-truth boxes covered by some proposal with IoU ≥ ``iou_threshold``.

    Args:
        proposals: ``Tensor[P, 4]`` or a list of them (one per image).
        gt_boxes: ``Tensor[G, 4]`` or a list of them (same length).
    """
    if isinstance(proposals, Tensor):
        proposals, gt_boxes = [proposals], [gt_boxes]
    if len(proposals) != len(gt_boxes):
        raise ValueError(f"need one proposal set per image: got {len(proposals)} and {len(gt_boxes)}")
    hits = total = 0
    for p, g in zip(proposals, gt_boxes):
        check_boxes(p, "proposals")
        check_boxes(g, "gt_boxes")
        total += g.shape[0]
        if g.shape[0] and p.shape[0]:
            hits += int((box_iou(g.float(), p.float()).max(dim=1).values >= iou_threshold).sum())
    return hits / total if total else float("nan")


class SelectiveSearch:
    """:func:`selective_search` with fixed options, as a proposer ``image -> Tensor[P, 4]``."""

    def __init__(self, **options) -> None:
        self.options = options

    def __call__(self, image) -> Tensor:
        return selective_search(image, **self.options)

    def __repr__(self) -> str:
        return f"SelectiveSearch({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"


class SlidingWindows:
    """:func:`sliding_windows` for the image's size, as a proposer ``image -> Tensor[P, 4]``."""

    def __init__(self, **options) -> None:
        self.options = options

    def __call__(self, image) -> Tensor:
        return sliding_windows(tuple(image.shape[-2:]), **self.options)

    def __repr__(self) -> str:
        return f"SlidingWindows({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

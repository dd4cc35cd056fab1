"""Non-maximum suppression (lecture unit 10; used by R-CNN, Fast and Faster R-CNN and YOLO).

A detector fires many times around each object. Greedy NMS keeps the highest-scoring box,
removes every remaining box whose IoU with it is above a threshold, and repeats with the
highest-scoring box left (R-CNN applies it per class, Girshick et al. 2014, §2.2; Faster
R-CNN to the RPN proposals with threshold 0.7, Ren et al. 2015, §3.3).

The greedy walk is inherently sequential (whether box ``j`` is kept depends on whether the
boxes that could remove it were kept), so it runs on the host over the "i would remove j"
pairs, like the last step of torchvision's CUDA kernel over its bit mask; it only has to stop
at the boxes that remove something. Finding those pairs is the expensive part, ``N^2 / 2``
IoUs done naively, and it is done in torch in one of two ways:

* the *tile walk* (CPU, the usual case): with a threshold ``>= 0`` only boxes that intersect
  can remove each other. The boxes are sorted along x and cut into tiles of 32 neighbours;
  two tiles whose bounding boxes do not meet cannot hold an intersecting pair, so only the
  IoU matrices of the tile pairs that meet are computed. On a sparse image (most boxes kept)
  that is a small fraction of all pairs. This is the "broad phase" of collision detection
  in physics engines (Ericson, *Real-Time Collision Detection*, 2005, ch. 7);
* the *block walk* (crowded images, GPUs, negative thresholds): a box can only be removed by
  a box that is *kept* and scores higher, so the boxes are walked in score order, a block at
  a time: one IoU matrix against the boxes kept so far removes most candidates at once, and
  only the survivors need the greedy pass inside their block. Where most tiles meet anyway
  this is cheaper, as it never looks at a box again once it is removed.

Results (kept indices, in decreasing score order) are identical to ``torchvision.ops.nms`` and
``torchvision.ops.batched_nms``, including which of two boxes with tied scores comes first.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .boxes import _shape, check_boxes

__all__ = ["nms", "batched_nms"]

_BLOCK = 256        # candidates per block of the block walk: the IoU matrices stay in cache
_TILE = 32          # boxes per tile of the tile walk
_TILE_PAIRS = 128   # tile pairs per step of the tile walk: [128, 32, 32] float32 buffers, 512 KiB
_CROWDED = 0.5      # meeting tile pairs holding more than this fraction of all pairs: block walk
_MAX_PAIRS = 2 ** 22  # more "i removes j" pairs than this (64 MiB of indices): block walk


def _check_scores(scores, n: int) -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a torch.Tensor of shape [N], got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    if scores.ndim != 1 or scores.shape[0] != n:
        raise ValueError(f"scores must have shape [{n}] (one per box), got {_shape(scores)}")
    if n and not torch.isfinite(scores).all():
        raise ValueError("scores must be finite, got NaN or inf")
    return scores


def _check_threshold(iou_threshold) -> float:
    if isinstance(iou_threshold, Tensor) and iou_threshold.numel() == 1:
        iou_threshold = iou_threshold.item()
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold must be a float, got {type(iou_threshold).__name__}")
    if math.isnan(iou_threshold):
        raise ValueError("iou_threshold must be a number, got nan")
    return float(iou_threshold)


def _float_threshold(threshold: float, dtype: torch.dtype) -> float:
    """A threshold ``t`` in ``dtype`` with ``iou > t`` exactly when ``iou > threshold`` in double.

    torch compares a float32 tensor with a Python float after rounding the float to float32,
    while torchvision's kernel compares each float32 IoU with the double threshold. The two
    differ only for an IoU equal to the rounded threshold when rounding went up (0.3 becomes
    0.30000001); comparing with the float32 just below it then gives the double-precision
    answer for every float32.
    """
    if dtype == torch.float64:
        return threshold
    rounded = torch.tensor(threshold, dtype=dtype)
    if rounded.item() > threshold:
        rounded = torch.nextafter(rounded, torch.tensor(-math.inf, dtype=dtype))
    return rounded.item()


def _overlaps(rows: Tensor, cols: Tensor) -> Tensor:
    """IoU of the boxes ``rows`` with the boxes ``cols``, each given as five stacked coordinate
    tensors ``(x1, y1, x2, y2, area)`` that broadcast against each other: ``[5, n, 1]`` with
    ``[5, m]`` gives the ``[n, m]`` matrix, ``[5, k, T, 1]`` with ``[5, k, 1, T]`` ``k`` tile pairs.

    The arithmetic is the one of torchvision's NMS kernel, step for step, so that the IoUs are
    the same floats and ties with the threshold fall the same way; like the kernel's, the IoU
    of two zero-area boxes is 0 / 0 = NaN, which ``iou > threshold`` never counts. It is
    symmetric bit for bit (``min``, ``max`` and ``+`` do not depend on the order of their
    arguments), so either box of a pair may come first. In-place steps: one buffer per
    quantity instead of one per operation.
    """
    x1a, y1a, x2a, y2a, area_a = rows
    x1b, y1b, x2b, y2b, area_b = cols
    width = torch.minimum(x2a, x2b).sub_(torch.maximum(x1a, x1b)).clamp_(min=0)
    height = torch.minimum(y2a, y2b).sub_(torch.maximum(y1a, y1b)).clamp_(min=0)
    inter = width.mul_(height)
    return inter.div_((area_a + area_b).sub_(inter))


def _greedy(suppresses: Tensor) -> list[int]:
    """The sequential pass over a ``[n, n]`` matrix, ``suppresses[i, j]``: box i would remove
    box j (boxes in score order; entries with j <= i are ignored, only a higher-scoring box can
    remove). Walk the boxes that would remove something, in order; one still standing is kept
    and removes its row. On the host, like the last step of torchvision's CUDA kernel.

    Returns the kept positions, in order.
    """
    rows = np.triu(suppresses.cpu().numpy(), k=1)
    removed = np.zeros(len(rows), dtype=bool)
    for i in np.flatnonzero(rows.any(axis=1)):
        if not removed[i]:            # every box that could remove i came earlier: i is kept
            removed |= rows[i]
    return np.flatnonzero(~removed).tolist()


def _greedy_pairs(first: Tensor, second: Tensor, n: int) -> np.ndarray:
    """:func:`_greedy` over a list instead of a matrix: box ``first[k]`` would remove box
    ``second[k]`` (``first[k] < second[k]``, positions in score order, ``n`` boxes). The loop is
    as long as the number of distinct ``first``: a handful on a sparse image.

    Returns a ``[n]`` bool array: kept or not.
    """
    first, by_first = torch.sort(first)
    targets = second[by_first].numpy()
    sources, counts = torch.unique_consecutive(first, return_counts=True)
    ends = counts.cumsum(0)
    removed = np.zeros(n, dtype=bool)
    for i, begin, end in zip(sources.tolist(), (ends - counts).tolist(), ends.tolist()):
        if not removed[i]:
            removed[targets[begin:end]] = True
    return ~removed


def _walk_blocks(columns: Tensor, threshold: float, segments: list[int]) -> Tensor:
    """Greedy NMS in score order, a block of ``_BLOCK`` candidates at a time: one IoU matrix
    against all boxes kept so far removes most candidates at once, the survivors go through
    the greedy pass inside their block. Any threshold, any device.

    ``columns``: ``[5, N]`` (x1, y1, x2, y2, area) in visiting order, ``segments`` the lengths
    of the runs (categories) that never meet. Returns the kept positions in visiting order.
    """
    kept = []
    end = 0
    for size in segments:
        begin, end = end, end + size
        kept_here = torch.empty(0, dtype=torch.long, device=columns.device)
        for start in range(begin, end, _BLOCK):
            candidates = torch.arange(start, min(start + _BLOCK, end), device=columns.device)
            if kept_here.numel():
                # A NaN IoU (0 / 0 of two zero-area boxes, inf / inf where areas overflow) never
                # removes a box in the kernel; -inf does not either, and cannot hide the other
                # IoUs of its row from the maximum as a NaN would.
                iou = _overlaps(columns[:, candidates, None], columns[:, kept_here])
                candidates = candidates[iou.nan_to_num_(nan=-math.inf).amax(dim=1) <= threshold]
                if candidates.numel() == 0:
                    continue
            block = columns[:, candidates]
            survivors = _greedy(_overlaps(block[:, :, None], block) > threshold)
            kept_here = torch.cat((kept_here, candidates[torch.as_tensor(survivors, device=columns.device)]))
        kept.append(kept_here)
    return torch.cat(kept)


def _walk_tiles(columns: Tensor, threshold: float, categories: Tensor | None) -> Tensor | None:
    """Greedy NMS that computes only the IoUs of boxes that lie near each other; needs
    ``threshold >= 0`` (then boxes that do not intersect never remove each other).

    The boxes are sorted along x (within their category) and cut into tiles of ``_TILE``
    neighbours. Two tiles whose bounding boxes (or category ranges) do not meet hold no pair of
    intersecting boxes, so only the tile pairs that meet get their ``[_TILE, _TILE]`` IoU
    matrix, ``_TILE_PAIRS`` tile pairs per batched step. What comes out is the short list of
    "i would remove j" pairs, which :func:`_greedy_pairs` walks in score order.

    ``columns``: ``[5, N]`` (x1, y1, x2, y2, area) in score order, ``categories``: ``[N]`` in
    the same order, or None. Returns the kept positions in score order, or None where the
    boxes are too crowded for tiles to pay (see ``_CROWDED`` and ``_MAX_PAIRS``).
    """
    n = columns.shape[1]
    along = torch.sort(columns[0], stable=True).indices                # spatial order: by x1...
    if categories is not None:                                         # ...inside each category
        along = along[torch.sort(categories[along], stable=True).indices]
    tiles = -(-n // _TILE)
    padding = tiles * _TILE - n
    # The last tile is filled up with empty boxes, x1 = y1 = +inf > x2 = y2 = -inf: they widen
    # no tile's bounding box and their IoU with anything is 0 / inf = 0.
    empty = torch.tensor([math.inf, math.inf, -math.inf, -math.inf, math.inf], dtype=columns.dtype)
    tiled = torch.cat((columns.index_select(1, along), empty[:, None].expand(5, padding)), 1)
    tiled = tiled.view(5, tiles, _TILE)                                # [5, tiles, _TILE]
    position = torch.cat((along, along.new_full((padding,), n))).view(tiles, _TILE)
    x1, y1, x2, y2, _ = tiled
    left, top, right, bottom = x1.amin(1), y1.amin(1), x2.amax(1), y2.amax(1)
    # Strict inequalities: boxes that only touch have no intersection, so IoU 0.
    meet = (left[:, None] < right) & (left < right[:, None])           # [tiles, tiles]
    meet &= (top[:, None] < bottom) & (top < bottom[:, None])
    if categories is not None:
        category = torch.cat((categories[along], categories[along[-1:]].expand(padding))).view(tiles, _TILE)
        lowest, highest = category[:, 0], category[:, -1]              # sorted inside each tile
        meet &= (lowest[:, None] <= highest) & (lowest <= highest[:, None])
    tile_a, tile_b = torch.triu(meet).nonzero().unbind(1)              # each meeting pair once
    if tile_a.shape[0] * _TILE ** 2 > _CROWDED * n * n / 2:
        return None
    first, second = [], []
    found = 0
    for start in range(0, tile_a.shape[0], _TILE_PAIRS):
        a, b = tile_a[start:start + _TILE_PAIRS], tile_b[start:start + _TILE_PAIRS]
        iou = _overlaps(tiled.index_select(1, a)[..., None], tiled.index_select(1, b)[:, :, None, :])
        pair, row, col = (iou > threshold).nonzero().unbind(1)        # few: filter these, not iou
        i, j = position[a[pair], row], position[b[pair], col]
        # Inside one tile every pair comes twice, and each box with itself: take it once.
        once = (i < j) | (a[pair] != b[pair])
        if categories is not None:
            once &= categories[i] == categories[j]
        i, j = i[once], j[once]
        first.append(torch.minimum(i, j))                              # the higher-scoring box...
        second.append(torch.maximum(i, j))                             # ...would remove the other
        found += i.shape[0]
        if found > _MAX_PAIRS:
            return None
    if not first:                                                      # no two boxes intersect
        return torch.arange(n)
    keep = _greedy_pairs(torch.cat(first), torch.cat(second), n)
    return torch.from_numpy(keep).nonzero()[:, 0]


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float, categories: Tensor | None = None) -> Tensor:
    """Greedy NMS; with ``categories``, boxes of different categories never meet.

    The tile walk where it applies and pays (CPU, threshold >= 0, boxes not too crowded), the
    block walk otherwise: on a GPU one big IoU matrix per block is cheap, and with a negative
    threshold even disjoint boxes remove each other. Returns the kept indices, by score (tile
    walk) or by category, then score (block walk).
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    threshold = _float_threshold(iou_threshold, boxes.dtype)
    # A stable sort, as in torchvision's kernel: of two boxes with equal scores the one given
    # first is visited first, and survives if they overlap.
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes[order].T.contiguous()
    columns = torch.stack((x1, y1, x2, y2, (x2 - x1) * (y2 - y1)))      # [5, N] in score order
    if boxes.device.type == "cpu" and threshold >= 0:
        kept = _walk_tiles(columns, threshold, None if categories is None else categories[order])
        if kept is not None:
            return order[kept]
    segments = [boxes.shape[0]]
    if categories is not None:
        # Category-major order: each category's boxes together, still by score inside.
        by_category = torch.sort(categories[order], stable=True).indices
        order, columns = order[by_category], columns[:, by_category]
        segments = torch.unique_consecutive(categories[order], return_counts=True)[1].tolist()
    return order[_walk_blocks(columns, threshold, segments)]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``Tensor[N, 4]`` float xyxy boxes.
        scores: ``Tensor[N]`` float scores.
        iou_threshold: a box is removed when its IoU with a kept, higher-scoring box is
            strictly greater than this.

    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes, highest score first (same as
        ``torchvision.ops.nms``). Empty input gives an empty result.
    """
    check_boxes(boxes, floating=True)
    _check_scores(scores, boxes.shape[0])
    return _nms(boxes, scores, _check_threshold(iou_threshold))


def _check_idxs(idxs, n: int) -> Tensor:
    if not isinstance(idxs, Tensor):
        raise TypeError(f"idxs must be a torch.Tensor of shape [N], got {type(idxs).__name__}")
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer tensor of category indices, got dtype {idxs.dtype}")
    if idxs.ndim != 1 or idxs.shape[0] != n:
        raise ValueError(f"idxs must have shape [{n}] (one category per box), got {_shape(idxs)}")
    if n and (idxs < 0).any():
        raise ValueError(f"idxs must be non-negative category indices, got {int(idxs.min())}")
    return idxs


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category: boxes of different categories never suppress each other.

    Two equivalent ways, chosen by size exactly as torchvision chooses them so that the results
    are identical:

    * the *offset trick* (small inputs): shift each category's boxes by
      ``category * (max coordinate + 1)`` so that boxes of different categories cannot overlap,
      then one NMS call;
    * *NMS per category* (more than 1,000 boxes on the CPU, 25,000 elsewhere): one walk in
      which boxes of different categories are never compared (the tile walk sorts the boxes
      by category before cutting tiles, the block walk restarts at each category); then all
      kept boxes in decreasing score order.

    The trick needs non-negative coordinates (two shifted boxes could otherwise still touch);
    where some coordinate is negative the per-category path is used, which is always right.

    Args:
        boxes: ``Tensor[N, 4]`` float xyxy boxes.
        scores: ``Tensor[N]`` float scores.
        idxs: ``Tensor[N]`` integer category of each box (``>= 0``).
        iou_threshold: as in :func:`nms`.

    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes, highest score first.
    """
    check_boxes(boxes, floating=True)
    _check_scores(scores, boxes.shape[0])
    _check_idxs(idxs, boxes.shape[0])
    iou_threshold = _check_threshold(iou_threshold)
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    per_category = boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000)
    if per_category or boxes.min() < 0:
        kept = torch.sort(_nms(boxes, scores, iou_threshold, categories=idxs)).values
        # torchvision's own (unstable) sort of the kept boxes, ascending indices in: the same
        # call puts tied scores in the same order.
        return kept[torch.sort(scores[kept], descending=True).indices]
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return _nms(boxes + offsets[:, None], scores, iou_threshold)

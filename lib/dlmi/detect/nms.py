"""Non-maximum suppression (lecture unit 10; used by R-CNN, Fast and Faster R-CNN and YOLO).

A detector fires many times around each object. Greedy NMS keeps the highest-scoring box,
removes every remaining box whose IoU with it is above a threshold, and repeats with the
highest-scoring box left (R-CNN applies it per class, Girshick et al. 2014, §2.2; Faster
R-CNN to the RPN proposals with threshold 0.7, Ren et al. 2015, §3.3).

Two facts make it fast in torch:

* a box can only be removed by a box that is *kept* and scores higher, so the boxes are walked
  in score order, a block at a time: one IoU matrix against the boxes kept so far removes most
  candidates at once; only the few that survive need the sequential greedy pass inside their
  block;
* the greedy pass itself is inherently sequential (whether box ``j`` is kept depends on whether
  the boxes that could suppress it were kept), so it runs on the host over a boolean
  "i suppresses j" matrix, like torchvision's CUDA kernel does with its bit mask.

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

_BLOCK = 256  # candidates per block: the IoU tiles stay in cache, the Python loop stays short


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
    """``[n, m]`` IoU of boxes ``rows`` (n) with boxes ``cols`` (m), each given as contiguous
    columns ``(x1, y1, x2, y2, area)``.

    The arithmetic is the one of torchvision's NMS kernel, step for step, so that the IoUs are
    the same floats and ties with the threshold fall the same way. In-place steps: one
    ``[n, m]`` buffer per quantity instead of one per operation.
    """
    x1a, y1a, x2a, y2a, area_a = (c[:, None] for c in rows)
    x1b, y1b, x2b, y2b, area_b = cols
    width = torch.minimum(x2a, x2b).sub_(torch.maximum(x1a, x1b)).clamp_(min=0)
    height = torch.minimum(y2a, y2b).sub_(torch.maximum(y1a, y1b)).clamp_(min=0)
    inter = width.mul_(height)
    # Two zero-area boxes give 0 / 0 = NaN, which the kernel never counts as an overlap. Making
    # such a union the smallest normal float instead gives IoU 0, the same decision, and lets a
    # row maximum stand for "any IoU above the threshold" (a NaN would hide the others). A real
    # union is never that small: it would take boxes 1e-19 pixels wide.
    union = (area_a + area_b).sub_(inter).clamp_(min=torch.finfo(inter.dtype).smallest_normal)
    return inter.div_(union)


def _greedy(suppresses: Tensor) -> list[int]:
    """The sequential pass: walk the boxes in score order, keep a box unless a kept box removed
    it, and let it remove the ones it overlaps. ``suppresses[i, j]``: box i would remove box j
    (entries with j <= i are read only after j's fate is sealed, so they need no clearing).
    On the host, like the last step of torchvision's CUDA kernel."""
    rows = suppresses.cpu().numpy()
    removed = np.zeros(len(rows), dtype=bool)
    kept = []
    for i, row in enumerate(rows):
        if not removed[i]:
            kept.append(i)
            removed |= row
    return kept


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float, categories: Tensor | None = None) -> Tensor:
    """Greedy NMS; with ``categories``, the same walk restarted for each category, so that boxes
    of different categories never meet.

    Returns the kept indices in visiting order: by score, or by category then score.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    threshold = _float_threshold(iou_threshold, boxes.dtype)
    # A stable sort, as in torchvision's kernel: of two boxes with equal scores the one given
    # first is visited first, and survives if they overlap.
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    segments = [boxes.shape[0]]
    if categories is not None:
        # Category-major order: each category's boxes together, still by score inside.
        order = order[torch.sort(categories[order], stable=True).indices]
        segments = torch.unique_consecutive(categories[order], return_counts=True)[1].tolist()
    x1, y1, x2, y2 = boxes[order].T.contiguous()
    columns = torch.stack((x1, y1, x2, y2, (x2 - x1) * (y2 - y1)))     # [5, N] in visiting order
    kept = []                                                          # positions in that order
    end = 0
    for size in segments:
        begin, end = end, end + size
        kept_here = torch.empty(0, dtype=torch.long, device=boxes.device)
        for start in range(begin, end, _BLOCK):
            candidates = torch.arange(start, min(start + _BLOCK, end), device=boxes.device)
            if kept_here.numel():
                closest = _overlaps(columns[:, candidates], columns[:, kept_here]).amax(dim=1)
                candidates = candidates[closest <= threshold]
                if candidates.numel() == 0:
                    continue
            block = columns[:, candidates]
            survivors = _greedy(_overlaps(block, block) > threshold)
            kept_here = torch.cat((kept_here, candidates[torch.as_tensor(survivors, device=boxes.device)]))
        kept.append(kept_here)
    return order[torch.cat(kept)]


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
    * *NMS per category* (more than 1,000 boxes on the CPU, 25,000 elsewhere): the boxes
      sorted by category, then score, and the greedy walk restarted at each category; then all
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

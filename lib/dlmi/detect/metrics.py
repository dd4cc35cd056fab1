"""Mean average precision: how detectors are compared (lecture units 10 and 11).

For one class, sort all detections of the test set by score. Walking down the list, a detection
is a true positive when it overlaps a still unmatched ground-truth box of its class with IoU at
or above a threshold, otherwise a false positive. After each detection,

    precision = TP / (TP + FP)        recall = TP / (number of ground-truth boxes),

which traces the precision-recall curve. Its area is the *average precision* (AP); averaged
over classes it is the mAP. The datasets differ in how they take the area:

* PASCAL VOC 2007 (Everingham et al. 2010): IoU 0.5, precision "interpolated" (the best
  precision at this recall or any higher one) and read at the 11 recalls 0, 0.1, …, 1;
* VOC 2010-2012: the same envelope, integrated exactly ("all points");
* COCO (Lin et al. 2014): read at 101 recalls, averaged over the ten IoU thresholds
  0.50, 0.55, …, 0.95 (``map``), and broken down by object size (small < 32², medium,
  large > 96² pixels) and by the number of detections allowed per image (1, 10, 100: ``mar_*``).

:func:`mean_average_precision` computes the COCO numbers exactly as pycocotools does (the
values torchmetrics' ``MeanAveragePrecision`` reports, to 1e-6 and usually to the last bit),
including its conventions: a ground-truth box marked ``iscrowd`` or outside the area range is
"ignored" (matching it is neither a hit nor a miss), at most ``max_detection_thresholds[-1]``
detections per image and class count, and ``-1`` marks a number that does not exist (a class
without ground truth, an empty area range). ``interpolation="11"`` or ``"all"`` switches to the
VOC ways of taking the area; :func:`average_precision` does it for one curve.

Vectorised: per-image Python loops are replaced by one sort of all detections and tensor
operations over all (image, class) groups at once. The greedy matching is sequential only along
the score rank *within* an image and class (at most 100 steps), and each step matches the
detections of that rank in all images, all area ranges and all IoU thresholds together.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .boxes import _shape

__all__ = ["mean_average_precision", "average_precision", "COCO_IOU_THRESHOLDS",
           "COCO_REC_THRESHOLDS", "VOC_REC_THRESHOLDS", "COCO_AREA_RANGES"]

# torchmetrics builds its thresholds with a float32 linspace and hands them to pycocotools; we
# use the very same numbers (0.550000011920929, ...) so that an IoU of exactly 0.55 is judged
# as it is there. They differ from pycocotools' own float64 defaults by less than 1e-7.
COCO_IOU_THRESHOLDS = tuple(torch.linspace(0.5, 0.95, 10, dtype=torch.float32).tolist())
COCO_REC_THRESHOLDS = tuple(torch.linspace(0.0, 1.0, 101, dtype=torch.float32).tolist())
VOC_REC_THRESHOLDS = tuple(i / 10 for i in range(11))
COCO_AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2),
                    "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}
_EPS = 2.220446049250313e-16    # numpy.spacing(1), pycocotools' guard against 0 / 0
_INTERPOLATIONS = ("101", "11", "all")


# -- precision-recall curves ---------------------------------------------------------------------
def _envelope(precision: Tensor, dim: int = -1) -> Tensor:
    """Interpolated precision: at each point the best precision at that recall or beyond."""
    return precision.flip(dim).cummax(dim).values.flip(dim)


def _sample(recall: Tensor, envelope: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Envelope read at the first point whose recall reaches each threshold, 0 where the
    recall never gets there. ``recall``/``envelope``: ``[..., L]``; ``thresholds``: ``[R]``.
    Returns the values ``[..., R]`` and the positions used (``L`` for "never")."""
    length = recall.shape[-1]
    points = thresholds.expand(*recall.shape[:-1], -1)
    if length == 0:
        return torch.zeros(points.shape, dtype=envelope.dtype), torch.zeros(points.shape, dtype=torch.long)
    where = torch.searchsorted(recall.contiguous(), points.contiguous(), side="left")
    reached = where < length
    values = envelope.gather(-1, where.clamp(max=length - 1))
    return torch.where(reached, values, torch.zeros_like(values)), where


def _area_under(recall: Tensor, envelope: Tensor) -> Tensor:
    """Exact area under the envelope (VOC 2010+): sum of recall steps times the envelope."""
    steps = torch.diff(recall, dim=-1, prepend=torch.zeros_like(recall[..., :1]))
    return (steps * envelope).sum(-1)


def average_precision(recall: Tensor, precision: Tensor, interpolation: str = "all",
                      rec_thresholds=None) -> Tensor:
    """AP of one precision-recall curve.

    Args:
        recall, precision: ``Tensor[L]``, the curve after each detection in decreasing score
            order (recall non-decreasing, both in ``[0, 1]``).
        interpolation: ``"all"`` (VOC 2010+: exact area under the interpolated curve), ``"11"``
            (VOC 2007: mean of the interpolated precision at recall 0, 0.1, ..., 1) or ``"101"``
            (COCO: at recall 0, 0.01, ..., 1).
        rec_thresholds: recall points for ``"11"``/``"101"`` instead of the standard ones.

    Returns:
        0-dim float64 tensor.
    """
    for name, t in (("recall", recall), ("precision", precision)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {type(t).__name__}")
        if t.ndim != 1:
            raise ValueError(f"{name} must be a 1-D curve Tensor[L], got shape {_shape(t)}")
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision must have the same length, got {recall.shape[0]} "
                         f"and {precision.shape[0]}")
    _check_interpolation(interpolation)
    recall, precision = recall.double(), precision.double()
    if recall.numel():
        if not (torch.isfinite(recall).all() and torch.isfinite(precision).all()):
            raise ValueError("recall and precision must be finite")
        if (torch.diff(recall) < 0).any():
            raise ValueError("recall must be non-decreasing (detections in decreasing score order)")
        if recall.min() < 0 or recall.max() > 1 or precision.min() < 0 or precision.max() > 1:
            raise ValueError("recall and precision must lie in [0, 1]")
    envelope = _envelope(precision)
    if interpolation == "all":
        return _area_under(recall, envelope)
    thresholds = _thresholds(rec_thresholds, "rec_thresholds",
                             COCO_REC_THRESHOLDS if interpolation == "101" else VOC_REC_THRESHOLDS)
    return _sample(recall, envelope, thresholds)[0].mean()


# -- argument checks -----------------------------------------------------------------------------
def _check_interpolation(interpolation) -> str:
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be '101' (COCO), '11' (VOC 2007) or 'all' "
                         f"(VOC 2010+), got {interpolation!r}")
    return interpolation


def _thresholds(values, name: str, default) -> Tensor:
    if values is None:
        values = default
    if isinstance(values, Tensor) or type(values).__module__ == "numpy":
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of numbers in [0, 1], got {values!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values):
        raise ValueError(f"{name} must be numbers in [0, 1], got {list(values)}")
    if name == "rec_thresholds" and any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"rec_thresholds must be increasing, got {list(values)}")
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def _max_detections(values) -> list[int]:
    if values is None:
        return [1, 10, 100]
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"max_detection_thresholds must be a list of positive ints such as "
                         f"[1, 10, 100], got {values!r}")
    return sorted(values)


def _tensor(value, where: str, key: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    return value.detach().cpu()


def _collect(items, what: str, keys: tuple, optional: tuple = ()) -> tuple[dict, Tensor]:
    """Check a list of per-image dicts and concatenate each key over images.

    Returns the concatenated columns (boxes as COCO ``x, y, w, h`` in float64) and the number
    of boxes per image."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{what} must be a list of dicts (one per image), got {type(items).__name__}")
    columns = {key: [] for key in keys + optional}
    counts = []
    for i, item in enumerate(items):
        where = f"{what}[{i}]"
        if not isinstance(item, Mapping):
            raise TypeError(f"{where} must be a dict with keys {keys}, got {type(item).__name__}")
        missing = [key for key in keys if key not in item]
        if missing:
            raise ValueError(f"{where} is missing {missing}: expected keys {keys}, got {tuple(item)}")
        boxes = _tensor(item["boxes"], where, "boxes")
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        elif boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{where}['boxes'] must have shape [N, 4] (x1, y1, x2, y2), got {_shape(boxes)}")
        if boxes.dtype == torch.bool or boxes.is_complex():
            raise TypeError(f"{where}['boxes'] must hold pixel coordinates, got dtype {boxes.dtype}")
        n = boxes.shape[0]
        columns["boxes"].append(boxes)
        for key in keys[1:] + tuple(k for k in optional if k in item):
            value = _tensor(item[key], where, key)
            if value.numel() == 0:
                value = value.reshape(0)
            if value.ndim != 1 or value.shape[0] != n:
                raise ValueError(f"{where}[{key!r}] must have shape [{n}] (one per box), got {_shape(value)}")
            if key == "labels" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
                raise TypeError(f"{where}['labels'] must be an integer tensor, got dtype {value.dtype}")
            if key == "scores" and not value.is_floating_point():
                raise TypeError(f"{where}['scores'] must be a floating-point tensor, got dtype {value.dtype}")
            columns[key].append(value)
        for key in optional:
            if key not in item:
                columns[key].append(None)
        counts.append(n)
    counts = torch.tensor(counts, dtype=torch.long)
    out = {}
    boxes = columns.pop("boxes")
    dtypes = {b.dtype for b in boxes if b.numel()}
    if len(dtypes) <= 1:
        dtype = dtypes.pop() if dtypes else torch.float32
        out["boxes"] = _to_xywh(torch.cat([b.to(dtype) for b in boxes]) if boxes else torch.zeros(0, 4))
    else:   # mixed dtypes: each image's widths in its own precision, as torchmetrics does
        out["boxes"] = torch.cat([_to_xywh(b) for b in boxes])
    for key in keys[1:]:
        out[key] = torch.cat(columns[key]) if columns[key] else torch.zeros(0)
    for key in optional:
        given = columns[key]
        if any(v is not None for v in given):
            filler = torch.zeros if key == "area" else (lambda n: torch.zeros(n, dtype=torch.long))
            out[key] = torch.cat([v if v is not None else filler(c) for v, c in zip(given, counts.tolist())])
    return out, counts


def _to_xywh(xyxy: Tensor) -> Tensor:
    # COCO stores (x, y, w, h); the widths are taken in the boxes' own precision before going to
    # float64, which is what torchmetrics hands to pycocotools.
    x1, y1, x2, y2 = xyxy.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1).double()


def _check_flat(boxes: Tensor, counts: Tensor, what: str) -> None:
    """NaN/inf and negative sizes, reported as (image, box) of the first offender."""
    if boxes.numel() == 0:
        return
    bad_value = ~torch.isfinite(boxes).all(dim=1)
    bad_order = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    for bad, problem in ((bad_value, "is not finite"), (bad_order, "has x2 < x1 or y2 < y1")):
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            image = int(torch.searchsorted(counts.cumsum(0), torch.tensor(row), right=True))
            box = row - int(counts[:image].sum())
            x, y, w, h = boxes[row].tolist()
            raise ValueError(f"{what}[{image}]['boxes'][{box}] {problem}: (x1, y1, x2, y2) = "
                             f"{(x, y, x + w, y + h)}; boxes must be finite xyxy with x1 <= x2, y1 <= y2")


def _check_labels(labels: Tensor, counts: Tensor, what: str, num_classes) -> None:
    if labels.numel() == 0:
        return
    bad = labels < 0
    if num_classes is not None:
        bad |= labels >= num_classes
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        image = int(torch.searchsorted(counts.cumsum(0), torch.tensor(row), right=True))
        allowed = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise ValueError(f"{what}[{image}]['labels'] holds {int(labels[row])}: labels must be "
                         f"class indices {allowed}")


# -- the COCO evaluation ---------------------------------------------------------------------------
def _group_ranks(group: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Order detections by (group, score descending), ties in input order (pycocotools uses a
    stable mergesort), and give each its rank within its group."""
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    grouped = group[order]
    first = torch.searchsorted(grouped, grouped, side="left")
    return order, torch.arange(len(order)) - first


def _pair_ious(det: Tensor, gt: Tensor, crowd: Tensor) -> Tensor:
    """IoU of paired COCO (x, y, w, h) boxes, as pycocotools' ``bbIou``: float64, and for a
    crowd region the intersection over the *detection's* area (a detection inside a crowd is
    not penalised for the rest of the crowd)."""
    width = torch.minimum(det[:, 0] + det[:, 2], gt[:, 0] + gt[:, 2]) - torch.maximum(det[:, 0], gt[:, 0])
    height = torch.minimum(det[:, 1] + det[:, 3], gt[:, 1] + gt[:, 3]) - torch.maximum(det[:, 1], gt[:, 1])
    inter = width * height
    det_area = det[:, 2] * det[:, 3]
    union = torch.where(crowd, det_area, det_area + gt[:, 2] * gt[:, 3] - inter)
    overlap = (width > 0) & (height > 0)
    return torch.where(overlap, inter / torch.where(overlap, union, 1.0), 0.0)


def _match(pair_det, pair_gt, pair_iou, det_rank, n_det, gt_ignore, gt_crowd, thresholds):
    """pycocotools' greedy matching, for all images, classes, area ranges and IoU thresholds.

    Detections are taken in score order within each image and class; each takes, among the
    ground truths it overlaps by at least the threshold and that are still free (a crowd region
    is never used up), a regular one before an ignored one, then the highest IoU, then the last
    in input order (pycocotools keeps the last of equal IoUs). Two detections of the same rank
    are in different images or classes, so they never compete: a whole rank is one step.

    Returns ``matched`` and ``matched_ignored`` (the partner is an ignored ground truth), both
    ``[n_det, A, T]``.
    """
    areas, n_gt = gt_ignore.shape
    steps = thresholds.shape[0]
    matched = torch.zeros(n_det, areas, steps, dtype=torch.bool)
    matched_ignored = torch.zeros(n_det, areas, steps, dtype=torch.bool)
    taken = torch.zeros(areas, steps, n_gt, dtype=torch.bool)
    by_rank = torch.sort(det_rank[pair_det], stable=True).indices
    pair_det, pair_gt, pair_iou = pair_det[by_rank], pair_gt[by_rank], pair_iou[by_rank]
    bounds = torch.cumsum(torch.bincount(det_rank[pair_det]), 0).tolist() if len(pair_det) else []
    start = 0
    for stop in bounds:                                    # one step per score rank
        if stop == start:
            continue
        dets, local = torch.unique_consecutive(pair_det[start:stop], return_inverse=True)
        gts, iou = pair_gt[start:stop], pair_iou[start:stop]
        start = stop
        free = ~taken[:, :, gts].permute(2, 0, 1) | gt_crowd[gts, None, None]      # [p, A, T]
        usable = free & (iou[:, None, None] >= thresholds)
        regular = (~gt_ignore[:, gts]).T[:, :, None].expand_as(usable)             # [p, A, T]
        index = local[:, None, None].expand_as(usable)
        shape = (len(dets), areas, steps)
        # Lexicographic best (regular first, then IoU, then last gt) in three max-reductions.
        tier = torch.where(usable, regular.long(), -1)
        best = torch.full(shape, -1, dtype=torch.long).scatter_reduce_(0, index, tier, "amax")
        usable &= tier == best.gather(0, index)
        value = torch.where(usable, iou[:, None, None], -1.0).expand_as(usable)
        best = torch.full(shape, -1.0, dtype=torch.float64).scatter_reduce_(0, index, value, "amax")
        usable &= value == best.gather(0, index)
        position = torch.where(usable, gts[:, None, None], -1).expand_as(usable)
        partner = torch.full(shape, -1, dtype=torch.long).scatter_reduce_(0, index, position, "amax")
        hit = partner >= 0
        matched[dets] = hit
        area_index = torch.arange(areas)[None, :, None].expand_as(partner)
        partner_ignored = gt_ignore[area_index, partner.clamp(min=0)]
        matched_ignored[dets] = hit & partner_ignored
        d, a, t = hit.nonzero(as_tuple=True)
        taken[a, t, partner[d, a, t]] = True
    return matched, matched_ignored


def _evaluate(det, gt, classes, iou_thr, rec_thr, max_dets, area_ranges, interpolation):
    """The COCO evaluation on flattened inputs. Returns pycocotools' ``precision``
    ``[T, R, K, A, M]``, ``recall`` ``[T, K, A, M]``, ``scores`` ``[T, R, K, A, M]`` and the AP
    of each curve, ``ap`` ``[T, K, A, M]`` (``-1``: class without ground truth in that range)."""
    n_thr, n_rec, n_cls, n_area, n_max = len(iou_thr), len(rec_thr), len(classes), len(area_ranges), len(max_dets)
    lo = torch.tensor([r[0] for r in area_ranges], dtype=torch.float64)
    hi = torch.tensor([r[1] for r in area_ranges], dtype=torch.float64)

    # Ground truth grouped by (image, class), input order kept inside a group.
    gt_class = torch.searchsorted(classes, gt["labels"])
    gt_key = gt["image"] * n_cls + gt_class
    gt_order = torch.sort(gt_key, stable=True).indices
    gt_key, gt_class = gt_key[gt_order], gt_class[gt_order]
    gt_boxes, gt_crowd, gt_area = gt["boxes"][gt_order], gt["iscrowd"][gt_order], gt["area"][gt_order]
    gt_ignore = gt_crowd[None, :] | (gt_area[None, :] < lo[:, None]) | (gt_area[None, :] > hi[:, None])  # [A, G]
    relevant = torch.zeros(n_cls, n_area, dtype=torch.long)      # npig: regular gts per class, range
    relevant.index_put_((gt_class[:, None].expand(-1, n_area), torch.arange(n_area).expand(len(gt_class), -1)),
                        (~gt_ignore).T.long(), accumulate=True)

    # Detections: rank within (image, class); only the best max_dets[-1] of each group count.
    det_class = torch.searchsorted(classes, det["labels"])
    order, rank = _group_ranks(det["image"] * n_cls + det_class, det["scores"])
    kept = rank < max_dets[-1]
    order, rank = order[kept], rank[kept]
    det_key = (det["image"] * n_cls + det_class)[order]
    det_boxes, det_scores, det_class = det["boxes"][order], det["scores"][order], det_class[order]
    det_area = det_boxes[:, 2] * det_boxes[:, 3]

    # Every (detection, ground truth) pair of the same image and class, and its IoU.
    first = torch.searchsorted(gt_key, det_key, side="left")
    count = torch.searchsorted(gt_key, det_key, side="right") - first
    pair_det = torch.repeat_interleave(torch.arange(len(det_key)), count)
    starts = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    pair_gt = first[pair_det] + torch.arange(len(pair_det)) - starts
    pair_iou = _pair_ious(det_boxes[pair_det], gt_boxes[pair_gt], gt_crowd[pair_gt])
    effective = iou_thr.clamp(max=1 - 1e-10)               # pycocotools: min(t, 1 - 1e-10)
    close = pair_iou >= effective.min()
    matched, matched_ignored = _match(pair_det[close], pair_gt[close], pair_iou[close], rank,
                                      len(det_key), gt_ignore, gt_crowd, effective)

    # A detection that matched an ignored gt, or matched nothing and is outside the area range,
    # is ignored; the others are true or false positives.
    outside = (det_area[:, None] < lo) | (det_area[:, None] > hi)                     # [D, A]
    ignored = torch.where(matched, matched_ignored, outside[:, :, None])             # [D, A, T]
    true_pos = matched & ~ignored
    false_pos = ~matched & ~ignored

    # Precision-recall curves per class: detections of all images by score (ties: image, rank).
    by_score = torch.sort(det_scores, descending=True, stable=True).indices
    by_score = by_score[torch.sort(det_class[by_score], stable=True).indices]
    per_class = torch.bincount(det_class, minlength=n_cls).tolist() if n_cls else []
    precision = -torch.ones(n_thr, n_rec, n_cls, n_area, n_max, dtype=torch.float64)
    scores = -torch.ones(n_thr, n_rec, n_cls, n_area, n_max, dtype=torch.float64)
    recall = -torch.ones(n_thr, n_cls, n_area, n_max, dtype=torch.float64)
    ap = -torch.ones(n_thr, n_cls, n_area, n_max, dtype=torch.float64)
    start = 0
    for k in range(n_cls):                                  # a loop over classes, not boxes
        members = by_score[start:start + per_class[k]]
        start += per_class[k]
        npig = relevant[k].double()                         # [A] ground truths that count
        has_gt = (npig > 0)[:, None]                        # else everything is -1 (undefined)
        for m, limit in enumerate(max_dets):
            chosen = members[rank[members] < limit]
            tp = torch.cumsum(true_pos[chosen].permute(1, 2, 0).long(), -1).double()   # [A, T, L]
            fp = torch.cumsum(false_pos[chosen].permute(1, 2, 0).long(), -1).double()
            rc = tp / npig.clamp(min=1)[:, None, None]
            pr = tp / (fp + tp + _EPS)
            envelope = _envelope(pr)
            sampled, where = _sample(rc, envelope, rec_thr)                            # [A, T, R]
            if len(chosen):
                at = det_scores[chosen][where.clamp(max=len(chosen) - 1)]
                sampled_scores = torch.where(where < len(chosen), at, 0.0)
                last = rc[..., -1]
            else:
                sampled_scores = torch.zeros_like(sampled)
                last = torch.zeros(n_area, n_thr, dtype=torch.float64)
            curve_ap = _area_under(rc, envelope) if interpolation == "all" else sampled.mean(-1)
            recall[:, k, :, m] = torch.where(has_gt, last, -1.0).T
            ap[:, k, :, m] = torch.where(has_gt, curve_ap, -1.0).T
            precision[:, :, k, :, m] = torch.where(has_gt[..., None], sampled, -1.0).permute(1, 2, 0)
            scores[:, :, k, :, m] = torch.where(has_gt[..., None], sampled_scores, -1.0).permute(1, 2, 0)
    return precision, recall, scores, ap


def _mean_valid(values: Tensor) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.numel() else -1.0


def mean_average_precision(predictions, targets, iou_type: str = "bbox", *,
                           iou_thresholds=None, rec_thresholds=None, max_detection_thresholds=None,
                           class_metrics: bool = False, interpolation: str = "101",
                           extended_summary: bool = False, num_classes: int | None = None) -> dict:
    """COCO-style mean average precision (Lin et al. 2014), or VOC-style (Everingham et al. 2010).

    Args:
        predictions: one dict per image: ``boxes`` ``Tensor[D, 4]`` xyxy pixels, ``scores``
            ``Tensor[D]`` float, ``labels`` ``Tensor[D]`` int.
        targets: one dict per image: ``boxes`` ``Tensor[G, 4]``, ``labels`` ``Tensor[G]``, and
            optionally ``iscrowd`` ``Tensor[G]`` (0/1) and ``area`` ``Tensor[G]`` (used for the
            size ranges instead of the box area where it is > 0, as in COCO's annotations).
        iou_type: ``"bbox"`` (the only one here).
        iou_thresholds: default ``0.50:0.05:0.95`` (torchmetrics' float32 values).
        rec_thresholds: recall points of the ``"101"``/``"11"`` interpolation (default
            ``0:0.01:1``, resp. ``0:0.1:1``).
        max_detection_thresholds: detections per image and class taken into account, default
            ``[1, 10, 100]``; the largest is used for every ``map*`` number.
        class_metrics: also return ``map_per_class`` and ``mar_<max>_per_class``.
        interpolation: how a precision-recall curve becomes an AP: ``"101"`` (COCO), ``"11"``
            (VOC 2007) or ``"all"`` (VOC 2010+, the exact area under the interpolated curve).
            With ``iou_thresholds=[0.5]`` the last two give the VOC mAP, up to the matching,
            which stays COCO's in every mode: IoU >= 0.5 rather than > 0.5, and a detection
            whose best ground truth is already taken may take another (VOC's devkit counts it
            as a false positive); no "difficult" flags.
        extended_summary: also return pycocotools' ``precision`` ``[T, R, K, A, M]``, ``recall``
            ``[T, K, A, M]`` and ``scores`` arrays (``K``: ``classes``; ``A``: all, small,
            medium, large; ``M``: the max-detection thresholds), e.g. to plot the curves.
        num_classes: if given, labels must lie in ``0..num_classes-1``.

    Returns:
        dict of 0-dim float32 tensors ``map``, ``map_50``, ``map_75``, ``map_small``,
        ``map_medium``, ``map_large``, ``mar_<m>`` for each max-detection threshold,
        ``mar_small``, ``mar_medium``, ``mar_large``, plus ``map_per_class`` and
        ``mar_<max>_per_class`` (``Tensor[K]`` with ``class_metrics``, else ``-1``) and
        ``classes`` (``Tensor[K]`` int32: every label seen in predictions or targets). ``-1``
        means "undefined" (no ground truth of any class in that range), as in pycocotools and
        torchmetrics. Keys and values are those of torchmetrics' ``MeanAveragePrecision``;
        one difference: pycocotools computes ``map`` at exactly 100 detections (``-1`` when 100
        is not among the thresholds), here it uses the largest threshold.
    """
    if iou_type != "bbox":
        raise ValueError(f"iou_type must be 'bbox' (box detection), got {iou_type!r}")
    _check_interpolation(interpolation)
    iou_thr = _thresholds(iou_thresholds, "iou_thresholds", COCO_IOU_THRESHOLDS)
    rec_thr = _thresholds(rec_thresholds, "rec_thresholds",
                          VOC_REC_THRESHOLDS if interpolation == "11" else COCO_REC_THRESHOLDS)
    max_dets = _max_detections(max_detection_thresholds)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes <= 0):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(class_metrics, bool) or not isinstance(extended_summary, bool):
        raise TypeError("class_metrics and extended_summary must be True or False")

    det, det_counts = _collect(predictions, "predictions", ("boxes", "scores", "labels"))
    gt, gt_counts = _collect(targets, "targets", ("boxes", "labels"), ("iscrowd", "area"))
    if len(det_counts) != len(gt_counts):
        raise ValueError(f"predictions and targets must have one entry per image each, got "
                         f"{len(det_counts)} and {len(gt_counts)}")
    _check_flat(det["boxes"], det_counts, "predictions")
    _check_flat(gt["boxes"], gt_counts, "targets")
    _check_labels(det["labels"], det_counts, "predictions", num_classes)
    _check_labels(gt["labels"], gt_counts, "targets", num_classes)
    if det["scores"].numel() and not torch.isfinite(det["scores"]).all():
        raise ValueError("predictions' scores must be finite, got NaN or inf")
    det["scores"] = det["scores"].double()
    det["labels"], gt["labels"] = det["labels"].long(), gt["labels"].long()
    n_images = len(gt_counts)
    det["image"] = torch.repeat_interleave(torch.arange(n_images), det_counts)
    gt["image"] = torch.repeat_interleave(torch.arange(n_images), gt_counts)
    crowd = gt.get("iscrowd", torch.zeros(len(gt["labels"]), dtype=torch.long))
    if crowd.is_complex() or (crowd.numel() and ((crowd != 0) & (crowd != 1)).any()):
        raise ValueError(f"targets' iscrowd must be 0 or 1, got {sorted(set(crowd.tolist()) - {0, 1})}")
    gt["iscrowd"] = crowd != 0
    box_area = gt["boxes"][:, 2] * gt["boxes"][:, 3]
    if "area" in gt:
        given = gt["area"].double()
        if not torch.isfinite(given).all():
            raise ValueError("targets' area must be finite")
        box_area = torch.where(given > 0, given, box_area)   # COCO's own areas where given
    gt["area"] = box_area

    classes = torch.unique(torch.cat((det["labels"], gt["labels"])))
    area_ranges = list(COCO_AREA_RANGES.values())
    precision, recall, scores, ap = _evaluate(det, gt, classes, iou_thr, rec_thr, max_dets, area_ranges,
                                              interpolation)

    def iou_rows(value: float) -> Tensor:
        return (iou_thr == value).nonzero().flatten()

    last = len(max_dets) - 1
    summary = {
        "map": _mean_valid(ap[:, :, 0, last]),
        "map_50": _mean_valid(ap[iou_rows(0.5)][:, :, 0, last]),
        "map_75": _mean_valid(ap[iou_rows(0.75)][:, :, 0, last]),
        "map_small": _mean_valid(ap[:, :, 1, last]),
        "map_medium": _mean_valid(ap[:, :, 2, last]),
        "map_large": _mean_valid(ap[:, :, 3, last]),
    }
    for m, limit in enumerate(max_dets):
        summary[f"mar_{limit}"] = _mean_valid(recall[:, :, 0, m])
    summary["mar_small"] = _mean_valid(recall[:, :, 1, last])
    summary["mar_medium"] = _mean_valid(recall[:, :, 2, last])
    summary["mar_large"] = _mean_valid(recall[:, :, 3, last])
    result = {key: torch.tensor(value, dtype=torch.float32) for key, value in summary.items()}
    if class_metrics:
        result["map_per_class"] = torch.tensor([_mean_valid(ap[:, k, 0, last]) for k in range(len(classes))],
                                               dtype=torch.float32)
        result[f"mar_{max_dets[-1]}_per_class"] = torch.tensor(
            [_mean_valid(recall[:, k, 0, last]) for k in range(len(classes))], dtype=torch.float32)
    else:
        result["map_per_class"] = torch.tensor(-1.0)
        result[f"mar_{max_dets[-1]}_per_class"] = torch.tensor(-1.0)
    result["classes"] = classes.to(torch.int32)
    if extended_summary:
        result.update(precision=precision, recall=recall, scores=scores)
    return result

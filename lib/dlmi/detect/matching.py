"""Training labels for detectors: match boxes to ground truth, then sample a balanced mini-batch
(lecture unit 10; used by R-CNN, Fast R-CNN, the RPN and the RoI heads of Faster R-CNN).

Every two-stage detector turns a set of reference boxes (proposals or anchors) into training
examples the same way:

1. **match** — the IoU matrix ``[G, N]`` of the G ground-truth boxes with the N reference boxes
   gives each reference box its best ground truth. Above ``high`` it is a positive (an object of
   that class), below ``low`` a negative (background), in between it is ignored: too ambiguous
   to teach either way. Faster R-CNN's RPN uses 0.7 / 0.3 (Ren et al. 2015, §3.1.2), Fast
   R-CNN's classifier 0.5 / 0.5 (Girshick 2015, §2.3). The RPN also keeps, for every ground-truth
   box, the anchor(s) that overlap it most even when below 0.7 ("low-quality matches"), so that
   no object is left without a positive anchor.
2. **sample** — an image has thousands of negatives and a handful of positives; a mini-batch of
   ``batch_size_per_image`` examples with at most ``positive_fraction`` positives keeps the
   classifier from learning "always background" (256 with 1:1 for the RPN, 128 with 25 % for
   Fast R-CNN).

:class:`Matcher` reproduces ``torchvision.models.detection._utils.Matcher`` and
:func:`sample_balanced` its ``BalancedPositiveNegativeSampler`` (random choice, so the same
counts, not the same draws).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Matcher", "sample_balanced", "BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS"]

BELOW_LOW_THRESHOLD = -1   # background
BETWEEN_THRESHOLDS = -2    # ignored


class Matcher:
    """Assign each reference box to its best ground-truth box, or mark it background / ignored.

    Args:
        high_threshold: IoU at or above which a match is a positive.
        low_threshold: IoU below which a box is background; ``low <= IoU < high`` is ignored.
        allow_low_quality_matches: also keep, for each ground-truth box, the reference boxes
            whose IoU with it is its highest (ties included), whatever that IoU is.
    """

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False) -> None:
        if not 0.0 <= low_threshold <= high_threshold <= 1.0:
            raise ValueError(f"need 0 <= low_threshold <= high_threshold <= 1, got "
                             f"low={low_threshold}, high={high_threshold}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, iou: Tensor) -> Tensor:
        """``iou``: ``Tensor[G, N]`` (ground truth × reference boxes).

        Returns:
            ``Tensor[N]`` int64: the index of the matched ground-truth box, or
            ``BELOW_LOW_THRESHOLD`` (-1, background) or ``BETWEEN_THRESHOLDS`` (-2, ignored).
        """
        if iou.ndim != 2:
            raise ValueError(f"iou must be a [G, N] matrix, got shape {list(iou.shape)}")
        if iou.shape[0] == 0:
            # No object in the image: every reference box is background.
            return torch.full((iou.shape[1],), BELOW_LOW_THRESHOLD, dtype=torch.long, device=iou.device)
        best, matches = iou.max(dim=0)                      # best ground truth of each box
        result = matches.clone()
        result[best < self.high_threshold] = BETWEEN_THRESHOLDS
        result[best < self.low_threshold] = BELOW_LOW_THRESHOLD
        if self.allow_low_quality_matches:
            # Boxes that are the best available for some ground truth get their match back.
            best_per_gt = iou.max(dim=1, keepdim=True).values            # [G, 1]
            is_best = (iou == best_per_gt).any(dim=0)                    # [N]
            result[is_best] = matches[is_best]
        return result


def sample_balanced(labels: Tensor, batch_size_per_image: int, positive_fraction: float,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Choose at most ``batch_size_per_image`` examples, at most ``positive_fraction`` of them
    positive (label ``>= 1``), the rest negative (label ``0``); label ``-1`` is never chosen.

    Args:
        labels: ``Tensor[N]`` int: ``-1`` ignore, ``0`` background, ``>= 1`` object.
        generator: optional ``torch.Generator`` for reproducible draws (CPU).

    Returns:
        ``(positive_mask, negative_mask)``, two ``Tensor[N]`` bool.
    """
    positive = torch.where(labels >= 1)[0]
    negative = torch.where(labels == 0)[0]
    num_pos = min(int(batch_size_per_image * positive_fraction), positive.numel())
    num_neg = min(batch_size_per_image - num_pos, negative.numel())

    def pick(index: Tensor, count: int) -> Tensor:
        order = torch.randperm(index.numel(), generator=generator).to(index.device)
        return index[order[:count]]

    pos_mask = torch.zeros_like(labels, dtype=torch.bool)
    neg_mask = torch.zeros_like(labels, dtype=torch.bool)
    pos_mask[pick(positive, num_pos)] = True
    neg_mask[pick(negative, num_neg)] = True
    return pos_mask, neg_mask

"""Box coding: how R-CNN's regressor describes a box relative to a proposal (lecture unit 10).

R-CNN (Girshick et al. 2014, appendix C) does not regress the four corners of the object. It
predicts how to move and rescale the proposal ``P`` (centre ``P_x, P_y``, size ``P_w, P_h``)
to reach the object ``G``:

    t_x = (G_x - P_x) / P_w        t_y = (G_y - P_y) / P_h
    t_w = log(G_w / P_w)           t_h = log(G_h / P_h)

Shifts are measured in proposal widths and heights and the scale change in log space, so the
targets do not depend on how big the object is. Fast R-CNN (Girshick 2015) and Faster R-CNN
(Ren et al. 2015, eq. 2, with anchors as the reference boxes) keep the same parameterisation and
multiply the targets by per-coordinate weights (torchvision: ``(1, 1, 1, 1)`` for the RPN,
``(10, 10, 5, 5)`` for the box head) to balance the loss terms.

:class:`BoxCoder` has the interface of ``torchvision.models.detection._utils.BoxCoder``
and gives the same numbers.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .boxes import _shape, check_boxes

__all__ = ["BoxCoder"]


def _centres_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


class BoxCoder:
    """Encode boxes as R-CNN regression targets relative to reference boxes, and decode them.

    Args:
        weights: ``(w_x, w_y, w_w, w_h)``, positive multipliers of ``(t_x, t_y, t_w, t_h)``.
        bbox_xform_clip: upper bound on the decoded ``t_w / w_w`` and ``t_h / w_h`` before
            ``exp``, so that an untrained network cannot produce an infinitely large box
            (default ``log(1000 / 16)``: at most 62.5 times the reference box).
    """

    def __init__(self, weights, bbox_xform_clip: float = math.log(1000.0 / 16)) -> None:
        if not isinstance(weights, (tuple, list)) or len(weights) != 4:
            raise ValueError(f"weights must be 4 numbers (w_x, w_y, w_w, w_h), got {weights!r}")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                   and w > 0 for w in weights):
            raise ValueError(f"weights must be finite positive numbers, got {tuple(weights)}")
        if isinstance(bbox_xform_clip, bool) or not isinstance(bbox_xform_clip, (int, float)) \
                or math.isnan(bbox_xform_clip):
            raise ValueError(f"bbox_xform_clip must be a number, got {bbox_xform_clip!r}")
        self.weights = tuple(weights)
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4g})"

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, reference_boxes: list[Tensor], proposals: list[Tensor]) -> tuple[Tensor, ...]:
        """Per-image version of :meth:`encode_single`.

        Args:
            reference_boxes: list of ``Tensor[N_i, 4]``, the boxes to reach (matched ground truth).
            proposals: list of ``Tensor[N_i, 4]``, the boxes they are expressed relative to.

        Returns:
            tuple of ``Tensor[N_i, 4]`` targets, one per image.
        """
        for name, value in (("reference_boxes", reference_boxes), ("proposals", proposals)):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list of Tensor[N_i, 4] (one per image), "
                                f"got {type(value).__name__}")
        if len(reference_boxes) != len(proposals):
            raise ValueError(f"reference_boxes and proposals must have one entry per image each, "
                             f"got {len(reference_boxes)} and {len(proposals)}")
        if not reference_boxes:
            return ()
        counts = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(list(reference_boxes)), torch.cat(list(proposals)))
        return targets.split(counts, 0)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Targets ``(w_x t_x, w_y t_y, w_w t_w, w_h t_h)`` of ``reference_boxes`` relative to
        ``proposals``.

        Args:
            reference_boxes: ``Tensor[N, 4]`` xyxy. A zero width or height gives ``t_w`` or
                ``t_h = -inf``, as in torchvision, where such all-zero boxes stand in for the
                missing ground truth of an image without objects (their targets are never used).
            proposals: ``Tensor[N, 4]`` xyxy, positive width and height (they divide).

        Returns:
            ``Tensor[N, 4]`` in the dtype of ``reference_boxes``.
        """
        check_boxes(reference_boxes, "reference_boxes", floating=True)
        check_boxes(proposals, "proposals", floating=True)
        if reference_boxes.shape != proposals.shape:
            raise ValueError(f"reference_boxes and proposals must pair up one to one, got shapes "
                             f"{_shape(reference_boxes)} and {_shape(proposals)}")
        flat = (proposals[:, 2] <= proposals[:, 0]) | (proposals[:, 3] <= proposals[:, 1])
        if flat.any():
            i = int(flat.nonzero()[0, 0])
            raise ValueError(f"proposals must have positive width and height (targets are measured "
                             f"in proposal widths and heights), but row {i} is {proposals[i].tolist()}")
        dtype, device = reference_boxes.dtype, reference_boxes.device
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=dtype, device=device)
        proposals = proposals.to(dtype)
        px, py, pw, ph = _centres_and_sizes(proposals)
        gx, gy, gw, gh = _centres_and_sizes(reference_boxes)
        return torch.stack((wx * (gx - px) / pw,
                            wy * (gy - py) / ph,
                            ww * torch.log(gw / pw),
                            wh * torch.log(gh / ph)), dim=1)

    # -- decoding ----------------------------------------------------------------------------
    def decode(self, rel_codes: Tensor, boxes: list[Tensor]) -> Tensor:
        """Per-image version of :meth:`decode_single`.

        Args:
            rel_codes: ``Tensor[sum N_i, 4 * C]`` (or any shape with that many elements), the
                regressor's output, ``C`` boxes (e.g. one per class) for each reference box.
            boxes: list of ``Tensor[N_i, 4]`` reference boxes (proposals or anchors).

        Returns:
            ``Tensor[sum N_i, C, 4]`` decoded xyxy boxes.
        """
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"boxes must be a list of Tensor[N_i, 4] (one per image), "
                            f"got {type(boxes).__name__}")
        if not isinstance(rel_codes, Tensor):
            raise TypeError(f"rel_codes must be a torch.Tensor, got {type(rel_codes).__name__}")
        if not boxes:
            raise ValueError("boxes must hold at least one image's Tensor[N_i, 4]")
        concatenated = torch.cat([check_boxes(b, "boxes", floating=True) for b in boxes])
        total = concatenated.shape[0]
        if total > 0:
            if rel_codes.numel() % (4 * total):
                raise ValueError(f"rel_codes must hold 4 numbers per reference box and class "
                                 f"({total} boxes), got shape {_shape(rel_codes)}")
            rel_codes = rel_codes.reshape(total, -1)
        decoded = self.decode_single(rel_codes, concatenated)
        return decoded.reshape(total, -1, 4) if total > 0 else decoded

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Apply the offsets ``rel_codes`` to the reference ``boxes``: the inverse of
        :meth:`encode_single`, with ``t_w, t_h`` clipped at ``bbox_xform_clip`` before ``exp``.

        Args:
            rel_codes: ``Tensor[N, 4 * C]``, groups of ``(t_x, t_y, t_w, t_h)``.
            boxes: ``Tensor[N, 4]`` xyxy reference boxes.

        Returns:
            ``Tensor[N, 4 * C]`` xyxy boxes, in the dtype of ``rel_codes``.
        """
        check_boxes(boxes, "boxes", floating=True)
        if not isinstance(rel_codes, Tensor) or not rel_codes.is_floating_point():
            raise TypeError(f"rel_codes must be a floating-point tensor, got "
                            f"{getattr(rel_codes, 'dtype', type(rel_codes).__name__)}")
        if rel_codes.ndim != 2 or rel_codes.shape[0] != boxes.shape[0] or rel_codes.shape[1] % 4:
            raise ValueError(f"rel_codes must have shape [{boxes.shape[0]}, 4 * C] (one row per "
                             f"reference box), got {_shape(rel_codes)}")
        if rel_codes.numel() and not torch.isfinite(rel_codes).all():
            raise ValueError("rel_codes must be finite, got NaN or inf (diverged regressor?)")
        boxes = boxes.to(rel_codes.dtype)
        cx, cy, w, h = (v[:, None] for v in _centres_and_sizes(boxes))
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = (rel_codes[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (rel_codes[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        centre_x = dx * w + cx
        centre_y = dy * h + cy
        half_w = 0.5 * (torch.exp(dw) * w)
        half_h = 0.5 * (torch.exp(dh) * h)
        decoded = torch.stack((centre_x - half_w, centre_y - half_h,
                               centre_x + half_w, centre_y + half_h), dim=2)
        return decoded.flatten(1)

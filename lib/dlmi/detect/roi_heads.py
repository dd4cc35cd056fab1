"""RoI heads: classify each region and refine its box (lecture unit 10; Girshick 2015, §2).

The second stage shared by Fast R-CNN and Faster R-CNN. Given the backbone's feature map of a
whole image and a set of region proposals:

1. :class:`RoIPooler` cuts a fixed ``7 × 7`` feature out of the map for every proposal —
   :func:`~dlmi.detect.roi_pool` (Fast R-CNN, max over bins of rounded cells) or
   :func:`~dlmi.detect.roi_align` (bilinear, what torchvision's Faster R-CNN uses);
2. :class:`TwoMLPHead` — two fully connected layers (``fc6``, ``fc7`` of VGG16 in the paper);
3. :class:`FastRCNNPredictor` — two sibling outputs: ``C + 1`` class logits (softmax, with
   class 0 the background) and ``4 (C + 1)`` class-specific box offsets;
4. **training** (:class:`RoIHeads`): the proposals plus the ground-truth boxes are matched
   (IoU ≥ 0.5 object, below background), 25 % positives in a mini-batch, and the multi-task loss

       L = CE(p, u) + λ [u ≥ 1] smoothL1(t^u - v)

   (Girshick 2015, eq. 1; the box loss summed over positives and divided by the number of
   sampled RoIs, smooth L1 with β = 1/9 as in torchvision);
5. **inference** (:meth:`RoIHeads.postprocess_detections`): softmax scores, every proposal
   decoded once per class, clipped, background and low scores (``score_thresh``) dropped, NMS per
   class, the ``detections_per_img`` best kept.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from .coder import BoxCoder
from .matching import Matcher, sample_balanced
from .nms import batched_nms
from .roi import roi_align, roi_pool

__all__ = ["RoIPooler", "TwoMLPHead", "FastRCNNPredictor", "RoIHeads", "fastrcnn_loss"]


class RoIPooler(nn.Module):
    """A fixed-size feature per region from one feature map.

    Args:
        output_size: bins per side (7 in the papers).
        method: ``"align"`` (:func:`roi_align`, ``sampling_ratio`` points per bin and axis) or
            ``"pool"`` (:func:`roi_pool`).
        spatial_scale: feature cells per image pixel; ``None`` infers it as torchvision's
            ``MultiScaleRoIAlign`` does, the power of two nearest to feature size / image size.
    """

    def __init__(self, output_size: int = 7, method: str = "align", sampling_ratio: int = 2,
                 spatial_scale: float | None = None) -> None:
        super().__init__()
        if method not in ("align", "pool"):
            raise ValueError(f"method must be 'align' or 'pool', got {method!r}")
        self.output_size = output_size
        self.method = method
        self.sampling_ratio = sampling_ratio
        self.spatial_scale = spatial_scale

    def scale(self, features: Tensor, image_shape) -> float:
        if self.spatial_scale is not None:
            return float(self.spatial_scale)
        approx = features.shape[-2] / image_shape[-2]
        return 2.0 ** round(math.log2(approx))

    def forward(self, features: Tensor, boxes: list[Tensor], image_shape) -> Tensor:
        """``features [N, C, H, W]``, per-image boxes, the padded batch's shape → ``[K, C, s, s]``."""
        scale = self.scale(features, image_shape)
        if self.method == "pool":
            return roi_pool(features, boxes, self.output_size, scale)
        return roi_align(features, boxes, self.output_size, scale, self.sampling_ratio)


class TwoMLPHead(nn.Module):
    """Flatten, then two ReLU fully connected layers (``fc6``, ``fc7``)."""

    def __init__(self, in_channels: int, representation_size: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """Class logits ``[K, num_classes]`` and class-specific offsets ``[K, 4 num_classes]``
    (``num_classes`` counts the background)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4 * num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: Tensor,
                  regression_targets: Tensor, beta: float = 1 / 9) -> tuple[Tensor, Tensor]:
    """Fast R-CNN's multi-task loss over ``K`` sampled RoIs.

    Args:
        class_logits: ``[K, C]``; box_regression: ``[K, 4C]``;
        labels: ``[K]`` int64 (0 background); regression_targets: ``[K, 4]``.

    Returns:
        ``(classification loss, box loss)``: the mean cross-entropy and the smooth L1 of the
        positives' offsets *for their own class*, summed and divided by ``K``.
    """
    classification = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
    chosen = per_class[positive, labels[positive]]
    box_loss = F.smooth_l1_loss(chosen, regression_targets[positive], beta=beta,
                                reduction="sum") / max(labels.numel(), 1)
    return classification, box_loss


class RoIHeads(nn.Module):
    """Second stage: pool, head, predictor; losses in training, detections in eval.

    Args:
        box_roi_pool: :class:`RoIPooler`.
        box_head: e.g. :class:`TwoMLPHead`.
        box_predictor: e.g. :class:`FastRCNNPredictor`.
        fg_iou_thresh, bg_iou_thresh: IoU for object / background RoIs (0.5 / 0.5).
        bg_iou_low: RoIs whose best IoU is below this are not used as background either (Fast
            R-CNN: 0.1, "hard" background only; torchvision: 0).
        batch_size_per_image, positive_fraction: RoIs sampled per image (512, 0.25).
        bbox_reg_weights: the box coder's weights (10, 10, 5, 5).
        score_thresh, nms_thresh, detections_per_img: inference.
        add_gt_as_proposals: append the ground truth to the proposals in training.
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module, *,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, bg_iou_low: float = 0.0,
                 batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100,
                 add_gt_as_proposals: bool = True) -> None:
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.bg_iou_low = float(bg_iou_low)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.box_coder = BoxCoder(tuple(bbox_reg_weights))
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.add_gt_as_proposals = bool(add_gt_as_proposals)

    def select_training_samples(self, proposals: list[Tensor], targets: list[dict]
                                ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Match and sample RoIs: ``(sampled proposals per image, labels [K], targets [K, 4])``."""
        sampled_boxes, all_labels, all_targets = [], [], []
        for boxes, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(boxes)
            gt_labels = target["labels"].to(boxes.device)
            if self.add_gt_as_proposals:
                boxes = torch.cat((boxes, gt_boxes))
            if gt_boxes.numel() == 0:
                labels = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
                matched = torch.zeros_like(boxes)
            else:
                iou = box_iou(gt_boxes, boxes)
                match = self.matcher(iou)
                labels = gt_labels[match.clamp(min=0)]
                labels[match == -1] = 0
                labels[match == -2] = -1
                if self.bg_iou_low > 0:
                    labels[(labels == 0) & (iou.max(dim=0).values < self.bg_iou_low)] = -1
                matched = gt_boxes[match.clamp(min=0)]
            pos, neg = sample_balanced(labels, self.batch_size_per_image, self.positive_fraction)
            keep = torch.where(pos | neg)[0]
            boxes, labels, matched = boxes[keep], labels[keep], matched[keep]
            # Offsets are only used for positives; background rows get zeros (no -inf from
            # an empty image's missing ground truth).
            codes = torch.zeros_like(boxes)
            fg = labels > 0
            if fg.any():
                codes[fg] = self.box_coder.encode_single(matched[fg], boxes[fg])
            sampled_boxes.append(boxes)
            all_labels.append(labels)
            all_targets.append(codes)
        return sampled_boxes, torch.cat(all_labels), torch.cat(all_targets)

    def postprocess_detections(self, class_logits: Tensor, box_regression: Tensor,
                               proposals: list[Tensor], image_sizes: list) -> list[dict]:
        """Softmax, per-class decoding, clipping, score threshold, per-class NMS, top-N."""
        num_classes = class_logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        if sum(counts) == 0:
            empty = class_logits.new_zeros(0)
            return [{"boxes": empty.reshape(0, 4), "scores": empty,
                     "labels": torch.zeros(0, dtype=torch.long, device=empty.device)} for _ in proposals]
        all_boxes = self.box_coder.decode(box_regression, list(proposals)).reshape(-1, num_classes, 4)
        all_scores = F.softmax(class_logits, -1)
        results = []
        for boxes, scores, size in zip(all_boxes.split(counts), all_scores.split(counts), image_sizes):
            boxes = clip_boxes_to_image(boxes, size)
            labels = torch.arange(num_classes, device=boxes.device).expand_as(scores)
            # Drop the background column, then treat every (proposal, class) as a candidate.
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results

    def forward(self, features: Tensor, proposals: list[Tensor], image_shape, image_sizes: list,
                targets: list[dict] | None = None):
        """Returns ``(detections, losses)``: detections (eval) per image, losses (training)."""
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            proposals, labels, regression_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_roi_pool(features, proposals, image_shape)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled))
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                          regression_targets)
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        return self.postprocess_detections(class_logits, box_regression, proposals, image_sizes), {}

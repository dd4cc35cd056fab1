"""Fast R-CNN: one CNN pass per image, RoI pooling per proposal (lecture unit 10; Girshick 2015).

R-CNN runs its CNN once per proposal — 2,000 times an image. Fast R-CNN runs it once on the
whole image and cuts every proposal's feature out of the shared map with RoI max pooling
(:func:`~dlmi.detect.roi_pool`, 7 × 7 bins); two fully connected layers then feed a softmax over
``C + 1`` classes and a class-specific box regressor, trained together with the multi-task
loss (:func:`~dlmi.detect.roi_heads.fastrcnn_loss`). One network, one training stage, no SVMs,
no feature cache on disk.

The proposals still come from outside — selective search (:class:`~dlmi.detect.proposals.
SelectiveSearch`, the default) or sliding windows — and computing them is now the slow part:
the bottleneck Faster R-CNN removes.

``model(images, targets, proposals=None)`` in training returns ``{"loss_classifier",
"loss_box_reg"}``; ``model(images, proposals=None)`` in eval the detections. Pass the
``proposals`` (one ``Tensor[P, 4]`` per image) to reuse precomputed ones; otherwise the model's
``proposer`` makes them for each image.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .boxes import check_boxes, clip_boxes_to_image
from .faster_rcnn import _check_num_classes, _out_channels, backbone_features
from .proposals import SelectiveSearch
from .roi_heads import FastRCNNPredictor, RoIHeads, RoIPooler, TwoMLPHead
from .transform import batch_images, check_targets

__all__ = ["FastRCNN", "check_proposals"]


def check_proposals(proposals, count: int, image_sizes: list, device) -> list[Tensor]:
    """One float ``Tensor[P, 4]`` of valid xyxy boxes per image, clipped, on ``device``."""
    if not isinstance(proposals, (list, tuple)):
        raise TypeError(f"proposals must be a list of Tensor[P, 4] (one per image), got "
                        f"{type(proposals).__name__}")
    if len(proposals) != count:
        raise ValueError(f"got {count} images but {len(proposals)} proposal sets")
    out = []
    for i, (p, size) in enumerate(zip(proposals, image_sizes)):
        check_boxes(p, f"proposals[{i}]", floating=True)
        out.append(clip_boxes_to_image(p.to(device=device, dtype=torch.float32), size))
    return out


class FastRCNN(nn.Module):
    """Fast R-CNN.

    Args:
        backbone: ``nn.Module`` image batch → feature map, with attribute ``out_channels``.
        num_classes: object classes + 1 (the background).
        proposer: callable ``image [C, H, W] → Tensor[P, 4]``; default :class:`SelectiveSearch`.
        box_roi_pool: default :class:`RoIPooler` with RoI *max pooling*, 7 × 7 (the paper's).
        representation_size: width of ``fc6``/``fc7``.
        batch_size_per_image, positive_fraction: 128 RoIs per image, 25 % objects (§2.3).
        bg_iou_low: background RoIs have IoU in ``[0.1, 0.5)`` (§2.3).
        other box_* options: see :class:`~dlmi.detect.roi_heads.RoIHeads`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *,
                 proposer: Callable[[Tensor], Tensor] | None = None,
                 box_roi_pool: nn.Module | None = None, box_head: nn.Module | None = None,
                 box_predictor: nn.Module | None = None, representation_size: int = 1024,
                 batch_size_per_image: int = 128, positive_fraction: float = 0.25,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, bg_iou_low: float = 0.1,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), size_divisible: int = 1) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        channels = _out_channels(backbone)
        self.backbone = backbone
        self.proposer = proposer or SelectiveSearch()
        pool = box_roi_pool or RoIPooler(7, "pool")
        if box_head is None:
            size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
            box_head = TwoMLPHead(channels * size * size, representation_size)
        predictor = box_predictor or FastRCNNPredictor(representation_size, num_classes)
        self.roi_heads = RoIHeads(
            pool, box_head, predictor, fg_iou_thresh=fg_iou_thresh, bg_iou_thresh=bg_iou_thresh,
            bg_iou_low=bg_iou_low, batch_size_per_image=batch_size_per_image,
            positive_fraction=positive_fraction, bbox_reg_weights=bbox_reg_weights,
            score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        self.size_divisible = size_divisible

    def propose(self, images) -> list[Tensor]:
        """The proposer's boxes for each image (on the CPU; the proposer is a CPU algorithm)."""
        batch, sizes = batch_images(images)
        return [self.proposer(batch[i, :, :h, :w]) for i, (h, w) in enumerate(sizes)]

    def forward(self, images, targets: list[dict] | None = None, proposals: list[Tensor] | None = None):
        batch, sizes = batch_images(images, self.size_divisible)
        if self.training:
            targets = check_targets(targets, len(sizes), self.num_classes)
        if proposals is None:
            proposals = self.propose(images)
        proposals = check_proposals(proposals, len(sizes), sizes, batch.device)
        features = backbone_features(self.backbone, batch)
        detections, losses = self.roi_heads(features, proposals, batch.shape, sizes,
                                            targets if self.training else None)
        return losses if self.training else detections

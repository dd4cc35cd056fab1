"""Faster R-CNN: the proposals come from the network itself (lecture unit 10; Ren et al. 2015).

    image ──backbone──► feature map ──RPN──► proposals ──RoI align──► fc6, fc7 ──► class + box

One CNN pass per image feeds both stages: the region proposal network
(:class:`~dlmi.detect.rpn.RegionProposalNetwork`: objectness and offsets for ``k`` anchors per
location, proposal selection) and the RoI heads of Fast R-CNN
(:class:`~dlmi.detect.roi_heads.RoIHeads`). Trained end to end: the four losses
(``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``) are summed.

The interface is that of ``torchvision.models.detection.FasterRCNN``: ``num_classes`` counts
the background (labels ``1..num_classes-1``); ``model(images, targets)`` returns the loss dict in
training mode and ``model(images)`` a list of ``{"boxes", "scores", "labels"}`` in eval mode.
Differences: no resizing or normalisation inside the model, a single feature map, and the
backbone may return a tensor or a one-entry dict. Given the same backbone, anchors and settings
(and torchvision's ``min_size``/``max_size`` set to the image size and mean 0 / std 1), the two
train to the same mAP within a few points — the unit 10 lecture shows it.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .anchors import AnchorGenerator
from .roi_heads import FastRCNNPredictor, RoIHeads, RoIPooler, TwoMLPHead
from .rpn import RegionProposalNetwork, RPNHead
from .transform import batch_images, check_targets

__all__ = ["FasterRCNN", "backbone_features"]


def backbone_features(backbone: nn.Module, images: Tensor) -> Tensor:
    """The backbone's feature map ``[N, C, H', W']`` (a tensor, or the one value of a dict)."""
    features = backbone(images)
    if isinstance(features, Mapping):
        if len(features) != 1:
            raise ValueError(f"the backbone must return one feature map, got {len(features)} "
                             f"({list(features)}); multi-scale (FPN) backbones are not supported")
        features = next(iter(features.values()))
    if not isinstance(features, Tensor) or features.ndim != 4:
        raise ValueError(f"the backbone must return a Tensor[N, C, H, W], got "
                         f"{getattr(features, 'shape', type(features).__name__)}")
    return features


def _out_channels(backbone: nn.Module) -> int:
    channels = getattr(backbone, "out_channels", None)
    if not isinstance(channels, int) or channels <= 0:
        raise ValueError("backbone must have an int attribute out_channels (the channels of its "
                         "feature map), as in torchvision")
    return channels


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes counts the background, so it must be an int >= 2, got {num_classes!r}")
    return num_classes


class FasterRCNN(nn.Module):
    """Faster R-CNN with one feature map.

    Args:
        backbone: ``nn.Module`` image batch → feature map, with attribute ``out_channels``.
        num_classes: object classes + 1 (the background).
        rpn_anchor_generator: default ``AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))``;
            choose sizes that match your objects.
        rpn_*: see :class:`~dlmi.detect.rpn.RegionProposalNetwork` (torchvision's defaults).
        box_roi_pool: default :class:`RoIPooler` (7 × 7 RoI align, 2 samples per bin and axis).
        box_head, box_predictor: default :class:`TwoMLPHead` (``representation_size``) and
            :class:`FastRCNNPredictor`.
        box_*: see :class:`~dlmi.detect.roi_heads.RoIHeads` (torchvision's defaults).
        size_divisible: pad the image batch to a multiple of this (the backbone's stride).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *,
                 rpn_anchor_generator: AnchorGenerator | None = None, rpn_head: nn.Module | None = None,
                 rpn_pre_nms_top_n_train: int = 2000, rpn_pre_nms_top_n_test: int = 1000,
                 rpn_post_nms_top_n_train: int = 2000, rpn_post_nms_top_n_test: int = 1000,
                 rpn_nms_thresh: float = 0.7, rpn_fg_iou_thresh: float = 0.7,
                 rpn_bg_iou_thresh: float = 0.3, rpn_batch_size_per_image: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_score_thresh: float = 0.0,
                 box_roi_pool: nn.Module | None = None, box_head: nn.Module | None = None,
                 box_predictor: nn.Module | None = None, representation_size: int = 1024,
                 box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, box_fg_iou_thresh: float = 0.5,
                 box_bg_iou_thresh: float = 0.5, box_batch_size_per_image: int = 512,
                 box_positive_fraction: float = 0.25, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
                 size_divisible: int = 1) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        channels = _out_channels(backbone)
        self.backbone = backbone
        anchors = rpn_anchor_generator or AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))
        head = rpn_head or RPNHead(channels, anchors.num_anchors_per_location()[0])
        self.rpn = RegionProposalNetwork(
            anchors, head, fg_iou_thresh=rpn_fg_iou_thresh, bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image, positive_fraction=rpn_positive_fraction,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            nms_thresh=rpn_nms_thresh, score_thresh=rpn_score_thresh)
        pool = box_roi_pool or RoIPooler(7, "align", sampling_ratio=2)
        if box_head is None:
            size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
            box_head = TwoMLPHead(channels * size * size, representation_size)
        predictor = box_predictor or FastRCNNPredictor(representation_size, num_classes)
        self.roi_heads = RoIHeads(
            pool, box_head, predictor, fg_iou_thresh=box_fg_iou_thresh, bg_iou_thresh=box_bg_iou_thresh,
            batch_size_per_image=box_batch_size_per_image, positive_fraction=box_positive_fraction,
            bbox_reg_weights=bbox_reg_weights, score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img)
        self.size_divisible = size_divisible

    def _batch(self, images) -> tuple[Tensor, list]:
        """One padded batch and the images' own sizes (a subclass may check more)."""
        return batch_images(images, self.size_divisible)

    def _features(self, batch: Tensor):
        """What the RPN and the RoI heads read: here one feature map."""
        return backbone_features(self.backbone, batch)

    def forward(self, images, targets: list[dict] | None = None):
        """Training: ``model(images, targets)`` → dict of the four losses. Eval:
        ``model(images)`` → one ``{"boxes", "scores", "labels"}`` per image."""
        batch, sizes = self._batch(images)
        if self.training:
            targets = check_targets(targets, len(sizes), self.num_classes)
        features = self._features(batch)
        proposals, rpn_losses = self.rpn(batch, sizes, features, targets if self.training else None)
        detections, head_losses = self.roi_heads(features, proposals, batch.shape, sizes,
                                                 targets if self.training else None)
        if self.training:
            return {**rpn_losses, **head_losses}
        return detections

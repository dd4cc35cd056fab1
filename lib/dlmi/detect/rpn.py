"""The region proposal network of Faster R-CNN (lecture unit 10; Ren et al. 2015, §3.1).

R-CNN and Fast R-CNN take their regions from selective search, a CPU algorithm that needs about
two seconds an image — more than the detector itself. Faster R-CNN predicts the proposals with
the same CNN features the detector uses:

* at every location of the backbone's feature map, a 3×3 convolution and two sibling 1×1
  convolutions score ``k`` anchors (:class:`~dlmi.detect.AnchorGenerator`) for *objectness*
  ("object or background", one logit each) and predict four box offsets ``(t_x, t_y, t_w, t_h)``
  for each (:class:`RPNHead`);
* **training**: anchors with IoU ≥ 0.7 with some ground-truth box (or the best anchor of a box)
  are positives, IoU < 0.3 negatives (:class:`~dlmi.detect.matching.Matcher`); 256 of them per
  image, at most half positive, give the loss

      L = 1/N_cls Σ BCE(p_i, p_i*) + 1/N_cls Σ p_i* · smoothL1(t_i - t_i*)

  (torchvision's normalisation: both terms by the number of sampled anchors; smooth L1 with
  β = 1/9);
* **proposal selection** (:meth:`RegionProposalNetwork.select_proposals`): the
  ``pre_nms_top_n`` best-scoring anchors, decoded with their offsets, clipped to the image,
  without boxes smaller than ``min_size``, NMS at IoU 0.7, and the ``post_nms_top_n`` best left.

Proposals leave the RPN detached: the RoI heads treat them as fixed boxes (the "approximate
joint training" of the paper, and what torchvision does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from .coder import BoxCoder
from .matching import Matcher, sample_balanced
from .nms import nms

__all__ = ["RPNHead", "RegionProposalNetwork"]


class RPNHead(nn.Module):
    """3×3 conv + ReLU, then a 1×1 conv for ``k`` objectness logits and one for ``4k`` offsets.

    Args:
        in_channels: channels of the feature map.
        num_anchors: ``k``, anchors per location.
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``features [N, C, H, W]`` → ``(objectness [N, H·W·k], deltas [N, H·W·k, 4])`` in the
        anchors' order (location-major, anchor last)."""
        hidden = F.relu(self.conv(features))
        logits = self.cls_logits(hidden)                        # [N, k, H, W]
        deltas = self.bbox_pred(hidden)                         # [N, 4k, H, W]
        n, k, height, width = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(n, -1)
        deltas = deltas.view(n, k, 4, height, width).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        return logits, deltas


def _per_mode(value, name: str) -> dict:
    if isinstance(value, dict):
        if set(value) != {"training", "testing"}:
            raise ValueError(f"{name} as a dict needs keys 'training' and 'testing', got {sorted(value)}")
        return {k: int(v) for k, v in value.items()}
    return {"training": int(value), "testing": int(value)}


class RegionProposalNetwork(nn.Module):
    """Proposals and, in training, the RPN losses.

    Args:
        anchor_generator: :class:`~dlmi.detect.AnchorGenerator`, one entry per feature map.
        head: :class:`RPNHead` (or anything returning objectness ``[N, A]``, deltas ``[N, A, 4]``).
        fg_iou_thresh, bg_iou_thresh: IoU for positive / negative anchors (0.7 / 0.3).
        batch_size_per_image, positive_fraction: anchors sampled per image for the loss.
        pre_nms_top_n, post_nms_top_n: int, or dict with ``training`` / ``testing`` counts.
        nms_thresh: IoU of the NMS between proposals.
        score_thresh: drop proposals whose objectness probability is below this.
        min_size: drop proposals narrower or lower than this (pixels).
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: nn.Module, *,
                 fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n=None, post_nms_top_n=None, nms_thresh: float = 0.7,
                 score_thresh: float = 0.0, min_size: float = 1e-3) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self._pre_nms_top_n = _per_mode(pre_nms_top_n if pre_nms_top_n is not None
                                        else {"training": 2000, "testing": 1000}, "pre_nms_top_n")
        self._post_nms_top_n = _per_mode(post_nms_top_n if post_nms_top_n is not None
                                         else {"training": 2000, "testing": 1000}, "post_nms_top_n")
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.min_size = float(min_size)

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    # -- training targets -----------------------------------------------------------------------
    def assign_targets_to_anchors(self, anchors: list[Tensor], targets: list[dict]
                                  ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: anchor labels ``[A]`` float (1 object, 0 background, -1 ignored) and the
        matched ground-truth box of every anchor ``[A, 4]`` (zeros where there is none)."""
        labels, matched_boxes = [], []
        for anchors_i, target in zip(anchors, targets):
            gt = target["boxes"].to(anchors_i)
            if gt.numel() == 0:
                labels.append(torch.zeros(anchors_i.shape[0], device=anchors_i.device))
                matched_boxes.append(torch.zeros_like(anchors_i))
                continue
            match = self.matcher(box_iou(gt, anchors_i))
            labels_i = (match >= 0).to(anchors_i.dtype)
            labels_i[match == -2] = -1.0
            matched_boxes.append(gt[match.clamp(min=0)])
            labels.append(labels_i)
        return labels, matched_boxes

    def compute_loss(self, objectness: Tensor, deltas: Tensor, labels: list[Tensor],
                     anchors: list[Tensor], matched_boxes: list[Tensor]) -> dict:
        """BCE on the sampled anchors' objectness, smooth L1 on the positives' offsets, both
        divided by the number of sampled anchors."""
        pos_masks, neg_masks = [], []
        for labels_i in labels:
            pos, neg = sample_balanced(labels_i, self.batch_size_per_image, self.positive_fraction)
            pos_masks.append(pos)
            neg_masks.append(neg)
        pos = torch.cat(pos_masks)
        sampled = pos | torch.cat(neg_masks)
        flat_labels = torch.cat(labels)
        flat_anchors = torch.cat(anchors)
        flat_matched = torch.cat(matched_boxes)
        flat_logits = objectness.reshape(-1)
        flat_deltas = deltas.reshape(-1, 4)
        count = max(int(sampled.sum()), 1)
        target_deltas = self.box_coder.encode_single(flat_matched[pos], flat_anchors[pos])
        box_loss = F.smooth_l1_loss(flat_deltas[pos], target_deltas, beta=1 / 9, reduction="sum") / count
        objectness_loss = F.binary_cross_entropy_with_logits(flat_logits[sampled], flat_labels[sampled],
                                                             reduction="sum") / count
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}

    # -- proposals ------------------------------------------------------------------------------
    def select_proposals(self, anchors: list[Tensor], objectness: Tensor, deltas: Tensor,
                         image_sizes: list, num_anchors_per_level: list[int] | None = None
                         ) -> tuple[list[Tensor], list[Tensor]]:
        """Decode, clip, remove small, NMS, top-N, per image.

        Args:
            anchors: per image ``Tensor[A, 4]``.
            objectness: ``Tensor[N, A]`` logits.
            deltas: ``Tensor[N, A, 4]`` offsets.
            image_sizes: ``(h, w)`` of each image.
            num_anchors_per_level: with several feature maps, how many of the ``A`` anchors
                each one has (in order). The ``pre_nms_top_n`` best are then taken per map, so
                that the many anchors of a fine map cannot crowd out a coarse one (as
                torchvision's FPN does), and one NMS merges the maps' proposals.

        Returns:
            ``(boxes, scores)``: per image ``Tensor[P, 4]`` and ``Tensor[P]`` (probabilities),
            in decreasing score order.
        """
        objectness, deltas = objectness.detach(), deltas.detach()
        levels = [objectness.shape[1]] if num_anchors_per_level is None else list(num_anchors_per_level)
        if sum(levels) != objectness.shape[1]:
            raise ValueError(f"num_anchors_per_level {levels} must add up to the {objectness.shape[1]} "
                             f"anchors per image")
        top_logits, top_index, start = [], [], 0
        for count in levels:
            logits, index = objectness[:, start:start + count].topk(min(self.pre_nms_top_n(), count), dim=1)
            top_logits.append(logits)
            top_index.append(index + start)
            start += count
        top_logits, top_index = torch.cat(top_logits, dim=1), torch.cat(top_index, dim=1)  # [N, top_n]
        boxes_out, scores_out = [], []
        for i, (anchors_i, size) in enumerate(zip(anchors, image_sizes)):
            chosen = top_index[i]
            boxes = self.box_coder.decode_single(deltas[i, chosen], anchors_i[chosen])
            boxes = clip_boxes_to_image(boxes, size)
            scores = torch.sigmoid(top_logits[i])
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores = boxes[keep], scores[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, self.nms_thresh)[: self.post_nms_top_n()]
            boxes_out.append(boxes[keep])
            scores_out.append(scores[keep])
        return boxes_out, scores_out

    def forward(self, images: Tensor, image_sizes: list, features: Tensor | list[Tensor],
                targets: list[dict] | None = None) -> tuple[list[Tensor], dict]:
        """``images [N, C, H, W]`` (padded batch), the backbone's ``features [N, C', H', W']``
        — or a list of such maps, one per level of the anchor generator (a multi-scale
        backbone, e.g. FPN or a U-Net decoder): the head, shared by all levels, scores each
        map's anchors, and the levels' proposals are merged.

        Returns:
            ``(proposals, losses)``: per image ``Tensor[P, 4]``; losses empty in eval mode.
        """
        maps = list(features) if isinstance(features, (list, tuple)) else [features]
        scored = [self.head(f) for f in maps]
        objectness = torch.cat([logits for logits, _ in scored], dim=1)
        deltas = torch.cat([d for _, d in scored], dim=1)
        anchors = self.anchor_generator(images, maps)
        if anchors[0].shape[0] != objectness.shape[1]:
            raise ValueError(f"the head scores {objectness.shape[1]} anchors per image but the anchor "
                             f"generator made {anchors[0].shape[0]}: its anchors per location "
                             f"{self.anchor_generator.num_anchors_per_location()} must match the head's")
        levels = [logits.shape[1] for logits, _ in scored] if len(maps) > 1 else None
        proposals, _ = self.select_proposals(anchors, objectness, deltas, image_sizes, levels)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            labels, matched = self.assign_targets_to_anchors(anchors, targets)
            losses = self.compute_loss(objectness, deltas, labels, anchors, matched)
        return proposals, losses

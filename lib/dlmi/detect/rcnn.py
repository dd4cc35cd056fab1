"""R-CNN: regions with CNN features (lecture unit 10; Girshick et al. 2014).

The first CNN detector, in four separate pieces:

1. **fixed region proposals** — ~2,000 boxes per image from selective search
   (:class:`~dlmi.detect.proposals.SelectiveSearch`, the default ``proposer``);
2. **warp + CNN** — every proposal, enlarged by a little context, is warped to a fixed square
   (227 × 227 in the paper, ``warp_size`` here; done with :func:`~dlmi.detect.roi_align` on the
   *image*: bilinear resampling of the box, anisotropic) and passed through the CNN on its own:
   one forward pass per region, the cost that Fast R-CNN removes. The CNN is fine-tuned as a
   ``C + 1``-way softmax classifier on the warped regions (IoU ≥ 0.5 object, else background);
3. **a linear SVM per class** on the CNN features (``fc7``). Positives are the ground-truth
   boxes only, negatives the regions with IoU < 0.3 with every box of that class; the hinge
   loss ``max(0, 1 - y·(w·x + b))`` is taken over the positives and the *hard negatives*, the
   negatives that score highest (the paper mines them from the whole training set; here from
   each mini-batch's regions, online);
4. **class-specific bounding-box regression** of the offsets ``(t_x, t_y, t_w, t_h)`` of regions
   with IoU ≥ 0.6 to their ground truth (least squares on the features, the paper's ridge
   regression, §C), then per-class NMS (IoU 0.3).

The SVMs and regressors read the features *detached* — in the paper they are trained after
the CNN on cached features; summing the losses in one optimiser step changes only the schedule.

``model(images, targets, proposals=None)`` in training returns ``{"loss_classifier"`` (CNN
fine-tuning), ``"loss_svm"``, ``"loss_box_reg"}``; ``model(images, proposals=None)`` in eval the
detections, with ``scores = sigmoid(SVM margin)``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from .coder import BoxCoder
from .fast_rcnn import check_proposals
from .faster_rcnn import _check_num_classes, _out_channels, backbone_features
from .matching import Matcher, sample_balanced
from .nms import batched_nms
from .proposals import SelectiveSearch
from .roi import roi_align
from .roi_heads import TwoMLPHead
from .transform import batch_images, check_targets

__all__ = ["RCNN", "warp_regions"]


def warp_regions(images: Tensor, boxes: list[Tensor], size: int, context: float = 0.0) -> Tensor:
    """Crop every box out of its image and resize it to ``size × size`` (R-CNN's warp).

    Args:
        images: ``[N, C, H, W]``.
        boxes: per image ``Tensor[P_i, 4]`` xyxy.
        context: enlarge each box by this fraction of its width/height on every side first
            (R-CNN: 16 pixels of context around a 227-pixel warp); outside the image reads 0.

    Returns:
        ``[sum P_i, C, size, size]``.
    """
    if context:
        grown = []
        for b in boxes:
            w, h = (b[:, 2] - b[:, 0]) * context, (b[:, 3] - b[:, 1]) * context
            grown.append(torch.stack((b[:, 0] - w, b[:, 1] - h, b[:, 2] + w, b[:, 3] + h), 1))
        boxes = grown
    return roi_align(images, boxes, size, 1.0, sampling_ratio=2, aligned=True)


class RCNN(nn.Module):
    """R-CNN with a small CNN, linear SVMs and box regressors.

    Args:
        backbone: ``nn.Module`` warped region batch → feature map, attribute ``out_channels``
            (the same kind of backbone as :class:`FasterRCNN`'s).
        num_classes: object classes + 1 (the background).
        proposer: callable ``image [C, H, W] → Tensor[P, 4]``; default :class:`SelectiveSearch`.
        warp_size: side of the warped region (pixels).
        context: context padding, a fraction of the box per side.
        pool_size: the feature map is average-pooled to ``pool_size²`` cells before fc6.
        representation_size: width of fc6/fc7, the features of the SVMs.
        batch_size_per_image, positive_fraction: regions per image for fine-tuning (32 objects
            in a batch of 128 in the paper: 25 %).
        hard_negatives: hard negatives kept per positive in the SVM loss.
        max_regions: at most this many proposals per image are warped at test time.
        score_thresh: drop detections whose SVM margin is below this.
        nms_thresh, detections_per_img: per-class NMS (0.3 in the paper) and the cap.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *,
                 proposer: Callable[[Tensor], Tensor] | None = None, warp_size: int = 32,
                 context: float = 0.0, pool_size: int = 4, representation_size: int = 256,
                 batch_size_per_image: int = 64, positive_fraction: float = 0.25,
                 hard_negatives: int = 3, max_regions: int = 2000, score_thresh: float = -1.0,
                 nms_thresh: float = 0.3, detections_per_img: int = 100,
                 bbox_reg_weights=(10.0, 10.0, 5.0, 5.0)) -> None:
        super().__init__()
        self.num_classes = _check_num_classes(num_classes)
        channels = _out_channels(backbone)
        self.backbone = backbone
        self.proposer = proposer or SelectiveSearch()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.head = TwoMLPHead(channels * pool_size * pool_size, representation_size)
        self.finetune = nn.Linear(representation_size, num_classes)             # CNN fine-tuning
        # The SVMs read standardised features (running mean and variance): a hinge margin of 1
        # then means the same whatever the scale of the CNN's features (R-CNN's code rescales
        # them to a mean norm of 20 for the same reason).
        self.standardize = nn.BatchNorm1d(representation_size, affine=False)
        self.svm = nn.Linear(representation_size, num_classes - 1)              # one SVM per class
        self.bbox_reg = nn.Linear(representation_size, 4 * (num_classes - 1))  # per class
        nn.init.zeros_(self.bbox_reg.weight)
        nn.init.zeros_(self.bbox_reg.bias)
        self.box_coder = BoxCoder(tuple(bbox_reg_weights))
        self.finetune_matcher = Matcher(0.5, 0.5)
        self.warp_size = int(warp_size)
        self.context = float(context)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.hard_negatives = int(hard_negatives)
        self.max_regions = int(max_regions)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)

    def propose(self, images) -> list[Tensor]:
        batch, sizes = batch_images(images)
        return [self.proposer(batch[i, :, :h, :w]) for i, (h, w) in enumerate(sizes)]

    def region_features(self, batch: Tensor, boxes: list[Tensor]) -> Tensor:
        """fc7 features ``[sum P_i, representation_size]``: warp, then one CNN pass per region
        (batched for speed, but each region is its own image)."""
        regions = warp_regions(batch, boxes, self.warp_size, self.context)
        return self.head(self.pool(backbone_features(self.backbone, regions)))

    # -- training --------------------------------------------------------------------------------
    def _training_regions(self, proposals, targets):
        """Per image: the sampled regions (ground truth included) with their fine-tuning label,
        best IoU with each class, matched box per class."""
        boxes_out, labels_out, class_iou_out, class_box_out = [], [], [], []
        classes = self.num_classes - 1
        for boxes, target in zip(proposals, targets):
            gt, gt_labels = target["boxes"].to(boxes), target["labels"].to(boxes.device)
            boxes = torch.cat((gt, boxes))
            if gt.numel():
                iou = box_iou(gt, boxes)                                             # [G, P]
                match = self.finetune_matcher(iou)
                labels = torch.where(match >= 0, gt_labels[match.clamp(min=0)], 0)
            else:
                iou = boxes.new_zeros(0, boxes.shape[0])
                labels = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
            pos, neg = sample_balanced(labels, self.batch_size_per_image, self.positive_fraction)
            # The ground-truth boxes are the SVMs' positives: always keep them.
            pos[: gt.shape[0]] = True
            keep = torch.where(pos | neg)[0]
            # IoU of each kept region with the best box of each class, and that box.
            per_class_iou = boxes.new_zeros(keep.numel(), classes)
            per_class_box = boxes[keep, None, :].repeat(1, classes, 1)
            for c in range(1, classes + 1):
                mine = torch.where(gt_labels == c)[0]
                if mine.numel():
                    best, arg = iou[mine][:, keep].max(dim=0)
                    per_class_iou[:, c - 1] = best
                    per_class_box[:, c - 1] = gt[mine[arg]]
            boxes_out.append(boxes[keep])
            labels_out.append(labels[keep])
            class_iou_out.append(per_class_iou)
            class_box_out.append(per_class_box)
        return boxes_out, torch.cat(labels_out), torch.cat(class_iou_out), torch.cat(class_box_out)

    def svm_loss(self, margins: Tensor, is_gt: Tensor, class_iou: Tensor, gt_class: Tensor) -> Tensor:
        """Hinge loss per class over the positives (ground-truth boxes of that class) and the
        hardest negatives (IoU < 0.3 with every box of the class, highest margins first)."""
        total, terms = margins.new_zeros(()), 0
        for c in range(margins.shape[1]):
            positive = is_gt & (gt_class == c + 1)
            negative = class_iou[:, c] < 0.3
            n_pos = int(positive.sum())
            n_hard = max(self.hard_negatives * max(n_pos, 1), 1)
            neg_margins = margins[negative, c]
            hard = neg_margins.topk(min(n_hard, neg_margins.numel())).values
            # Positives and hard negatives weigh the same in total (a handful of ground-truth
            # boxes against many negatives: the paper's class weighting, done by averaging).
            for hinge in (F.relu(1 - margins[positive, c]), F.relu(1 + hard)):
                if hinge.numel():
                    total = total + hinge.mean()
                    terms += 1
        return 2 * total / max(terms, 1)

    # -- inference -------------------------------------------------------------------------------
    def _detect(self, features: Tensor, boxes: list[Tensor], sizes: list) -> list[dict]:
        margins = self.svm(self.standardize(features))                                     # [K, C]
        offsets = self.bbox_reg(features)                                            # [K, 4C]
        counts = [b.shape[0] for b in boxes]
        classes = self.num_classes - 1
        results = []
        for m, o, b, size in zip(margins.split(counts), offsets.split(counts), boxes, sizes):
            if b.shape[0] == 0:
                results.append({"boxes": b.new_zeros(0, 4), "scores": b.new_zeros(0),
                                "labels": torch.zeros(0, dtype=torch.long, device=b.device)})
                continue
            decoded = self.box_coder.decode_single(o, b).reshape(-1, classes, 4)
            decoded = clip_boxes_to_image(decoded, size).reshape(-1, 4)
            labels = torch.arange(1, classes + 1, device=b.device).repeat(b.shape[0])
            m = m.reshape(-1)
            keep = torch.where(m >= self.score_thresh)[0]
            decoded, m, labels = decoded[keep], m[keep], labels[keep]
            keep = remove_small_boxes(decoded, 1e-2)
            decoded, m, labels = decoded[keep], m[keep], labels[keep]
            keep = batched_nms(decoded, m, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": decoded[keep], "scores": torch.sigmoid(m[keep]), "labels": labels[keep]})
        return results

    def forward(self, images, targets: list[dict] | None = None, proposals: list[Tensor] | None = None):
        batch, sizes = batch_images(images)
        if self.training:
            targets = check_targets(targets, len(sizes), self.num_classes)
        if proposals is None:
            proposals = self.propose(images)
        proposals = check_proposals(proposals, len(sizes), sizes, batch.device)
        if not self.training:
            proposals = [p[: self.max_regions] for p in proposals]
            return self._detect(self.region_features(batch, proposals), proposals, sizes)

        boxes, labels, class_iou, class_box = self._training_regions(proposals, targets)
        features = self.region_features(batch, boxes)
        loss_classifier = F.cross_entropy(self.finetune(features), labels)
        fixed = features.detach()                      # SVMs and regressors: on fixed features
        counts = [t["boxes"].shape[0] for t in targets]
        is_gt = torch.cat([torch.arange(b.shape[0], device=batch.device) < g for b, g in zip(boxes, counts)])
        gt_class = torch.where(is_gt, labels, 0)
        loss_svm = self.svm_loss(self.svm(self.standardize(fixed)), is_gt, class_iou, gt_class)
        # Box regression: regions with IoU >= 0.6 to a box of their (fine-tuning) class.
        flat_boxes = torch.cat(boxes)
        rows = torch.where(labels > 0)[0]
        cls = labels[rows] - 1
        close = class_iou[rows, cls] >= 0.6
        rows, cls = rows[close], cls[close]
        if rows.numel():
            predicted = self.bbox_reg(fixed).reshape(-1, self.num_classes - 1, 4)[rows, cls]
            wanted = self.box_coder.encode_single(class_box[rows, cls], flat_boxes[rows])
            loss_box_reg = F.mse_loss(predicted, wanted, reduction="sum") / max(labels.numel(), 1)
        else:
            loss_box_reg = features.new_zeros(()) + 0.0 * self.bbox_reg.weight.sum()
        return {"loss_classifier": loss_classifier, "loss_svm": loss_svm, "loss_box_reg": loss_box_reg}

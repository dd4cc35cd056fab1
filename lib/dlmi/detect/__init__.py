"""Object detection (lecture units 10 and 11): the pieces every detector is built from.

``boxes``    xyxy boxes: :func:`box_iou`, :func:`box_area`, :func:`box_convert`,
             :func:`clip_boxes_to_image`, :func:`remove_small_boxes`, :func:`check_boxes`
``nms``      greedy non-maximum suppression: :func:`nms`, :func:`batched_nms`
``coder``    R-CNN's box regression targets: :class:`BoxCoder`
``anchors``  Faster R-CNN's k anchors per location: :class:`AnchorGenerator`
``roi``      Fast R-CNN's RoI pooling and Mask R-CNN's RoI align: :func:`roi_pool`,
             :func:`roi_align`, :class:`RoIPool`, :class:`RoIAlign`
``metrics``  COCO / VOC mean average precision: :func:`mean_average_precision`,
             :func:`average_precision`

Conventions are torchvision's: boxes ``(x1, y1, x2, y2)`` float pixels, targets
``{"boxes", "labels"}``, predictions ``{"boxes", "scores", "labels"}``; the ops give the numbers
of ``torchvision.ops`` and the metrics those of pycocotools (via torchmetrics).
"""
from .anchors import AnchorGenerator
from .boxes import (box_area, box_convert, box_iou, check_boxes, clip_boxes_to_image,
                    remove_small_boxes)
from .coder import BoxCoder
from .metrics import average_precision, mean_average_precision
from .nms import batched_nms, nms
from .roi import RoIAlign, RoIPool, roi_align, roi_pool

__all__ = [
    "box_iou", "box_area", "box_convert", "clip_boxes_to_image", "remove_small_boxes", "check_boxes",
    "nms", "batched_nms", "BoxCoder", "AnchorGenerator",
    "roi_pool", "roi_align", "RoIPool", "RoIAlign",
    "mean_average_precision", "average_precision",
]

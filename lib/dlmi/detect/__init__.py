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
``matching``  training labels: :class:`Matcher`, :func:`sample_balanced`
``transform`` image batching and target checks: :func:`batch_images`, :func:`check_targets`
``proposals`` selective search and sliding windows: :func:`selective_search`,
             :func:`sliding_windows`, :func:`proposal_recall`
``rpn``      Faster R-CNN's region proposal network: :class:`RPNHead`, :class:`RegionProposalNetwork`
``roi_heads`` the Fast R-CNN head: :class:`RoIPooler`, :class:`TwoMLPHead`,
             :class:`FastRCNNPredictor`, :class:`RoIHeads`
``rcnn``, ``fast_rcnn``, ``faster_rcnn``  the detectors :class:`RCNN`, :class:`FastRCNN`,
             :class:`FasterRCNN` (train: ``model(images, targets)`` → losses; eval:
             ``model(images)`` → detections)
``yolo``     the one-stage detector :class:`YOLOv1` (unit 11; same interface) and its pieces:
             :func:`encode_yolo_targets`, :func:`responsible_predictors`, :func:`yolo_loss`,
             :func:`yolo_boxes`, :func:`decode_yolo`, :class:`YOLOHead`
``ct_detection`` Faster R-CNN on CT (unit 10b): :class:`SliceUNet`, :class:`MultiScaleRoIPooler`,
             :class:`AggregatedFasterRCNN`, :func:`build_ct_detector`, :func:`evaluate_ct_detector`
``froc``     LUNA16's FROC and CPM: :func:`froc`, :func:`competition_performance_metric`, :data:`FP_RATES`

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
from .matching import Matcher, sample_balanced
from .transform import batch_images, check_targets
from .proposals import (SelectiveSearch, SlidingWindows, proposal_recall, selective_search,
                        sliding_windows)
from .rpn import RegionProposalNetwork, RPNHead
from .roi_heads import FastRCNNPredictor, RoIHeads, RoIPooler, TwoMLPHead
from .faster_rcnn import FasterRCNN
from .fast_rcnn import FastRCNN
from .rcnn import RCNN
from .ct_detection import (AggregatedFasterRCNN, MultiScaleRoIPooler, SliceUNet, build_ct_detector,
                           evaluate_ct_detector)
from .froc import FP_RATES, competition_performance_metric, froc
from .yolo import (YOLOHead, YOLOv1, decode_yolo, encode_yolo_targets, responsible_predictors,
                   yolo_boxes, yolo_loss)

__all__ = [
    "box_iou", "box_area", "box_convert", "clip_boxes_to_image", "remove_small_boxes", "check_boxes",
    "nms", "batched_nms", "BoxCoder", "AnchorGenerator",
    "roi_pool", "roi_align", "RoIPool", "RoIAlign",
    "mean_average_precision", "average_precision",
    "Matcher", "sample_balanced", "batch_images", "check_targets",
    "selective_search", "sliding_windows", "proposal_recall", "SelectiveSearch", "SlidingWindows",
    "RPNHead", "RegionProposalNetwork", "RoIPooler", "TwoMLPHead", "FastRCNNPredictor", "RoIHeads",
    "FasterRCNN", "FastRCNN", "RCNN",
    "YOLOv1", "YOLOHead", "encode_yolo_targets", "responsible_predictors", "yolo_loss", "yolo_boxes",
    "decode_yolo",
    "AggregatedFasterRCNN", "MultiScaleRoIPooler", "SliceUNet", "build_ct_detector", "evaluate_ct_detector",
    "froc", "competition_performance_metric", "FP_RATES",
]

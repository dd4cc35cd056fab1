"""YOLO v1: detection as one regression over an S × S grid (lecture unit 11; Redmon et al. 2016).

    image ──backbone──► feature map ──head──► S × S × (5B + C) ──decode──► boxes, scores, labels

No proposals and no second stage: one CNN pass predicts, for each of the ``S × S`` cells of a
grid laid over the image,

* ``B`` boxes, each ``(x, y, w, h, confidence)``: ``(x, y)`` the box centre as an offset inside
  the cell (``[0, 1]``), ``(w, h)`` its size as a fraction of the image, and the confidence
  ``Pr(object) · IoU(pred, truth)``;
* ``C`` conditional class probabilities ``Pr(class_i | object)``, one set per cell (not per box).

**Layout.** The prediction tensor is ``[N, S, S, 5B + C]``, row ``i`` (y) and column ``j`` (x)
of the grid, last axis ``(x_1, y_1, w_1, h_1, c_1, …, x_B, y_B, w_B, h_B, c_B, p_1, …, p_C)``.
The target tensor (:func:`encode_yolo_targets`) is ``[N, S, S, 5 + C]``:
``(x, y, w, h, 1^obj, one-hot class)``, the same order as one predictor followed by the classes.

**Activations** (the paper's last layer is linear; we choose, and document, bounded outputs):
sigmoid on ``x, y`` (the centre stays in its cell), on ``w, h`` (a box is at most the image, and
``√w`` exists) and on the confidence; softmax over the ``C`` class scores (they are
*probabilities* ``Pr(class | object)``). The loss stays the paper's squared error on these values.

**Training targets** (§2.2): an object is assigned to the cell that holds its centre; of the
``B`` predictors of that cell the one whose current box has the highest IoU with the truth is
*responsible* (:func:`responsible_predictors`). The loss (eq. 3, :func:`yolo_loss`) is

    λ_coord Σ_ij 1^obj_ij [(x - x̂)² + (y - ŷ)²]                    loss_xy
  + λ_coord Σ_ij 1^obj_ij [(√w - √ŵ)² + (√h - √ĥ)²]                loss_wh
  +         Σ_ij 1^obj_ij (C - Ĉ)²,   C = IoU(pred, truth)         loss_obj
  + λ_noobj Σ_ij 1^noobj_ij (0 - Ĉ)²,  1^noobj_ij = 1 - 1^obj_ij   loss_noobj
  +         Σ_i  1^obj_i Σ_c (p_i(c) - p̂_i(c))²                     loss_class

with ``λ_coord = 5`` (localisation matters more than the many empty cells' confidences) and
``λ_noobj = 0.5``; the square roots make an error of a few pixels count more on a small box than
on a large one. Note ``1^noobj_ij`` is 1 also for the *non-responsible* predictors of a cell
that holds an object (they are pushed to confidence 0), and the class term is per cell.

**Inference** (§2, "class-specific confidence scores"): ``Pr(class_i | object) · confidence``
for every box and class, a score threshold, NMS per class, the top ``detections_per_img``
(:func:`decode_yolo`).

**What v1 gives up** (§2.4): a cell holds one object, so two objects whose centres fall in the
same cell cannot both be detected (:func:`encode_yolo_targets` keeps the larger one), and small
objects in groups are missed; the coarse boxes localise less precisely than Faster R-CNN's
two-stage refinement. In exchange one pass is all it costs: the paper's 45 (155 for Fast
YOLO) frames per second against Faster R-CNN's 7.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import _shape, box_iou, clip_boxes_to_image
from .faster_rcnn import _out_channels, backbone_features
from .nms import batched_nms
from .transform import batch_images, check_targets

__all__ = ["YOLOv1", "YOLOHead", "encode_yolo_targets", "responsible_predictors", "yolo_loss",
           "yolo_boxes", "decode_yolo"]


# -- argument checks -------------------------------------------------------------------------------
def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _image_size(image_size) -> tuple[int, int]:
    """``int`` or ``(height, width)`` → ``(height, width)``."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list, torch.Size)) or len(image_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_size)):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _check_grid(grid_size, image_size) -> tuple[int, tuple[int, int]]:
    grid_size = _positive_int(grid_size, "grid_size")
    height, width = _image_size(image_size)
    if height % grid_size or width % grid_size:
        raise ValueError(f"grid_size {grid_size} must divide the image size {height} x {width}: every "
                         f"cell must cover the same number of pixels (try one of "
                         f"{[s for s in range(1, min(height, width) + 1) if height % s == 0 and width % s == 0]})")
    return grid_size, (height, width)


def _split_channels(predictions: Tensor, num_classes: int, name: str = "predictions") -> int:
    """Check ``predictions`` ``[N, S, S, 5B + C]`` and return ``B``."""
    if not isinstance(predictions, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, S, S, 5B + C], got {type(predictions).__name__}")
    if not predictions.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {predictions.dtype}")
    if predictions.ndim != 4 or predictions.shape[1] != predictions.shape[2]:
        raise ValueError(f"{name} must have shape [N, S, S, 5B + C] (an S x S grid), got {_shape(predictions)}")
    boxes = predictions.shape[-1] - num_classes
    if boxes < 5 or boxes % 5:
        raise ValueError(f"{name} has {predictions.shape[-1]} values per cell, which is not 5B + C "
                         f"for C = {num_classes} classes and some B >= 1")
    return boxes // 5


def _safe_sqrt(x: Tensor) -> Tensor:
    """√x with a zero (not infinite) gradient at x = 0, so a masked-out zero-width box cannot
    turn the whole gradient into NaN (0 · ∞)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


# -- targets ---------------------------------------------------------------------------------------
def encode_yolo_targets(targets, grid_size: int, num_classes: int, image_size) -> Tensor:
    """The grid targets of YOLO v1 (Redmon et al. 2016, §2): one cell per object.

    For each ground-truth box with centre ``(cx, cy)`` in pixels, the cell is column
    ``j = floor(cx / cell_w)``, row ``i = floor(cy / cell_h)`` (``cell_w = W / S``), and the
    cell's entry holds ``x = cx / cell_w - j``, ``y = cy / cell_h - i`` (the centre's offset in
    the cell, in ``[0, 1)``), ``w = box width / W``, ``h = box height / H``, the object flag
    ``1`` and the one-hot class.

    Rules:

    * a centre on a line between two cells belongs to the cell to its right / below (``floor``),
      with offset 0; a centre exactly on the image's right (bottom) edge — only a zero-width
      (zero-height) box on that edge has one — goes to the last column (row), with offset 1;
    * **one object per cell**: when several centres fall in one cell, the box with the larger
      area wins (the other objects get no target at all, as in v1); equal areas: the earlier
      box in ``targets[n]["boxes"]``;
    * an image without boxes gives an all-zero grid (every predictor is "noobj").

    Args:
        targets: list of ``N`` dicts ``{"boxes": Tensor[G, 4] xyxy pixels, "labels": Tensor[G]
            int in 1..C}`` (torchvision's format; 0, the background, never appears).
        grid_size: ``S``; must divide the image's height and width.
        num_classes: ``C``, the object classes, *without* the background.
        image_size: ``int`` or ``(height, width)`` in pixels.

    Returns:
        ``Tensor[N, S, S, 5 + C]`` (the boxes' float dtype and device), last axis
        ``(x, y, w, h, 1^obj, onehot_1, …, onehot_C)``, row ``i`` = y, column ``j`` = x.

    Raises:
        ValueError: a grid that does not divide the image, a box not inside the image
            (``0 <= x1 <= x2 <= W``, ``0 <= y1 <= y2 <= H``), labels outside ``1..C``, or
            malformed targets (see :func:`~dlmi.detect.check_targets`).
    """
    grid_size, (height, width) = _check_grid(grid_size, image_size)
    num_classes = _positive_int(num_classes, "num_classes")
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts (one per image), got {type(targets).__name__}")
    targets = check_targets(targets, len(targets), num_classes + 1)
    dtype = next((t["boxes"].dtype for t in targets if t["boxes"].is_floating_point()), torch.float32)
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    S = grid_size
    out = torch.zeros(len(targets), S, S, 5 + num_classes, dtype=dtype, device=device)
    for n, target in enumerate(targets):
        boxes, labels = target["boxes"].to(dtype), target["labels"].to(device)
        if boxes.shape[0] == 0:
            continue
        outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
        if outside.any():
            k = int(outside.nonzero()[0, 0])
            raise ValueError(f"targets[{n}]['boxes'][{k}] = {boxes[k].tolist()} is not inside the "
                             f"{height} x {width} image: YOLO assigns a box to the cell of its centre, "
                             f"so clip boxes to the image first (dlmi.detect.clip_boxes_to_image)")
        # In grid units (a cell is 1 x 1) the cell index is the integer part of the centre.
        gx = (boxes[:, 0] + boxes[:, 2]) * (S / (2 * width))
        gy = (boxes[:, 1] + boxes[:, 3]) * (S / (2 * height))
        col = gx.floor().clamp(max=S - 1)
        row = gy.floor().clamp(max=S - 1)
        w = (boxes[:, 2] - boxes[:, 0]) / width
        h = (boxes[:, 3] - boxes[:, 1]) / height
        # One object per cell: order by area (largest first, stable so equal areas keep their
        # input order), then by cell; the first box of each cell wins.
        cell = (row * S + col).long()
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])     # in pixels, as documented
        order = torch.sort(area, descending=True, stable=True).indices
        order = order[torch.sort(cell[order], stable=True).indices]
        first = torch.ones_like(order, dtype=torch.bool)
        first[1:] = cell[order][1:] != cell[order][:-1]
        keep = order[first]
        i, j = row[keep].long(), col[keep].long()
        entry = torch.zeros(keep.numel(), 5 + num_classes, dtype=dtype, device=device)
        entry[:, 0] = gx[keep] - col[keep]
        entry[:, 1] = gy[keep] - row[keep]
        entry[:, 2] = w[keep]
        entry[:, 3] = h[keep]
        entry[:, 4] = 1
        entry[torch.arange(keep.numel(), device=device), 4 + labels[keep]] = 1
        out[n, i, j] = entry
    return out


# -- boxes of the grid -----------------------------------------------------------------------------
def yolo_boxes(boxes: Tensor, image_size) -> Tensor:
    """Cell-relative boxes ``(x, y, w, h)`` → ``(x1, y1, x2, y2)`` pixels.

    Args:
        boxes: ``Tensor[N, S, S, ..., 4]``: for the cell in row ``i``, column ``j``,
            ``(x, y)`` the centre's offset in the cell and ``(w, h)`` the size as a fraction of
            the image (any number of axes, e.g. ``B``, after the grid's two).
        image_size: ``int`` or ``(height, width)``.

    Returns:
        ``Tensor`` of the same shape: centre ``((j + x) W / S, (i + y) H / S)``, size
        ``(w W, h H)``, as corners. Not clipped.
    """
    height, width = _image_size(image_size)
    if not isinstance(boxes, Tensor) or boxes.ndim < 4 or boxes.shape[-1] != 4 or boxes.shape[1] != boxes.shape[2]:
        raise ValueError(f"boxes must be a Tensor[N, S, S, ..., 4] of (x, y, w, h), got "
                         f"{_shape(boxes) if isinstance(boxes, Tensor) else type(boxes).__name__}")
    S = boxes.shape[1]
    extra = (1,) * (boxes.ndim - 4)
    cols = torch.arange(S, device=boxes.device, dtype=boxes.dtype).view(1, 1, S, *extra)
    rows = torch.arange(S, device=boxes.device, dtype=boxes.dtype).view(1, S, 1, *extra)
    cx = (cols + boxes[..., 0]) * (width / S)
    cy = (rows + boxes[..., 1]) * (height / S)
    half_w, half_h = boxes[..., 2] * (width / 2), boxes[..., 3] * (height / 2)
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def responsible_predictors(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Which of the ``B`` predictors of each cell is responsible for its object (§2.2).

    "YOLO predicts multiple bounding boxes per grid cell. At training time we only want one
    bounding box predictor to be responsible for each object. We assign one predictor to be
    responsible … based on which prediction has the highest current IoU with the ground truth."
    The IoU is that of the decoded boxes (computed in grid units: IoU does not change when an
    axis is scaled, so it equals the IoU in pixels); ties (e.g. all zero) go to the first
    predictor. The choice is a hard assignment and carries no gradient (computed on detached
    values).

    Args:
        predictions: ``Tensor[N, S, S, 5B + C]`` (layout of the module docstring).
        targets: ``Tensor[N, S, S, 5 + C]`` from :func:`encode_yolo_targets`.

    Returns:
        ``(responsible, iou)``: ``Tensor[N, S, S, B]`` bool (one True per object cell, none
        elsewhere) and the ``Tensor[N, S, S, B]`` IoU of every predictor's box with its cell's
        ground truth (0 in cells without an object), both detached.
    """
    num_classes = _check_targets_tensor(targets)
    B = _split_channels(predictions, num_classes)
    _check_same_grid(predictions, targets)
    with torch.no_grad():
        pred = predictions.detach()[..., :5 * B].reshape(*predictions.shape[:3], B, 5)[..., :4]
        truth = targets.detach()[..., None, :4].to(pred.dtype)                 # [N, S, S, 1, 4]
        # Grid units: image size S x S, so one cell is 1 x 1.
        S = predictions.shape[1]
        iou = box_iou(yolo_boxes(pred, S), yolo_boxes(truth, S))[..., 0]       # [N, S, S, B]
        obj = targets.detach()[..., 4] > 0
        iou = torch.where(obj[..., None], iou.nan_to_num(0.0), torch.zeros_like(iou))
        best = iou.argmax(dim=-1)                                              # first on ties
        responsible = F.one_hot(best, B).bool() & obj[..., None]
    return responsible, iou


def _check_targets_tensor(targets) -> int:
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be the Tensor[N, S, S, 5 + C] of encode_yolo_targets, got "
                        f"{type(targets).__name__} (encode the list of dicts first)")
    if not targets.is_floating_point():
        raise TypeError(f"targets must be a floating-point tensor, got dtype {targets.dtype}")
    if targets.ndim != 4 or targets.shape[1] != targets.shape[2] or targets.shape[-1] < 6:
        raise ValueError(f"targets must have shape [N, S, S, 5 + C] with C >= 1, got {_shape(targets)}")
    return targets.shape[-1] - 5


def _check_same_grid(predictions: Tensor, targets: Tensor) -> None:
    if predictions.shape[:3] != targets.shape[:3]:
        raise ValueError(f"predictions {_shape(predictions)} and targets {_shape(targets)} must share "
                         f"[N, S, S] (same batch and grid)")


# -- the loss --------------------------------------------------------------------------------------
def yolo_loss(predictions: Tensor, targets: Tensor, *, lambda_coord: float = 5.0,
              lambda_noobj: float = 0.5, rescore: bool = True) -> dict[str, Tensor]:
    """The YOLO v1 loss, eq. (3) of Redmon et al. (2016), term by term.

    Args:
        predictions: ``Tensor[N, S, S, 5B + C]``, activated (``w, h >= 0``; see the module
            docstring for the layout).
        targets: ``Tensor[N, S, S, 5 + C]`` from :func:`encode_yolo_targets`.
        lambda_coord: weight of the two coordinate terms (paper: 5).
        lambda_noobj: weight of the confidence of predictors without an object (paper: 0.5).
        rescore: the confidence target of the responsible predictor is the IoU of its box with
            the truth (``True``, the paper: the confidence *is* ``Pr(object) · IoU``) or 1
            (``False``: a plain objectness score). The IoU target is a constant (detached).

    Returns:
        dict of 0-dim tensors, each *already weighted* and summed over the batch, then divided
        by the batch size ``N`` (the paper's sum, per image, so that the size of a mini-batch
        does not change the learning rate): ``loss_xy``, ``loss_wh`` (on √w, √h),
        ``loss_obj``, ``loss_noobj`` (every predictor that is not responsible, including the
        other predictors of a cell holding an object), ``loss_class`` (cells with an object).
        Their sum is eq. (3) / N.

    Raises:
        TypeError / ValueError: non-tensors, integer dtypes, shapes that do not fit, a
            negative predicted width or height (√ undefined: apply the activations first).
    """
    num_classes = _check_targets_tensor(targets)
    B = _split_channels(predictions, num_classes)
    _check_same_grid(predictions, targets)
    for name, value in (("lambda_coord", lambda_coord), ("lambda_noobj", lambda_noobj)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if not isinstance(rescore, bool):
        raise TypeError(f"rescore must be True or False, got {rescore!r}")
    N, S = predictions.shape[0], predictions.shape[1]
    boxes = predictions[..., :5 * B].reshape(N, S, S, B, 5)
    xy, wh, confidence = boxes[..., 0:2], boxes[..., 2:4], boxes[..., 4]
    class_probs = predictions[..., 5 * B:]
    if (wh < 0).any():
        raise ValueError("predicted widths and heights must be >= 0 (they enter the loss as √w, √h); "
                         "apply the head's activation (sigmoid) first")
    targets = targets.to(predictions.dtype)
    obj = targets[..., 4]                                                       # [N, S, S]
    responsible, iou = responsible_predictors(predictions, targets)
    resp = responsible.to(predictions.dtype)                                   # 1^obj_ij
    noobj = 1 - resp                                                            # 1^noobj_ij
    true_xy = targets[..., None, 0:2]
    true_sqrt_wh = targets[..., None, 2:4].clamp(min=0).sqrt()
    conf_target = iou if rescore else torch.ones_like(iou)

    loss_xy = lambda_coord * (resp * ((xy - true_xy) ** 2).sum(-1)).sum() / N
    loss_wh = lambda_coord * (resp * ((_safe_sqrt(wh) - true_sqrt_wh) ** 2).sum(-1)).sum() / N
    loss_obj = (resp * (confidence - conf_target) ** 2).sum() / N
    loss_noobj = lambda_noobj * (noobj * confidence ** 2).sum() / N
    loss_class = (obj * ((class_probs - targets[..., 5:]) ** 2).sum(-1)).sum() / N
    return {"loss_xy": loss_xy, "loss_wh": loss_wh, "loss_obj": loss_obj,
            "loss_noobj": loss_noobj, "loss_class": loss_class}


# -- inference -------------------------------------------------------------------------------------
def decode_yolo(predictions: Tensor, num_classes: int, image_size, *, score_thresh: float = 0.05,
                nms_thresh: float = 0.5, detections_per_img: int = 100,
                image_sizes: list | None = None) -> list[dict]:
    """Detections from the grid: class-specific confidences, threshold, NMS per class, top-k.

    For every cell, every predictor ``b`` and every class ``c`` (§2, test time):
    ``score = Pr(class_c | object) · confidence_b``, a candidate box of label ``c + 1`` (labels
    ``1..C`` as in the targets). Boxes are decoded to pixels (:func:`yolo_boxes`) and clipped
    to the image; candidates with ``score > score_thresh`` go through
    :func:`~dlmi.detect.batched_nms` (boxes of different classes never suppress each other) and
    the ``detections_per_img`` highest scores are kept.

    Args:
        predictions: ``Tensor[N, S, S, 5B + C]``, activated.
        num_classes: ``C`` (without background).
        image_size: ``int`` or ``(height, width)``: the image the grid covers.
        score_thresh, nms_thresh, detections_per_img: as in torchvision's detectors.
        image_sizes: optional ``(height, width)`` per image to clip to (images smaller than
            ``image_size``, padded at the bottom and right); default ``image_size``.

    Returns:
        one ``{"boxes": Tensor[K, 4] xyxy pixels, "scores": Tensor[K], "labels": Tensor[K]
        int64}`` per image, highest score first.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    B = _split_channels(predictions, num_classes)
    height, width = _image_size(image_size)
    for name, value in (("score_thresh", score_thresh), ("nms_thresh", nms_thresh)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
    detections_per_img = _positive_int(detections_per_img, "detections_per_img")
    N, S = predictions.shape[0], predictions.shape[1]
    if image_sizes is None:
        image_sizes = [(height, width)] * N
    if len(image_sizes) != N:
        raise ValueError(f"image_sizes must give one (height, width) per image: {N}, got {len(image_sizes)}")
    boxes = predictions[..., :5 * B].reshape(N, S, S, B, 5)
    xyxy = yolo_boxes(boxes[..., :4], (height, width)).reshape(N, S * S * B, 4)
    # Every (box, class) pair is a candidate: index box * C + c, in the order of `scores`.
    scores = boxes[..., 4, None] * predictions[..., None, 5 * B:]              # [N, S, S, B, C]
    scores = scores.reshape(N, S * S * B * num_classes)
    label = torch.arange(1, num_classes + 1, device=predictions.device).repeat(S * S * B)
    results = []
    for n in range(N):
        clipped = clip_boxes_to_image(xyxy[n], image_sizes[n])
        candidates = clipped[:, None].expand(-1, num_classes, -1).reshape(-1, 4)
        score = scores[n]
        keep = torch.where(score > score_thresh)[0]
        candidates, score, cls = candidates[keep], score[keep], label[keep]
        keep = batched_nms(candidates, score, cls, nms_thresh)[:detections_per_img]
        results.append({"boxes": candidates[keep], "scores": score[keep], "labels": cls[keep]})
    return results


# -- the network -----------------------------------------------------------------------------------
class YOLOHead(nn.Module):
    """Backbone features → raw ``[N, S, S, 5B + C]`` (before the activations).

    * ``kind="conv"`` (default): 3×3 conv + leaky ReLU on the feature map, adaptive max pooling
      to ``S × S`` (a small lesion's strongest response survives the pooling), 3×3 conv + leaky
      ReLU, 1×1 conv to ``5B + C`` per cell — fully convolutional, as YOLO v2 and later: each
      cell sees its neighbourhood, and the head has few weights, which suits small data sets;
    * ``kind="fc"``: the paper's head: adaptive average pooling to ``S × S``, flatten, a fully
      connected layer (``hidden``; the paper: 4096) + leaky ReLU + dropout 0.5, a fully
      connected layer to ``S·S·(5B + C)`` — every cell sees the whole image.

    The last layer's biases start at a low confidence (sigmoid ≈ 0.01: most of the ``S·S·B``
    predictors hold no object) and a box of about a tenth of the image, so the first updates go
    to the few responsible predictors instead of silencing hundreds of confident empty ones.
    """

    def __init__(self, in_channels: int, grid_size: int, boxes_per_cell: int, num_classes: int, *,
                 kind: str = "conv", hidden: int = 64) -> None:
        super().__init__()
        if kind not in ("conv", "fc"):
            raise ValueError(f"kind must be 'conv' or 'fc', got {kind!r}")
        self.kind, self.grid_size = kind, grid_size
        self.boxes_per_cell, self.num_classes = boxes_per_cell, num_classes
        depth = 5 * boxes_per_cell + num_classes
        if kind == "conv":
            self.layers = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 3, padding=1), nn.LeakyReLU(0.1),
                nn.AdaptiveMaxPool2d(grid_size),
                nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1))
            self.predictor = nn.Conv2d(hidden, depth, 1)
        else:
            self.layers = nn.Sequential(
                nn.AdaptiveAvgPool2d(grid_size), nn.Flatten(),
                nn.Linear(in_channels * grid_size ** 2, hidden), nn.LeakyReLU(0.1), nn.Dropout(0.5))
            self.predictor = nn.Linear(hidden, grid_size ** 2 * depth)
        with torch.no_grad():
            bias = self.predictor.bias.view(-1, depth) if kind == "fc" else self.predictor.bias.view(1, depth)
            bias.zero_()
            for b in range(boxes_per_cell):
                bias[:, 5 * b + 2:5 * b + 4] = -2.2        # sigmoid: w, h ≈ 0.1 of the image
                bias[:, 5 * b + 4] = -4.6                  # sigmoid: confidence ≈ 0.01

    def forward(self, features: Tensor) -> Tensor:
        S = self.grid_size
        out = self.predictor(self.layers(features))
        if self.kind == "conv":
            return out.permute(0, 2, 3, 1)                # [N, depth, S, S] → [N, S, S, depth]
        return out.view(features.shape[0], S, S, -1)


class YOLOv1(nn.Module):
    """YOLO v1 (Redmon et al. 2016) with any backbone; the interface of the course's detectors.

    Args:
        backbone: ``nn.Module`` image batch → feature map (a tensor or a one-entry dict), with
            attribute ``out_channels`` (as for :class:`~dlmi.detect.FasterRCNN`).
        num_classes: ``C``, the object classes **without** the background (YOLO has no
            background class: "no object" is a low confidence). Target labels are ``1..C``,
            as in torchvision; predicted labels too.
        image_size: ``int`` or ``(height, width)``: the size the grid covers. Images may be
            smaller (they are padded at the bottom and right, their detections clipped to them),
            not larger.
        grid_size: ``S`` (paper: 7 for 448×448 images); must divide the image size.
        boxes_per_cell: ``B`` (paper: 2).
        lambda_coord, lambda_noobj, rescore: the loss (:func:`yolo_loss`).
        score_thresh, nms_thresh, detections_per_img: inference (:func:`decode_yolo`).
        head: ``"conv"``, ``"fc"`` (:class:`YOLOHead`) or your own module features →
            ``[N, S, S, 5B + C]`` raw outputs.
        hidden: width of the head's hidden layer.

    ``model(images, targets)`` in training mode returns the five loss terms (their sum is the
    loss to minimise); ``model(images)`` in eval mode a list of ``{"boxes", "scores",
    "labels"}``; :meth:`predict_grid` the activated grid itself (to draw it).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, image_size, grid_size: int = 7,
                 boxes_per_cell: int = 2, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
                 rescore: bool = True, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, head: str | nn.Module = "conv", hidden: int = 64) -> None:
        super().__init__()
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.grid_size, self.image_size = _check_grid(grid_size, image_size)
        self.boxes_per_cell = _positive_int(boxes_per_cell, "boxes_per_cell")
        self.backbone = backbone
        if isinstance(head, str):
            head = YOLOHead(_out_channels(backbone), self.grid_size, self.boxes_per_cell,
                            self.num_classes, kind=head, hidden=_positive_int(hidden, "hidden"))
        elif not isinstance(head, nn.Module):
            raise TypeError(f"head must be 'conv', 'fc' or an nn.Module, got {type(head).__name__}")
        self.head = head
        self.lambda_coord, self.lambda_noobj, self.rescore = lambda_coord, lambda_noobj, rescore
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img = detections_per_img

    def _batch(self, images) -> tuple[Tensor, list]:
        batch, sizes = batch_images(images)
        height, width = self.image_size
        if batch.shape[-2] > height or batch.shape[-1] > width:
            raise ValueError(f"images must be at most {height} x {width} (the model's image_size), got "
                             f"{batch.shape[-2]} x {batch.shape[-1]}: resize them first")
        if batch.shape[-2:] != (height, width):
            batch = F.pad(batch, (0, width - batch.shape[-1], 0, height - batch.shape[-2]))
        return batch, sizes

    def activate(self, raw: Tensor) -> Tensor:
        """Raw head output ``[N, S, S, 5B + C]`` → sigmoid on ``x, y, w, h, confidence``,
        softmax over the class scores (see the module docstring)."""
        B = self.boxes_per_cell
        boxes = torch.sigmoid(raw[..., :5 * B])
        classes = torch.softmax(raw[..., 5 * B:], dim=-1)
        return torch.cat((boxes, classes), dim=-1)

    def predict_grid(self, images) -> Tensor:
        """The activated grid ``[N, S, S, 5B + C]`` for a list (or batch) of images."""
        batch, _ = self._batch(images)
        return self._grid(batch)

    def _grid(self, batch: Tensor) -> Tensor:
        raw = self.head(backbone_features(self.backbone, batch))
        S, depth = self.grid_size, 5 * self.boxes_per_cell + self.num_classes
        if raw.shape[1:] != (S, S, depth):
            raise ValueError(f"the head must return [N, {S}, {S}, {depth}] (S, S, 5B + C), got {_shape(raw)}")
        return self.activate(raw)

    def forward(self, images, targets: list[dict] | None = None):
        """Training: ``model(images, targets)`` → ``{"loss_xy", "loss_wh", "loss_obj",
        "loss_noobj", "loss_class"}``. Eval: ``model(images)`` → one ``{"boxes", "scores",
        "labels"}`` per image."""
        batch, sizes = self._batch(images)
        if self.training:
            targets = check_targets(targets, len(sizes), self.num_classes + 1)
        predictions = self._grid(batch)
        if self.training:
            encoded = encode_yolo_targets(targets, self.grid_size, self.num_classes, self.image_size)
            return yolo_loss(predictions, encoded.to(predictions), lambda_coord=self.lambda_coord,
                             lambda_noobj=self.lambda_noobj, rescore=self.rescore)
        return decode_yolo(predictions, self.num_classes, self.image_size, score_thresh=self.score_thresh,
                           nms_thresh=self.nms_thresh, detections_per_img=self.detections_per_img,
                           image_sizes=sizes)

"""Boxes: the representation every detector shares (lecture unit 10, R-CNN section).

A box is four numbers ``(x1, y1, x2, y2)`` in pixels, top-left and bottom-right corner
("xyxy"), stored as a float tensor of shape ``[N, 4]``, the convention of torchvision and of
R-CNN (Girshick et al. 2014). The COCO toolkit (Lin et al. 2014) stores ``(x, y, w, h)`` instead
and the regression targets of Fast/Faster R-CNN (Girshick 2015; Ren et al. 2015) use centres and
sizes ``(cx, cy, w, h)``: :func:`box_convert` moves between the three.

The overlap measure of the whole lecture is the intersection over union (Jaccard index)

    IoU(A, B) = |A ∩ B| / |A ∪ B| = inter / (area(A) + area(B) - inter),

computed here for every pair of two sets of boxes at once by broadcasting ``[N, 1]`` against
``[M]``: :func:`box_iou` returns the ``[N, M]`` matrix, the same numbers as
``torchvision.ops.box_iou``.

Every public function checks its input (:func:`check_boxes`) and says what it expected and what
it got: a box with ``x2 < x1`` or a NaN is a bug upstream, and finding it here is cheaper than
finding a silently wrong mAP three notebooks later. Empty inputs (``[0, 4]``) are fine and give
empty results, as in torchvision.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_boxes", "box_area", "box_iou", "box_convert", "clip_boxes_to_image",
    "remove_small_boxes", "BOX_FORMATS",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_boxes(boxes, name: str = "boxes", *, floating: bool = False, batched: bool = False,
                ordered: bool = True) -> Tensor:
    """Check that ``boxes`` is a real tensor of shape ``[N, 4]`` of finite ``x1 <= x2, y1 <= y2``.

    Args:
        boxes: the tensor to check.
        name: how the error messages call it.
        floating: require a floating-point dtype (NMS, RoI pooling and the box coder compute
            fractions; IoU and areas also accept integer pixel boxes, as torchvision does).
        batched: allow leading batch dimensions, ``[..., N, 4]``.
        ordered: require ``x1 <= x2`` and ``y1 <= y2`` (only a box in another format than xyxy
            skips this, and is checked after conversion).

    Returns:
        ``boxes`` itself, unchanged.

    Raises:
        TypeError: not a tensor, or a bool/complex (or, with ``floating``, an integer) dtype.
        ValueError: wrong shape, a NaN or infinite coordinate, or a box with ``x2 < x1`` or
            ``y2 < y1``; the message names the first offending row.
    """
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, 4] (x1, y1, x2, y2), "
                        f"got {type(boxes).__name__}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise TypeError(f"{name} must hold real pixel coordinates, got dtype {boxes.dtype}")
    if floating and not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64 pixel "
                        f"coordinates), got dtype {boxes.dtype}")
    if boxes.ndim < 2 or boxes.shape[-1] != 4 or (boxes.ndim > 2 and not batched):
        expected = "[..., N, 4]" if batched else "[N, 4]"
        raise ValueError(f"{name} must have shape {expected} (x1, y1, x2, y2), got {_shape(boxes)}")
    if boxes.numel() == 0:
        return boxes
    rows = boxes.reshape(-1, 4)
    if boxes.is_floating_point():
        bad = ~torch.isfinite(rows).all(dim=1)
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} must be finite, but row {i} is {rows[i].tolist()} "
                             f"({int(bad.sum())} rows with NaN or inf)")
    if ordered:
        bad = (rows[:, 2] < rows[:, 0]) | (rows[:, 3] < rows[:, 1])
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name} must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, but row "
                             f"{i} is {rows[i].tolist()} ({int(bad.sum())} such rows; boxes in "
                             f"(x, y, w, h) format? convert them with box_convert)")
    return boxes


def _check_format(fmt, name="fmt") -> str:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    return fmt


def _upcast(t: Tensor) -> Tensor:
    # Areas of large boxes overflow float16 and int16, so products are taken in a wider type.
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``"xyxy"`` (corners), ``"xywh"`` (corner + size, the COCO format)
    and ``"cxcywh"`` (centre + size, what R-CNN's regression targets are written in).

    Args:
        boxes: ``Tensor[..., 4]``.
        in_fmt, out_fmt: one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.

    Returns:
        ``Tensor[..., 4]`` in ``out_fmt`` (the input itself when the formats agree).
    """
    _check_format(in_fmt, "in_fmt")
    _check_format(out_fmt, "out_fmt")
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a torch.Tensor of shape [..., 4], got {type(boxes).__name__}")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [..., 4], got {_shape(boxes)}")
    if in_fmt == out_fmt:
        return boxes
    a, b, c, d = boxes.unbind(-1)
    # Every conversion goes through corners: two small formulas instead of six.
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        return torch.stack((x1, y1, x2, y2), dim=-1)
    if out_fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def _as_xyxy(boxes, fmt: str, name: str, batched: bool) -> Tensor:
    _check_format(fmt)
    check_boxes(boxes, name, batched=batched, ordered=(fmt == "xyxy"))
    if fmt == "xyxy":
        return boxes
    sizes = boxes.reshape(-1, 4)[:, 2:]
    if sizes.numel() and (sizes < 0).any():
        i = int((sizes < 0).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name} in {fmt!r} format must have non-negative width and height, but "
                         f"row {i} is {boxes.reshape(-1, 4)[i].tolist()}")
    return box_convert(boxes, fmt, "xyxy")


def box_area(boxes: Tensor, fmt: str = "xyxy") -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box.

    Args:
        boxes: ``Tensor[..., N, 4]`` in format ``fmt``.

    Returns:
        ``Tensor[..., N]`` (float32/float64, or int32/int64 for integer boxes).
    """
    boxes = _upcast(_as_xyxy(boxes, fmt, "boxes", batched=True))
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas of checked xyxy boxes, ``[..., N, M]`` each.

    The coordinates are taken apart into contiguous columns so that every step is one
    elementwise operation on an ``[N, M]`` grid (broadcasting ``[N, 1]`` against ``[M]``).
    """
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    x1a, y1a, x2a, y2a = (c.unsqueeze(-1) for c in boxes1.unbind(-1))    # [..., N, 1]
    x1b, y1b, x2b, y2b = (c.unsqueeze(-2) for c in boxes2.unbind(-1))    # [..., 1, M]
    area1 = (x2a - x1a) * (y2a - y1a)
    area2 = (x2b - x1b) * (y2b - y1b)
    # Disjoint boxes give a negative overlap along some axis: clamping it to 0 makes the product 0.
    width = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp(min=0)
    height = (torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)).clamp(min=0)
    inter = width * height
    union = area1 + area2 - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor, fmt: str = "xyxy") -> Tensor:
    """Intersection over union of every box in ``boxes1`` with every box in ``boxes2``.

    The overlap criterion of R-CNN's training labels (Girshick et al. 2014), of NMS and of the
    PASCAL VOC / COCO evaluations (Everingham et al. 2010; Lin et al. 2014).

    Args:
        boxes1: ``Tensor[..., N, 4]``.
        boxes2: ``Tensor[..., M, 4]`` (same leading dimensions, or broadcastable).
        fmt: ``"xyxy"`` (default), ``"xywh"`` or ``"cxcywh"``.

    Returns:
        ``Tensor[..., N, M]`` of IoUs in ``[0, 1]``, float (integer boxes give float32). Two
        zero-area boxes at the same place have IoU ``0 / 0 = nan``, as in torchvision.
    """
    boxes1 = _as_xyxy(boxes1, fmt, "boxes1", batched=True)
    boxes2 = _as_xyxy(boxes2, fmt, "boxes2", batched=True)
    inter, union = _inter_union(boxes1, boxes2)
    return inter / union


def clip_boxes_to_image(boxes: Tensor, size) -> Tensor:
    """Clamp xyxy boxes to the image ``size = (height, width)``: x into ``[0, width]``, y into
    ``[0, height]``. Used on decoded proposals (Ren et al. 2015, §3.1.3).

    Args:
        boxes: ``Tensor[..., 4]``.
        size: ``(height, width)`` of the image in pixels.

    Returns:
        ``Tensor[..., 4]`` of the same shape.
    """
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise TypeError(f"size must be (height, width), got {size!r}")
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {tuple(size)}")
    check_boxes(boxes, batched=True)
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, ascending) of the boxes whose width and height are both ``>= min_size``.

    Faster R-CNN drops such slivers from the proposals before NMS (Ren et al. 2015).
    """
    check_boxes(boxes)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, float)):
        raise TypeError(f"min_size must be a number, got {type(min_size).__name__}")
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]

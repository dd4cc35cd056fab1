"""From what the user passes to what a detector computes on (lecture unit 10).

Detectors take a *list* of images of possibly different sizes (torchvision's convention) or one
batched tensor. :func:`batch_images` pads them into one ``[N, C, H, W]`` batch (zeros at the
bottom and right, so pixel coordinates do not move) and remembers each image's own size, which
is where its boxes get clipped. :func:`check_targets` checks the training targets once, with a
clear message, before any loss sees them: a wrong box format or an out-of-range label otherwise
surfaces as a silent garbage loss or a CUDA assert several calls later.

Unlike ``torchvision``'s ``GeneralizedRCNNTransform`` there is no resizing and no normalisation
inside the model: the course's images are already small and normalised by their dataset.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import check_boxes

__all__ = ["batch_images", "check_targets"]


def batch_images(images, size_divisible: int = 1, channels: int | None = None) -> tuple[Tensor, list]:
    """Pad a list of ``(C, H, W)`` float images (or take a ``[N, C, H, W]`` float tensor).

    Args:
        images: list/tuple of ``Tensor[C, H, W]`` or one ``Tensor[N, C, H, W]``, floating point.
        size_divisible: round the padded height and width up to a multiple of this.
        channels: if given, the number of channels every image must have.

    Returns:
        ``(batch [N, C, H_max, W_max], image_sizes [(h, w), ...])``.

    Raises:
        TypeError: not tensors, or not floating point.
        ValueError: wrong rank, channel count, an empty list or an empty image.
    """
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"images as one tensor must be [N, C, H, W], got shape {list(images.shape)} "
                             f"(a single image? pass [image] or image[None])")
        images = list(images.unbind(0))
    elif not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of Tensor[C, H, W] or a Tensor[N, C, H, W], "
                        f"got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images must hold at least one image")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"images[{i}] must be a torch.Tensor [C, H, W], got {type(image).__name__}")
        if image.ndim != 3:
            raise ValueError(f"images[{i}] must have shape [C, H, W], got {list(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"images[{i}] must be a floating-point tensor (e.g. image.float() / 255), "
                            f"got dtype {image.dtype}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"images[{i}] is empty: shape {list(image.shape)}")
        if channels is not None and image.shape[0] != channels:
            raise ValueError(f"images[{i}] must have {channels} channel(s), got {image.shape[0]}")
        if image.shape[0] != images[0].shape[0]:
            raise ValueError(f"all images need the same number of channels, got {images[0].shape[0]} "
                             f"and {image.shape[0]} (images[{i}])")
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    step = max(int(size_divisible), 1)
    height, width = -(-height // step) * step, -(-width // step) * step
    if all(s == (height, width) for s in sizes):
        return torch.stack(list(images)), sizes
    batch = torch.stack([F.pad(im, (0, width - im.shape[2], 0, height - im.shape[1])) for im in images])
    return batch, sizes


def check_targets(targets, count: int, num_classes: int) -> list[dict]:
    """Check training targets: one dict per image with ``boxes`` float ``[G, 4]`` xyxy and
    ``labels`` int ``[G]`` in ``1..num_classes-1`` (0 is the background).

    Returns:
        the targets as a list, boxes as float and labels as int64 (no copies when already so).
    """
    if targets is None:
        raise ValueError("in training mode the model needs targets: model(images, targets); "
                         "call model.eval() to predict")
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts (one per image), got {type(targets).__name__}")
    if len(targets) != count:
        raise ValueError(f"got {count} images but {len(targets)} targets: need one target dict per image")
    checked = []
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping):
            raise TypeError(f"targets[{i}] must be a dict with 'boxes' and 'labels', got {type(target).__name__}")
        missing = [k for k in ("boxes", "labels") if k not in target]
        if missing:
            raise ValueError(f"targets[{i}] is missing {missing}: each target needs 'boxes' "
                             f"(Tensor[G, 4] xyxy pixels) and 'labels' (Tensor[G] int64)")
        boxes, labels = target["boxes"], target["labels"]
        check_boxes(boxes, f"targets[{i}]['boxes']", floating=True)
        if not isinstance(labels, Tensor):
            raise TypeError(f"targets[{i}]['labels'] must be a torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"targets[{i}]['labels'] must be an integer tensor, got dtype {labels.dtype}")
        if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"targets[{i}]['labels'] must have shape [{boxes.shape[0]}] (one per box), "
                             f"got {list(labels.shape)}")
        if labels.numel() and (labels.min() < 1 or labels.max() >= num_classes):
            raise ValueError(f"targets[{i}]['labels'] must lie in 1..{num_classes - 1} (0 is the "
                             f"background; num_classes={num_classes} counts it), got "
                             f"{sorted(set(labels.tolist()))}")
        checked.append({**target, "boxes": boxes, "labels": labels.long()})
    return checked

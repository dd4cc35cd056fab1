"""Anchors: the k reference boxes at every feature-map location of Faster R-CNN (unit 10).

Faster R-CNN's region proposal network (Ren et al. 2015, §3.1) slides over the backbone's
feature map and, at each location, scores and refines ``k`` reference boxes ("anchors") of
several sizes and aspect ratios centred there (3 sizes × 3 ratios = 9 in the paper). Generating
them is pure tensor arithmetic:

1. ``k`` *cell anchors* centred at the origin: for size ``s`` and ratio ``r = h / w``, a box of
   width ``s / sqrt(r)`` and height ``s * sqrt(r)`` (so its area stays ``s²``), rounded to
   whole pixels;
2. the centres of all ``H × W`` locations of a feature map, ``(x, y) = (j·stride_x, i·stride_y)``
   with ``stride = image size // feature-map size``;
3. every centre plus every cell anchor: a broadcast ``[H·W, 1, 4] + [1, k, 4]``, flattened
   location-major, so anchor ``a`` of location ``(i, j)`` sits at row ``(i·W + j)·k + a``.

:class:`AnchorGenerator` is an ``nn.Module`` with the interface of
``torchvision.models.detection.anchor_utils.AnchorGenerator`` (and so can stand in for it) and
gives the same anchors. It accepts torchvision's ``ImageList`` or a plain ``[N, C, H, W]``
image batch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator"]


def _positive_numbers(values, name: str) -> tuple:
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty tuple of numbers, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must hold finite positive numbers, got {tuple(values)}")
    return tuple(values)


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps.

    Args:
        sizes: one tuple of anchor sizes (pixels, the square root of the anchor area) per
            feature map, e.g. ``((32, 64, 128),)``; a flat tuple means one size per feature map.
        aspect_ratios: one tuple of height/width ratios per feature map, e.g.
            ``((0.5, 1.0, 2.0),)``; a flat tuple is used for every feature map.

    Feature map ``i`` gets ``len(sizes[i]) * len(aspect_ratios[i])`` anchors per location.
    """

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)) -> None:
        super().__init__()
        if not isinstance(sizes, (tuple, list)) or len(sizes) == 0:
            raise ValueError(f"sizes must be a non-empty tuple (of tuples) of sizes, got {sizes!r}")
        if not isinstance(sizes[0], (tuple, list)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios, (tuple, list)) or len(aspect_ratios) == 0:
            raise ValueError(f"aspect_ratios must be a non-empty tuple (of tuples), got {aspect_ratios!r}")
        if not isinstance(aspect_ratios[0], (tuple, list)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"sizes and aspect_ratios need one entry per feature map each, got "
                             f"{len(sizes)} and {len(aspect_ratios)}")
        self.sizes = tuple(_positive_numbers(s, "sizes") for s in sizes)
        self.aspect_ratios = tuple(_positive_numbers(a, "aspect_ratios") for a in aspect_ratios)
        self.cell_anchors = [self.generate_anchors(s, a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def generate_anchors(self, scales, aspect_ratios, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu") -> Tensor:
        """Zero-centred anchors, ``Tensor[len(aspect_ratios) * len(scales), 4]``, ratio-major."""
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        # r = h / w with h * w = s²  =>  h = s·sqrt(r), w = s / sqrt(r)
        height_factor = torch.sqrt(ratios)
        width_factor = 1 / height_factor
        widths = (width_factor[:, None] * scales[None, :]).reshape(-1)
        heights = (height_factor[:, None] * scales[None, :]).reshape(-1)
        return (torch.stack((-widths, -heights, widths, heights), dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        """``k`` for each feature map."""
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes, strides) -> list[Tensor]:
        """Anchors of every location of each feature map.

        Args:
            grid_sizes: ``(H_i, W_i)`` of each feature map.
            strides: ``(stride_y, stride_x)`` in image pixels per feature-map cell, each.

        Returns:
            list of ``Tensor[H_i * W_i * k_i, 4]``.
        """
        if not (len(grid_sizes) == len(strides) == len(self.cell_anchors)):
            raise ValueError(f"got {len(grid_sizes)} feature maps but anchors for "
                             f"{len(self.cell_anchors)}: sizes and aspect_ratios need one entry "
                             f"per feature map")
        anchors = []
        for (height, width), (stride_y, stride_x), cell in zip(grid_sizes, strides, self.cell_anchors):
            xs = torch.arange(0, int(width), dtype=torch.int32, device=cell.device) * stride_x
            ys = torch.arange(0, int(height), dtype=torch.int32, device=cell.device) * stride_y
            centre_y, centre_x = torch.meshgrid(ys, xs, indexing="ij")
            centre_x, centre_y = centre_x.reshape(-1), centre_y.reshape(-1)
            shifts = torch.stack((centre_x, centre_y, centre_x, centre_y), dim=1)
            anchors.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return anchors

    def forward(self, image_list, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors for each image of the batch.

        Args:
            image_list: torchvision ``ImageList`` (``.tensors [N, C, H, W]``, ``.image_sizes``)
                or an image batch ``Tensor[N, C, H, W]``.
            feature_maps: list of ``Tensor[N, C_i, H_i, W_i]``, one per entry of ``sizes``.

        Returns:
            list (one per image) of ``Tensor[sum_i H_i * W_i * k_i, 4]`` xyxy anchors in image
            pixels, in the dtype and on the device of the feature maps.
        """
        if isinstance(image_list, Tensor):
            images, count = image_list, (image_list.shape[0] if image_list.ndim == 4 else None)
        elif hasattr(image_list, "tensors") and hasattr(image_list, "image_sizes"):
            images, count = image_list.tensors, len(image_list.image_sizes)
        else:
            raise TypeError(f"image_list must be an ImageList or a Tensor[N, C, H, W], got "
                            f"{type(image_list).__name__}")
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise ValueError(f"images must be a Tensor[N, C, H, W], got shape "
                             f"{list(getattr(images, 'shape', []))}")
        if not isinstance(feature_maps, (list, tuple)) or not feature_maps \
                or not all(isinstance(f, Tensor) for f in feature_maps):
            raise TypeError("feature_maps must be a non-empty list of Tensor[N, C, H, W]")
        for f in feature_maps:
            if f.ndim != 4:
                raise ValueError(f"each feature map must be a Tensor[N, C, H, W], got shape {list(f.shape)}")
            if not f.is_floating_point():
                raise TypeError(f"feature maps must be floating point, got dtype {f.dtype}")
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(f"got {len(feature_maps)} feature maps but anchors for "
                             f"{len(self.cell_anchors)}: sizes and aspect_ratios need one entry "
                             f"per feature map")
        image_height, image_width = images.shape[-2:]
        grid_sizes = [tuple(f.shape[-2:]) for f in feature_maps]
        for h, w in grid_sizes:
            if h > image_height or w > image_width or h == 0 or w == 0:
                raise ValueError(f"a feature map of {h}x{w} cells cannot come from a "
                                 f"{image_height}x{image_width} image")
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [(torch.tensor(image_height // h, dtype=torch.int64, device=device),
                    torch.tensor(image_width // w, dtype=torch.int64, device=device))
                   for h, w in grid_sizes]
        self.cell_anchors = [c.to(dtype=dtype, device=device) for c in self.cell_anchors]
        levels = self.grid_anchors(grid_sizes, strides)
        # Every image of the padded batch shares the grid, hence the same anchors (one copy
        # each, so that a caller editing one image's anchors does not edit the others').
        return [torch.cat(levels) for _ in range(count)]

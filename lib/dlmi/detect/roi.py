"""RoI pooling and RoI align: a fixed-size feature for every region (lecture unit 10).

R-CNN warps every proposal to 227×227 pixels and runs the CNN once per proposal (Girshick et
al. 2014). Fast R-CNN runs the CNN once per *image* and cuts each proposal's features out of the
shared feature map with **RoI pooling** (Girshick 2015, §2.1): the proposal, scaled to the
feature map and rounded to whole cells, is split into an ``H × W`` grid of bins (7 × 7 for
VGG16) and each bin is max-pooled. The rounding shifts the region by up to half a cell, a
whole 16 pixels of the image for a stride-16 backbone; **RoI align** (He et al. 2017, Mask
R-CNN) removes it: no rounding, each bin is the average of ``sampling_ratio²`` bilinearly
interpolated points, so the output is a smooth function of the feature map.

Both are vectorised over RoIs and bins; the only loop is over chunks of RoIs, to bound memory:

* ``roi_pool`` gathers every bin's cells (padded to the largest bin by repeating a cell of the
  same bin, which changes no maximum) and takes the maximum;
* ``roi_align`` uses that bilinear interpolation is *separable*: the weight of cell ``(y, x)``
  for a sample point is ``w_y(y) · w_x(x)``, and averaging over a bin's grid of sample points
  keeps it separable. So RoI ``k`` is two small matrix products on the window ``F_k`` of cells
  it reads, ``out_k = A_y(k) · F_k · A_x(k)ᵀ``, with ``A_y(k)`` of shape ``[out_h, window
  height]`` holding each bin's averaged interpolation weights along y (likewise ``A_x``).
  Linear in ``F``, hence autograd gives exactly the gradient torchvision's kernel scatters back.

Arguments and results are those of ``torchvision.ops.roi_pool`` / ``roi_align`` (boxes as
``Tensor[K, 5]`` of ``(batch index, x1, y1, x2, y2)`` or a list of per-image ``Tensor[L, 4]``;
``spatial_scale`` maps image pixels to feature-map cells, e.g. 1/16). As in torchvision, no
gradient flows to the boxes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .boxes import _shape, check_boxes

__all__ = ["roi_pool", "roi_align", "RoIPool", "RoIAlign"]

# Largest intermediate (elements) one chunk of RoIs may create.
_CHUNK_ELEMENTS = 1 << 23


# -- argument checks -----------------------------------------------------------------------------
def _check_input(input) -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a feature map Tensor[N, C, H, W], got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point feature map, got dtype {input.dtype}")
    if input.ndim != 4:
        raise ValueError(f"input must be a feature map Tensor[N, C, H, W], got shape {_shape(input)}")
    return input


def _pair(output_size) -> tuple[int, int]:
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if (not isinstance(output_size, (tuple, list, torch.Size)) or len(output_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in output_size)):
        raise TypeError(f"output_size must be an int or (height, width) ints, got {output_size!r}")
    if min(output_size) <= 0:
        raise ValueError(f"output_size must be positive, got {tuple(output_size)}")
    return int(output_size[0]), int(output_size[1])


def _check_scale(spatial_scale) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)):
        raise TypeError(f"spatial_scale must be a number, got {type(spatial_scale).__name__}")
    if not math.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(f"spatial_scale must be finite and positive (e.g. 1/16), got {spatial_scale}")
    return float(spatial_scale)


def _as_rois(boxes, input: Tensor) -> Tensor:
    """``Tensor[K, 5]`` rows ``(batch index, x1, y1, x2, y2)`` in the input's dtype and device."""
    batch = input.shape[0]
    if isinstance(boxes, (list, tuple)):
        if len(boxes) > batch:
            raise ValueError(f"boxes has {len(boxes)} per-image entries for a batch of {batch} images")
        parts = []
        for i, b in enumerate(boxes):
            check_boxes(b, f"boxes[{i}]", floating=True)
            b = b.to(dtype=input.dtype, device=input.device)
            parts.append(torch.cat((torch.full_like(b[:, :1], i), b), dim=1))
        if not parts:
            return input.new_zeros(0, 5)
        return torch.cat(parts)
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be a floating-point tensor, got dtype {boxes.dtype}")
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes as one tensor must have shape [K, 5] (batch index, x1, y1, x2, y2), "
                         f"got {_shape(boxes)}; pass a list of Tensor[L, 4] for per-image boxes")
    check_boxes(boxes[:, 1:], "boxes[:, 1:]")
    index = boxes[:, 0]
    bad = (index != index.floor()) | (index < 0) | (index >= batch) | ~torch.isfinite(index)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"boxes[:, 0] must be batch indices 0..{batch - 1}, but row {i} has {index[i].item()}")
    return boxes.to(dtype=input.dtype, device=input.device)


def _chunks(window: Tensor, per_cell: int):
    """Split RoI indices into chunks for the gathers below.

    RoIs are taken from the smallest window (``window[k]`` cells) to the largest, so that a
    chunk pads every RoI only to the largest window *of that chunk*, and each chunk is as large
    as keeps ``chunk size × its largest window × per_cell`` under ``_CHUNK_ELEMENTS``.
    """
    order = torch.argsort(window)
    sizes = window[order].clamp(min=1).tolist()
    chunks, start, n = [], 0, len(sizes)
    while start < n:
        # Largest end with (end - start) * sizes[end - 1] * per_cell within budget (monotone in end).
        lo, hi = start + 1, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if (mid - start) * sizes[mid - 1] * per_cell <= _CHUNK_ELEMENTS:
                lo = mid
            else:
                hi = mid - 1
        chunks.append(order[start:lo])
        start = lo
    return chunks


def _channels_last(input: Tensor) -> Tensor:
    # One row per feature-map cell holding all its channels: a gather of cells then copies
    # whole rows of C numbers.
    n, channels, height, width = input.shape
    return input.permute(0, 2, 3, 1).reshape(n * height * width, channels)


def _gather(cells: Tensor, index: Tensor) -> Tensor:
    """``cells[index]`` for an index tensor of any shape: ``[*index.shape, C]``."""
    return cells.index_select(0, index.reshape(-1)).reshape(*index.shape, cells.shape[1])


def _divide(x: Tensor, n: int) -> Tensor:
    """``x / n`` rounded as one IEEE division on every device.

    On CUDA, torch divides by a Python number by multiplying with its reciprocal, which can land
    one ulp away; under ``floor``/``ceil`` a bin edge then moves a whole cell (measured on an
    H200: 661 of 1,000 RoIs pooled differently from torchvision's kernel, which divides).
    """
    return x / torch.full_like(x, n)


# -- RoI pooling (Fast R-CNN) ---------------------------------------------------------------------
def _round_half_away(x: Tensor) -> Tensor:
    # C's round(): halves go away from zero (torch.round sends them to the even neighbour).
    truncated = x.trunc()
    return torch.where((x - truncated).abs() == 0.5, truncated + x.sign(), x.round())


def _bin_edges(start: Tensor, length: Tensor, bins: int, size: int, dtype) -> tuple[Tensor, Tensor]:
    """First and one-past-last cell of each bin along one axis, ``[K, bins]`` each, clipped to
    the feature map: bin ``p`` covers ``[floor(p·L/bins), ceil((p+1)·L/bins))`` from ``start``."""
    bin_size = _divide(length.to(dtype), bins)
    p = torch.arange(bins, dtype=dtype, device=start.device)
    lo = torch.floor(p * bin_size[:, None]).long() + start[:, None]
    hi = torch.ceil((p + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)


def _bin_cells(lo: Tensor, hi: Tensor, span: int, size: int) -> Tensor:
    """``[k, bins, span]`` cell indices of each bin, padded by repeating the bin's last cell."""
    steps = torch.arange(span, device=lo.device)
    return torch.minimum(lo[:, :, None] + steps, hi[:, :, None] - 1).clamp(0, size - 1)


def roi_pool(input: Tensor, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoI max pooling (Girshick 2015, Fast R-CNN §2.1).

    Args:
        input: feature map ``Tensor[N, C, H, W]``.
        boxes: ``Tensor[K, 5]`` rows ``(batch index, x1, y1, x2, y2)``, or a list of
            ``Tensor[L_i, 4]`` xyxy boxes, one per image; in image pixels.
        output_size: ``int`` or ``(out_h, out_w)``, the number of bins.
        spatial_scale: feature-map cells per image pixel (``1 / stride``).

    Returns:
        ``Tensor[K, C, out_h, out_w]``: the maximum of each bin, 0 for a bin that falls outside
        the feature map. Same as ``torchvision.ops.roi_pool``; the gradient goes to the first
        maximum of a bin in row-major order, as there.
    """
    _check_input(input)
    out_h, out_w = _pair(output_size)
    spatial_scale = _check_scale(spatial_scale)
    rois = _as_rois(boxes, input).detach()
    n, channels, height, width = input.shape
    empty = input.new_zeros(rois.shape[0], channels, out_h, out_w)
    if rois.shape[0] == 0 or channels == 0 or height == 0 or width == 0:
        return empty
    # The region snapped to whole cells (this rounding is what RoI align removes); at least one
    # cell wide and high.
    x1, y1, x2, y2 = (_round_half_away(rois[:, i] * spatial_scale).long() for i in range(1, 5))
    row_lo, row_hi = _bin_edges(y1, (y2 - y1 + 1).clamp(min=1), out_h, height, input.dtype)   # [K, out_h]
    col_lo, col_hi = _bin_edges(x1, (x2 - x1 + 1).clamp(min=1), out_w, width, input.dtype)    # [K, out_w]
    tall = (row_hi - row_lo).amax(1).clamp(min=1)           # largest bin of each RoI
    wide = (col_hi - col_lo).amax(1).clamp(min=1)
    outside = (row_hi <= row_lo)[:, :, None] | (col_hi <= col_lo)[:, None, :]    # [K, out_h, out_w]
    batch_index = rois[:, 0].long()
    cells = _channels_last(input)
    output = empty
    # The first maximum of a bin receives the gradient (Fast R-CNN eq. 4); without a gradient to
    # track, amax gives the same values an order of magnitude faster than max with indices.
    track = input.requires_grad and torch.is_grad_enabled()
    for chunk in _chunks(tall * wide, out_h * out_w * channels):
        rows = _bin_cells(row_lo[chunk], row_hi[chunk], int(tall[chunk].max()), height)   # [k, out_h, t]
        cols = _bin_cells(col_lo[chunk], col_hi[chunk], int(wide[chunk].max()), width)    # [k, out_w, w]
        flat = ((batch_index[chunk, None, None] * height + rows)[:, :, None, :, None] * width
                + cols[:, None, :, None, :])                                              # [k, oh, ow, t, w]
        # Each bin's cells in row-major order; the padding repeats a cell of the same bin and
        # comes after it, so it changes neither the maximum nor which cell is the first maximum.
        values = _gather(cells, flat.flatten(3))                                          # [k, oh, ow, t*w, C]
        best = values.max(dim=3).values if track else values.amax(dim=3)
        best = best.masked_fill(outside[chunk, :, :, None], 0)
        output.index_copy_(0, chunk, best.permute(0, 3, 1, 2))
    return output


# -- RoI align (Mask R-CNN) -----------------------------------------------------------------------
def _sample_position(start: Tensor, length: Tensor, bins: int, samples: Tensor, p, i) -> Tensor:
    """Point ``i`` of bin ``p``: ``start + p·bin + (i + 0.5)·bin / samples``, ``bin = length / bins``,
    with the arithmetic of torchvision's kernel so that every point lands on the same float."""
    bin_size = _divide(length, bins)
    return start + p * bin_size + (i + 0.5) * bin_size / samples.clamp(min=1).to(start.dtype)


def _axis_window(start: Tensor, length: Tensor, bins: int, samples: Tensor, size: int):
    """First cell and number of cells each RoI can read along one axis, ``[K]`` each: from the
    cell of its first point to the cell after its last (the points are in increasing order)."""
    first = _sample_position(start, length, bins, samples, 0.0, 0.0)
    last = _sample_position(start, length, bins, samples, float(bins - 1), (samples - 1).clamp(min=0).to(start.dtype))
    first = first.clamp(0, size - 1).floor().long()
    last = (last.clamp(0, size - 1).floor().long() + 1).clamp(max=size - 1)
    return first, (last - first + 1).clamp(min=1)


def _axis_weights(start: Tensor, length: Tensor, bins: int, samples: Tensor, size: int,
                  first: Tensor, span: int) -> Tensor:
    """``[k, bins, span]``: the weight of each cell of the RoI's window in each bin's average.

    A point reads the two cells around it, ``low`` and ``high = low + 1``, with bilinear
    weights ``1 - frac`` and ``frac``; the bin is the average of its points.
    """
    dtype, device = start.dtype, start.device
    count = samples.clamp(min=1).to(dtype)[:, None, None]
    p = torch.arange(bins, dtype=dtype, device=device)[None, :, None]
    i = torch.arange(max(int(samples.max()), 1), dtype=dtype, device=device)[None, None, :]
    position = _sample_position(start[:, None, None], length[:, None, None], bins,
                                samples[:, None, None], p, i)                       # [k, bins, G]
    # A point more than one cell outside the map reads nothing; the others are clamped onto
    # the border cells (a point in [-1, 0] reads cell 0, one in [size-1, size] the last cell).
    used = (i < samples[:, None, None]) & (position >= -1.0) & (position <= size)
    position = position.clamp(min=0)
    low = position.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, size - 1, low + 1)
    frac = torch.where(at_edge, 0.0, position - low)
    matrix = position.new_zeros(start.shape[0], bins, span)
    offset = first[:, None, None]
    # Unused points may fall outside the window; their weight is 0, so clamping them is harmless.
    matrix.scatter_add_(2, (low - offset).clamp(0, span - 1), torch.where(used, 1 - frac, 0.0) / count)
    matrix.scatter_add_(2, (high - offset).clamp(0, span - 1), torch.where(used, frac, 0.0) / count)
    return matrix


def roi_align(input: Tensor, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoI align with average pooling (He et al. 2017, Mask R-CNN §3).

    Args:
        input: feature map ``Tensor[N, C, H, W]``.
        boxes: ``Tensor[K, 5]`` rows ``(batch index, x1, y1, x2, y2)``, or a list of
            ``Tensor[L_i, 4]`` xyxy boxes, one per image; in image pixels.
        output_size: ``int`` or ``(out_h, out_w)``, the number of bins.
        spatial_scale: feature-map cells per image pixel (``1 / stride``).
        sampling_ratio: sample points per bin along each axis; ``<= 0`` means adaptive,
            ``ceil(roi size / output size)`` per RoI.
        aligned: shift the box by -0.5 cell so that pixel centres line up (Detectron2); without
            it (the original version) RoIs are also made at least 1×1 cell.

    Returns:
        ``Tensor[K, C, out_h, out_w]``, same as ``torchvision.ops.roi_align``.
    """
    _check_input(input)
    out_h, out_w = _pair(output_size)
    spatial_scale = _check_scale(spatial_scale)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise TypeError(f"sampling_ratio must be an int (<= 0 for adaptive), got {sampling_ratio!r}")
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be True or False, got {aligned!r}")
    rois = _as_rois(boxes, input).detach()
    n, channels, height, width = input.shape
    empty = input.new_zeros(rois.shape[0], channels, out_h, out_w)
    if rois.shape[0] == 0 or channels == 0 or height == 0 or width == 0:
        return empty
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        samples_y = samples_x = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        samples_y = torch.ceil(_divide(roi_h, out_h)).long()
        samples_x = torch.ceil(_divide(roi_w, out_w)).long()
    first_y, span_y = _axis_window(y1, roi_h, out_h, samples_y, height)
    first_x, span_x = _axis_window(x1, roi_w, out_w, samples_x, width)
    batch_index = rois[:, 0].long()
    cells = _channels_last(input)
    output = empty
    # Elements one RoI needs: its window and the two products (C each), and its sample points.
    cost = (channels * (span_y * span_x + out_h * span_x + out_h * out_w)
            + 8 * (out_h * samples_y.clamp(min=1) + out_w * samples_x.clamp(min=1)))
    for chunk in _chunks(cost, 1):
        k = chunk.shape[0]
        tall, wide = int(span_y[chunk].max()), int(span_x[chunk].max())
        weights_y = _axis_weights(y1[chunk], roi_h[chunk], out_h, samples_y[chunk], height,
                                  first_y[chunk], tall)                          # [k, out_h, tall]
        weights_x = _axis_weights(x1[chunk], roi_w[chunk], out_w, samples_x[chunk], width,
                                  first_x[chunk], wide)                          # [k, out_w, wide]
        rows = (first_y[chunk, None] + torch.arange(tall, device=input.device)).clamp(max=height - 1)
        cols = (first_x[chunk, None] + torch.arange(wide, device=input.device)).clamp(max=width - 1)
        flat = (batch_index[chunk, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
        window = _gather(cells, flat)                                            # [k, tall, wide, C]
        # Interpolate along y, then along x: two batched matrix products per chunk.
        along = torch.matmul(weights_y, window.reshape(k, tall, wide * channels))
        pooled = torch.matmul(weights_x[:, None], along.reshape(k, out_h, wide, channels))  # [k, oh, ow, C]
        output.index_copy_(0, chunk, pooled.permute(0, 3, 1, 2))
    return output


class RoIPool(nn.Module):
    """:func:`roi_pool` as a module (``output_size``, ``spatial_scale`` fixed at construction)."""

    def __init__(self, output_size, spatial_scale: float) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = _check_scale(spatial_scale)

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIAlign(nn.Module):
    """:func:`roi_align` as a module."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, aligned: bool = False) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = _check_scale(spatial_scale)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: Tensor, rois) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")

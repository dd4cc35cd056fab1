"""Slice stacks and nodule boxes from the synthetic CT volumes: detection data (lecture unit 10).

A 2-D detector reads one CT slice. On one slice a nodule and a vessel crossing the slice are
both small round soft-tissue blobs (:mod:`dlmi.data.ct`); the slices above and below tell them
apart — the vessel goes on, the nodule ends. So the CT detectors of unit 10 read a *stack* of
``2k + 1`` adjacent slices as ``2k + 1`` input channels (Yan et al. 2018, 3DCE: "3 slices as
the 3 channels of an image" and more around them as context) and predict the boxes of the
nodules cut by the **centre** slice, the one annotated.

* :func:`slice_stack` / :func:`volume_stacks` — the stack centred on one slice / on every slice.
  Near the first and last slices the stack runs past the volume: ``padding="edge"`` (default)
  repeats the end slice, as 3DCE does; ``"zeros"`` pads with zeros (air, after the lung
  window it is 0); ``None`` raises instead.
* :class:`CTSliceDataset` — ``(stack [2k+1, H, W], {"boxes", "labels"})`` for every slice of
  :class:`~dlmi.data.ct.CTVolumeDataset` volumes, the volumes generated once and kept; the
  volumes and their ground truth stay available for per-volume evaluation (FROC).

Targets follow torchvision: ``boxes`` float ``[G, 4]`` xyxy pixels of the nodules' cuts by the
centre slice (``truth["slice_boxes"]``), ``labels`` int64 ``[G]`` all 1 (nodule); a slice
without a nodule has ``boxes [0, 4]`` and ``labels [0]`` — a defined, valid target (every
detector of :mod:`dlmi.detect` trains on it as pure background).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .ct import CTVolumeDataset

__all__ = ["slice_stack", "volume_stacks", "CTSliceDataset", "BalancedSliceSampler", "PADDINGS"]

PADDINGS = ("edge", "zeros", None)


def _check_context(context) -> int:
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise ValueError(f"context must be an int >= 0 (slices on each side of the centre), got {context!r}")
    return int(context)


def _check_volume(volume) -> Tensor:
    if not isinstance(volume, Tensor):
        raise TypeError(f"volume must be a torch.Tensor [D, H, W] (or [D, 1, H, W]), got {type(volume).__name__}")
    if volume.ndim == 4 and volume.shape[1] == 1:
        volume = volume[:, 0]
    if volume.ndim != 3:
        raise ValueError(f"volume must have shape [D, H, W] or [D, 1, H, W], got {list(volume.shape)}")
    if not volume.is_floating_point():
        raise TypeError(f"volume must be floating point (e.g. windowed to [0, 1]), got dtype {volume.dtype}")
    if volume.shape[0] == 0:
        raise ValueError("volume has no slices")
    return volume


def _stack_indices(depth: int, centres: Tensor, context: int, padding) -> tuple[Tensor, Tensor]:
    """Slice indices ``[n, 2k+1]`` of the stacks centred on ``centres`` (clamped into the
    volume) and a mask of the entries that fell outside it."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    offsets = torch.arange(-context, context + 1)
    index = centres[:, None] + offsets[None, :]
    outside = (index < 0) | (index >= depth)
    if padding is None and bool(outside.any()):
        first = int(centres[outside.any(dim=1)][0])
        raise ValueError(f"the stack of 2*{context}+1 = {2 * context + 1} slices centred on slice {first} "
                         f"runs past a volume of {depth} slices; choose padding='edge' or 'zeros', or "
                         f"keep the centre in [{context}, {depth - 1 - context}]")
    return index.clamp(0, depth - 1), outside


def slice_stack(volume: Tensor, index: int, context: int, padding: str | None = "edge") -> Tensor:
    """The ``2k + 1`` slices centred on slice ``index``: ``Tensor[2k+1, H, W]``.

    Args:
        volume: ``Tensor[D, H, W]`` (or ``[D, 1, H, W]``, as :class:`~dlmi.data.ct.CTVolumeDataset`
            gives), floating point.
        index: the centre slice, ``0 <= index < D`` (negative counts from the end).
        context: ``k``, slices on each side.
        padding: ``"edge"`` repeats the first / last slice beyond the volume's ends, ``"zeros"``
            pads with zeros, ``None`` raises ``ValueError`` when the stack runs past an end.
    """
    volume = _check_volume(volume)
    context = _check_context(context)
    depth = volume.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    if not -depth <= index < depth:
        raise IndexError(f"slice {index} out of range for a volume of {depth} slices")
    return volume_stacks(volume, context, padding, centres=[int(index) % depth])[0]


def volume_stacks(volume: Tensor, context: int, padding: str | None = "edge", centres=None) -> Tensor:
    """The stack of every slice (or of ``centres``): ``Tensor[n, 2k+1, H, W]``, ready to be one
    batch of a detector (``n = D`` by default)."""
    volume = _check_volume(volume)
    context = _check_context(context)
    depth = volume.shape[0]
    centres = torch.arange(depth) if centres is None else torch.as_tensor(centres, dtype=torch.long).reshape(-1)
    index, outside = _stack_indices(depth, centres, context, padding)
    stacks = volume[index.to(volume.device)]                                    # [n, 2k+1, H, W]
    if padding == "zeros" and bool(outside.any()):
        stacks = stacks.masked_fill(outside.to(volume.device)[:, :, None, None], 0.0)
    return stacks


class CTSliceDataset(torch.utils.data.Dataset):
    """Every slice of ``n_volumes`` synthetic CT volumes as a detection example.

    Item ``i`` is ``(stack, target)``: ``stack`` float32 ``[2k+1, H, W]`` windowed to [0, 1]
    (the lung window by default), centred on slice ``self.index[i] = (volume, slice)``;
    ``target`` ``{"boxes": [G, 4], "labels": [G]}`` of the nodules that slice cuts.

    Args:
        n_volumes, seed, window, **volume_kwargs: as :class:`~dlmi.data.ct.CTVolumeDataset`
            (the same seed gives the same volumes).
        context: ``k``, slices on each side of the centre (``0``: single slices, the 2-D case).
        padding: see :func:`slice_stack`; with ``None`` only slices whose whole stack lies in
            the volume are items.

    Attributes:
        volumes: list of ``Tensor[D, H, W]``; truths: their :func:`~dlmi.data.ct.make_ct_volume`
        dicts; index: ``Tensor[len, 2]`` (volume, slice); positive: ``Tensor[len]`` bool,
        slices that cut a nodule.
    """

    def __init__(self, n_volumes: int, seed: int = 0, context: int = 1, padding: str | None = "edge",
                 window=(-600.0, 1500.0), **volume_kwargs) -> None:
        self.context = _check_context(context)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding
        source = CTVolumeDataset(n_volumes, seed=seed, window=window, **volume_kwargs)
        self.volumes, self.truths, rows = [], [], []
        for v in range(len(source)):
            volume, truth = source[v]
            self.volumes.append(volume[:, 0])
            self.truths.append(truth)
            lo, hi = (0, volume.shape[0]) if padding is not None else (self.context, volume.shape[0] - self.context)
            rows += [(v, k) for k in range(lo, hi)]
        if not rows:
            raise ValueError(f"no slice has a whole stack of {2 * self.context + 1} slices inside its volume; "
                             f"use padding='edge' or more slices")
        self.index = torch.tensor(rows, dtype=torch.long)
        self.positive = torch.tensor([len(self.truths[v]["slice_boxes"][k]) > 0 for v, k in rows])

    def __len__(self) -> int:
        return len(self.index)

    def target(self, volume: int, slice_: int) -> dict:
        boxes = self.truths[volume]["slice_boxes"][slice_]
        return {"boxes": boxes.clone(), "labels": torch.ones(len(boxes), dtype=torch.int64)}

    def __getitem__(self, i: int):
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        v, k = self.index[i].tolist()
        return slice_stack(self.volumes[v], k, self.context, self.padding), self.target(v, k)

    def balanced_indices(self, negatives_per_positive: float = 1.0, seed: int = 0) -> list[int]:
        """All slices with a nodule and a random ``negatives_per_positive`` times as many without:
        most slices show no nodule, and a detector trained on all of them mostly learns
        "background". The negatives are drawn anew for each ``seed`` (e.g. one per epoch)."""
        if not negatives_per_positive >= 0:
            raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}")
        positives = torch.where(self.positive)[0]
        negatives = torch.where(~self.positive)[0]
        count = min(int(round(negatives_per_positive * len(positives))), len(negatives))
        generator = torch.Generator().manual_seed(seed)
        chosen = negatives[torch.randperm(len(negatives), generator=generator)[:count]]
        return sorted(torch.cat([positives, chosen]).tolist())

    def __repr__(self) -> str:
        return (f"CTSliceDataset({len(self.volumes)} volumes, {len(self)} slices, "
                f"{int(self.positive.sum())} with nodules, stacks of {2 * self.context + 1})")


class BalancedSliceSampler(torch.utils.data.Sampler):
    """Indices of a :class:`CTSliceDataset` for one epoch: every slice with a nodule and
    ``negatives_per_positive`` times as many without, shuffled; each pass (epoch) draws new
    negatives and a new order, deterministically from ``seed``. Use as a DataLoader's sampler."""

    def __init__(self, dataset: CTSliceDataset, negatives_per_positive: float = 1.0, seed: int = 0) -> None:
        if not isinstance(dataset, CTSliceDataset):
            raise TypeError(f"dataset must be a CTSliceDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.negatives_per_positive = negatives_per_positive
        self.seed = int(seed)
        self.epoch = 0
        dataset.balanced_indices(negatives_per_positive, seed)  # checks the ratio now

    def __iter__(self):
        indices = self.dataset.balanced_indices(self.negatives_per_positive, self.seed + self.epoch)
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(self.seed + 7919 * (self.epoch + 1)))
        self.epoch += 1
        return iter([indices[i] for i in order.tolist()])

    def __len__(self) -> int:
        return len(self.dataset.balanced_indices(self.negatives_per_positive, self.seed))

"""A variable number of CT slices (lecture unit 05): a CNN per slice, then an RNN over the slices.

:class:`SliceSequenceClassifier` encodes every real slice of a padded batch of volumes
``(B, S, 1, H, W)`` with the same small 2-D CNN (:class:`SliceEncoder`), then summarises the
slice features along z with

- ``head="rnn"``: a (bidirectional) GRU reads the slice sequence with its mask, and its outputs
  are max-pooled over the real slices: each slice is judged in the context of its neighbours
  (a vessel runs through many slices, a nodule is a blob a few slices thick);
- ``head="max"`` / ``"mean"``: slice-wise pooling of the CNN features, no context between slices.

:class:`Fixed3DCNN` is the other classical answer: resample every volume to a fixed depth and run
a 3-D CNN. Padding never reaches a result: padded slices are not encoded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .classify import make_rnn
from .masking import check_lengths, masked_max, masked_mean

__all__ = ["SliceEncoder", "SliceSequenceClassifier", "Fixed3DCNN"]


def _check_volumes(volumes, lengths):
    if not isinstance(volumes, torch.Tensor) or volumes.ndim != 5:
        raise ValueError("volumes must be a padded batch (batch, slices, channels, H, W), got "
                         f"{getattr(volumes, 'shape', type(volumes).__name__)}")
    if volumes.shape[0] == 0 or volumes.shape[1] == 0:
        raise ValueError(f"volumes is empty: shape {tuple(volumes.shape)}")
    return check_lengths(lengths, volumes.shape[0], volumes.shape[1]).to(volumes.device)


class SliceEncoder(nn.Module):
    """Three conv(3x3)-BN-ReLU-maxpool(2) blocks and a global max pool: ``(N, C, H, W) -> (N, features)``.

    The global *max* keeps a small bright blob anywhere in the slice visible in the summary.
    """

    def __init__(self, in_channels: int = 1, channels: int = 8, features: int = 32):
        super().__init__()
        layers, c_in = [], in_channels
        for c_out in (channels, 2 * channels, 4 * channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, features)
        self.features = features

    def forward(self, x):
        return torch.relu(self.proj(self.body(x).amax(dim=(2, 3))))


class SliceSequenceClassifier(nn.Module):
    """Volume-level logits ``(B, n_outputs)`` from a padded batch of slice stacks and their lengths.

    ``head`` ``"rnn"`` (GRU over slices, ``bidirectional`` by default), ``"max"`` or ``"mean"``.
    ``slice_features(volumes, lengths)`` gives the per-slice summaries ``(B, S, features)``.
    """

    def __init__(self, n_outputs: int = 1, *, in_channels: int = 1, channels: int = 8, features: int = 32,
                 head: str = "rnn", units: int = 32, cell: str = "gru", bidirectional: bool = True,
                 fused: bool = True):
        super().__init__()
        if head not in ("rnn", "max", "mean"):
            raise ValueError(f"head must be 'rnn', 'max' or 'mean', got {head!r}")
        self.head = head
        self.encoder = SliceEncoder(in_channels, channels, features)
        if head == "rnn":
            self.rnn = make_rnn(cell, features, units, bidirectional=bidirectional, fused=fused)
            size = units * (2 if bidirectional else 1)
        else:
            self.rnn, size = None, features
        self.out = nn.Linear(size, n_outputs)

    def slice_features(self, volumes, lengths):
        lengths = _check_volumes(volumes, lengths)
        mask = torch.arange(volumes.shape[1], device=volumes.device) < lengths[:, None]
        encoded = self.encoder(volumes[mask])             # only the real slices go through the CNN
        feats = encoded.new_zeros(*mask.shape, encoded.shape[-1])
        feats[mask] = encoded
        return feats, lengths

    def forward(self, volumes, lengths):
        feats, lengths = self.slice_features(volumes, lengths)
        if self.head == "rnn":
            feats = self.rnn(feats, lengths=lengths)
            return self.out(masked_max(feats, lengths))
        return self.out(masked_max(feats, lengths) if self.head == "max" else masked_mean(feats, lengths))


class Fixed3DCNN(nn.Module):
    """Resample each volume to ``depth`` slices (trilinear), then a 3-D CNN: ``(B, S, C, H, W) -> (B, n_outputs)``.

    Thin nodules in long volumes are squeezed (or thick ones stretched) by the resampling: the price
    of a fixed input size.
    """

    def __init__(self, n_outputs: int = 1, *, in_channels: int = 1, depth: int = 32, channels: int = 8):
        super().__init__()
        if depth < 4:
            raise ValueError(f"depth must be >= 4, got {depth}")
        self.depth = depth
        layers, c_in = [], in_channels
        for c_out in (channels, 2 * channels, 4 * channels):
            layers += [nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ReLU(), nn.MaxPool3d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, n_outputs)

    def resample(self, volumes, lengths):
        """``(B, C, depth, H, W)``: each volume's real slices stretched or squeezed to ``depth``."""
        lengths = _check_volumes(volumes, lengths)
        out = []
        for v, n in zip(volumes, lengths.tolist()):
            v = v[:n].permute(1, 0, 2, 3).unsqueeze(0)      # (1, C, n, H, W)
            out.append(F.interpolate(v, size=(self.depth, *v.shape[-2:]), mode="trilinear", align_corners=False))
        return torch.cat(out)

    def forward(self, volumes, lengths):
        return self.out(self.body(self.resample(volumes, lengths)).amax(dim=(2, 3, 4)))

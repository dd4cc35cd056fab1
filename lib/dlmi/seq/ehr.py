"""Longitudinal health records (lecture unit 07): an LSTM over a patient's visits, with time gaps.

Each visit is a set of medical codes (here: the findings of a chest X-ray study), embedded as the
sum of its codes' embeddings. An LSTM reads the visits in order and, after visit t, predicts the
codes of visit t+1. Visits are irregularly spaced, so the time since the previous visit enters
the model, in one of two ways (Pham et al. 2017, *DeepCare*, §3.3):

- ``time="decay"``: the memory cell is forgotten more after a long gap,
  ``c_{t-1} <- g(Δt) · c_{t-1}`` before the LSTM step, with DeepCare's ``g(Δt) = 1 / log(e + Δt)``
  (``decay="log"``) or a learned per-unit decay ``g(Δt) = exp(-softplus(a) Δt)`` (``decay="learned"``);
- ``time="input"``: ``log(1 + Δt)`` is appended to the visit's input vector;
- ``time="none"``: order only.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..rnn import LSTMCell
from .masking import check_lengths

__all__ = ["TimeAwareLSTM", "EHRModel", "collate_visits", "next_visit_loss", "next_visit_pairs", "time_decay"]


def time_decay(gaps: torch.Tensor) -> torch.Tensor:
    """DeepCare's monotone memory decay ``g(Δt) = 1 / log(e + Δt)``: 1 for Δt = 0, smaller for long gaps."""
    if bool((gaps < 0).any()):
        raise ValueError("time gaps must be >= 0")
    return 1.0 / torch.log(math.e + gaps)


class TimeAwareLSTM(nn.Module):
    """An LSTM over ``(B, T, input_size)`` whose memory decays with the gap ``(B, T)`` before each step.

    Returns the outputs ``(B, T, units)`` (zeros after each sequence's length). ``decay`` is
    ``"log"`` (DeepCare's fixed 1/log(e + Δt)), ``"learned"`` or ``"none"`` (a plain LSTM).
    """

    def __init__(self, input_size: int, units: int, decay: str = "log"):
        super().__init__()
        if decay not in ("log", "learned", "none"):
            raise ValueError(f"decay must be 'log', 'learned' or 'none', got {decay!r}")
        self.cell = LSTMCell(input_size, units)
        self.decay = decay
        self.units = units
        self.rate = nn.Parameter(torch.full((units,), -2.0)) if decay == "learned" else None

    def memory_factor(self, gap: torch.Tensor) -> torch.Tensor:
        """The factor ``(B, units)`` (or ``(B, 1)``) multiplied into ``c_{t-1}`` for gaps ``(B,)``."""
        if self.decay == "log":
            return time_decay(gap)[:, None]
        if self.decay == "learned":
            return torch.exp(-F.softplus(self.rate)[None] * gap[:, None])
        return torch.ones_like(gap)[:, None]

    def forward(self, x: torch.Tensor, gaps: torch.Tensor, lengths) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"x must be (batch, visits, features), got {tuple(x.shape)}")
        if gaps.shape != x.shape[:2]:
            raise ValueError(f"gaps must be (batch, visits) = {tuple(x.shape[:2])}, got {tuple(gaps.shape)}")
        lengths = check_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)
        valid = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).unbind(1)
        proj = self.cell.project_inputs(x).unbind(1)
        h, c = self.cell.initial_state(x[:, 0])
        outputs = []
        for t in range(x.shape[1]):
            c_in = c * self.memory_factor(gaps[:, t].to(x.dtype))
            h_new, c_new = self.cell.step(proj[t], (h, c_in))
            keep = valid[t][:, None]
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            outputs.append(h_new * keep.to(x.dtype))
        return torch.stack(outputs, dim=1)


class EHRModel(nn.Module):
    """Next-visit prediction: visits ``(B, T, n_codes)`` multi-hot, gaps ``(B, T)``, lengths -> logits
    ``(B, T, n_outputs)``; the logits at step t are for the codes of visit t+1.

    ``extra`` (optional, ``(B, T, extra_features)``) are per-visit covariates (age, sex, view, ...).
    """

    def __init__(self, n_codes: int, n_outputs: int | None = None, *, embed_dim: int = 32, units: int = 64,
                 time: str = "decay", decay: str = "log", extra_features: int = 0, dropout: float = 0.0):
        super().__init__()
        if time not in ("decay", "input", "none"):
            raise ValueError(f"time must be 'decay', 'input' or 'none', got {time!r}")
        self.n_codes, self.time, self.extra_features = n_codes, time, extra_features
        self.embed = nn.Linear(n_codes, embed_dim, bias=False)  # sum of the visit's code embeddings
        input_size = embed_dim + extra_features + (1 if time == "input" else 0)
        self.lstm = TimeAwareLSTM(input_size, units, decay if time == "decay" else "none")
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(units, n_outputs or n_codes)

    def forward(self, codes: torch.Tensor, gaps: torch.Tensor, lengths, extra: torch.Tensor | None = None):
        if codes.ndim != 3 or codes.shape[2] != self.n_codes:
            raise ValueError(f"codes must be (batch, visits, {self.n_codes}), got {tuple(codes.shape)}")
        if codes.shape[1] == 0:
            raise ValueError("codes has no visits (empty sequences)")
        if gaps.shape != codes.shape[:2]:
            raise ValueError(f"gaps must be (batch, visits) = {tuple(codes.shape[:2])}, got {tuple(gaps.shape)}")
        parts = [torch.relu(self.embed(codes))]
        if self.extra_features:
            if extra is None or extra.shape != (*codes.shape[:2], self.extra_features):
                raise ValueError(f"extra must be (batch, visits, {self.extra_features}), got "
                                 f"{None if extra is None else tuple(extra.shape)}")
            parts.append(extra)
        elif extra is not None:
            raise ValueError("this model was built with extra_features=0 and takes no extra inputs")
        if self.time == "input":
            parts.append(torch.log1p(gaps.clamp_min(0)).unsqueeze(-1))
        x = self.dropout(torch.cat(parts, dim=-1))
        return self.out(self.dropout(self.lstm(x, gaps.clamp_min(0), lengths)))


def next_visit_pairs(logits: torch.Tensor, targets: torch.Tensor, lengths):
    """The (prediction, truth) rows of every visit that has a next visit: ``logits[b, t]`` with
    ``targets[b, t + 1]`` for ``t < lengths[b] - 1``. Returns two ``(N, n_outputs)`` tensors."""
    lengths = check_lengths(lengths, logits.shape[0], logits.shape[1]).to(logits.device)
    if targets.shape[:2] != logits.shape[:2]:
        raise ValueError(f"targets must be (batch, visits, ...) like the logits {tuple(logits.shape[:2])}, "
                         f"got {tuple(targets.shape)}")
    has_next = torch.arange(logits.shape[1] - 1, device=logits.device) < (lengths - 1)[:, None]
    return logits[:, :-1][has_next], targets[:, 1:][has_next]


def next_visit_loss(logits: torch.Tensor, targets: torch.Tensor, lengths, pos_weight=None) -> torch.Tensor:
    """Binary cross-entropy of each visit's prediction against the next visit's codes (padding ignored)."""
    pred, truth = next_visit_pairs(logits, targets, lengths)
    if pred.shape[0] == 0:
        raise ValueError("no visit has a next visit (every length is 1): nothing to predict")
    return F.binary_cross_entropy_with_logits(pred, truth.to(pred.dtype), pos_weight=pos_weight)


def collate_visits(patients, max_visits: int | None = None, label_key: str = "labels", gap_key: str = "age_gap"):
    """Pad per-patient visit sequences (``dlmi.data.nih_patient_sequences`` items) into tensors.

    Returns ``(codes (B, T, L) float32, gaps (B, T) float32, lengths (B,) long)``; ``max_visits``
    keeps each patient's first visits.
    """
    if not patients:
        raise ValueError("collate_visits got no patients")
    rows = []
    for p in patients:
        labels = np.asarray(p[label_key], dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] == 0:
            raise ValueError(f"patient {p.get('patient_id', '?')} has no visits (labels of shape {labels.shape})")
        gaps = np.asarray(p[gap_key], dtype=np.float32)
        if max_visits is not None:
            labels, gaps = labels[:max_visits], gaps[:max_visits]
        rows.append((labels, gaps))
    lengths = torch.tensor([len(g) for _, g in rows], dtype=torch.long)
    T, L = int(lengths.max()), rows[0][0].shape[1]
    codes = np.zeros((len(rows), T, L), dtype=np.float32)
    gaps = np.zeros((len(rows), T), dtype=np.float32)
    for i, (lab, gap) in enumerate(rows):
        codes[i, : len(gap)] = lab
        gaps[i, : len(gap)] = gap
    return torch.from_numpy(codes), torch.from_numpy(gaps), lengths

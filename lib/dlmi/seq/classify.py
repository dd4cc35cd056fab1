"""Many-to-one and many-to-many models (lecture unit 02): a sequence in, one label or one label per step out.

:class:`SequenceClassifier` reads a padded batch of token ids (or feature vectors) with a
``dlmi.rnn`` layer and summarises the outputs with one of the lecture's heads:

- ``"last"``  — the output at each sequence's own last real step (for a bidirectional layer: the
  forward direction's last step and the backward direction's first, as ``keras.layers.Bidirectional``);
- ``"mean"`` / ``"max"`` — mask-aware pooling over all real steps;
- ``"attention"`` — a learned weighted average (Bahdanau et al. 2015; Yang et al. 2016).

With the last-step head an early input has to survive every later update of the state, so it
fades; pooled, attention and bidirectional heads read every step directly.

:class:`SequenceTagger` is the many-to-many case: one prediction per step.
"""
from __future__ import annotations

import torch
from torch import nn

from ..rnn import GRU, LSTM, SimpleRNN
from .masking import check_ids, check_lengths, last_step, masked_max, masked_mean

__all__ = ["make_rnn", "AttentionPooling", "SequenceClassifier", "SequenceTagger", "HEADS", "CELLS"]

CELLS = {"rnn": SimpleRNN, "gru": GRU, "lstm": LSTM}
HEADS = ("last", "mean", "max", "attention")


def make_rnn(cell: str, input_size: int, units: int, *, bidirectional=False, num_layers=1, dropout=0.0,
             return_sequences=True, return_state=False, fused=True):
    """A ``dlmi.rnn`` layer by name (``"rnn"``, ``"gru"`` or ``"lstm"``), fused kernels by default."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    return CELLS[cell](input_size, units, return_sequences=return_sequences, return_state=return_state,
                       bidirectional=bidirectional, num_layers=num_layers, dropout=dropout, fused=fused)


class AttentionPooling(nn.Module):
    """``a_t = softmax_t(v · tanh(W h_t))`` over the real steps; returns ``Σ_t a_t h_t`` and ``a``."""

    def __init__(self, size: int, attention_size: int | None = None):
        super().__init__()
        self.proj = nn.Linear(size, attention_size or size)
        self.score = nn.Linear(attention_size or size, 1, bias=False)

    def forward(self, h: torch.Tensor, lengths):
        lengths = check_lengths(lengths, h.shape[0], h.shape[1]).to(h.device)
        scores = self.score(torch.tanh(self.proj(h))).squeeze(-1)
        mask = torch.arange(h.shape[1], device=h.device) < lengths[:, None]
        weights = scores.masked_fill(~mask, float("-inf")).softmax(1)
        return (weights.unsqueeze(-1) * h).sum(1), weights


class _Reader(nn.Module):
    """Embedding (for token ids) or identity (for feature vectors), then a recurrent layer."""

    def __init__(self, vocab_size, input_size, embed_dim, units, cell, bidirectional, num_layers, dropout,
                 padding_idx, fused):
        super().__init__()
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give either vocab_size (token ids in) or input_size (feature vectors in)")
        self.vocab_size = vocab_size
        if vocab_size is not None:
            self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
            input_size = embed_dim
        else:
            self.embedding = None
        self.input_size = input_size
        self.units = units
        self.bidirectional = bool(bidirectional)
        self.rnn = make_rnn(cell, input_size, units, bidirectional=bidirectional, num_layers=num_layers,
                            dropout=dropout, fused=fused)
        self.dropout = nn.Dropout(dropout)

    @property
    def output_size(self):
        return self.units * (2 if self.bidirectional else 1)

    def read(self, x, lengths):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must be a non-empty padded batch (batch, time, ...), got shape {tuple(x.shape)}")
        lengths = check_lengths(lengths, x.shape[0], x.shape[1])
        if self.embedding is not None:
            check_ids(x, self.vocab_size, lengths, "x")
            x = self.dropout(self.embedding(x))
        elif x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be (batch, time, {self.input_size}), got {tuple(x.shape)}")
        return self.rnn(x, lengths=lengths), lengths.to(x.device)


class SequenceClassifier(_Reader):
    """Many-to-one: a padded batch ``(B, T)`` of ids (or ``(B, T, D)`` features) -> logits ``(B, n_outputs)``.

    ``head`` in :data:`HEADS`; ``bidirectional`` reads the sequence both ways. ``vocab_size`` for
    token ids (with an ``embed_dim`` embedding, ``padding_idx`` 0) or ``input_size`` for features.
    After a forward pass with the attention head, ``last_attention`` holds the weights ``(B, T)``.
    """

    def __init__(self, vocab_size: int | None = None, n_outputs: int = 1, *, input_size: int | None = None,
                 embed_dim: int = 64, units: int = 64, cell: str = "gru", head: str = "last",
                 bidirectional: bool = False, num_layers: int = 1, dropout: float = 0.0, padding_idx: int = 0,
                 fused: bool = True):
        super().__init__(vocab_size, input_size, embed_dim, units, cell, bidirectional, num_layers, dropout,
                         padding_idx, fused)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        self.attention = AttentionPooling(self.output_size) if head == "attention" else None
        self.out = nn.Linear(self.output_size, n_outputs)
        self.last_attention = None

    def features(self, x, lengths) -> torch.Tensor:
        """The pooled summary ``(B, output_size)`` the output layer reads."""
        h, lengths = self.read(x, lengths)
        if self.head == "last":
            if not self.bidirectional:
                return last_step(h, lengths)
            u = self.units  # forward direction: its last step; backward direction: it ends at t = 0
            return torch.cat([last_step(h[..., :u], lengths), h[:, 0, u:]], dim=-1)
        if self.head == "mean":
            return masked_mean(h, lengths)
        if self.head == "max":
            return masked_max(h, lengths)
        pooled, self.last_attention = self.attention(h, lengths)
        return pooled

    def forward(self, x, lengths) -> torch.Tensor:
        return self.out(self.dropout(self.features(x, lengths)))


class SequenceTagger(_Reader):
    """Many-to-many: one prediction per step, ``(B, T)`` ids -> logits ``(B, T, n_tags)``.

    Steps beyond each sequence's length are zeros; train with
    :func:`dlmi.seq.masked_cross_entropy`, which ignores them.
    """

    def __init__(self, vocab_size: int | None = None, n_tags: int = 2, *, input_size: int | None = None,
                 embed_dim: int = 64, units: int = 64, cell: str = "gru", bidirectional: bool = True,
                 num_layers: int = 1, dropout: float = 0.0, padding_idx: int = 0, fused: bool = True):
        super().__init__(vocab_size, input_size, embed_dim, units, cell, bidirectional, num_layers, dropout,
                         padding_idx, fused)
        self.out = nn.Linear(self.output_size, n_tags)

    def forward(self, x, lengths) -> torch.Tensor:
        h, lengths = self.read(x, lengths)
        mask = (torch.arange(h.shape[1], device=h.device) < lengths[:, None]).unsqueeze(-1)
        return self.out(self.dropout(h)) * mask.to(h.dtype)

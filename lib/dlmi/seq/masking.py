"""Padded batches with lengths: checks, masks, mask-aware pooling and the teacher-forced loss.

Every model in :mod:`dlmi.seq` takes right-padded batches ``(batch, time, ...)`` together with
``lengths`` ``(batch,)``: step ``t`` of sequence ``b`` is real when ``t < lengths[b]``. Nothing
here depends on a fixed length, and the padding values never reach a result (lecture unit 02,
"variable-length input").

The teacher-forced loss (Williams & Zipser 1989) of an autoregressive decoder is the masked
cross-entropy of its predictions against the next tokens; summed per sequence it is the
conditional-probability view of unit 01, ``log P(y) = Σ_t log P(y_t | y_<t)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_lengths", "lengths_to_mask", "check_ids", "masked_mean", "masked_max", "masked_pool",
           "last_step", "shift_targets", "masked_cross_entropy", "sequence_log_prob", "POOLING_MODES"]

POOLING_MODES = ("last", "mean", "max")


def check_lengths(lengths, batch: int, time: int | None = None, name: str = "lengths") -> torch.Tensor:
    """``lengths`` as a ``torch.long`` tensor ``(batch,)`` with values in ``[1, time]``.

    Raises TypeError for non-integer lengths and ValueError for a wrong shape, an empty sequence
    (length 0) or a length beyond the time axis.
    """
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a sequence of integers, got {type(lengths).__name__}") from None
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},), got {tuple(lengths.shape)}: "
                         "one length per sequence of the batch")
    if batch == 0:
        raise ValueError("the batch is empty")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1:
        raise ValueError(f"{name} must be >= 1: empty sequences cannot be read or pooled (got a length of {lo})")
    if time is not None and hi > time:
        raise ValueError(f"{name} must be <= {time} (the time axis of the padded batch), got {hi}")
    return lengths.long()


def lengths_to_mask(lengths, max_len: int | None = None) -> torch.Tensor:
    """The ``(batch, max_len)`` bool mask, true at the real steps ``t < lengths[b]``."""
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must have shape (batch,), got {tuple(lengths.shape)}")
    lengths = check_lengths(lengths, lengths.shape[0], max_len)
    max_len = int(lengths.max()) if max_len is None else int(max_len)
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def _check_sequence(x, lengths, what="x"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor (batch, time, features), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{what} must be (batch, time, ...), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{what} has an empty time axis")
    return check_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)


def check_ids(ids, vocab_size: int, lengths=None, name: str = "ids") -> torch.Tensor:
    """Token ids ``(batch, time)`` of integer dtype, every real step inside ``[0, vocab_size)``.

    Padding positions (beyond ``lengths``) are not checked. Out-of-vocabulary ids raise
    ValueError naming the offending id (an embedding would otherwise fail with an index error).
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids (batch, time), got {type(ids).__name__}")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, time), got {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(ids.shape)}")
    real = ids
    if lengths is not None:
        lengths = check_lengths(lengths, ids.shape[0], ids.shape[1], "lengths").to(ids.device)
        real = ids[torch.arange(ids.shape[1], device=ids.device) < lengths[:, None]]
    bad = (real < 0) | (real >= vocab_size)
    if bool(bad.any()):
        raise ValueError(f"{name} holds id {int(real[bad][0])}, outside the vocabulary [0, {vocab_size}): "
                         "encode text with the vocabulary the model was built for (unknown words -> <unk>)")
    return ids


def masked_mean(x: torch.Tensor, lengths) -> torch.Tensor:
    """Mean over the real steps of each sequence: ``(batch, time, D) -> (batch, D)``."""
    lengths = _check_sequence(x, lengths)
    mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    mask = mask.view(*mask.shape, *(1,) * (x.ndim - 2))
    # masked_fill, not a multiplication: padding that holds inf or nan must not leak (0 * inf = nan)
    return x.masked_fill(~mask, 0.0).sum(1) / lengths.view(-1, *(1,) * (x.ndim - 2)).to(x.dtype)


def masked_max(x: torch.Tensor, lengths) -> torch.Tensor:
    """Maximum over the real steps of each sequence: ``(batch, time, D) -> (batch, D)``.

    Padding is replaced by ``-inf`` before the max, so it never wins, whatever its value.
    """
    lengths = _check_sequence(x, lengths)
    mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    mask = mask.view(*mask.shape, *(1,) * (x.ndim - 2))
    return x.masked_fill(~mask, float("-inf")).amax(1)


def last_step(x: torch.Tensor, lengths) -> torch.Tensor:
    """The output at each sequence's own last real step ``x[b, lengths[b] - 1]``."""
    lengths = _check_sequence(x, lengths)
    index = (lengths - 1).view(-1, 1, *(1,) * (x.ndim - 2)).expand(-1, 1, *x.shape[2:])
    return x.gather(1, index).squeeze(1)


def masked_pool(x: torch.Tensor, lengths, mode: str = "mean") -> torch.Tensor:
    """``mode`` in ``("last", "mean", "max")``: pool a padded sequence over its real steps."""
    if mode == "mean":
        return masked_mean(x, lengths)
    if mode == "max":
        return masked_max(x, lengths)
    if mode == "last":
        return last_step(x, lengths)
    raise ValueError(f"mode must be one of {POOLING_MODES}, got {mode!r}")


def shift_targets(ids: torch.Tensor, lengths):
    """Teacher forcing's inputs and targets from ``<bos> y_1 … y_n <eos>`` sequences.

    Returns ``(inputs, targets, target_lengths)``: ``inputs = ids[:, :-1]`` (what the decoder
    reads), ``targets = ids[:, 1:]`` (what it must predict at each step) and ``lengths - 1``.
    """
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
        raise ValueError(f"ids must be a (batch, time) tensor, got {getattr(ids, 'shape', type(ids).__name__)}")
    lengths = check_lengths(lengths, ids.shape[0], ids.shape[1]).to(ids.device)
    if int(lengths.min()) < 2:
        raise ValueError("every sequence needs at least 2 tokens (<bos> and one target) for teacher forcing")
    return ids[:, :-1], ids[:, 1:], lengths - 1


def _check_logits(logits, targets, lengths):
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ValueError(f"logits must be (batch, time, vocab), got {getattr(logits, 'shape', type(logits).__name__)}")
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape[:2]:
        raise ValueError(f"targets must be (batch, time) = {tuple(logits.shape[:2])} like the logits, got "
                         f"{getattr(targets, 'shape', type(targets).__name__)}")
    lengths = check_lengths(lengths, logits.shape[0], logits.shape[1]).to(logits.device)
    check_ids(targets, logits.shape[2], lengths, "targets")
    return lengths


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, lengths, reduction: str = "mean"):
    """Cross-entropy of ``logits`` ``(B, T, V)`` against ``targets`` ``(B, T)`` over the real steps.

    ``reduction``: ``"mean"`` over all real tokens of the batch (the teacher-forced training
    loss), ``"sum"``, or ``"none"`` for the per-sequence sums ``-log P(y_b)`` ``(B,)``.
    """
    lengths = _check_logits(logits, targets, lengths)
    mask = torch.arange(logits.shape[1], device=logits.device) < lengths[:, None]
    nll = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none")
    nll = nll.masked_fill(~mask, 0.0)
    if reduction == "mean":
        return nll.sum() / lengths.sum()
    if reduction == "sum":
        return nll.sum()
    if reduction == "none":
        return nll.sum(1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def sequence_log_prob(logits: torch.Tensor, targets: torch.Tensor, lengths) -> torch.Tensor:
    """``log P(y_b) = Σ_t log P(y_t | y_<t)`` of each sequence ``(B,)`` (unit 01's chain rule)."""
    return -masked_cross_entropy(logits, targets, lengths, reduction="none")

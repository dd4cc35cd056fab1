"""The fast path: dlmi's parameters run through torch's fused recurrent kernels.

``layer.fused = True`` (or ``fused=True`` at construction) makes a layer call the kernels behind
``torch.nn.RNN/GRU/LSTM`` (oneDNN or torch's C++ loop on CPU, cuDNN on GPU) instead of the Python
loop of :func:`dlmi.rnn.layers.scan`. The parameters stay dlmi's own, in Keras layout:
:func:`dlmi.rnn.interop.torch_weights` rearranges them into torch's layout on every call
(a few small copies, differentiable), so training either way updates the same tensors, and the
results agree with the loop to rounding error. (On a GPU, cuDNN runs the recurrent matrix products
in TF32 by default, as for ``torch.nn.LSTM``: results then agree to about 1e-3; set
``torch.backends.cudnn.allow_tf32 = False`` for float32 agreement.)

Everything around the kernel is shared with the loop (stacking, bidirectional merge, input
dropout); this module replaces one direction of one layer. Padded batches go through
``pack_padded_sequence``, so the fast path needs right-padded sequences (``lengths``, or a mask
that is true for a prefix of every sequence), and it has no recurrent dropout in training.
Where torch has no kernel for the variant (GRU ``reset_after=False``, activations other than
tanh/sigmoid, or relu for SimpleRNN) ``fused=True`` raises ``ValueError``.
"""
from __future__ import annotations

import warnings

import torch
from torch import _VF
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .cells import GRUCell, LSTMCell
from .interop import torch_weights, variant_problem

__all__ = ["fused_scan", "unsupported_reason", "reverse_padded"]


def unsupported_reason(layer):
    """Why ``layer`` cannot use the fused kernels (a sentence), or ``None``."""
    return variant_problem(layer.cell)


def _kernel(cell):
    if isinstance(cell, LSTMCell):
        return _VF.lstm
    if isinstance(cell, GRUCell):
        return _VF.gru
    return _VF.rnn_relu if cell.activation_name == "relu" else _VF.rnn_tanh


def reverse_padded(x, lengths):
    """Reverse every sequence of the right-padded batch ``x`` ``(batch, time, ...)`` within its
    own length; the padding stays at the end."""
    t = torch.arange(x.shape[1], device=x.device)
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index.view(*index.shape, *(1,) * (x.ndim - 2)).expand_as(x))


def _prefix_lengths(mask):
    lengths = mask.sum(1)
    right_padded = torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]
    if not torch.equal(mask, right_padded) or int(lengths.min()) < 1:
        raise ValueError("the fused path needs right-padded sequences with at least one step each (lengths, or a "
                         "mask true for a prefix of every sequence); use fused=False for other masks")
    return lengths


def _call(kernel, *args):
    # cuDNN copies weights that are not one flat buffer on every call and says so; ours are
    # rearranged from the Keras layout on every call anyway.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk.*")
        return kernel(*args)


def fused_scan(cell, x, state, mask=None, backwards=False, keep_sequence=True, zero_output_for_mask=False):
    """Same contract as :func:`dlmi.rnn.layers.scan` (without recurrent dropout), in one kernel call."""
    # cuDNN copies the weights into its flat buffer with view(), which needs contiguous tensors;
    # torch_weights gives transposed views (the CPU kernels accept them, cuDNN raises).
    weights = [w.contiguous() for w in torch_weights(cell)]
    has_bias = cell.bias is not None
    kernel = _kernel(cell)
    # The kernels' `train` flag: cuDNN keeps what backward needs only when it is set (and refuses
    # backward otherwise). With dropout 0 it changes no number, so set it whenever autograd records.
    train = torch.is_grad_enabled()
    # torch wants states as (layers·directions, batch, units).
    hx = [s.unsqueeze(0).contiguous() for s in state]
    hx = hx if isinstance(cell, LSTMCell) else hx[0]
    if mask is None:
        inputs = x.flip(1) if backwards else x
        outputs, *final = _call(kernel, inputs, hx, weights, has_bias, 1, 0.0, train, False, True)
        return outputs if keep_sequence else None, outputs[:, -1], tuple(f[0] for f in final)

    lengths = _prefix_lengths(mask)
    # Reading a right-padded sequence backwards = reading it reversed within its length.
    inputs = reverse_padded(x, lengths) if backwards else x
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    if isinstance(cell, LSTMCell):
        hx = [s.index_select(1, packed.sorted_indices) for s in hx]
    else:
        hx = hx.index_select(1, packed.sorted_indices)
    data, *final = _call(kernel, packed.data, packed.batch_sizes, hx, weights, has_bias, 1, 0.0, train, False)
    final = tuple(f[0].index_select(0, packed.unsorted_indices) for f in final)
    last = final[0]  # every sequence has a real step, so the last output is the final h
    if not keep_sequence:
        return None, last, final
    outputs, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                                    packed.unsorted_indices), batch_first=True,
                                     total_length=x.shape[1])
    if backwards:
        # Keras's backward timeline reads the padding first (outputs still zero), then the real steps.
        return reverse_padded(outputs, lengths).flip(1), last, final
    if not zero_output_for_mask:
        # Padded steps repeat the last real output.
        outputs = torch.where(mask.unsqueeze(-1), outputs, last.unsqueeze(1))
    return outputs, last, final

"""How far back does the gradient reach? Per-step gradient norms (lecture unit 03).

Backpropagation through time multiplies ``∂h_t/∂h_{t-1}`` once per step, so the gradient that
reaches an early state is a long product of Jacobians: it shrinks or grows geometrically with the
distance for a SimpleRNN (Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013), while
the additive cell update of the LSTM (Hochreiter & Schmidhuber 1997) and the interpolation of the
GRU (Cho et al. 2014) keep a path along which it survives.

:func:`gradient_norms_per_step` measures this for any dlmi layer: the norm of the *total*
derivative ``∂L/∂h_t`` (through every later step, not only the direct path to the output).
It adds a zero "probe" to each new state; the gradient of the loss with respect to that probe is
exactly ``∂L/∂h_t``, and adding zero changes nothing in the forward pass.
"""
from __future__ import annotations

import torch

__all__ = ["gradient_norms_per_step"]


def gradient_norms_per_step(layer, x, loss_fn, initial_state=None, *, lengths=None, mask=None):
    """``‖∂L/∂h_t‖`` for every time step ``t``, with ``L = loss_fn(layer(x, ...))``.

    ``layer`` is a dlmi ``SimpleRNN``, ``GRU`` or ``LSTM`` (any options; the Python loop is used
    even if the layer is fused); ``loss_fn`` maps the layer's output (whatever ``return_sequences``
    and ``return_state`` make it) to a scalar. ``h_t`` is the hidden state after reading ``x[:, t]``
    (for the LSTM ``h``, not ``c``), the norm is taken over the whole ``(batch, units)`` gradient.

    Returns a tensor of shape ``(time,)`` for a layer with one cell, else
    ``(num_layers · num_directions, time)`` with rows in ``layer.cells`` order. Parameter
    gradients (``.grad``) are left untouched.
    """
    probes = {}

    def add_probe(index, t, state):
        probe = torch.zeros_like(state[0], requires_grad=True)
        probes[index, t] = probe
        return (state[0] + probe, *state[1:])

    loss = loss_fn(layer._run(x, initial_state, lengths, mask, on_step=add_probe))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    keys = list(probes)
    grads = torch.autograd.grad(loss, [probes[k] for k in keys], allow_unused=True)
    norms = x.new_zeros(len(layer.cells), x.shape[1])
    for (index, t), grad in zip(keys, grads):
        if grad is not None:
            norms[index, t] = torch.linalg.vector_norm(grad)
    return norms[0] if len(layer.cells) == 1 else norms

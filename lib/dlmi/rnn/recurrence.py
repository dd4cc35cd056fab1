"""The recurrent formulation of lecture unit 01, written out step by step.

    a_t = U x_t + V h_{t-1} + c          (the same U, V, c at every step: shared weights)
    h_t = tanh(a_t)
    y_t = W h_t + b

and backpropagation through time (BPTT, Werner 1990; Elman 1990 for the network), in which the
gradient of a shared weight is the *sum over time steps* of per-step terms:

    dL/dU = sum_t  delta_t^T x_t,    delta_t = (dL/dh_t + delta_{t+1} V) * (1 - h_t^2)

Shapes follow the lecture and Keras: ``x`` is ``(batch, time, features)``; ``U`` is
``(hidden, features)``, ``V`` ``(hidden, hidden)``, ``c`` ``(hidden,)``, ``W`` ``(outputs, hidden)``,
``b`` ``(outputs,)``. A scalar RNN is the case hidden = features = outputs = 1.

The gated cells of unit 03 (``SimpleRNN``, ``GRU``, ``LSTM``) live in their own modules;
this file is the plain recurrence the rest of the course builds on.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _check_tensor(name, t, ndim, dtype=None, device=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {dtype} (the dtype of x)")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (the device of x)")


def _check_params(x, U, V, c):
    _check_tensor("x", x, 3)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (batch, time, features), got dtype {x.dtype}")
    _check_tensor("U", U, 2, x.dtype, x.device)
    _check_tensor("V", V, 2, x.dtype, x.device)
    _check_tensor("c", c, 1, x.dtype, x.device)
    B, T, D = x.shape
    H = U.shape[0]
    if T == 0:
        raise ValueError("x has no time steps: expected shape (batch, time >= 1, features)")
    if U.shape != (H, D):
        raise ValueError(f"U must have shape (hidden, features) = ({H}, {D}), got {tuple(U.shape)}")
    if V.shape != (H, H):
        raise ValueError(f"V must have shape (hidden, hidden) = ({H}, {H}), got {tuple(V.shape)}")
    if c.shape != (H,):
        raise ValueError(f"c must have shape (hidden,) = ({H},), got {tuple(c.shape)}")
    return B, T, D, H


def _initial_state(h0, B, H, x):
    if h0 is None:
        return x.new_zeros(B, H)
    _check_tensor("h0", h0, 2, x.dtype, x.device)
    if h0.shape != (B, H):
        raise ValueError(f"h0 must have shape (batch, hidden) = ({B}, {H}), got {tuple(h0.shape)}")
    return h0


def rnn_forward(x: torch.Tensor, U: torch.Tensor, V: torch.Tensor, c: torch.Tensor,
                h0: torch.Tensor | None = None) -> torch.Tensor:
    """Run h_t = tanh(U x_t + V h_{t-1} + c) over all steps.

    x: (B, T, D); U: (H, D); V: (H, H); c: (H,); h0: (B, H) or None (zeros).
    Returns hs: (B, T, H), the hidden state after every step. Differentiable by autograd.
    """
    B, T, D, H = _check_params(x, U, V, c)
    h = _initial_state(h0, B, H, x)
    # The input projection does not depend on h, so it is done for all steps at once;
    # only V h_{t-1} has to wait for the previous step.
    xu = x @ U.T + c
    hs = []
    for t in range(T):
        h = torch.tanh(xu[:, t] + h @ V.T)
        hs.append(h)
    return torch.stack(hs, dim=1)


def rnn_output(hs: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """y_t = W h_t + b at every step. hs: (B, T, H); W: (K, H); b: (K,). Returns (B, T, K)."""
    _check_tensor("hs", hs, 3)
    _check_tensor("W", W, 2, hs.dtype, hs.device)
    _check_tensor("b", b, 1, hs.dtype, hs.device)
    if W.shape[1] != hs.shape[2]:
        raise ValueError(f"W must have shape (outputs, hidden={hs.shape[2]}), got {tuple(W.shape)}")
    if b.shape != (W.shape[0],):
        raise ValueError(f"b must have shape (outputs,) = ({W.shape[0]},), got {tuple(b.shape)}")
    return hs @ W.T + b


def rnn_bptt(x: torch.Tensor, hs: torch.Tensor, dh: torch.Tensor, U: torch.Tensor, V: torch.Tensor,
             h0: torch.Tensor | None = None) -> dict:
    """Backpropagation through time for :func:`rnn_forward`, by hand.

    x: (B, T, D) inputs; hs: (B, T, H) the states ``rnn_forward`` returned; dh: (B, T, H) the
    gradient of the loss with respect to each h_t coming *directly* from that step's output
    (not through later steps — carrying that is what BPTT does); U, V as in the forward pass.

    Returns a dict with the total gradients ``dU`` (H, D), ``dV`` (H, H), ``dc`` (H,), ``dh0`` (B, H)
    and the per-step terms ``dU_steps`` (T, H, D), ``dV_steps`` (T, H, H), ``dc_steps`` (T, H) whose
    sums over the first axis are the totals — the lecture's "dL/du is a sum over time steps".
    """
    B, T, D, H = _check_params(x, U, V, U.new_zeros(U.shape[0]))
    _check_tensor("hs", hs, 3, x.dtype, x.device)
    _check_tensor("dh", dh, 3, x.dtype, x.device)
    if hs.shape != (B, T, H) or dh.shape != (B, T, H):
        raise ValueError(f"hs and dh must have shape (batch, time, hidden) = ({B}, {T}, {H}); "
                         f"got {tuple(hs.shape)} and {tuple(dh.shape)}")
    h_init = _initial_state(h0, B, H, x)
    h_prev = torch.cat([h_init[:, None], hs[:, :-1]], dim=1)  # h_{t-1} for every t
    dU_steps = x.new_zeros(T, H, D)
    dV_steps = x.new_zeros(T, H, H)
    dc_steps = x.new_zeros(T, H)
    carry = x.new_zeros(B, H)  # dL/dh_t arriving from step t+1
    for t in reversed(range(T)):
        delta = (dh[:, t] + carry) * (1 - hs[:, t] ** 2)  # dL/da_t, through tanh' = 1 - tanh^2
        dU_steps[t] = delta.T @ x[:, t]
        dV_steps[t] = delta.T @ h_prev[:, t]
        dc_steps[t] = delta.sum(0)
        carry = delta @ V  # a_t = ... + V h_{t-1}, so dL/dh_{t-1} gains delta_t V
    return {"dU": dU_steps.sum(0), "dV": dV_steps.sum(0), "dc": dc_steps.sum(0), "dh0": carry,
            "dU_steps": dU_steps, "dV_steps": dV_steps, "dc_steps": dc_steps}


class ElmanRNN(nn.Module):
    """The unit 01 network as a module: ``y_t = W tanh(U x_t + V h_{t-1} + c) + b`` (Elman 1990).

    forward(x (B, T, D), h0 (B, H) or None) -> (y (B, T, K), hs (B, T, H)).
    Initialisation follows Keras's SimpleRNN (glorot-uniform U, orthogonal V, zero biases).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.U = nn.Parameter(torch.empty(hidden_size, input_size))
        self.V = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.c = nn.Parameter(torch.zeros(hidden_size))
        self.W = nn.Parameter(torch.empty(output_size, hidden_size))
        self.b = nn.Parameter(torch.zeros(output_size))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.U)
        nn.init.orthogonal_(self.V)
        nn.init.zeros_(self.c)
        nn.init.uniform_(self.W, -1 / math.sqrt(self.W.shape[1]), 1 / math.sqrt(self.W.shape[1]))
        nn.init.zeros_(self.b)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None):
        if isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[2] != self.U.shape[1]:
            raise ValueError(f"x must have shape (batch, time, {self.U.shape[1]}), got {tuple(x.shape)}")
        hs = rnn_forward(x, self.U, self.V, self.c, h0)
        return rnn_output(hs, self.W, self.b), hs

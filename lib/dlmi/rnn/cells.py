"""One time step of SimpleRNN, GRU and LSTM, written from their equations (lecture unit 03).

Every cell keeps its weights in the Keras layout, so that a cell can be compared with (and loaded
from) ``keras.layers.SimpleRNNCell/GRUCell/LSTMCell`` weight by weight:

==============  ============================  ===========================  ======================
cell            ``kernel``                    ``recurrent_kernel``         ``bias``
==============  ============================  ===========================  ======================
SimpleRNNCell   (input_size, units)           (units, units)               (units,)
GRUCell         (input_size, 3·units) z r h   (units, 3·units)             (2, 3·units) if
                                                                           ``reset_after`` else
                                                                           (3·units,)
LSTMCell        (input_size, 4·units) i f c o (units, 4·units)             (4·units,)
==============  ============================  ===========================  ======================

The gates are side by side in the column blocks of one matrix (Keras's gate order), so that one
matrix product computes all of them. Inputs are ``x_t: (batch, input_size)``; the hidden state is
``h: (batch, units)``.

A cell splits a step into two parts: :meth:`project_inputs` (the part that depends on the input
only, ``x W + b``) and :meth:`step` (the recurrence). The split lets a layer project the inputs of
*all* time steps with one large matrix product before its loop, which is where most of the speed
of a recurrent layer comes from; ``cell(x_t, state)`` simply does both.

Initial weights follow Keras: ``glorot_uniform`` kernels (Glorot & Bengio 2010), ``orthogonal``
recurrent kernels (Saxe et al. 2014) and zero biases, except the LSTM forget-gate bias, which
starts at 1 (``unit_forget_bias``, Jozefowicz et al. 2015) so that the cell initially remembers.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SimpleRNNCell", "GRUCell", "LSTMCell", "ACTIVATIONS", "INITIALIZERS"]


def linear(x):
    """The identity (Keras's ``"linear"`` activation)."""
    return x


#: Activation names understood by the cells; they are Keras's names for the same functions
#: (Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6``, which is torch's ``hardsigmoid``).
ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,
    "relu": torch.relu,
    "linear": linear,
    "softsign": F.softsign,
    "softplus": F.softplus,
    "elu": F.elu,
    "selu": F.selu,
    "silu": F.silu,
}

_ALIASES = {F.tanh: "tanh", F.sigmoid: "sigmoid", F.relu: "relu"}


def get_activation(activation):
    """``(function, name)`` for an activation given by Keras name, ``None`` (linear) or callable.

    The name is what interop uses to rebuild the activation on the Keras/torch side; a callable
    without a known name still works in dlmi but cannot be exported.
    """
    if activation is None:
        return linear, "linear"
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} or a callable")
        return ACTIVATIONS[activation], activation
    if callable(activation):
        for name, fn in ACTIVATIONS.items():
            if fn is activation:
                return fn, name
        if activation in _ALIASES:
            return activation, _ALIASES[activation]
        # Any other callable works inside dlmi but has no name on the Keras/torch side.
        return activation, f"custom:{getattr(activation, '__name__', type(activation).__name__)}"
    raise TypeError(f"activation must be a name, None or a callable, got {type(activation).__name__}")


def _fans(weight):
    # Keras reads a 2-D weight (fan_in, fan_out) = (rows, columns), so all gates count in fan_out;
    # a bias (1-D) counts its length twice, as keras.initializers does.
    if weight.ndim == 1:
        return weight.shape[0], weight.shape[0]
    return weight.shape[0], weight.shape[-1]


def _variance_scaling(weight, scale, mode, distribution):
    fan_in, fan_out = _fans(weight)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / max(1.0, n)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return nn.init.uniform_(weight, -limit, limit)
    # Keras's truncated normal cuts at two standard deviations; 0.8796... restores the variance.
    std = math.sqrt(variance) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


#: Initializer names understood by the cells (Keras's names and definitions).
INITIALIZERS = {
    "glorot_uniform": partial(_variance_scaling, scale=1.0, mode="fan_avg", distribution="uniform"),
    "glorot_normal": partial(_variance_scaling, scale=1.0, mode="fan_avg", distribution="normal"),
    "he_uniform": partial(_variance_scaling, scale=2.0, mode="fan_in", distribution="uniform"),
    "he_normal": partial(_variance_scaling, scale=2.0, mode="fan_in", distribution="normal"),
    "lecun_uniform": partial(_variance_scaling, scale=1.0, mode="fan_in", distribution="uniform"),
    "lecun_normal": partial(_variance_scaling, scale=1.0, mode="fan_in", distribution="normal"),
    # For a (units, gates·units) matrix torch and Keras both make the rows orthonormal.
    "orthogonal": nn.init.orthogonal_,
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
}


def _get_initializer(initializer):
    if isinstance(initializer, str):
        if initializer not in INITIALIZERS:
            raise ValueError(f"unknown initializer {initializer!r}; "
                             f"expected one of {sorted(INITIALIZERS)} or a callable")
        return INITIALIZERS[initializer]
    if callable(initializer):
        return initializer
    raise TypeError(f"initializer must be a name or a callable(tensor), got {type(initializer).__name__}")


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class _Cell(nn.Module):
    """What the three cells share: the Keras weight layout, initialisation and input checks.

    Subclasses set ``gates`` (how many column blocks the matrices have), ``state_names`` and
    implement :meth:`step`.
    """

    gates = 1
    state_names = ("h",)

    def __init__(self, input_size, units, *, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", bias_shape=None, device=None, dtype=None):
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("units", units)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.units = units
        self.use_bias = bool(use_bias)
        self.activation, self.activation_name = get_activation(activation)
        self.kernel_initializer = _get_initializer(kernel_initializer)
        self.recurrent_initializer = _get_initializer(recurrent_initializer)
        self.bias_initializer = _get_initializer(bias_initializer)
        width = self.gates * units
        self.kernel = nn.Parameter(torch.empty(input_size, width, **factory))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, width, **factory))
        if self.use_bias:
            self.bias = nn.Parameter(torch.empty(bias_shape or (width,), **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Draw fresh weights with the cell's initializers (Keras defaults unless changed)."""
        with torch.no_grad():
            self.kernel_initializer(self.kernel)
            self.recurrent_initializer(self.recurrent_kernel)
            if self.bias is not None:
                self.bias_initializer(self.bias)

    def extra_repr(self):
        return f"{self.input_size}, {self.units}, activation={self.activation_name!r}, use_bias={self.use_bias}"

    def initial_state(self, x):
        """Zero states for a batch like ``x`` (same batch size, dtype and device)."""
        return tuple(x.new_zeros(x.shape[0], self.units) for _ in self.state_names)

    def project_inputs(self, x):
        """``x W + b`` for inputs of shape ``(..., input_size)``: the input half of every gate."""
        z = x @ self.kernel
        return z if self.bias is None else z + self.bias

    def step(self, x_proj, state, recurrent_mask=None):
        """One recurrence step from projected inputs; returns the new state tuple.

        ``recurrent_mask`` (``(batch, units)``, optional) is a dropout mask multiplied into
        ``h_{t-1}`` where it enters the recurrent matrix product (Gal & Ghahramani 2016).
        """
        raise NotImplementedError

    def forward(self, x, state=None):
        """One time step: ``x`` is ``(batch, input_size)``; ``state`` the previous state or ``None``.

        Returns the new hidden state ``h`` (``(batch, units)``), or ``(h, c)`` for the LSTM.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (batch, {self.input_size}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must have shape (batch, {self.input_size}), got {tuple(x.shape)}")
        if x.dtype != self.kernel.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the cell's weights are {self.kernel.dtype}")
        if x.device != self.kernel.device:
            raise ValueError(f"x is on {x.device} but the cell's weights are on {self.kernel.device}")
        if state is None:
            state = self.initial_state(x)
        else:
            state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
            if len(state) != len(self.state_names):
                raise ValueError(f"state must be {' and '.join(self.state_names)}, got {len(state)} tensors")
            for name, s in zip(self.state_names, state):
                if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0], self.units):
                    shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                    raise ValueError(f"state {name} must have shape (batch, units) = "
                                     f"({x.shape[0]}, {self.units}), got {shape}")
                if s.dtype != x.dtype or s.device != x.device:
                    raise TypeError(f"state {name} is {s.dtype} on {s.device}; expected {x.dtype} on {x.device} like x")
        new = self.step(self.project_inputs(x), state)
        return new[0] if len(new) == 1 else new


class SimpleRNNCell(_Cell):
    """The fully connected recurrent cell of Elman (1990), as ``keras.layers.SimpleRNNCell``::

        h_t = activation(x_t W + b + h_{t-1} U)

    with ``W = kernel``, ``U = recurrent_kernel``; ``activation`` defaults to ``tanh``
    (``"relu"`` gives ``torch.nn.RNN(nonlinearity="relu")``).
    """

    def __init__(self, input_size, units, *, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", device=None, dtype=None):
        super().__init__(input_size, units, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, device=device, dtype=dtype)

    def step(self, x_proj, state, recurrent_mask=None):
        (h,) = state
        if recurrent_mask is not None:
            h = h * recurrent_mask
        return (self.activation(x_proj + h @ self.recurrent_kernel),)


class GRUCell(_Cell):
    """Gated recurrent unit (Cho et al. 2014), as ``keras.layers.GRUCell``; gate order z, r, h::

        z_t = σ(x_t W_z + b_z + h_{t-1} U_z + b'_z)            update gate
        r_t = σ(x_t W_r + b_r + h_{t-1} U_r + b'_r)            reset gate
        h̃_t = tanh(x_t W_h + b_h + r_t ⊙ (h_{t-1} U_h + b'_h))  candidate   (reset_after=True)
        h̃_t = tanh(x_t W_h + b_h + (r_t ⊙ h_{t-1}) U_h)        candidate   (reset_after=False)
        h_t = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ h̃_t

    σ is ``recurrent_activation`` and tanh ``activation``. ``reset_after=True`` (Keras's default,
    and what cuDNN and ``torch.nn.GRU`` compute) applies the reset gate after the recurrent matrix
    product and so needs a second, recurrent bias ``b'``: the bias has shape ``(2, 3·units)``,
    input bias in row 0 and recurrent bias in row 1. ``reset_after=False`` is the original
    formulation of Cho et al., with one bias of ``3·units``. Note that Keras's ``z`` keeps the old
    state (``torch.nn.GRU`` writes the same equation with its gates in the order r, z, n).
    """

    gates = 3

    def __init__(self, input_size, units, *, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, reset_after=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", device=None, dtype=None):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, units, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer,
                         bias_shape=(2, 3 * units) if self.reset_after else None, device=device, dtype=dtype)
        self.recurrent_activation, self.recurrent_activation_name = get_activation(recurrent_activation)

    def extra_repr(self):
        return (super().extra_repr() + f", recurrent_activation={self.recurrent_activation_name!r}, "
                f"reset_after={self.reset_after}")

    def project_inputs(self, x):
        z = x @ self.kernel
        if self.bias is None:
            return z
        return z + (self.bias[0] if self.reset_after else self.bias)

    def step(self, x_proj, state, recurrent_mask=None):
        (h,) = state
        # The dropout mask only touches h where it is multiplied by U; the interpolation below
        # uses the undropped h_{t-1}, as Keras does.
        h_in = h if recurrent_mask is None else h * recurrent_mask
        # z and r read the same kind of sum, so one activation call serves both.
        x_zr, x_h = x_proj.split([2 * self.units, self.units], dim=-1)
        if self.reset_after:
            inner = h_in @ self.recurrent_kernel
            if self.bias is not None:
                inner = inner + self.bias[1]
            h_zr, h_h = inner.split([2 * self.units, self.units], dim=-1)
            z, r = self.recurrent_activation(x_zr + h_zr).chunk(2, dim=-1)
            candidate = self.activation(x_h + r * h_h)
        else:
            u_zr, u_h = self.recurrent_kernel.split([2 * self.units, self.units], dim=1)
            z, r = self.recurrent_activation(x_zr + h_in @ u_zr).chunk(2, dim=-1)
            candidate = self.activation(x_h + (r * h_in) @ u_h)
        # z ⊙ h + (1 - z) ⊙ candidate, as one operation
        return (torch.lerp(candidate, h, z),)


class LSTMCell(_Cell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997) with the forget gate of Gers,
    Schmidhuber & Cummins (2000), as ``keras.layers.LSTMCell``; gate order i, f, c, o::

        i_t = σ(x_t W_i + h_{t-1} U_i + b_i)       input gate
        f_t = σ(x_t W_f + h_{t-1} U_f + b_f)       forget gate
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ tanh(x_t W_c + h_{t-1} U_c + b_c)
        o_t = σ(x_t W_o + h_{t-1} U_o + b_o)       output gate
        h_t = o_t ⊙ tanh(c_t)

    The state is the pair ``(h, c)``. One bias of ``4·units`` (``torch.nn.LSTM`` has two, whose
    sum is this one). ``unit_forget_bias=True`` starts ``b_f`` at 1.
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(self, input_size, units, *, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, unit_forget_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", device=None, dtype=None):
        self.unit_forget_bias = bool(unit_forget_bias)
        super().__init__(input_size, units, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, device=device, dtype=dtype)
        self.recurrent_activation, self.recurrent_activation_name = get_activation(recurrent_activation)

    def extra_repr(self):
        return super().extra_repr() + f", recurrent_activation={self.recurrent_activation_name!r}"

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None and self.unit_forget_bias:
            with torch.no_grad():
                self.bias[self.units:2 * self.units] = 1.0

    def step(self, x_proj, state, recurrent_mask=None):
        h, c = state
        if recurrent_mask is not None:
            h = h * recurrent_mask
        i, f, g, o = (x_proj + h @ self.recurrent_kernel).chunk(4, dim=-1)
        i = self.recurrent_activation(i)
        f = self.recurrent_activation(f)
        o = self.recurrent_activation(o)
        c = f * c + i * self.activation(g)
        return o * self.activation(c), c

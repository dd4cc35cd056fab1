"""Recurrent networks (lecture units 01, 03, 04).

``recurrence``: the unit 01 formulation h_t = tanh(U x_t + V h_{t-1} + c), y_t = W h_t + b,
with a hand-written backpropagation through time that equals autograd.

``cells``: one time step of ``SimpleRNNCell`` (Elman 1990), ``GRUCell`` (Cho et al. 2014) and
``LSTMCell`` (Hochreiter & Schmidhuber 1997; Gers et al. 2000), in Keras's weight layout.
``layers``: ``SimpleRNN``, ``GRU``, ``LSTM`` over ``(batch, time, features)`` with Keras's options
(sequences, states, backwards, bidirectional, stacks, variational dropout, masks/lengths).
``interop``: ``from_keras``, ``from_torch``, ``layer.to_torch()``, ``layer.to_keras()``.
``fused``: the same parameters through torch's fused kernels (``fused=True``).
``gradflow``: ``gradient_norms_per_step``, the per-step gradient norms ‖∂L/∂h_t‖.
"""
from .cells import GRUCell, LSTMCell, SimpleRNNCell
from .gradflow import gradient_norms_per_step
from .interop import from_keras, from_torch, to_keras, to_torch
from .layers import GRU, LSTM, SimpleRNN
from .recurrence import ElmanRNN, rnn_bptt, rnn_forward, rnn_output

__all__ = [
    "ElmanRNN", "rnn_forward", "rnn_output", "rnn_bptt",
    "SimpleRNNCell", "GRUCell", "LSTMCell",
    "SimpleRNN", "GRU", "LSTM",
    "from_keras", "from_torch", "to_torch", "to_keras",
    "gradient_norms_per_step",
]

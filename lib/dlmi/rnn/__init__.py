"""Recurrent networks (lecture units 01, 03, 04).

``recurrence``: the unit 01 formulation h_t = tanh(U x_t + V h_{t-1} + c), y_t = W h_t + b,
with a hand-written backpropagation through time that equals autograd.
"""
from .recurrence import ElmanRNN, rnn_bptt, rnn_forward, rnn_output

__all__ = ["ElmanRNN", "rnn_forward", "rnn_output", "rnn_bptt"]

"""Recurrent layers: a cell run over the time axis (lecture units 03 and 04).

``SimpleRNN``, ``GRU`` and ``LSTM`` take ``x`` of shape ``(batch, time, features)``, as in the
lecture and in Keras, and follow Keras's semantics option by option:

- ``return_sequences``: the output at every step ``(batch, time, units)`` instead of the last
  one ``(batch, units)``; ``return_state``: ``forward`` returns ``(output, *states)`` (SimpleRNN
  and GRU: ``h``; LSTM: ``h, c``);
- ``go_backwards``: read the sequence from the end; the returned sequence is in that reversed
  order, as Keras returns it;
- ``bidirectional`` (``keras.layers.Bidirectional``, Schuster & Paliwal 1997): a second cell reads
  the sequence backwards; its sequence output is turned back into time order and the two are
  merged by ``merge_mode`` (``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or ``None`` for the
  pair); states are the forward ones, then the backward ones;
- ``num_layers``: a stack, each layer reading the (merged) sequence of the one below, as stacked
  Keras layers with ``return_sequences=True`` (or ``torch.nn.LSTM(num_layers=...)``). States are
  listed layer by layer: ``[layer 0 forward, layer 0 backward, layer 1 forward, ...]``, which
  for one layer is exactly Keras's list;
- ``dropout`` / ``recurrent_dropout``: variational dropout (Gal & Ghahramani 2016): one mask per
  sequence on the inputs and one on ``h_{t-1}`` where it enters the recurrent product, the same
  at every time step, only in training mode. Each layer of a stack has its own masks, as each
  Keras layer does. dlmi draws one mask for all gates (Keras's ``implementation=2``; Keras
  switches to one mask per gate when ``recurrent_dropout > 0``: same expectation, other draws);
- padded batches: ``layer(x, lengths=...)`` or ``layer(x, mask=...)`` (``(batch, time)``, true
  where a step is real; any pattern, as ``keras.layers.Masking`` produces). A masked step leaves
  the state unchanged and repeats the previous output (zeros if ``zero_output_for_mask``), so the
  last output is the last valid step's, as in Keras.

The default path is the loop below, one line per idea. ``fused=True`` runs the same parameters
through torch's fused kernels (see :mod:`dlmi.rnn.fused`).
"""
from __future__ import annotations

import torch
from torch import nn

from .cells import GRUCell, LSTMCell, SimpleRNNCell

__all__ = ["SimpleRNN", "GRU", "LSTM", "MERGE_MODES"]

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def scan(cell, x, state, mask=None, backwards=False, keep_sequence=True, zero_output_for_mask=False,
         recurrent_mask=None, on_step=None):
    """Run ``cell`` over the time axis of ``x`` ``(batch, time, features)``.

    Returns ``(outputs, last_output, state)``: ``outputs`` is ``(batch, time, units)`` in the
    order the steps were taken (``None`` unless ``keep_sequence``), ``last_output`` the output
    of the last step taken and ``state`` the final state tuple. ``mask`` is ``(batch, time)``
    bool; ``on_step(t, state) -> state`` lets a tool see each new state (gradient flow).
    """
    # Inputs do not depend on the recurrence: one matrix product projects all steps at once.
    x_proj = cell.project_inputs(x).unbind(1)
    valid = mask.unsqueeze(-1).unbind(1) if mask is not None else None
    zero = x.new_zeros(())
    output, outputs = zero, []  # Keras's "previous output" before the first step is zero
    for t in (reversed(range(len(x_proj))) if backwards else range(len(x_proj))):
        new_state = cell.step(x_proj[t], state, recurrent_mask)
        if valid is not None:
            # A padded step changes nothing: the state carries over unchanged.
            new_state = tuple(torch.where(valid[t], new, old) for new, old in zip(new_state, state))
        if on_step is not None:
            new_state = on_step(t, new_state)
        if valid is None:
            output = new_state[0]
        else:
            output = torch.where(valid[t], new_state[0], zero if zero_output_for_mask else output)
        state = new_state
        if keep_sequence:
            outputs.append(output)
    return (torch.stack(outputs, 1) if keep_sequence else None), output, state


def _dropout_mask(like, rate):
    # Inverted dropout: scaled at training time so that evaluation needs no rescaling.
    return torch.empty_like(like).bernoulli_(1.0 - rate) / (1.0 - rate)


def _merge(parts, merge_mode):
    if len(parts) == 1:
        return parts[0]
    forward, backward = parts
    if merge_mode == "concat":
        return torch.cat([forward, backward], dim=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    if merge_mode == "ave":
        return (forward + backward) / 2
    return forward, backward


class _RNNLayer(nn.Module):
    """A stack of ``num_layers`` (× 2 directions) cells, and the loop that runs them.

    Subclasses choose ``cell_class`` and spell out the cell options in their signature.
    """

    cell_class = None

    def __init__(self, input_size, units, cell_options, *, return_sequences=False, return_state=False,
                 go_backwards=False, bidirectional=False, merge_mode="concat", num_layers=1, dropout=0.0,
                 recurrent_dropout=0.0, zero_output_for_mask=False, fused=False, device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("units", units), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        if bidirectional and go_backwards:
            raise ValueError("go_backwards=True with bidirectional=True: the backward direction already reads "
                             "the sequence from the end (keras.layers.Bidirectional rejects this too)")
        if bidirectional and merge_mode is None and num_layers > 1:
            raise ValueError("merge_mode=None returns the two directions separately, so they cannot feed "
                             "a next layer: use num_layers=1 or another merge_mode")
        self.input_size = input_size
        self.units = units
        self.num_layers = num_layers
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.bidirectional = bool(bidirectional)
        self.merge_mode = merge_mode
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        width = 2 * units if self.bidirectional and merge_mode == "concat" else units
        self.cells = nn.ModuleList(
            self.cell_class(input_size if layer == 0 else width, units, device=device, dtype=dtype, **cell_options)
            for layer in range(num_layers) for _ in range(self.num_directions))
        self.fused = fused

    # -- structure --------------------------------------------------------------------------------
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def cell(self):
        """The first cell (the only one unless bidirectional or stacked); ``cells`` has them all,
        ``cells[layer * num_directions + direction]``."""
        return self.cells[0]

    @property
    def state_names(self):
        return self.cell_class.state_names

    @property
    def fused(self):
        """Whether ``forward`` runs torch's fused kernels (same parameters, same results)."""
        return self._fused

    @fused.setter
    def fused(self, value):
        if value:
            from .fused import unsupported_reason

            reason = unsupported_reason(self)
            if reason:
                raise ValueError(f"fused=True is not available for this layer: {reason}")
        self._fused = bool(value)

    def extra_repr(self):
        options = [f"{self.input_size}, {self.units}"]
        defaults = {"return_sequences": False, "return_state": False, "go_backwards": False,
                    "bidirectional": False, "num_layers": 1, "dropout": 0.0, "recurrent_dropout": 0.0,
                    "zero_output_for_mask": False, "_fused": False}
        options += [f"{k.lstrip('_')}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v]
        if self.bidirectional:
            options.append(f"merge_mode={self.merge_mode!r}")
        return ", ".join(options)

    # -- checks -----------------------------------------------------------------------------------
    def _check_input(self, x):
        expected = f"(batch, time, {self.input_size})"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            hint = " (add a batch axis with x.unsqueeze(0))" if x.ndim == 2 and x.shape[-1] == self.input_size else ""
            raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}{hint}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must have at least one sequence and one time step, got shape {tuple(x.shape)}")
        weight = self.cell.kernel
        if x.dtype != weight.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights are {weight.dtype}; "
                            f"convert one of them (x.to({weight.dtype}) or layer.to({x.dtype}))")
        if x.device != weight.device:
            raise ValueError(f"x is on {x.device} but the layer's weights are on {weight.device}; "
                             "move the layer with layer.to(device) or x with x.to(device)")

    def _sequence_mask(self, x, lengths, mask):
        """The ``(batch, time)`` bool mask of real steps, from ``lengths`` or ``mask`` (or None)."""
        batch, time = x.shape[:2]
        if lengths is not None and mask is not None:
            raise ValueError("pass either lengths or mask, not both")
        if lengths is not None:
            if not isinstance(lengths, torch.Tensor):
                lengths = torch.as_tensor(lengths)
            if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
                raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape (batch,) = ({batch},), got {tuple(lengths.shape)}")
            lo, hi = int(lengths.min()), int(lengths.max())
            if lo < 1 or hi > time:
                raise ValueError(f"lengths must lie in [1, {time}] (the time axis of x), got values from {lo} to {hi}")
            lengths = lengths.to(x.device)
            return torch.arange(time, device=x.device) < lengths[:, None]
        if mask is not None:
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"mask must be a torch.Tensor of shape (batch, time) = ({batch}, {time}), "
                                f"got {type(mask).__name__}")
            if mask.shape != (batch, time):
                raise ValueError(f"mask must have shape (batch, time) = ({batch}, {time}), got {tuple(mask.shape)}")
            if mask.device != x.device:
                raise ValueError(f"mask is on {mask.device} but x is on {x.device}")
            return mask if mask.dtype == torch.bool else mask != 0
        return None

    def _initial_states(self, x, initial_state):
        """One state tuple per cell, from the flat list ``initial_state`` (or zeros)."""
        if initial_state is None:
            return [cell.initial_state(x) for cell in self.cells]
        flat = [initial_state] if isinstance(initial_state, torch.Tensor) else list(initial_state)
        per_cell = len(self.state_names)
        expected = len(self.cells) * per_cell
        shape = (x.shape[0], self.units)
        if len(flat) != expected:
            raise ValueError(f"initial_state must be {expected} tensors of shape (batch, units) = {shape} "
                             f"({', '.join(self.state_names)} per layer and direction), got {len(flat)}")
        for i, s in enumerate(flat):
            if not isinstance(s, torch.Tensor):
                raise TypeError(f"initial_state[{i}] must be a torch.Tensor of shape {shape}, got {type(s).__name__}")
            if s.shape != shape:
                raise ValueError(f"initial_state[{i}] must have shape (batch, units) = {shape}, got {tuple(s.shape)}")
            if s.dtype != x.dtype:
                raise TypeError(f"initial_state[{i}] has dtype {s.dtype}, expected {x.dtype} like x")
            if s.device != x.device:
                raise ValueError(f"initial_state[{i}] is on {s.device}, expected {x.device} like x")
        return [tuple(flat[i:i + per_cell]) for i in range(0, expected, per_cell)]

    # -- the computation --------------------------------------------------------------------------
    def forward(self, x, initial_state=None, *, lengths=None, mask=None):
        """Run the layer over ``x`` of shape ``(batch, time, input_size)``.

        ``initial_state``: the flat list of states (``(batch, units)`` each), in the order
        ``return_state`` returns them; zeros if omitted. ``lengths``: ``(batch,)`` integers in
        ``[1, time]`` for right-padded sequences; or ``mask``: ``(batch, time)`` bool.

        Returns ``output`` (``(batch, time, D)`` if ``return_sequences`` else ``(batch, D)``, with
        ``D = 2·units`` for a concatenated bidirectional layer and ``units`` otherwise; a pair of
        outputs for ``merge_mode=None``), or ``(output, *states)`` if ``return_state``.
        """
        return self._run(x, initial_state, lengths, mask)

    def _run(self, x, initial_state=None, lengths=None, mask=None, on_step=None):
        # on_step(cell_index, t, state) -> state is the gradient-flow tool's hook; it needs the loop.
        self._check_input(x)
        mask = self._sequence_mask(x, lengths, mask)
        states = self._initial_states(x, initial_state)
        fused = self._fused and on_step is None
        if fused:
            from .fused import fused_scan
            if self.training and self.recurrent_dropout > 0:
                raise ValueError("fused kernels have no recurrent dropout: set layer.fused = False to train "
                                 "with recurrent_dropout, or call layer.eval()")
        # keras.layers.Bidirectional sets its layers' zero_output_for_mask to return_sequences.
        zero_output = self.return_sequences if self.bidirectional else self.zero_output_for_mask
        layer_input, final_states = x, []
        for layer in range(self.num_layers):
            keep_sequence = self.return_sequences or layer < self.num_layers - 1
            sequences, last_outputs = [], []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self.cells[index]
                inputs, recurrent_mask = layer_input, None
                if self.training and self.dropout > 0:
                    inputs = inputs * _dropout_mask(inputs[:, 0], self.dropout).unsqueeze(1)
                if self.training and self.recurrent_dropout > 0:
                    recurrent_mask = _dropout_mask(states[index][0], self.recurrent_dropout)
                backwards = self.go_backwards or direction == 1
                if fused:
                    sequence, last, state = fused_scan(cell, inputs, states[index], mask, backwards,
                                                       keep_sequence, zero_output)
                else:
                    hook = None if on_step is None else (lambda t, s, i=index: on_step(i, t, s))
                    sequence, last, state = scan(cell, inputs, states[index], mask, backwards, keep_sequence,
                                                 zero_output, recurrent_mask, hook)
                if direction == 1 and keep_sequence:
                    sequence = sequence.flip(1)  # back into time order, as Bidirectional does
                sequences.append(sequence)
                last_outputs.append(last)
                final_states.extend(state)
            if keep_sequence:
                layer_input = _merge(sequences, self.merge_mode)
        output = _merge(sequences if self.return_sequences else last_outputs, self.merge_mode)
        if not self.return_state:
            return output
        return (*output, *final_states) if isinstance(output, tuple) else (output, *final_states)

    # -- interop ----------------------------------------------------------------------------------
    def to_torch(self):
        """The equivalent ``torch.nn.RNN/GRU/LSTM`` (``batch_first=True``) with these weights."""
        from .interop import to_torch

        return to_torch(self)

    def to_keras(self):
        """The equivalent Keras layer (or ``keras.layers.Bidirectional``) with these weights."""
        from .interop import to_keras

        return to_keras(self)


_LAYER_OPTIONS = """
    Layer options (keyword only): ``return_sequences=False, return_state=False,
    go_backwards=False, bidirectional=False, merge_mode="concat", num_layers=1, dropout=0.0,
    recurrent_dropout=0.0, zero_output_for_mask=False, fused=False, device=None, dtype=None``;
    see :mod:`dlmi.rnn.layers`. Parameters live in ``layer.cells`` (``layer.cell`` for a single
    cell) under Keras's names ``kernel``, ``recurrent_kernel``, ``bias``.
"""


class SimpleRNN(_RNNLayer):
    __doc__ = """Fully connected recurrent layer (Elman 1990), as ``keras.layers.SimpleRNN``.

    ``SimpleRNN(input_size, units)``: ``h_t = tanh(x_t W + b + h_{t-1} U)`` (see
    :class:`~dlmi.rnn.cells.SimpleRNNCell`); ``units · (input_size + units + 1)`` parameters.
    """ + _LAYER_OPTIONS

    cell_class = SimpleRNNCell

    def __init__(self, input_size, units, *, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", **options):
        cell_options = dict(activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
                            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer)
        super().__init__(input_size, units, cell_options, **options)


class GRU(_RNNLayer):
    __doc__ = """Gated recurrent unit layer (Cho et al. 2014), as ``keras.layers.GRU``.

    ``GRU(input_size, units, reset_after=True)``; see :class:`~dlmi.rnn.cells.GRUCell` for the
    equations. ``3 · units · (input_size + units + 2)`` parameters with ``reset_after`` (Keras's
    default and ``torch.nn.GRU``'s formulation), ``3 · units · (input_size + units + 1)`` without.
    """ + _LAYER_OPTIONS

    cell_class = GRUCell

    def __init__(self, input_size, units, *, reset_after=True, activation="tanh",
                 recurrent_activation="sigmoid", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", **options):
        cell_options = dict(reset_after=reset_after, activation=activation,
                            recurrent_activation=recurrent_activation, use_bias=use_bias,
                            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                            bias_initializer=bias_initializer)
        super().__init__(input_size, units, cell_options, **options)


class LSTM(_RNNLayer):
    __doc__ = """Long short-term memory layer (Hochreiter & Schmidhuber 1997; forget gate of Gers
    et al. 2000), as ``keras.layers.LSTM``.

    ``LSTM(input_size, units, unit_forget_bias=True)``; see :class:`~dlmi.rnn.cells.LSTMCell`.
    ``4 · units · (input_size + units + 1)`` parameters: ``LSTM(64, 128)`` has 98,816, as in the
    lecture's Keras model summary. With ``return_state`` the states are ``h, c``.
    """ + _LAYER_OPTIONS

    cell_class = LSTMCell

    def __init__(self, input_size, units, *, unit_forget_bias=True, activation="tanh",
                 recurrent_activation="sigmoid", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", **options):
        cell_options = dict(unit_forget_bias=unit_forget_bias, activation=activation,
                            recurrent_activation=recurrent_activation, use_bias=use_bias,
                            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                            bias_initializer=bias_initializer)
        super().__init__(input_size, units, cell_options, **options)

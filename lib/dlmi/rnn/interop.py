"""Moving weights between dlmi, Keras and torch.nn (lecture unit 04).

dlmi stores weights as Keras does (``kernel`` ``(input, gates·units)``, gates side by side in
columns). ``torch.nn.RNN/GRU/LSTM`` store the transposes (``weight_ih`` ``(gates·units, input)``)
and differ in two more ways that the functions here translate:

- gate order: Keras's GRU is z, r, h and torch's r, z, n (the same equations); the LSTM order
  i, f, c(g), o is the same on both sides;
- biases: torch has two, ``bias_ih`` and ``bias_hh``. For SimpleRNN and LSTM only their sum
  matters, which is Keras's single bias. For the GRU they are Keras's two rows with
  ``reset_after=True`` (the reset gate multiplies ``h U_h + b'_h``); Keras's
  ``reset_after=False`` (Cho et al.'s original, reset before the product) has no torch twin.

``from_keras``/``to_keras`` need Keras 3 (``pip install 'dlmi[keras]'``); Keras is imported only
when they are called.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .cells import ACTIVATIONS, GRUCell, LSTMCell, SimpleRNNCell
from .layers import GRU, LSTM, SimpleRNN

__all__ = ["from_torch", "to_torch", "from_keras", "to_keras", "torch_weights"]

# Position of each torch gate block in Keras's order.
_TORCH_GATE_ORDER = {SimpleRNNCell: (0,), GRUCell: (1, 0, 2), LSTMCell: (0, 1, 2, 3)}
_TORCH_MODULES = ((LSTM, nn.LSTM), (GRU, nn.GRU), (SimpleRNN, nn.RNN))


def _reorder(t, order):
    if order == tuple(range(len(order))):
        return t
    blocks = t.chunk(len(order), dim=-1)
    return torch.cat([blocks[g] for g in order], dim=-1)


def variant_problem(cell):
    """Why torch.nn has no twin of this cell (a sentence), or ``None`` if it has one."""
    if isinstance(cell, SimpleRNNCell):
        if cell.activation_name not in ("tanh", "relu"):
            return f"torch.nn.RNN supports activation 'tanh' or 'relu', not {cell.activation_name!r}"
        return None
    name = type(cell).__name__
    if cell.activation_name != "tanh" or cell.recurrent_activation_name != "sigmoid":
        return (f"torch.nn {name[:-4]} uses activation 'tanh' and recurrent_activation 'sigmoid', not "
                f"{cell.activation_name!r} and {cell.recurrent_activation_name!r}")
    if isinstance(cell, GRUCell) and not cell.reset_after:
        return ("GRU(reset_after=False) has no torch.nn twin: torch.nn.GRU applies the reset gate after the "
                "recurrent matrix product, which is Keras's reset_after=True")
    return None


def torch_weights(cell):
    """The cell's parameters in torch.nn layout: ``(weight_ih, weight_hh[, bias_ih, bias_hh])``.

    The tensors are computed from the cell's parameters (gradients flow back to them), which is
    how the fused path runs torch's kernels on dlmi's parameters.
    """
    problem = variant_problem(cell)
    if problem:
        raise ValueError(problem)
    order = _TORCH_GATE_ORDER[type(cell)]
    weights = (_reorder(cell.kernel, order).t(), _reorder(cell.recurrent_kernel, order).t())
    if cell.bias is None:
        return weights
    if isinstance(cell, GRUCell):
        return weights + (_reorder(cell.bias[0], order), _reorder(cell.bias[1], order))
    # Only the sum of torch's two biases matters; put it all in bias_ih.
    return weights + (cell.bias, torch.zeros_like(cell.bias))


def load_torch_weights(cell, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """Copy torch.nn-layout weights into ``cell`` (in place, no gradient)."""
    problem = variant_problem(cell)
    if problem:
        raise ValueError(problem)
    order = _TORCH_GATE_ORDER[type(cell)]
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    with torch.no_grad():
        cell.kernel.copy_(_reorder(weight_ih.t(), inverse))
        cell.recurrent_kernel.copy_(_reorder(weight_hh.t(), inverse))
        if cell.bias is not None:
            if isinstance(cell, GRUCell):
                cell.bias.copy_(torch.stack([_reorder(bias_ih, inverse), _reorder(bias_hh, inverse)]))
            else:
                cell.bias.copy_(bias_ih + bias_hh)
    return cell


def _torch_names(layer_index, direction, bias):
    suffix = f"_l{layer_index}" + ("_reverse" if direction else "")
    names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    return [name + suffix for name in names]


def to_torch(layer):
    """The ``torch.nn.RNN/GRU/LSTM`` (``batch_first=True``) computing what ``layer`` computes.

    torch returns ``(output_sequence, h_n)`` (LSTM: ``(output, (h_n, c_n))``) whatever
    ``return_sequences``/``return_state`` say. Raises ``ValueError`` where torch.nn has no twin:
    GRU ``reset_after=False``, other activations, ``go_backwards``, merge modes other than concat.
    """
    problem = variant_problem(layer.cell)
    if layer.go_backwards:
        problem = "torch.nn has no go_backwards option (flip the input in time instead)"
    elif layer.bidirectional and layer.merge_mode != "concat":
        problem = f"torch.nn's bidirectional layers concatenate the directions; merge_mode={layer.merge_mode!r}"
    if problem:
        raise ValueError(f"no torch.nn twin for this {type(layer).__name__}: {problem}")
    module_class = dict(_TORCH_MODULES)[type(layer)]
    if layer.dropout or layer.recurrent_dropout:
        warnings.warn(f"dropout/recurrent_dropout are not carried over: torch.nn.{module_class.__name__} drops out "
                      "between layers only, a different scheme", stacklevel=3)
    weight = layer.cell.kernel
    extra = {"nonlinearity": layer.cell.activation_name} if module_class is nn.RNN else {}
    module = module_class(layer.input_size, layer.units, num_layers=layer.num_layers, bias=layer.cell.use_bias,
                          batch_first=True, bidirectional=layer.bidirectional, device=weight.device,
                          dtype=weight.dtype, **extra)
    with torch.no_grad():
        for index, cell in enumerate(layer.cells):
            names = _torch_names(index // layer.num_directions, index % layer.num_directions, cell.use_bias)
            for name, value in zip(names, torch_weights(cell)):
                getattr(module, name).copy_(value)
    return module


_FROM_TORCH_OPTIONS = {"return_sequences", "return_state", "dropout", "recurrent_dropout",
                       "zero_output_for_mask", "fused"}


def from_torch(module, **options):
    """The dlmi layer computing what ``torch.nn.RNN/GRU/LSTM`` ``module`` computes.

    Stacked and bidirectional modules are supported; the result is batch-first whatever
    ``module.batch_first`` is, with ``return_sequences=True`` (torch's output) unless
    ``options`` say otherwise (also ``return_state``, ``fused``, ``dropout``, ...).
    """
    layer_class = next((ours for ours, theirs in _TORCH_MODULES if isinstance(module, theirs)), None)
    if layer_class is None:
        raise TypeError(f"from_torch expects a torch.nn.RNN, GRU or LSTM, got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise ValueError("torch.nn.LSTM with proj_size > 0 (a projected LSTM) has no Keras/dlmi twin")
    unknown = set(options) - _FROM_TORCH_OPTIONS
    if unknown:
        raise TypeError(f"from_torch takes only {sorted(_FROM_TORCH_OPTIONS)} as options, got {sorted(unknown)}: "
                        "the rest is fixed by the module")
    if module.dropout and module.num_layers > 1:
        warnings.warn("the module's dropout (between layers) is not carried over: dlmi uses Keras's dropout and "
                      "recurrent_dropout options instead", stacklevel=2)
    weight = module.weight_ih_l0
    cell_options = {"activation": module.nonlinearity} if layer_class is SimpleRNN else {}
    layer = layer_class(module.input_size, module.hidden_size, use_bias=module.bias, num_layers=module.num_layers,
                        bidirectional=module.bidirectional, device=weight.device, dtype=weight.dtype,
                        **{"return_sequences": True, **cell_options, **options})
    for index, cell in enumerate(layer.cells):
        names = _torch_names(index // layer.num_directions, index % layer.num_directions, module.bias)
        load_torch_weights(cell, *(getattr(module, name) for name in names))
    return layer


# -- Keras -----------------------------------------------------------------------------------------
def _keras():
    try:
        import keras
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Keras interop needs Keras 3: pip install 'dlmi[keras]'") from error
    return keras


def _keras_classes(keras):
    return ((SimpleRNN, keras.layers.SimpleRNN), (GRU, keras.layers.GRU), (LSTM, keras.layers.LSTM))


def _keras_weights(rnn):
    """A Keras recurrent layer's cell weights by name (kernel, recurrent_kernel, bias)."""
    return {v.name: torch.from_numpy(w) for v, w in zip(rnn.cell.weights, rnn.cell.get_weights())}


def _same_cell(a, b):
    keys = ("units", "activation", "recurrent_activation", "use_bias", "reset_after")
    config_a, config_b = a.cell.get_config(), b.cell.get_config()
    return type(a) is type(b) and all(config_a.get(k) == config_b.get(k) for k in keys)


def from_keras(layer):
    """The dlmi layer computing what the (built) Keras ``SimpleRNN``, ``GRU``, ``LSTM`` or
    ``Bidirectional`` ``layer`` computes, with its options and weights."""
    keras = _keras()
    if isinstance(layer, keras.layers.Bidirectional):
        rnns = [layer.forward_layer, layer.backward_layer]
        if not _same_cell(*rnns):
            raise ValueError("a Bidirectional whose backward layer differs from its forward layer has no dlmi twin")
    else:
        rnns = [layer]
    layer_class = next((ours for ours, theirs in _keras_classes(keras) if type(rnns[0]) is theirs), None)
    if layer_class is None:
        raise TypeError("from_keras expects keras.layers.SimpleRNN, GRU, LSTM or a Bidirectional of one, "
                        f"got {type(layer).__name__}")
    inner = rnns[0]
    if not inner.built or getattr(inner.cell, "kernel", None) is None:
        raise ValueError("the Keras layer has no weights yet: call it on data or layer.build((None, None, features))")
    if inner.stateful:
        raise ValueError("stateful Keras layers keep their state between calls; dlmi layers take initial_state "
                         "instead: rebuild the Keras layer with stateful=False to convert it")
    config = inner.get_config()
    options = {key: config[key] for key in ("activation", "use_bias", "return_sequences", "return_state",
                                            "dropout", "recurrent_dropout")}
    if layer_class is not SimpleRNN:
        options["recurrent_activation"] = config["recurrent_activation"]
    if layer_class is GRU:
        options["reset_after"] = config["reset_after"]
    for key in ("activation", "recurrent_activation"):
        if key in options and options[key] not in ACTIVATIONS:
            raise ValueError(f"{key} {options[key]!r} has no dlmi twin; known: {sorted(ACTIVATIONS)}")
    if len(rnns) == 2:
        options.update(bidirectional=True, merge_mode=layer.merge_mode)
    else:
        options.update(go_backwards=config["go_backwards"], zero_output_for_mask=inner.zero_output_for_mask)
    kernel = inner.cell.kernel
    dtype = getattr(torch, keras.backend.standardize_dtype(kernel.dtype))
    ours = layer_class(kernel.shape[0], config["units"], dtype=dtype, **options)
    with torch.no_grad():
        for cell, rnn in zip(ours.cells, rnns):
            for name, value in _keras_weights(rnn).items():
                getattr(cell, name).copy_(value)
    return ours


def to_keras(layer):
    """The built Keras layer (a ``Bidirectional`` if ``layer.bidirectional``) with ``layer``'s
    options and weights. Keras has no stacked layer: ``num_layers > 1`` raises ``ValueError``."""
    keras = _keras()
    if layer.num_layers > 1:
        raise ValueError("Keras has no stacked recurrent layer: build one Keras layer per dlmi layer "
                         "(num_layers=1 each, return_sequences=True below the top)")
    cell = layer.cell
    config = {"units": layer.units, "activation": cell.activation_name, "use_bias": cell.use_bias,
              "return_sequences": layer.return_sequences, "return_state": layer.return_state,
              "go_backwards": layer.go_backwards, "dropout": layer.dropout,
              "recurrent_dropout": layer.recurrent_dropout, "dtype": str(cell.kernel.dtype).removeprefix("torch.")}
    if isinstance(cell, (GRUCell, LSTMCell)):
        config["recurrent_activation"] = cell.recurrent_activation_name
    if isinstance(cell, GRUCell):
        config["reset_after"] = cell.reset_after
    if isinstance(cell, LSTMCell):
        config["unit_forget_bias"] = cell.unit_forget_bias
    for key in ("activation", "recurrent_activation"):
        if key in config and config[key] not in ACTIVATIONS:
            raise ValueError(f"{key} {config[key]!r} is not a Keras activation name: it cannot be exported")
    if layer.zero_output_for_mask and not layer.bidirectional:
        config["zero_output_for_mask"] = True
    result = dict(_keras_classes(keras))[type(layer)](**config)
    if layer.bidirectional:
        result = keras.layers.Bidirectional(result, merge_mode=layer.merge_mode)
        rnns = [result.forward_layer, result.backward_layer]
    else:
        rnns = [result]
    result.build((None, None, layer.input_size))
    for ours, rnn in zip(layer.cells, rnns):
        rnn.cell.kernel.assign(ours.kernel.detach().cpu().numpy())
        rnn.cell.recurrent_kernel.assign(ours.recurrent_kernel.detach().cpu().numpy())
        if ours.bias is not None:
            rnn.cell.bias.assign(ours.bias.detach().cpu().numpy())
    return result

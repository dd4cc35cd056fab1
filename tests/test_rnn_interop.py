"""dlmi.rnn interop: torch.nn -> dlmi -> torch.nn and Keras -> dlmi -> Keras round trips with
identical outputs, dlmi against Keras over the option grid (float32, <= 1e-5), parameter counts
equal Keras's, and clear errors where the other side has no twin."""
import os

import numpy as np
import pytest
import torch

from dlmi.rnn import GRU, LSTM, SimpleRNN, from_keras, from_torch

B, T, F, U = 3, 6, 5, 4
ATOL = 1e-5


# -- torch.nn ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [
    lambda: torch.nn.RNN(F, U, nonlinearity="relu", num_layers=2, bidirectional=True, batch_first=True),
    lambda: torch.nn.GRU(F, U, num_layers=2, bidirectional=True, batch_first=True),
    lambda: torch.nn.LSTM(F, U, num_layers=2, bidirectional=True, batch_first=True),
    lambda: torch.nn.LSTM(F, U, bias=False, batch_first=True),
], ids=["rnn-relu", "gru", "lstm", "lstm-nobias"])
def test_torch_dlmi_torch_round_trip(module):
    torch.manual_seed(0)
    module = module()
    with torch.no_grad():  # non-zero torch.nn biases in both rows, so that their mapping is exercised
        for name, p in module.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, F)
    layer = from_torch(module)
    back = layer.to_torch()
    assert type(back) is type(module) and back.batch_first
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in module.parameters())
    expected, expected_h = module(x)
    out, h = back(x)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(h, expected_h, rtol=0, atol=ATOL)
    for name, p in module.named_parameters():
        q = getattr(back, name)
        if name.startswith("weight") or isinstance(module, torch.nn.GRU):
            torch.testing.assert_close(q, p, rtol=0, atol=0)  # weights (and GRU biases) move exactly
    if isinstance(module, torch.nn.LSTM) and module.bias:  # only the sum of the two biases is kept
        torch.testing.assert_close(back.bias_ih_l0 + back.bias_hh_l0, module.bias_ih_l0 + module.bias_hh_l0)


def test_from_torch_is_batch_first_whatever_the_module_and_takes_options():
    torch.manual_seed(1)
    module = torch.nn.GRU(F, U)  # time-major
    layer = from_torch(module, return_sequences=False, return_state=True)
    x = torch.randn(B, T, F)
    out, h = layer(x)
    expected, h_n = module(x.transpose(0, 1))
    torch.testing.assert_close(out, expected[-1], rtol=0, atol=ATOL)
    torch.testing.assert_close(h, h_n[0], rtol=0, atol=ATOL)


def test_torch_errors_where_there_is_no_twin():
    with pytest.raises(ValueError, match="reset_after"):
        GRU(F, U, reset_after=False).to_torch()
    with pytest.raises(ValueError, match="go_backwards"):
        LSTM(F, U, go_backwards=True).to_torch()
    with pytest.raises(ValueError, match="merge_mode"):
        LSTM(F, U, bidirectional=True, merge_mode="sum").to_torch()
    with pytest.raises(ValueError, match="activation"):
        LSTM(F, U, recurrent_activation="hard_sigmoid").to_torch()
    with pytest.raises(ValueError, match="activation"):
        SimpleRNN(F, U, activation="sigmoid").to_torch()
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch.nn.LSTM(F, U, proj_size=2))
    with pytest.raises(TypeError, match="RNN, GRU or LSTM"):
        from_torch(torch.nn.Linear(F, U))
    with pytest.raises(TypeError, match="options"):
        from_torch(torch.nn.GRU(F, U), num_layers=3)
    with pytest.warns(UserWarning, match="dropout"):
        LSTM(F, U, dropout=0.2).to_torch()
    with pytest.warns(UserWarning, match="dropout"):
        from_torch(torch.nn.LSTM(F, U, num_layers=2, dropout=0.2))


def test_to_torch_follows_dtype():
    layer = GRU(F, U, dtype=torch.float64)
    module = layer.to_torch()
    assert module.weight_ih_l0.dtype == torch.float64
    x = torch.randn(B, T, F, dtype=torch.float64)
    torch.testing.assert_close(module(x)[0][:, -1], layer(x), rtol=0, atol=1e-12)


# -- Keras ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    return keras


def _randomize(keras_layer, seed):
    """Non-zero biases everywhere (Keras starts them at zero), so that their mapping is tested."""
    rng = np.random.default_rng(seed)
    keras_layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(w.dtype) for w in keras_layer.get_weights()])


def _numpy(tensor):
    return np.array(tensor)  # a writable copy of a TF tensor


def _as_list(result):
    return [_numpy(r) for r in result] if isinstance(result, (list, tuple)) else [_numpy(result)]


def _torch_list(result):
    return [r.detach().numpy() for r in result] if isinstance(result, tuple) else [result.detach().numpy()]


MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1]], dtype=bool)

# (layer, Bidirectional merge mode or "-", options, use mask, use initial state)
KERAS_CASES = [
    ("SimpleRNN", "-", dict(return_sequences=True, go_backwards=True), True, False),
    ("SimpleRNN", "-", dict(activation="relu", return_state=True), False, True),
    ("GRU", "-", dict(return_sequences=True, return_state=True), True, True),
    ("GRU", "-", dict(reset_after=False, return_sequences=True, go_backwards=True), True, False),
    ("GRU", "-", dict(reset_after=False, return_state=True, zero_output_for_mask=True), True, False),
    ("LSTM", "-", dict(return_sequences=True, return_state=True), True, True),
    ("LSTM", "-", dict(go_backwards=True, return_state=True, recurrent_activation="hard_sigmoid"), True, False),
    ("LSTM", "concat", dict(return_sequences=True, return_state=True), True, True),
    ("GRU", "sum", dict(return_sequences=True), True, False),
    ("GRU", "ave", dict(reset_after=False, return_state=True), True, False),
    ("SimpleRNN", "mul", dict(return_sequences=True, return_state=True), False, False),
    ("LSTM", None, dict(return_sequences=True, return_state=True), True, False),
]


@pytest.mark.keras
@pytest.mark.parametrize("name, merge_mode, options, masked, with_state", KERAS_CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(k for k, v in c[2].items() if v is True)}"
                              for c in KERAS_CASES])
def test_keras_parity_and_round_trip(keras, name, merge_mode, options, masked, with_state):
    rng = np.random.default_rng(1)
    inner = getattr(keras.layers, name)(U, **options)
    layer = inner if merge_mode == "-" else keras.layers.Bidirectional(inner, merge_mode=merge_mode)
    x = rng.standard_normal((B, T, F)).astype("float32")
    layer.build((None, None, F))
    _randomize(layer, 2)
    n_states = {"LSTM": 2}.get(name, 1) * (1 if merge_mode == "-" else 2)
    states = [rng.standard_normal((B, U)).astype("float32") for _ in range(n_states)] if with_state else None
    kwargs = {"mask": MASK} if masked else {}
    expected = _as_list(layer(x, initial_state=states, **kwargs) if with_state else layer(x, **kwargs))

    ours = from_keras(layer)
    assert type(ours).__name__ == name
    assert sum(p.numel() for p in ours.parameters()) == layer.count_params()
    call = dict(mask=torch.from_numpy(MASK)) if masked else {}
    if with_state:
        call["initial_state"] = [torch.from_numpy(s) for s in states]
    got = _torch_list(ours(torch.from_numpy(x), **call))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=ATOL)

    # Keras -> dlmi -> Keras, and where torch has the variant, -> torch.nn as well.
    again = ours.to_keras()
    assert type(again) is type(layer) and again.count_params() == layer.count_params()
    again_out = _as_list(again(x, initial_state=states, **kwargs) if with_state else again(x, **kwargs))
    for a, e in zip(again_out, expected):
        np.testing.assert_allclose(a, e, rtol=0, atol=ATOL)
    if not masked and not with_state and not options.get("go_backwards") and merge_mode in ("-", "concat") \
            and options.get("reset_after", True):
        module = ours.to_torch()
        sequence = module(torch.from_numpy(x))[0].detach().numpy()
        np.testing.assert_allclose(sequence if options.get("return_sequences") else sequence[:, -1],
                                   expected[0], rtol=0, atol=ATOL)


@pytest.mark.keras
def test_lecture_model_summary_and_keras_to_dlmi_to_torch(keras):
    """The lecture's Keras model: Embedding 64,000 / LSTM 98,816 / Dense 1,290 = 164,106."""
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(1000, 64),
                              keras.layers.LSTM(128), keras.layers.Dense(10)])
    assert [layer.count_params() for layer in model.layers] == [64_000, 98_816, 1_290]
    assert model.count_params() == 164_106
    keras_lstm = model.layers[1]
    _randomize(keras_lstm, 3)
    ours = from_keras(keras_lstm)
    assert sum(p.numel() for p in ours.parameters()) == 98_816
    tokens = np.random.default_rng(4).integers(0, 1000, (2, 7))
    embedded = _numpy(model.layers[0](tokens))
    expected = _numpy(keras_lstm(embedded))
    np.testing.assert_allclose(ours(torch.from_numpy(embedded)).detach().numpy(), expected, rtol=0, atol=ATOL)
    module = ours.to_torch()
    np.testing.assert_allclose(module(torch.from_numpy(embedded))[1][0][0].detach().numpy(), expected,
                               rtol=0, atol=ATOL)


@pytest.mark.keras
def test_keras_masking_layer_equals_mask_argument(keras):
    x = np.random.default_rng(5).standard_normal((B, T, F)).astype("float32")
    x[1, 4:] = 0.0  # padding, as keras.layers.Masking(0.0) sees it
    x[2, 1] = 0.0
    inputs = keras.Input((T, F))
    rnn = keras.layers.Bidirectional(keras.layers.LSTM(U, return_sequences=True))
    model = keras.Model(inputs, rnn(keras.layers.Masking(0.0)(inputs)))
    _randomize(rnn, 6)
    ours = from_keras(rnn)
    x_t = torch.from_numpy(x)
    got = ours(x_t, mask=(x_t != 0).any(-1)).detach().numpy()
    np.testing.assert_allclose(got, _numpy(model(x)), rtol=0, atol=ATOL)


@pytest.mark.keras
def test_dlmi_to_keras_carries_options_and_dtype(keras):
    torch.manual_seed(7)
    ours = GRU(F, U, reset_after=False, dropout=0.25, recurrent_dropout=0.1, return_sequences=True,
               dtype=torch.float64)
    k = ours.to_keras()
    config = k.get_config()
    assert (config["reset_after"], config["dropout"], config["recurrent_dropout"], config["return_sequences"]) == \
        (False, 0.25, 0.1, True)
    assert keras.backend.standardize_dtype(k.cell.kernel.dtype) == "float64"
    back = from_keras(k)
    assert back.dropout == 0.25 and back.recurrent_dropout == 0.1 and back.cell.kernel.dtype == torch.float64
    ours.eval()
    x = torch.randn(B, T, F, dtype=torch.float64)
    np.testing.assert_allclose(_numpy(k(x.numpy())), ours(x).detach().numpy(), rtol=0, atol=1e-12)


@pytest.mark.keras
def test_keras_errors(keras):
    with pytest.raises(ValueError, match="build"):
        from_keras(keras.layers.LSTM(U))
    with pytest.raises(TypeError, match="SimpleRNN, GRU, LSTM"):
        from_keras(keras.layers.Dense(U))
    stateful = keras.layers.GRU(U, stateful=True)
    stateful.build((B, T, F))
    with pytest.raises(ValueError, match="stateful"):
        from_keras(stateful)
    mixed = keras.layers.Bidirectional(keras.layers.LSTM(U), backward_layer=keras.layers.GRU(U, go_backwards=True))
    mixed.build((None, None, F))
    with pytest.raises(ValueError, match="backward layer"):
        from_keras(mixed)
    with pytest.raises(ValueError, match="stacked"):
        LSTM(F, U, num_layers=2).to_keras()
    with pytest.raises(ValueError, match="Keras activation"):
        SimpleRNN(F, U, activation=torch.sin).to_keras()

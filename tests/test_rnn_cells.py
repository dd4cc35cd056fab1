"""dlmi.rnn cells: one step against torch.nn's cells and the written-out equations; Keras's
parameter layout, counts and initialisers; bad input."""
import math

import pytest
import torch

from dlmi.rnn import GRU, LSTM, GRUCell, LSTMCell, SimpleRNN, SimpleRNNCell

f64 = torch.float64


def gru_from_torch(torch_cell):
    """A dlmi GRUCell with torch's weights, rearranged by hand (torch r,z,n -> Keras z,r,h)."""
    u = torch_cell.hidden_size
    cell = GRUCell(torch_cell.input_size, u, dtype=f64)

    def zrh(t):  # t: (3u, ...) in torch's order r, z, n
        r, z, n = t.split(u)
        return torch.cat([z, r, n])

    with torch.no_grad():
        cell.kernel.copy_(zrh(torch_cell.weight_ih).T)
        cell.recurrent_kernel.copy_(zrh(torch_cell.weight_hh).T)
        cell.bias.copy_(torch.stack([zrh(torch_cell.bias_ih), zrh(torch_cell.bias_hh)]))
    return cell


def test_simple_rnn_cell_equals_torch_rnn_cell_values_and_gradients():
    torch.manual_seed(0)
    for nonlinearity in ("tanh", "relu"):
        ref = torch.nn.RNNCell(4, 5, nonlinearity=nonlinearity, dtype=f64)
        cell = SimpleRNNCell(4, 5, activation=nonlinearity, dtype=f64)
        with torch.no_grad():
            cell.kernel.copy_(ref.weight_ih.T)
            cell.recurrent_kernel.copy_(ref.weight_hh.T)
            cell.bias.copy_(ref.bias_ih + ref.bias_hh)
        x = torch.randn(3, 4, dtype=f64, requires_grad=True)
        h = torch.randn(3, 5, dtype=f64, requires_grad=True)
        ours, theirs = cell(x, h), ref(x, h)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
        g_ours = torch.autograd.grad(ours.square().sum(), (x, h, cell.kernel, cell.bias))
        g_theirs = torch.autograd.grad(theirs.square().sum(), (x, h, ref.weight_ih, ref.bias_ih))
        torch.testing.assert_close(g_ours[:2], g_theirs[:2], rtol=0, atol=1e-12)
        torch.testing.assert_close(g_ours[2], g_theirs[2].T, rtol=0, atol=1e-12)
        torch.testing.assert_close(g_ours[3], g_theirs[3], rtol=0, atol=1e-12)


def test_gru_cell_equals_torch_gru_cell_values_and_gradients():
    torch.manual_seed(1)
    ref = torch.nn.GRUCell(4, 5, dtype=f64)
    cell = gru_from_torch(ref)
    x = torch.randn(3, 4, dtype=f64, requires_grad=True)
    h = torch.randn(3, 5, dtype=f64, requires_grad=True)
    ours, theirs = cell(x, h), ref(x, h)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    g_ours = torch.autograd.grad(ours.square().sum(), (x, h, cell.recurrent_kernel))
    g_theirs = torch.autograd.grad(theirs.square().sum(), (x, h, ref.weight_hh))
    torch.testing.assert_close(g_ours[:2], g_theirs[:2], rtol=0, atol=1e-12)
    r, z, n = g_theirs[2].split(5)
    torch.testing.assert_close(g_ours[2], torch.cat([z, r, n]).T, rtol=0, atol=1e-12)


def test_lstm_cell_equals_torch_lstm_cell_values_and_gradients():
    torch.manual_seed(2)
    ref = torch.nn.LSTMCell(4, 5, dtype=f64)
    cell = LSTMCell(4, 5, dtype=f64)
    with torch.no_grad():
        cell.kernel.copy_(ref.weight_ih.T)
        cell.recurrent_kernel.copy_(ref.weight_hh.T)
        cell.bias.copy_(ref.bias_ih + ref.bias_hh)
    x = torch.randn(3, 4, dtype=f64, requires_grad=True)
    h, c = torch.randn(2, 3, 5, dtype=f64, requires_grad=True)
    (h1, c1), (h2, c2) = cell(x, (h, c)), ref(x, (h, c))
    torch.testing.assert_close((h1, c1), (h2, c2), rtol=0, atol=1e-12)
    g_ours = torch.autograd.grad((h1 * c1).sum(), (x, cell.kernel, cell.bias))
    g_theirs = torch.autograd.grad((h2 * c2).sum(), (x, ref.weight_ih, ref.bias_hh))
    torch.testing.assert_close(g_ours[0], g_theirs[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours[1], g_theirs[1].T, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours[2], g_theirs[2], rtol=0, atol=1e-12)


def test_gru_reset_before_matches_the_written_out_equations_of_cho_2014():
    torch.manual_seed(3)
    cell = GRUCell(3, 4, reset_after=False, bias_initializer="glorot_uniform", dtype=f64)
    x, h = torch.randn(2, 3, dtype=f64), torch.randn(2, 4, dtype=f64)
    W, U, b = cell.kernel, cell.recurrent_kernel, cell.bias
    z = torch.sigmoid(x @ W[:, :4] + b[:4] + h @ U[:, :4])
    r = torch.sigmoid(x @ W[:, 4:8] + b[4:8] + h @ U[:, 4:8])
    candidate = torch.tanh(x @ W[:, 8:] + b[8:] + (r * h) @ U[:, 8:])
    torch.testing.assert_close(cell(x, h), z * h + (1 - z) * candidate, rtol=0, atol=1e-12)
    # reset_after=True differs: the reset gate multiplies h U_h + b', not h.
    after = GRUCell(3, 4, reset_after=True, dtype=f64)
    with torch.no_grad():
        after.kernel.copy_(W)
        after.recurrent_kernel.copy_(U)
        after.bias.copy_(torch.stack([b, torch.zeros_like(b)]))
    assert not torch.allclose(after(x, h), cell(x, h))


def test_lstm_hard_sigmoid_is_keras3_hard_sigmoid():
    cell = LSTMCell(2, 3, recurrent_activation="hard_sigmoid")
    v = torch.tensor([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0])
    torch.testing.assert_close(cell.recurrent_activation(v), torch.clamp(v / 6 + 0.5, 0, 1))


@pytest.mark.parametrize("layer, expected", [
    (SimpleRNN(64, 128), 128 * (64 + 128 + 1)),
    (GRU(64, 128), 3 * 128 * (64 + 128 + 2)),
    (GRU(64, 128, reset_after=False), 3 * 128 * (64 + 128 + 1)),
    (LSTM(64, 128), 98_816),                      # the lecture's model summary
    (LSTM(64, 128, bidirectional=True), 2 * 98_816),
    (LSTM(64, 128, num_layers=2), 98_816 + 4 * 128 * (128 + 128 + 1)),
    (GRU(8, 4, use_bias=False), 3 * 4 * (8 + 4)),
])
def test_parameter_counts_follow_keras(layer, expected):
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_keras_parameter_names_shapes_and_default_initialisers():
    torch.manual_seed(4)
    lstm = LSTM(64, 128)
    assert [n for n, _ in lstm.named_parameters()] == ["cells.0.kernel", "cells.0.recurrent_kernel", "cells.0.bias"]
    cell = lstm.cell
    assert cell.kernel.shape == (64, 512) and cell.recurrent_kernel.shape == (128, 512) and cell.bias.shape == (512,)
    # unit_forget_bias: forget block (Keras order i, f, c, o) is 1, the rest 0.
    torch.testing.assert_close(cell.bias[128:256], torch.ones(128))
    assert cell.bias[:128].abs().sum() == 0 and cell.bias[256:].abs().sum() == 0
    assert LSTM(4, 3, unit_forget_bias=False).cell.bias.abs().sum() == 0
    # glorot_uniform on the whole (64, 512) kernel: limit sqrt(6 / (64 + 512)).
    limit = math.sqrt(6 / (64 + 512))
    assert cell.kernel.abs().max() <= limit and cell.kernel.abs().max() > 0.9 * limit
    assert abs(cell.kernel.var().item() - limit**2 / 3) < 0.1 * limit**2 / 3
    # orthogonal on the whole (128, 512) recurrent kernel: orthonormal rows.
    rk = cell.recurrent_kernel.detach().double()
    torch.testing.assert_close(rk @ rk.T, torch.eye(128, dtype=f64), rtol=0, atol=1e-5)
    gru = GRU(5, 6)
    assert gru.cell.bias.shape == (2, 18) and gru.cell.bias.abs().sum() == 0
    assert GRU(5, 6, reset_after=False).cell.bias.shape == (18,)


def test_initializer_and_activation_options():
    cell = SimpleRNNCell(3, 4, kernel_initializer="zeros", recurrent_initializer="ones", bias_initializer="ones",
                         activation=None)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    torch.testing.assert_close(cell(x, h), 1 + h.sum(1, keepdim=True).expand(2, 4))
    custom = SimpleRNNCell(3, 4, kernel_initializer=torch.nn.init.eye_, activation=torch.sin)
    assert custom.activation_name.startswith("custom:")
    with pytest.raises(ValueError, match="unknown activation"):
        SimpleRNNCell(3, 4, activation="tanhh")
    with pytest.raises(ValueError, match="unknown initializer"):
        SimpleRNNCell(3, 4, kernel_initializer="glorot")


def test_cell_state_defaults_to_zeros_and_lstm_returns_pair():
    torch.manual_seed(5)
    cell = LSTMCell(3, 4)
    x = torch.randn(2, 3)
    h, c = cell(x)
    h0, c0 = cell(x, (torch.zeros(2, 4), torch.zeros(2, 4)))
    torch.testing.assert_close((h, c), (h0, c0))
    assert h.shape == c.shape == (2, 4)


def test_cell_bad_input():
    cell = GRUCell(3, 4)
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        cell(torch.randn(2, 1, 3))
    with pytest.raises(TypeError, match="dtype"):
        cell(torch.randn(2, 3, dtype=f64))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        cell(torch.randn(2, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match="h and c"):
        LSTMCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(TypeError):
        cell([[1.0, 2.0, 3.0]])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="units"):
            GRUCell(3, bad)


def test_keras_variance_scaling_initializers():
    torch.manual_seed(6)
    fan_in, units = 256, 256
    for name, variance in (("glorot_normal", 2 / (fan_in + 4 * units)), ("he_uniform", 2 / fan_in),
                           ("lecun_normal", 1 / fan_in)):
        kernel = LSTMCell(fan_in, units, kernel_initializer=name).kernel.detach()
        assert abs(kernel.var().item() / variance - 1) < 0.05, name
        if name.endswith("normal"):  # truncated at two standard deviations, as in Keras
            assert kernel.abs().max() <= 2 * math.sqrt(variance) / 0.87962566103423978 + 1e-6

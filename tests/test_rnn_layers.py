"""dlmi.rnn layers: values, final states and gradients against torch.nn (float64), padded
batches against torch's packed sequences, Keras masking semantics, go_backwards, bidirectional
merge modes, stacking, initial states, variational dropout, the fused path and bad input.
(Keras itself is compared in test_rnn_interop.py.)"""
import pytest
import torch

from dlmi.rnn import GRU, LSTM, SimpleRNN, from_torch

f64 = torch.float64
B, T, F, U = 3, 6, 5, 4

TORCH_KINDS = {
    "rnn-tanh": lambda **kw: torch.nn.RNN(F, U, nonlinearity="tanh", **kw),
    "rnn-relu": lambda **kw: torch.nn.RNN(F, U, nonlinearity="relu", **kw),
    "gru": lambda **kw: torch.nn.GRU(F, U, **kw),
    "lstm": lambda **kw: torch.nn.LSTM(F, U, **kw),
}


def torch_module(kind, num_layers=1, bidirectional=False, seed=0):
    torch.manual_seed(seed)
    return TORCH_KINDS[kind](num_layers=num_layers, bidirectional=bidirectional, batch_first=True, dtype=f64)


def run_torch(module, x, h0=None, lengths=None):
    """torch output sequence and the flat state list in dlmi's order (per cell: h[, c])."""
    lstm = isinstance(module, torch.nn.LSTM)
    if lengths is not None:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, hn = module(x, h0)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    states = [s for k in range(hn[0].shape[0]) for s in (hn[0][k], hn[1][k])] if lstm else list(hn)
    return out, states


def torch_initial(module, flat):
    cells = module.num_layers * (2 if module.bidirectional else 1)
    if isinstance(module, torch.nn.LSTM):
        return torch.stack(flat[0::2]), torch.stack(flat[1::2])
    assert len(flat) == cells
    return torch.stack(flat)


def random_states(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = len(layer.cells) * len(layer.state_names)
    return [torch.randn(B, U, dtype=f64, generator=g, requires_grad=True) for _ in range(n)]


def torch_grads_in_keras_layout(module, layer):
    """torch's parameter gradients mapped to dlmi's (Keras) layout, cell by cell."""
    grads = []
    for index, cell in enumerate(layer.cells):
        suffix = f"_l{index // layer.num_directions}" + ("_reverse" if index % layer.num_directions else "")
        w_ih, w_hh, b_ih, b_hh = (getattr(module, n + suffix).grad for n in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        if isinstance(module, torch.nn.GRU):  # torch r, z, n -> Keras z, r, h
            def zrh(t):
                r, z, n = t.split(U)
                return torch.cat([z, r, n])
            grads.append((zrh(w_ih).T, zrh(w_hh).T, torch.stack([zrh(b_ih), zrh(b_hh)])))
        else:
            torch.testing.assert_close(b_ih, b_hh)  # both biases enter the same sum
            grads.append((w_ih.T, w_hh.T, b_ih))
    return grads


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)], ids=["1layer", "2layer-bi"])
@pytest.mark.parametrize("kind", list(TORCH_KINDS))
def test_matches_torch_outputs_states_and_gradients(kind, num_layers, bidirectional, fused):
    module = torch_module(kind, num_layers, bidirectional)
    layer = from_torch(module, return_state=True, fused=fused)
    x = torch.randn(B, T, F, dtype=f64, requires_grad=True)
    h0 = random_states(layer)
    ours = layer(x, h0)
    theirs_out, theirs_states = run_torch(module, x, torch_initial(module, h0))
    torch.testing.assert_close(ours[0], theirs_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(list(ours[1:]), theirs_states, rtol=0, atol=1e-12)

    weights = torch.randn_like(theirs_out)
    def loss(out, states):
        return (weights * out).sum() + sum((s ** 2).sum() for s in states)
    g_ours = torch.autograd.grad(loss(ours[0], ours[1:]), [x, *h0] + list(layer.parameters()))
    g_theirs = torch.autograd.grad(loss(theirs_out, theirs_states), [x, *h0], retain_graph=True)
    torch.testing.assert_close(g_ours[:1 + len(h0)], g_theirs, rtol=0, atol=1e-10)
    loss(theirs_out, theirs_states).backward()
    expected = [g for cell in torch_grads_in_keras_layout(module, layer) for g in cell]
    torch.testing.assert_close(list(g_ours[1 + len(h0):]), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_lengths_match_torch_packed_sequences(kind, fused):
    module = torch_module(kind, num_layers=2, bidirectional=True)
    layer = from_torch(module, return_state=True, fused=fused)
    x = torch.randn(B, T, F, dtype=f64, requires_grad=True)
    lengths = torch.tensor([T, 2, 4])
    ours = layer(x, lengths=lengths)
    theirs_out, theirs_states = run_torch(module, x, lengths=lengths)
    valid = (torch.arange(T) < lengths[:, None])[..., None]
    torch.testing.assert_close(ours[0] * valid, theirs_out, rtol=0, atol=1e-12)
    # Keras's Bidirectional with return_sequences returns zeros at padded steps, as torch does.
    assert torch.all(ours[0][~valid.expand_as(ours[0])] == 0)
    torch.testing.assert_close(list(ours[1:]), theirs_states, rtol=0, atol=1e-12)
    g_ours, = torch.autograd.grad((ours[0] ** 2).sum() + ours[1].sum(), x)
    g_theirs, = torch.autograd.grad((theirs_out ** 2).sum() + theirs_states[0].sum(), x)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=1e-10)
    assert torch.all(g_ours[~valid.expand_as(x)] == 0)  # padding has no influence at all


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("layer_class", [SimpleRNN, GRU, LSTM])
def test_masked_steps_are_skipped_exactly(layer_class, go_backwards):
    """Any mask (holes, left padding): the result is the sequence with the masked steps removed,
    the state carries over them and the output repeats the previous output (zero before any)."""
    torch.manual_seed(6)
    layer = layer_class(F, U, return_sequences=True, return_state=True, go_backwards=go_backwards, dtype=f64)
    x = torch.randn(B, T, F, dtype=f64)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out, *states = layer(x, mask=mask)
    for b in range(B):
        alone, *alone_states = layer(x[b:b + 1, mask[b]])
        for s, s_alone in zip(states, alone_states):
            torch.testing.assert_close(s[b:b + 1], s_alone, rtol=0, atol=1e-12)
        order = range(T - 1, -1, -1) if go_backwards else range(T)
        previous, taken = torch.zeros(U, dtype=f64), 0
        for position, t in enumerate(order):  # Keras's timeline: the order the steps are read
            if mask[b, t]:
                previous = alone[0, taken]
                taken += 1
            torch.testing.assert_close(out[b, position], previous, rtol=0, atol=1e-12)
    # zero_output_for_mask puts zeros at masked steps instead.
    layer.zero_output_for_mask = True
    zeroed = layer(x, mask=mask)[0]
    read_mask = mask.flip(1) if go_backwards else mask
    assert torch.all(zeroed[~read_mask] == 0)
    torch.testing.assert_close(zeroed[read_mask], out[read_mask])


def test_last_output_is_the_last_valid_step_and_lengths_equal_mask():
    torch.manual_seed(7)
    layer = LSTM(F, U, dtype=f64)
    x = torch.randn(B, T, F, dtype=f64)
    lengths = [3, 6, 1]
    last = layer(x, lengths=lengths)
    mask = torch.arange(T) < torch.tensor(lengths)[:, None]
    torch.testing.assert_close(layer(x, mask=mask), last, rtol=0, atol=0)
    torch.testing.assert_close(layer(x, mask=mask.int()), last, rtol=0, atol=0)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(last[b], layer(x[b:b + 1, :n])[0], rtol=0, atol=1e-12)


def test_go_backwards_reads_the_reversed_sequence_and_returns_it_reversed():
    torch.manual_seed(8)
    forward = GRU(F, U, return_sequences=True, dtype=f64)
    backward = GRU(F, U, return_sequences=True, go_backwards=True, dtype=f64)
    backward.load_state_dict(forward.state_dict())
    x = torch.randn(B, T, F, dtype=f64)
    torch.testing.assert_close(backward(x), forward(x.flip(1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave", None])
def test_bidirectional_merge_modes_and_state_order(merge_mode):
    torch.manual_seed(9)
    concat = LSTM(F, U, bidirectional=True, return_sequences=True, return_state=True, dtype=f64)
    other = LSTM(F, U, bidirectional=True, return_sequences=True, return_state=True, merge_mode=merge_mode,
                 dtype=f64)
    other.load_state_dict(concat.state_dict())
    x = torch.randn(B, T, F, dtype=f64)
    out, h_f, c_f, h_b, c_b = concat(x)
    fwd, bwd = out[..., :U], out[..., U:]
    # Forward states are the forward direction's last step, backward ones its first.
    torch.testing.assert_close(h_f, fwd[:, -1])
    torch.testing.assert_close(h_b, bwd[:, 0])
    expected = {"sum": fwd + bwd, "mul": fwd * bwd, "ave": (fwd + bwd) / 2, None: (fwd, bwd)}[merge_mode]
    result = other(x)
    if merge_mode is None:
        assert len(result) == 6
        torch.testing.assert_close(result[:2], expected)
    else:
        assert len(result) == 5
        torch.testing.assert_close(result[0], expected)
    torch.testing.assert_close(result[-4:], (h_f, c_f, h_b, c_b))
    # Without return_sequences the merged output is built from the last steps of each direction.
    other.return_sequences = False
    last = other(x)
    if merge_mode == "sum":
        torch.testing.assert_close(last[0], h_f + h_b)


def test_stacked_equals_composed_single_layers():
    torch.manual_seed(10)
    stack = GRU(F, U, num_layers=2, bidirectional=True, merge_mode="sum", return_state=True, dtype=f64)
    first = GRU(F, U, bidirectional=True, merge_mode="sum", return_sequences=True, return_state=True, dtype=f64)
    second = GRU(U, U, bidirectional=True, merge_mode="sum", return_state=True, dtype=f64)
    first.cells.load_state_dict(stack.cells[:2].state_dict())
    second.cells.load_state_dict(stack.cells[2:].state_dict())
    x = torch.randn(B, T, F, dtype=f64)
    lengths = torch.tensor([6, 3, 5])
    out, *states = stack(x, lengths=lengths)
    seq, *states1 = first(x, lengths=lengths)
    top, *states2 = second(seq, lengths=lengths)
    torch.testing.assert_close(out, top, rtol=0, atol=1e-12)
    torch.testing.assert_close(states, states1 + states2, rtol=0, atol=1e-12)


def test_initial_state_continues_a_sequence():
    torch.manual_seed(11)
    layer = LSTM(F, U, num_layers=2, return_sequences=True, return_state=True, dtype=f64)
    x = torch.randn(B, T, F, dtype=f64)
    full, *states = layer(x)
    first, *middle = layer(x[:, :2])
    rest, *end = layer(x[:, 2:], middle)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=0, atol=1e-12)
    torch.testing.assert_close(end, states, rtol=0, atol=1e-12)
    assert len(states) == 4  # (h, c) for each of the two layers
    single = SimpleRNN(F, U, return_state=True, dtype=f64)
    h = torch.randn(B, U, dtype=f64)
    torch.testing.assert_close(single(x, h), single(x, [h]))


def _identity_rnn(**options):
    layer = SimpleRNN(F, F, activation="linear", return_sequences=True, **options)
    with torch.no_grad():
        layer.cell.kernel.copy_(torch.eye(F))
        layer.cell.recurrent_kernel.zero_()
    return layer


def test_input_dropout_mask_is_fixed_over_time_per_sequence_and_off_in_eval():
    torch.manual_seed(12)
    layer = _identity_rnn(dropout=0.5)
    x = torch.ones(64, T, F)
    out = layer(x)  # output_t = (x_t * mask) @ I = the mask itself
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    torch.testing.assert_close(out, out[:, :1].expand_as(out), rtol=0, atol=0)  # same at every step
    assert len({tuple(row) for row in out[:, 0].tolist()}) > 1  # but drawn per sequence
    assert 0.3 < (out == 0).float().mean() < 0.7
    assert not torch.equal(layer(x), out)  # and drawn afresh for each call
    layer.eval()
    torch.testing.assert_close(layer(x), x, rtol=0, atol=0)


def test_recurrent_dropout_mask_is_fixed_over_time():
    torch.manual_seed(13)
    layer = _identity_rnn(recurrent_dropout=0.5)
    with torch.no_grad():
        layer.cell.recurrent_kernel.copy_(torch.eye(F))
    x = torch.ones(64, T, F, dtype=torch.float32)
    h = layer(x)  # h_t = 1 + m * h_{t-1}, so h_t = sum_{k<t} m^k when m is the same at every step
    m = h[:, 1] - 1
    assert set(m.unique().tolist()) <= {0.0, 2.0} and len(m.unique()) == 2
    expected = torch.stack([sum(m ** k for k in range(t + 1)) for t in range(T)], 1)
    torch.testing.assert_close(h, expected, rtol=0, atol=0)
    layer.eval()
    torch.testing.assert_close(layer(x)[:, -1], torch.full((64, F), float(T)))


@pytest.mark.parametrize("layer_class", [GRU, LSTM])
def test_dropout_trains_gated_layers_and_eval_is_deterministic(layer_class):
    torch.manual_seed(14)
    layer = layer_class(F, U, dropout=0.3, recurrent_dropout=0.3, num_layers=2, bidirectional=True)
    plain = layer_class(F, U, num_layers=2, bidirectional=True)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, F)
    assert not torch.allclose(layer(x), plain(x))
    layer.eval()
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("options", [
    dict(go_backwards=True, return_sequences=True),
    dict(bidirectional=True, merge_mode="mul", return_sequences=True, num_layers=2),
    dict(bidirectional=True, merge_mode="ave", return_state=True),
    dict(return_sequences=True, zero_output_for_mask=True, return_state=True),
    dict(return_sequences=True, go_backwards=True, zero_output_for_mask=True),
], ids=["backwards", "bi-mul-stack", "bi-ave-state", "zero-output", "backwards-zero"])
@pytest.mark.parametrize("layer_class", [SimpleRNN, GRU, LSTM])
def test_fused_path_equals_the_loop_with_padding(layer_class, options):
    torch.manual_seed(15)
    loop = layer_class(F, U, dtype=f64, **options)
    fused = layer_class(F, U, dtype=f64, fused=True, **options)
    fused.load_state_dict(loop.state_dict())
    x = torch.randn(B, T, F, dtype=f64, requires_grad=True)
    lengths = torch.tensor([2, T, 5])
    a, b = loop(x, lengths=lengths), fused(x, lengths=lengths)
    a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    ga = torch.autograd.grad(sum((t ** 2).sum() for t in a), [x, *loop.parameters()])
    gb = torch.autograd.grad(sum((t ** 2).sum() for t in b), [x, *fused.parameters()])
    torch.testing.assert_close(gb, ga, rtol=0, atol=1e-10)


def test_fused_with_input_dropout_trains_and_refuses_what_it_cannot_do():
    torch.manual_seed(16)
    layer = LSTM(F, U, dropout=0.5, fused=True)
    x = torch.randn(B, T, F)
    assert not torch.equal(layer(x), layer(x))
    with pytest.raises(ValueError, match="reset_after"):
        GRU(F, U, reset_after=False, fused=True)
    with pytest.raises(ValueError, match="activation"):
        LSTM(F, U, activation="relu", fused=True)
    with pytest.raises(ValueError, match="activation"):
        SimpleRNN(F, U, activation="sigmoid").fused = True
    rec = GRU(F, U, recurrent_dropout=0.2, fused=True)
    with pytest.raises(ValueError, match="recurrent dropout"):
        rec(x)
    rec.eval()
    rec(x)  # fine without dropout
    holes = torch.tensor([[1, 0, 1, 1, 1, 1]] * B, dtype=torch.bool)
    with pytest.raises(ValueError, match="right-padded"):
        rec(x, mask=holes)
    torch.testing.assert_close(rec(x, mask=holes[:, [0, 2, 3, 4, 5, 1]]), rec(x, lengths=[5] * B))


def test_return_shapes():
    x = torch.randn(B, T, F)
    assert LSTM(F, U)(x).shape == (B, U)
    assert LSTM(F, U, return_sequences=True)(x).shape == (B, T, U)
    assert LSTM(F, U, bidirectional=True)(x).shape == (B, 2 * U)
    out = LSTM(F, U, bidirectional=True, num_layers=3, return_state=True, return_sequences=True)(x)
    assert len(out) == 1 + 3 * 2 * 2 and out[0].shape == (B, T, 2 * U)
    assert all(s.shape == (B, U) for s in out[1:])
    assert GRU(F, U, return_state=True)(x)[1].shape == (B, U)


def test_bad_input_is_refused_with_the_expected_shape():
    layer = GRU(F, U)
    x = torch.randn(B, T, F)
    with pytest.raises(ValueError, match=rf"\(batch, time, {F}\).*unsqueeze"):
        layer(torch.randn(T, F))
    with pytest.raises(ValueError, match=rf"\(batch, time, {F}\)"):
        layer(torch.randn(B, T, F + 1))
    with pytest.raises(ValueError, match=rf"\(batch, time, {F}\)"):
        layer(torch.randn(B, T, F, 1))
    with pytest.raises(ValueError, match="time step"):
        layer(torch.randn(B, 0, F))
    with pytest.raises(TypeError, match="Tensor"):
        layer(x.tolist())
    with pytest.raises(TypeError, match="dtype"):
        layer(x.double())
    with pytest.raises(ValueError, match=rf"\[1, {T}\]"):
        layer(x, lengths=[T + 1, 2, 3])
    with pytest.raises(ValueError, match=rf"\[1, {T}\]"):
        layer(x, lengths=[0, 2, 3])
    with pytest.raises(ValueError, match=rf"\(batch,\) = \({B},\)"):
        layer(x, lengths=[2, 3])
    with pytest.raises(TypeError, match="integers"):
        layer(x, lengths=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=rf"\(batch, time\) = \({B}, {T}\)"):
        layer(x, mask=torch.ones(B, T - 1, dtype=torch.bool))
    with pytest.raises(TypeError, match=rf"\(batch, time\) = \({B}, {T}\)"):
        layer(x, mask=[[True] * T] * B)
    with pytest.raises(ValueError, match="not both"):
        layer(x, lengths=[1, 2, 3], mask=torch.ones(B, T, dtype=torch.bool))
    with pytest.raises(ValueError, match=rf"\(batch, units\) = \({B}, {U}\)"):
        layer(x, torch.zeros(B, U + 1))
    with pytest.raises(ValueError, match="2 tensors"):
        LSTM(F, U)(x, torch.zeros(B, U))
    with pytest.raises(TypeError, match="dtype"):
        layer(x, torch.zeros(B, U, dtype=f64))


def test_bad_options_are_refused():
    for bad in (dict(units=0), dict(num_layers=0), dict(dropout=1.0), dict(recurrent_dropout=-0.1),
                dict(merge_mode="avg"), dict(bidirectional=True, go_backwards=True),
                dict(bidirectional=True, merge_mode=None, num_layers=2)):
        options = dict(units=U) | bad
        with pytest.raises(ValueError):
            LSTM(F, **options)


@pytest.mark.cuda
def test_same_results_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(17)
    for layer_class in (SimpleRNN, GRU, LSTM):
        cpu = layer_class(F, U, bidirectional=True, return_sequences=True, return_state=True, num_layers=2)
        x = torch.randn(B, T, F)
        lengths = torch.tensor([T, 2, 4])
        expected = cpu(x, lengths=lengths)
        gpu = cpu.to("cuda")
        for fused in (False, True):
            gpu.fused = fused
            # cuDNN's RNN kernels use TF32 by default (errors ~1e-3, as torch.nn.LSTM's); compare in
            # float32, then check that a training step (cuDNN backward) runs in both modes.
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                got = gpu(x.cuda(), lengths=lengths.cuda())
            assert all(t.is_cuda for t in got)
            torch.testing.assert_close([t.cpu() for t in got], list(expected), rtol=1e-4, atol=1e-5)
            for mode in (gpu.train, gpu.eval):
                mode()
                gpu.zero_grad()
                gpu(x.cuda(), lengths=lengths.cuda())[0].sum().backward()
                assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())
        with pytest.raises(ValueError, match="device"):
            gpu(x)


def test_layers_pickle_and_copy(tmp_path):
    import copy

    torch.manual_seed(18)
    layer = GRU(F, U, bidirectional=True, kernel_initializer="he_normal", fused=True, return_sequences=True)
    torch.save(layer, tmp_path / "gru.pt")
    loaded = torch.load(tmp_path / "gru.pt", weights_only=False)
    x = torch.randn(B, T, F)
    torch.testing.assert_close(loaded(x), layer(x), rtol=0, atol=0)
    torch.testing.assert_close(copy.deepcopy(layer).double()(x.double()), layer(x).double(), rtol=0, atol=1e-6)

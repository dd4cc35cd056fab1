"""Unit 01's recurrence and hand-written BPTT, against torch.nn.RNN and autograd."""
import pytest
import torch

from dlmi.rnn import ElmanRNN, rnn_bptt, rnn_forward, rnn_output


def _params(B, T, D, H, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, D, generator=g, dtype=dtype), 0.7 * torch.randn(H, D, generator=g, dtype=dtype),
            0.7 * torch.randn(H, H, generator=g, dtype=dtype), torch.randn(H, generator=g, dtype=dtype),
            torch.randn(B, H, generator=g, dtype=dtype))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 7, 2, 5), (2, 20, 4, 3)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_forward_equals_torch_nn_rnn(shape, with_h0):
    x, U, V, c, h0 = _params(*shape, seed=sum(shape))
    ref = torch.nn.RNN(shape[2], shape[3], batch_first=True, nonlinearity="tanh").double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(U)
        ref.weight_hh_l0.copy_(V)
        ref.bias_ih_l0.copy_(c)
        ref.bias_hh_l0.zero_()
        want, h_last = ref(x, h0[None] if with_h0 else None)
    got = rnn_forward(x, U, V, c, h0 if with_h0 else None)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(got[:, -1], h_last[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 9, 3, 6), (2, 30, 2, 4)])
def test_bptt_equals_autograd_including_per_step_terms(shape):
    B, T, D, H = shape
    x, U, V, c, h0 = _params(*shape, seed=3 * T)
    W = torch.randn(2, H, dtype=torch.float64)
    # a separate copy of U and V per step: autograd then gives each step's term of the shared gradient
    Us = [U.clone().requires_grad_() for _ in range(T)]
    Vs = [V.clone().requires_grad_() for _ in range(T)]
    c = c.clone().requires_grad_()
    h0 = h0.clone().requires_grad_()
    h, hs = h0, []
    for t in range(T):
        h = torch.tanh(x[:, t] @ Us[t].T + h @ Vs[t].T + c)
        hs.append(h)
    hs = torch.stack(hs, 1)
    y = rnn_output(hs, W, torch.zeros(2, dtype=torch.float64))
    loss = (y.sin() * torch.arange(T, dtype=torch.float64)[None, :, None]).sum()  # step-dependent loss
    loss.backward()
    dy = torch.autograd.functional.vjp(lambda y_: (y_.sin() * torch.arange(T, dtype=torch.float64)[None, :, None]).sum(),
                                       y.detach())[1]
    got = rnn_bptt(x, hs.detach(), dy @ W, U, V, h0.detach())
    torch.testing.assert_close(got["dU_steps"], torch.stack([u.grad for u in Us]), rtol=0, atol=1e-10)
    torch.testing.assert_close(got["dV_steps"], torch.stack([v.grad for v in Vs]), rtol=0, atol=1e-10)
    torch.testing.assert_close(got["dU"], sum(u.grad for u in Us), rtol=0, atol=1e-10)
    torch.testing.assert_close(got["dV"], sum(v.grad for v in Vs), rtol=0, atol=1e-10)
    torch.testing.assert_close(got["dc"], c.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(got["dh0"], h0.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(got["dc_steps"].sum(0), c.grad, rtol=0, atol=1e-10)


def test_elman_rnn_module_trains_and_follows_its_device():
    torch.manual_seed(0)
    model = ElmanRNN(2, 8, 1)
    assert sum(p.numel() for p in model.parameters()) == 8 * 2 + 8 * 8 + 8 + 8 + 1
    x = torch.randn(16, 12, 2)
    target = x[..., :1].cumsum(1).tanh()  # needs memory of the past
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        y, hs = model(x)
        loss = torch.nn.functional.mse_loss(y, target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert hs.shape == (16, 12, 8)
    assert loss.item() < 0.1 * first


def test_scalar_rnn_matches_the_hand_computation():
    u, v, c = 1.5, 0.8, 0.1
    x = [1.0, 0.0, -0.5]
    h, want = 0.0, []
    for x_t in x:
        h = torch.tanh(torch.tensor(u * x_t + v * h + c, dtype=torch.float64)).item()
        want.append(h)
    t = lambda val: torch.tensor([[val]], dtype=torch.float64)  # noqa: E731
    got = rnn_forward(torch.tensor(x, dtype=torch.float64).reshape(1, 3, 1), t(u), t(v), torch.tensor([c], dtype=torch.float64))
    assert got.flatten().tolist() == pytest.approx(want, abs=1e-15)


@pytest.mark.parametrize("args,err,match", [
    (lambda x, U, V, c: (x[0], U, V, c), ValueError, r"3 dimensions"),
    (lambda x, U, V, c: (x, U[:, :1], V, c), ValueError, r"U must have shape \(hidden, features\)"),
    (lambda x, U, V, c: (x, U, V[:2], c), ValueError, r"V must have shape \(hidden, hidden\)"),
    (lambda x, U, V, c: (x, U, V, c[:1]), ValueError, r"c must have shape \(hidden,\)"),
    (lambda x, U, V, c: (x, U.float(), V, c), TypeError, r"dtype torch.float32, expected torch.float64"),
    (lambda x, U, V, c: (x.long(), U, V, c), TypeError, r"floating-point"),
    (lambda x, U, V, c: (x.numpy(), U, V, c), TypeError, r"torch.Tensor"),
    (lambda x, U, V, c: (x[:, :0], U, V, c), ValueError, r"time >= 1"),
])
def test_forward_rejects_bad_input_with_clear_messages(args, err, match):
    x, U, V, c, _ = _params(2, 3, 2, 4, seed=0)
    with pytest.raises(err, match=match):
        rnn_forward(*args(x, U, V, c))


def test_bad_h0_and_bptt_shapes():
    x, U, V, c, h0 = _params(2, 3, 2, 4, seed=0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(batch, hidden\) = \(2, 4\)"):
        rnn_forward(x, U, V, c, h0[:1])
    hs = rnn_forward(x, U, V, c)
    with pytest.raises(ValueError, match=r"\(batch, time, hidden\) = \(2, 3, 4\)"):
        rnn_bptt(x, hs, hs[:, :2], U, V)
    with pytest.raises(ValueError, match=r"W must have shape \(outputs, hidden=4\)"):
        rnn_output(hs, torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, 2\)"):
        ElmanRNN(2, 4, 1)(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        ElmanRNN(2, 0, 1)

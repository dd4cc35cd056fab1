"""dlmi.rnn.gradient_norms_per_step against autograd on a hand-unrolled loop (retain_grad on every
h_t), against finite differences for stacked bidirectional layers, and the vanishing gradient."""
import pytest
import torch

from dlmi.rnn import GRU, LSTM, SimpleRNN, gradient_norms_per_step

f64 = torch.float64
B, T, F, U = 3, 7, 2, 4


def unrolled_norms(layer, x, loss_fn, mask=None):
    """Oracle: run the cell by hand, keep every h_t and ask autograd for its total gradient."""
    cell = layer.cell
    state = cell.initial_state(x)
    hs, outputs = [None] * T, []
    order = range(T - 1, -1, -1) if layer.go_backwards else range(T)
    for t in order:
        new = cell(x[:, t], state if len(state) > 1 else state[0])
        new = (new,) if torch.is_tensor(new) else new
        output = new[0]
        if mask is not None:  # Keras: a padded step keeps the state and repeats the previous output
            new = tuple(torch.where(mask[:, t, None], n, s) for n, s in zip(new, state))
            output = torch.where(mask[:, t, None], new[0], outputs[-1] if outputs else torch.zeros(()))
        new[0].retain_grad()
        hs[t], state = new[0], new
        outputs.append(output)
    output = torch.stack(outputs, 1) if layer.return_sequences else outputs[-1]
    loss_fn(output).backward()
    return torch.stack([h.grad.norm() for h in hs])


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("layer_class", [SimpleRNN, GRU, LSTM])
def test_equals_autograd_on_the_unrolled_loop(layer_class, return_sequences, go_backwards):
    torch.manual_seed(0)
    layer = layer_class(F, U, return_sequences=return_sequences, go_backwards=go_backwards, dtype=f64)
    x = torch.randn(B, T, F, dtype=f64)
    weights = torch.randn(B, T, U, dtype=f64) if return_sequences else torch.randn(B, U, dtype=f64)
    loss_fn = lambda out: (weights * out).sum() + (out ** 2).sum()  # noqa: E731
    norms = gradient_norms_per_step(layer, x, loss_fn)
    assert norms.shape == (T,)
    assert all(p.grad is None for p in layer.parameters())  # parameter gradients untouched
    torch.testing.assert_close(norms, unrolled_norms(layer, x, loss_fn), rtol=1e-10, atol=1e-12)


def test_with_a_mask_and_the_fused_flag():
    torch.manual_seed(1)
    layer = LSTM(F, U, dtype=f64, fused=True)
    x = torch.randn(B, T, F, dtype=f64)
    lengths = torch.tensor([T, 3, 5])
    mask = torch.arange(T) < lengths[:, None]
    loss_fn = lambda out: out.sum()  # noqa: E731
    norms = gradient_norms_per_step(layer, x, loss_fn, lengths=lengths)
    torch.testing.assert_close(norms, unrolled_norms(layer, x, loss_fn, mask), rtol=1e-10, atol=1e-12)


def test_stacked_bidirectional_against_finite_differences():
    torch.manual_seed(2)
    layer = GRU(F, U, num_layers=2, bidirectional=True, merge_mode="sum", dtype=f64)
    x = torch.randn(B, T, F, dtype=f64)
    loss_fn = lambda out: (out ** 3).sum()  # noqa: E731
    norms = gradient_norms_per_step(layer, x, loss_fn)
    assert norms.shape == (4, T)

    def loss_with(index, t, delta):
        def shift(i, step, state):
            return (state[0] + delta, *state[1:]) if (i, step) == (index, t) else state
        return loss_fn(layer._run(x, on_step=shift)).item()

    eps = 1e-6
    for index, t in [(0, 0), (1, 0), (2, 3), (3, T - 1)]:
        grad = torch.zeros(B, U, dtype=f64)
        for b in range(B):
            for u in range(U):
                delta = torch.zeros(B, U, dtype=f64)
                delta[b, u] = eps
                grad[b, u] = (loss_with(index, t, delta) - loss_with(index, t, -delta)) / (2 * eps)
        torch.testing.assert_close(norms[index, t], grad.norm(), rtol=1e-6, atol=1e-9)


def test_simple_rnn_gradient_vanishes_geometrically_with_distance():
    """With ||U|| = 0.5 every step back multiplies the gradient norm by at most 0.5."""
    torch.manual_seed(3)
    layer = SimpleRNN(F, U, dtype=f64)
    with torch.no_grad():
        layer.cell.recurrent_kernel.mul_(0.5)  # orthogonal * 0.5: spectral norm 0.5
    norms = gradient_norms_per_step(layer, torch.randn(B, T, F, dtype=f64), lambda out: out.sum())
    assert torch.all(norms[:-1] <= 0.5 * norms[1:] + 1e-15)
    assert norms[0] < 0.5 ** (T - 1) * norms[-1] + 1e-15


def test_loss_must_be_a_scalar():
    layer = SimpleRNN(F, U)
    with pytest.raises(ValueError, match="scalar"):
        gradient_norms_per_step(layer, torch.randn(B, T, F), lambda out: out)

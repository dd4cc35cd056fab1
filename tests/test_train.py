import math

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

import dlmi  # noqa: E402
from dlmi.train import History, evaluate, fit  # noqa: E402


def _regression(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True,
                                       generator=g)


def test_fit_learns_a_linear_map_and_records_history():
    dlmi.seed_everything(0)
    model = nn.Linear(3, 1)
    data = _regression()
    mae = lambda out, y: (out - y).abs().mean()  # noqa: E731
    hist = fit(model, data, epochs=30, lr=0.05, loss_fn=nn.functional.mse_loss, val_data=_regression(64, 1),
               metrics={"mae": mae}, progress=False)
    assert hist.epochs == 30 and len(hist.val["mae"]) == 30
    assert hist.train["loss"][-1] < 1e-3 * hist.train["loss"][0]
    assert hist.last("mae", "val") < 0.05
    # fit moves the model to dlmi.get_device() (the GPU where there is one)
    assert torch.allclose(model.weight.detach().cpu(), torch.tensor([[1.5, -2.0, 0.5]]), atol=0.05)
    assert not model.training  # left in eval mode


def test_history_average_is_weighted_by_batch_size():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    # two batches of different sizes; with lr=0 the epoch loss is the per-sample mean
    batches = [(torch.ones(3, 1), torch.ones(3, 1)), (torch.ones(1, 1), 3 * torch.ones(1, 1))]
    hist = fit(model, batches, epochs=1, loss_fn=nn.functional.mse_loss,
               optimizer=torch.optim.SGD(model.parameters(), lr=0.0), progress=False)
    assert hist.last() == pytest.approx((3 * 1 + 1 * 9) / 4)


class _SelfLoss(nn.Module):
    """Detection-style model: returns a dict of named losses in train mode."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0, -1.0]))

    def forward(self, x, target):
        return {"loss_a": ((x * self.w[0] - target) ** 2).mean(), "loss_b": self.w[1] ** 2}


def test_fit_sums_a_dict_of_losses_and_logs_each():
    model = _SelfLoss()
    data = [(torch.ones(4), 3 * torch.ones(4))] * 4
    hist = fit(model, data, epochs=40, lr=0.1, progress=False)
    assert set(hist.train) == {"loss", "loss_a", "loss_b"}
    assert hist.train["loss"][0] == pytest.approx(hist.train["loss_a"][0] + hist.train["loss_b"][0], rel=1e-6)
    assert hist.last() < 0.05
    assert evaluate(model, data)["loss"] < 0.05


def test_fit_stops_on_a_non_finite_loss():
    model = nn.Linear(1, 1)
    data = [(torch.tensor([[float("nan")]]), torch.zeros(1, 1))]
    with pytest.raises(FloatingPointError, match="clip"):
        fit(model, data, epochs=1, loss_fn=nn.functional.mse_loss, progress=False)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"epochs": 0}, ValueError, "epochs"),
    ({"epochs": 1.5}, ValueError, "epochs"),
])
def test_fit_rejects_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        fit(nn.Linear(1, 1), [(torch.ones(1, 1), torch.ones(1, 1))], loss_fn=nn.functional.mse_loss,
            progress=False, **kwargs)


def test_fit_rejects_a_non_module_and_a_bad_batch():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fit(lambda x: x, [], progress=False)
    with pytest.raises(TypeError, match=r"\(inputs\.\.\., target\)"):
        fit(nn.Linear(1, 1), [torch.ones(1, 1)], loss_fn=nn.functional.mse_loss, progress=False)
    with pytest.raises(TypeError, match="scalar loss"):
        fit(nn.Linear(1, 1), [torch.ones(2, 1)], progress=False)
    with pytest.raises(ValueError, match="no training batches"):
        fit(nn.Linear(1, 1), [], loss_fn=nn.functional.mse_loss, progress=False)


def test_history_plot_and_errors():
    hist = History()
    hist._append("train", {"loss": 1.0})
    hist._append("train", {"loss": 0.5})
    ax = hist.plot(logy=True)
    assert len(ax.lines) == 1 and list(ax.lines[0].get_ydata()) == [1.0, 0.5]
    with pytest.raises(KeyError, match="no 'val' history"):
        hist.last("loss", "val")
    with pytest.raises(TypeError, match="History"):
        dlmi.viz.plot_history({"loss": [1]})
    assert math.isclose(hist.last(), 0.5)

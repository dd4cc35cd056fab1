"""One small training loop for every model in the course.

Batches are whatever the data yields; the loop only needs to know how to get a loss:

* with ``loss_fn``: a batch is ``(inputs..., target)``; the loss is ``loss_fn(model(*inputs), target)``;
* without it: the model computes its own loss, ``model(*batch)`` (or ``model(**batch)`` for a dict),
  returning a scalar tensor or a dict of named losses that are summed — the convention of the
  detection models (``model(images, targets) -> {"loss_classifier": ..., ...}``).

Everything is moved to the model's device, so the same call runs on CPU and GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from .device import get_device, to_device


@dataclass
class History:
    """Per-epoch averages: ``history.train["loss"][e]``, ``history.val["acc"][e]``."""

    train: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(next(iter(self.train.values()), []))

    def last(self, key: str = "loss", split: str = "train") -> float:
        values = getattr(self, split).get(key)
        if not values:
            raise KeyError(f"no {split!r} history for {key!r}; have {sorted(getattr(self, split))}")
        return values[-1]

    def _append(self, split: str, values: Mapping[str, float]) -> None:
        store = getattr(self, split)
        for k, v in values.items():
            store.setdefault(k, []).append(float(v))

    def plot(self, **kwargs):
        from .viz import plot_history

        return plot_history(self, **kwargs)


def _split_batch(batch, has_loss_fn: bool):
    if has_loss_fn:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("with loss_fn, each batch must be a tuple (inputs..., target); "
                            f"got {type(batch).__name__}")
        return tuple(batch[:-1]), batch[-1]
    return batch, None


def _call(model, inputs):
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _total_loss(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, Mapping):
        if not out:
            raise ValueError("the model returned an empty dict of losses")
        parts = {k: v for k, v in out.items()}
        total = sum(parts.values())
        logged = {k: float(v.detach()) for k, v in parts.items()}
        logged["loss"] = float(total.detach())
        return total, logged
    if not isinstance(out, torch.Tensor) or out.ndim != 0:
        raise TypeError("without loss_fn the model must return a scalar loss tensor or a dict of them; got "
                        f"{type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}")
    return out, {"loss": float(out.detach())}


def _batch_size(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size(batch[0]) if not isinstance(batch[0], Mapping) else len(batch)
    return 1


def _model_device(model: nn.Module):
    p = next(model.parameters(), None)
    return p.device if p is not None else None


def evaluate(model: nn.Module, data: Iterable, loss_fn: Callable | None = None,
             metrics: Mapping[str, Callable] | None = None, device=None) -> dict:
    """Average loss (and metrics) of ``model`` over ``data`` without gradients, in eval mode.

    Models that compute their own loss are kept in train mode for the loss (detection models only
    return losses in train mode) but still under ``torch.no_grad()``.
    """
    device = device or _model_device(model) or get_device()
    was_training = model.training
    model.train(loss_fn is None)
    sums, count = {}, 0
    with torch.no_grad():
        for batch in data:
            batch = to_device(batch, device)
            inputs, target = _split_batch(batch, loss_fn is not None)
            out = _call(model, inputs)
            n = _batch_size(inputs)
            if loss_fn is not None:
                logged = {"loss": float(loss_fn(out, target))}
                for name, fn in (metrics or {}).items():
                    logged[name] = float(fn(out, target))
            else:
                _, logged = _total_loss(out)
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v * n
            count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no batches")
    return {k: v / count for k, v in sums.items()}


def fit(model: nn.Module, train_data: Iterable, *, epochs: int = 1, loss_fn: Callable | None = None,
        optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3, val_data: Iterable | None = None,
        metrics: Mapping[str, Callable] | None = None, device=None, clip_grad_norm: float | None = None,
        scheduler=None, progress: bool = True, history: History | None = None) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_data``; return the :class:`History`.

    ``optimizer`` defaults to Adam(lr). ``metrics`` maps names to ``fn(output, target) -> float``
    and are computed on ``val_data``. ``clip_grad_norm`` clips the global gradient norm (useful for
    RNNs, unit 03). Pass an existing ``history`` to continue a run.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if device is None:
        device = _model_device(model) or get_device()
        if _model_device(model) is not None and device.type == "cpu" and get_device().type != "cpu":
            device = get_device()
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    history = history or History()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="training", leave=False)
    for _ in range(epochs):
        model.train()
        sums, count = {}, 0
        for batch in train_data:
            batch = to_device(batch, device)
            inputs, target = _split_batch(batch, loss_fn is not None)
            out = _call(model, inputs)
            if loss_fn is not None:
                loss = loss_fn(out, target)
                logged = {"loss": float(loss.detach())}
            else:
                loss, logged = _total_loss(out)
            if not math.isfinite(logged["loss"]):
                raise FloatingPointError(f"the loss became {logged['loss']} at epoch {history.epochs + 1}; "
                                         "lower the learning rate or clip gradients (clip_grad_norm=...)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            n = _batch_size(inputs)
            for k, v in logged.items():
                sums[k] = sums.get(k, 0.0) + v * n
            count += n
        if count == 0:
            raise ValueError("fit() got no training batches")
        if scheduler is not None:
            scheduler.step()
        history._append("train", {k: v / count for k, v in sums.items()})
        if val_data is not None:
            history._append("val", evaluate(model, val_data, loss_fn, metrics, device))
        if bar is not None:
            post = {"loss": f"{history.last('loss'):.4g}"}
            if val_data is not None:
                post["val"] = f"{history.last('loss', 'val'):.4g}"
            bar.set_postfix(post)
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return history

"""Corruption processes for denoising autoencoders (lecture: "denoising autoencoder").

Vincent, Larochelle, Bengio, Manzagol (2008). Extracting and Composing Robust Features with
Denoising Autoencoders. ICML — masking noise: a fixed fraction of the components of each input is
forced to 0. Vincent et al. (2010, JMLR) add isotropic Gaussian noise and salt-and-pepper noise (a
fixed fraction of components set to their minimum or maximum by a fair coin flip).

A "component" is one element of an image (one channel of one pixel). Masking and salt-and-pepper
corrupt *exactly* ``round(fraction * components)`` elements of every image, as in the papers, so a
notebook can state how much of the image was destroyed. Inputs are float images of shape
(batch, channels, height, width) with values in [low, high] = [0, 1] by default; any shape whose first
axis is the batch works. Everything is drawn on the input's device; pass ``generator`` (on that
device) for reproducible noise.
"""
from __future__ import annotations

import torch
from torch import nn


def _check(x, name="x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images (batch, channels, height, width), "
                        f"got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1] "
                        f"(e.g. x.float() / 255), got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch axis first, e.g. (batch, channels, height, width); "
                         f"got shape {tuple(x.shape)}")
    return x


def _check_fraction(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _exact_mask(x, fraction, generator) -> torch.Tensor:
    """Bool mask of x's shape with exactly round(fraction * d) True entries per sample (d = x[0].numel())."""
    batch, d = x.shape[0], x[0].numel()
    k = int(round(fraction * d))
    mask = torch.zeros(batch, d, dtype=torch.bool, device=x.device)
    if k:
        # the k smallest of d uniform draws are a uniformly random k-subset of the components
        r = torch.rand(batch, d, generator=generator, device=x.device)
        mask.scatter_(1, r.topk(k, dim=1, largest=False).indices, True)
    return mask.view_as(x)


def gaussian_noise(x, std: float = 0.1, clip: bool = True, low: float = 0.0, high: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """x + std * N(0, 1), elementwise; clipped back to [low, high] unless ``clip=False``."""
    x = _check(x)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
        raise ValueError(f"std must be a number >= 0, got {std!r}")
    noisy = x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return noisy.clamp(low, high) if clip else noisy


def salt_and_pepper_noise(x, amount: float = 0.1, salt_ratio: float = 0.5, low: float = 0.0,
                          high: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Set exactly ``round(amount * d)`` components of each sample to ``high`` (salt, with probability
    ``salt_ratio``) or ``low`` (pepper); the rest are untouched (Vincent et al. 2010)."""
    x = _check(x)
    amount = _check_fraction(amount, "amount")
    salt_ratio = _check_fraction(salt_ratio, "salt_ratio")
    corrupt = _exact_mask(x, amount, generator)
    salt = torch.rand(x.shape, generator=generator, device=x.device) < salt_ratio
    out = x.clone()
    out[corrupt & salt] = high
    out[corrupt & ~salt] = low
    return out


def masking_noise(x, fraction: float = 0.25, value: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Force exactly ``round(fraction * d)`` components of each sample to ``value`` (0: Vincent 2008)."""
    x = _check(x)
    fraction = _check_fraction(fraction, "fraction")
    return x.masked_fill(_exact_mask(x, fraction, generator), value)


class GaussianNoise(nn.Module):
    """Module form of :func:`gaussian_noise`, to configure a :class:`DenoisingAutoencoder`."""

    def __init__(self, std: float = 0.1, clip: bool = True):
        super().__init__()
        gaussian_noise(torch.zeros(1, 1), std)  # validate now, not at the first batch
        self.std, self.clip = std, clip

    def forward(self, x, generator=None):
        return gaussian_noise(x, self.std, self.clip, generator=generator)

    def extra_repr(self) -> str:
        return f"std={self.std}, clip={self.clip}"


class SaltAndPepperNoise(nn.Module):
    """Module form of :func:`salt_and_pepper_noise`."""

    def __init__(self, amount: float = 0.1, salt_ratio: float = 0.5):
        super().__init__()
        self.amount = _check_fraction(amount, "amount")
        self.salt_ratio = _check_fraction(salt_ratio, "salt_ratio")

    def forward(self, x, generator=None):
        return salt_and_pepper_noise(x, self.amount, self.salt_ratio, generator=generator)

    def extra_repr(self) -> str:
        return f"amount={self.amount}, salt_ratio={self.salt_ratio}"


class MaskingNoise(nn.Module):
    """Module form of :func:`masking_noise`."""

    def __init__(self, fraction: float = 0.25, value: float = 0.0):
        super().__init__()
        self.fraction, self.value = _check_fraction(fraction, "fraction"), value

    def forward(self, x, generator=None):
        return masking_noise(x, self.fraction, self.value, generator=generator)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}, value={self.value}"

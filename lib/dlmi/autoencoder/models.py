"""Convolutional autoencoder with a configurable bottleneck, and the denoising autoencoder.

Lecture: "autoencoder + bottleneck". An encoder f squeezes an image x into a short code z = f(x)
(the bottleneck, ``bottleneck`` numbers), a decoder g expands it back, and training makes
g(f(x)) close to x. The bottleneck is what forces the code to keep only what matters; an autoencoder
also reproduces whatever noise and errors its training images have, since to it they are content.

Denoising (Vincent et al. 2008, "Extracting and Composing Robust Features with Denoising
Autoencoders"): corrupt the input x~ = q(x) (:mod:`dlmi.autoencoder.noise`) and train g(f(x~)) to
match the *clean* x, so the network must learn the structure of images rather than copy pixels.

Shapes: images are float tensors (batch, channels, height, width) with values in [0, 1]; each of
the ``len(channels)`` encoder stages halves height and width (4x4 convolution, stride 2), so both
must be divisible by 2 ** len(channels) (28 -> 14 -> 7 with the default two stages).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .noise import GaussianNoise


def _pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    if (isinstance(image_size, Sequence) and len(image_size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)):
        return int(image_size[0]), int(image_size[1])
    raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")


def check_images(x, channels: int, size: tuple[int, int], name: str = "images") -> torch.Tensor:
    """Raise a clear error unless ``x`` is a float tensor of shape (batch, channels, H, W)."""
    expected = f"(batch, {channels}, {size[0]}, {size[1]})"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1] "
                        f"(e.g. x.float() / 255), got {x.dtype}")
    if x.ndim != 4 or x.shape[1] != channels or tuple(x.shape[2:]) != tuple(size):
        hint = ""
        if x.ndim == 3 and tuple(x.shape[1:]) == tuple(size) and channels == 1:
            hint = "; add the channel axis with x.unsqueeze(1)"
        elif x.ndim == 3 and x.shape[0] == channels and tuple(x.shape[1:]) == tuple(size):
            hint = "; add the batch axis with x.unsqueeze(0)"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}{hint}")
    return x


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) -> vector (B, out_features): stride-2 conv stages, then a linear layer."""

    def __init__(self, in_channels: int, image_size, out_features: int, channels: Sequence[int] = (32, 64)):
        super().__init__()
        self.in_channels, self.image_size = in_channels, _pair(image_size)
        self.channels = tuple(channels)
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
        stride = 2 ** len(self.channels)
        h, w = self.image_size
        if h % stride or w % stride or h < stride or w < stride:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.channels)} = {stride} "
                             f"(one halving per entry of channels={self.channels}); pad or crop the images, "
                             "or use fewer stages")
        layers, c_in = [], in_channels
        for c in self.channels:
            # kernel 4, stride 2, padding 1 halves H and W exactly; the transposed version doubles them
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c_in, h // stride, w // stride)
        self.fc = nn.Linear(math.prod(self.feature_shape), out_features)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """Vector (B, in_features) -> image logits (B, C, H, W): the encoder's mirror image."""

    def __init__(self, in_features: int, out_channels: int, feature_shape: tuple[int, int, int],
                 channels: Sequence[int] = (32, 64)):
        super().__init__()
        self.feature_shape = tuple(feature_shape)
        self.fc = nn.Linear(in_features, math.prod(self.feature_shape))
        rev = list(channels)[::-1] + [out_channels]
        layers = []
        for i, (c_in, c_out) in enumerate(zip(rev[:-1], rev[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(rev) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)

    def forward(self, z):
        return self.features(F.relu(self.fc(z)).view(-1, *self.feature_shape))


def reconstruction_loss(x_hat, x, kind: str = "mse", reduction: str = "mean"):
    """Reconstruction error between ``x_hat`` (in [0, 1]) and the target ``x``.

    ``kind="mse"``: mean squared error; ``"bce"``: binary cross-entropy (targets in [0, 1]).
    ``reduction="mean"`` (over everything) or ``"none"`` (one value per sample, mean over pixels).
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat and x must have the same shape, got {tuple(x_hat.shape)} and {tuple(x.shape)}")
    if kind == "mse":
        err = F.mse_loss(x_hat, x, reduction="none")
    elif kind == "bce":
        err = F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="none")
    else:
        raise ValueError(f"kind must be 'mse' or 'bce', got {kind!r}")
    if reduction == "mean":
        return err.mean()
    if reduction == "none":
        return err.flatten(1).mean(1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder with a ``bottleneck``-dimensional code::

        ae = ConvAutoencoder(in_channels=1, image_size=28, bottleneck=16)
        z = ae.encode(x)          # (B, 16)
        x_hat = ae(x)             # (B, 1, 28, 28), in [0, 1]
        loss = ae.loss(x)         # mean squared error against x

    Args:
        in_channels: image channels C. image_size: H (square) or (H, W).
        bottleneck: size of the code z. channels: conv channels of the encoder stages.
    """

    def __init__(self, in_channels: int = 1, image_size=28, bottleneck: int = 32,
                 channels: Sequence[int] = (32, 64), loss: str = "mse"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("bottleneck", bottleneck)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channels, self.image_size, self.bottleneck = in_channels, _pair(image_size), bottleneck
        self.loss_kind = loss
        reconstruction_loss(torch.zeros(1), torch.zeros(1), loss)  # validate the name now
        self.encoder = ConvEncoder(in_channels, image_size, bottleneck, channels)
        self.decoder = ConvDecoder(bottleneck, in_channels, self.encoder.feature_shape, channels)

    def check(self, x, name="images"):
        return check_images(x, self.in_channels, self.image_size, name)

    def encode(self, x) -> torch.Tensor:
        """Images (B, C, H, W) -> codes (B, bottleneck)."""
        return self.encoder(self.check(x))

    def decode(self, z) -> torch.Tensor:
        """Codes (B, bottleneck) -> images (B, C, H, W) in [0, 1]."""
        if z.ndim != 2 or z.shape[1] != self.bottleneck:
            raise ValueError(f"codes must have shape (batch, {self.bottleneck}), got {tuple(z.shape)}")
        return torch.sigmoid(self.decoder(z))

    def forward(self, x) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x, target=None) -> torch.Tensor:
        """Reconstruction loss of ``x`` against ``target`` (default: ``x`` itself)."""
        target = x if target is None else self.check(target, "target")
        return reconstruction_loss(self(x), target, self.loss_kind)


class DenoisingAutoencoder(ConvAutoencoder):
    """A :class:`ConvAutoencoder` trained to undo a corruption (Vincent et al. 2008).

    ``noise`` is any callable image -> corrupted image, e.g. ``GaussianNoise(0.2)``,
    ``SaltAndPepperNoise(0.1)`` or ``MaskingNoise(0.25)`` (default ``GaussianNoise(0.1)``).

    Like dropout, the corruption belongs to training mode: in ``model.train()`` the forward pass
    corrupts its input afresh at every call (so ``dlmi.train.fit(dae, [(x, x), ...],
    loss_fn=F.mse_loss)`` trains a denoiser against the clean x); in ``model.eval()`` it does not,
    and ``model(x_noisy)`` denoises. ``model.loss(x)`` corrupts the clean batch x and scores the
    reconstruction against the clean x in either mode.
    """

    def __init__(self, in_channels: int = 1, image_size=28, bottleneck: int = 32,
                 channels: Sequence[int] = (32, 64), noise: Callable | None = None, loss: str = "mse"):
        super().__init__(in_channels, image_size, bottleneck, channels, loss)
        noise = GaussianNoise(0.1) if noise is None else noise
        if not callable(noise):
            raise TypeError(f"noise must be callable (image -> corrupted image), got {type(noise).__name__}")
        self.noise = noise

    def corrupt(self, x) -> torch.Tensor:
        return self.noise(self.check(x))

    def forward(self, x) -> torch.Tensor:
        return self.decode(self.encode(self.corrupt(x) if self.training else x))

    def loss(self, x, target=None) -> torch.Tensor:
        """Corrupt ``x``, reconstruct, and compare with the clean ``x`` — the denoising criterion."""
        clean = self.check(x)
        x_hat = self.decode(self.encode(self.corrupt(clean)))
        return reconstruction_loss(x_hat, clean if target is None else self.check(target, "target"), self.loss_kind)

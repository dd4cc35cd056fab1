"""The variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", ICLR).

The encoder outputs a distribution over codes instead of one code: q(z|x) = N(mu(x), diag(sigma(x)^2)),
parametrised by ``mu`` and ``logvar`` = log sigma^2 (unconstrained, unlike sigma). Training maximises
the evidence lower bound, i.e. minimises per sample

    loss(x) = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I))
              reconstruction       regulariser (beta = 1 in the paper; beta != 1: Higgins et al. 2017)

* The expectation is estimated with one sample z = mu + sigma * eps, eps ~ N(0, I) — the
  *reparameterisation trick* (:func:`reparameterize`): the randomness sits in eps, so gradients flow
  to mu and sigma through an ordinary differentiable expression.
* The KL term has a closed form for two Gaussians (Kingma & Welling 2014, appendix B):
  KL = -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))  (:func:`kl_divergence`).
* Without the KL term (beta = 0) nothing stops the encoder from "cheating": sigma shrinks towards 0,
  the VAE becomes a plain autoencoder with a noiseless code, and codes drawn from the prior N(0, I)
  land where the decoder has never been trained, so prior samples are garbage. The KL term keeps
  q(z|x) close to the prior; ``loss()`` reports the mean posterior sigma so the collapse can be seen.

Shapes: mu, logvar, z are (batch, latent_dim); images (batch, channels, height, width) in [0, 1].
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import ConvDecoder, ConvEncoder, _pair, check_images


def _check_mu_logvar(mu, logvar):
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if mu.ndim < 2:
        raise ValueError(f"mu must have shape (batch, latent_dim), got {tuple(mu.shape)}")
    if logvar.shape != mu.shape:
        raise ValueError(f"logvar must have the same shape as mu, {tuple(mu.shape)} = (batch, latent_dim); "
                         f"got {tuple(logvar.shape)}")


def reparameterize(mu, logvar, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a sample of N(mu, sigma^2) that is a
    differentiable function of mu and logvar (Kingma & Welling 2014, section 2.4).

    Args:
        mu, logvar: (batch, latent_dim) each (any equal shapes with a batch axis work).
        generator: optional ``torch.Generator`` on mu's device, for reproducible samples.
    """
    _check_mu_logvar(mu, logvar)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_divergence(mu, logvar) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, in closed form -> shape (batch,).

    -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j)), summed over every non-batch axis.
    Zero exactly when mu = 0 and logvar = 0 (q equals the prior), positive otherwise.
    """
    _check_mu_logvar(mu, logvar)
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)


def bernoulli_nll(logits, x) -> torch.Tensor:
    """-log p(x|z) for independent Bernoulli pixels with p = sigmoid(logits), per sample (batch,).

    Works for x in [0, 1] (grey levels as "probabilities", the usual practice for MNIST-like images).
    From logits for numerical stability (never log(0)).
    """
    if logits.shape != x.shape:
        raise ValueError(f"logits must have the shape of x {tuple(x.shape)}, got {tuple(logits.shape)}")
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_nll(mean, x, sigma=1.0) -> torch.Tensor:
    """-log N(x; mean, sigma^2 I) per sample (batch,), constant included.

    sum_i [ (x_i - mean_i)^2 / (2 sigma^2) + log sigma + log(2 pi) / 2 ]. A small fixed sigma weights
    reconstruction against KL more heavily (for sigma = 1 the KL term dominates and images blur).
    """
    if mean.shape != x.shape:
        raise ValueError(f"mean must have the shape of x {tuple(x.shape)}, got {tuple(mean.shape)}")
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if (sigma <= 0).any():
        raise ValueError("sigma must be positive")
    nll = 0.5 * ((x - mean) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


def vae_loss(x, decoder_out, mu, logvar, beta: float = 1.0, likelihood: str = "bernoulli", sigma: float = 0.1):
    """The negative ELBO and its parts, averaged over the batch.

    Args:
        x: target images (B, C, H, W) in [0, 1].
        decoder_out: decoder output of the same shape, *before* the sigmoid (logits).
        mu, logvar: (B, latent_dim) encoder outputs.
        beta: weight of the KL term (1 = the ELBO; 0 = no regulariser, the "narrow distribution" cheat).
        likelihood: "bernoulli" (logits -> :func:`bernoulli_nll`) or "gaussian" (mean = sigmoid(logits),
            fixed ``sigma`` -> :func:`gaussian_nll`).

    Returns:
        dict with ``loss`` = recon + beta * kl (what to minimise), ``recon`` (mean -log p(x|z)),
        ``kl`` (mean KL, unweighted) — all scalars per sample, averaged over the batch.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if likelihood == "bernoulli":
        recon = bernoulli_nll(decoder_out, x)
    elif likelihood == "gaussian":
        recon = gaussian_nll(torch.sigmoid(decoder_out), x, sigma)
    else:
        raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
    kl = kl_divergence(mu, logvar)
    recon, kl = recon.mean(), kl.mean()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


class ConvVAE(nn.Module):
    """Convolutional VAE: the :class:`ConvAutoencoder` architecture with a Gaussian code::

        vae = ConvVAE(in_channels=1, image_size=28, latent_dim=8, beta=1.0)
        out, mu, logvar = vae(x)      # decoder logits (B, 1, 28, 28), (B, 8), (B, 8)
        parts = vae.loss(x)           # {"loss", "recon", "kl", "sigma"}; parts["loss"].backward()
        images = vae.sample(16)       # decoded draws from the prior N(0, I)

    ``forward`` samples z in training mode and uses z = mu in eval mode (deterministic reconstructions).
    """

    def __init__(self, in_channels: int = 1, image_size=28, latent_dim: int = 16,
                 channels: Sequence[int] = (32, 64), likelihood: str = "bernoulli", beta: float = 1.0,
                 sigma: float = 0.1):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("latent_dim", latent_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.in_channels, self.image_size, self.latent_dim = in_channels, _pair(image_size), latent_dim
        self.likelihood, self.beta, self.sigma = likelihood, beta, sigma
        # one linear head with 2 * latent_dim outputs: the first half is mu, the second logvar
        self.encoder = ConvEncoder(in_channels, image_size, 2 * latent_dim, channels)
        self.decoder = ConvDecoder(latent_dim, in_channels, self.encoder.feature_shape, channels)

    def check(self, x, name="images"):
        return check_images(x, self.in_channels, self.image_size, name)

    def encode(self, x):
        """Images -> (mu, logvar), each (B, latent_dim)."""
        mu, logvar = self.encoder(self.check(x)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z) -> torch.Tensor:
        """Codes (B, latent_dim) -> mean images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(self._check_z(z)))

    def _check_z(self, z):
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"codes must have shape (batch, {self.latent_dim}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        return z

    def forward(self, x, generator: torch.Generator | None = None):
        """-> (decoder logits (B, C, H, W), mu, logvar)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator) if self.training else mu
        return self.decoder(z), mu, logvar

    def loss(self, x, beta: float | None = None, generator: torch.Generator | None = None) -> dict:
        """:func:`vae_loss` of the batch (one z sample per image; z = mu in eval mode), plus ``sigma``:
        the mean posterior standard deviation (detached), the number that collapses without the KL term."""
        out, mu, logvar = self(x, generator)
        parts = vae_loss(x, out, mu, logvar, self.beta if beta is None else beta, self.likelihood, self.sigma)
        parts["sigma"] = torch.exp(0.5 * logvar.detach()).mean()
        return parts

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from codes drawn from the prior N(0, I): (n, C, H, W) in [0, 1]."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode(z)

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """Decode the posterior mean: deterministic reconstructions (B, C, H, W) in [0, 1]."""
        return self.decode(self.encode(x)[0])


class VAELoss:
    """``loss_fn(model(x), x)`` for :func:`dlmi.train.fit`: returns the scalar negative ELBO and
    keeps the parts of the last call in ``.last`` (floats)."""

    def __init__(self, beta: float = 1.0, likelihood: str = "bernoulli", sigma: float = 0.1):
        self.beta, self.likelihood, self.sigma = beta, likelihood, sigma
        self.last: dict = {}

    def __call__(self, out, x):
        if not (isinstance(out, (tuple, list)) and len(out) == 3):
            raise TypeError("VAELoss expects the model output (decoder_logits, mu, logvar)")
        logits, mu, logvar = out
        parts = vae_loss(x, logits, mu, logvar, self.beta, self.likelihood, self.sigma)
        self.last = {k: float(v.detach()) for k, v in parts.items()}
        return parts["loss"]

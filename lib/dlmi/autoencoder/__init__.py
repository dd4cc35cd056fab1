"""Autoencoders: bottleneck, denoising, variational (unit 09).

- :mod:`.models`  ``ConvAutoencoder`` (configurable bottleneck), ``DenoisingAutoencoder`` (Vincent 2008)
- :mod:`.noise`   Gaussian, salt-and-pepper and masking corruption
- :mod:`.vae`     ``ConvVAE``, ``reparameterize``, ``kl_divergence``, likelihoods and ``vae_loss``
                  (Kingma & Welling 2014)
"""
from .models import ConvAutoencoder, ConvDecoder, ConvEncoder, DenoisingAutoencoder, check_images, reconstruction_loss
from .noise import (GaussianNoise, MaskingNoise, SaltAndPepperNoise, gaussian_noise, masking_noise,
                    salt_and_pepper_noise)
from .vae import ConvVAE, VAELoss, bernoulli_nll, gaussian_nll, kl_divergence, reparameterize, vae_loss

__all__ = [
    "ConvAutoencoder", "DenoisingAutoencoder", "ConvEncoder", "ConvDecoder", "check_images", "reconstruction_loss",
    "gaussian_noise", "salt_and_pepper_noise", "masking_noise", "GaussianNoise", "SaltAndPepperNoise", "MaskingNoise",
    "ConvVAE", "VAELoss", "reparameterize", "kl_divergence", "bernoulli_nll", "gaussian_nll", "vae_loss",
]

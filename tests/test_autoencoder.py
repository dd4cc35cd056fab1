"""dlmi.autoencoder: AE / DAE / VAE, the corruption processes, KL and the reparameterisation trick."""
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal
from torch.distributions import kl_divergence as torch_kl

from dlmi.autoencoder import (ConvAutoencoder, ConvVAE, DenoisingAutoencoder, GaussianNoise, MaskingNoise,
                              SaltAndPepperNoise, VAELoss, bernoulli_nll, gaussian_noise, gaussian_nll,
                              kl_divergence, masking_noise, reparameterize, salt_and_pepper_noise, vae_loss)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n=8, size=16, seed=0):
    """n grey images (n, 1, size, size) in [0, 1]: one Gaussian blob each, random place and width."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.rand(n, 2, generator=g) * (size - 6) + 3
    r = torch.rand(n, generator=g) * 2 + 1.5
    d2 = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * r[:, None, None] ** 2)).unsqueeze(1)


def _train(model, loss_of, steps=200, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss = loss_of(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


# ---- KL and reparameterisation ------------------------------------------------------------------------


def test_kl_divergence_matches_torch_distributions_per_sample():
    torch.manual_seed(0)
    mu = torch.randn(6, 5, dtype=torch.float64)
    logvar = torch.randn(6, 5, dtype=torch.float64)
    ours = kl_divergence(mu, logvar)
    reference = torch_kl(Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, reference)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0   # q = prior
    # a latent grid (batch, c, h, w) sums over every non-batch axis
    m4, lv4 = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(kl_divergence(m4, lv4), kl_divergence(m4.flatten(1), lv4.flatten(1)))


def test_reparameterize_has_the_right_mean_and_variance():
    mu = torch.tensor([[1.0, -2.0]]).expand(200_000, 2)
    logvar = torch.log(torch.tensor([[0.25, 4.0]])).expand(200_000, 2)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    n = z.shape[0]
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=5 * 2 / math.sqrt(n), rtol=0)
    var = z.var(0)
    assert var[0].item() == pytest.approx(0.25, rel=0.02) and var[1].item() == pytest.approx(4.0, rel=0.02)


def test_gradients_flow_through_the_reparameterisation():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(4, 3))                             # dz/dmu = 1
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)  # dz/dlogvar


def test_likelihoods_match_torch_distributions():
    torch.manual_seed(1)
    x = torch.rand(3, 1, 4, 4)
    logits = torch.randn(3, 1, 4, 4)
    binary = (x > 0.5).float()
    ref = -Bernoulli(logits=logits).log_prob(binary).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, binary), ref)
    # grey levels in [0, 1]: the same formula, -[x log p + (1 - x) log(1 - p)]
    ref = -Bernoulli(logits=logits, validate_args=False).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), ref)
    mean = torch.rand(3, 1, 4, 4)
    ref = -Normal(mean, 0.1).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_nll(mean, x, 0.1), ref)


def test_vae_loss_is_recon_plus_beta_kl_and_reports_its_parts():
    torch.manual_seed(2)
    x = torch.rand(5, 1, 4, 4)
    out, mu, logvar = torch.randn(5, 1, 4, 4), torch.randn(5, 3), torch.randn(5, 3)
    parts = vae_loss(x, out, mu, logvar, beta=0.5)
    torch.testing.assert_close(parts["recon"], bernoulli_nll(out, x).mean())
    torch.testing.assert_close(parts["kl"], kl_divergence(mu, logvar).mean())
    torch.testing.assert_close(parts["loss"], parts["recon"] + 0.5 * parts["kl"])
    fn = VAELoss(beta=0.5)
    torch.testing.assert_close(fn((out, mu, logvar), x), parts["loss"])
    assert set(fn.last) == {"loss", "recon", "kl"}


# ---- the models overfit a tiny batch --------------------------------------------------------------------


def test_autoencoder_shapes_and_overfitting_a_tiny_batch():
    x = blobs()
    torch.manual_seed(0)
    ae = ConvAutoencoder(in_channels=1, image_size=16, bottleneck=8, channels=(8, 16))
    assert ae.encode(x).shape == (8, 8)
    out = ae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    history = _train(ae, lambda m: m.loss(x))
    assert history[-1] < history[0] / 20, (history[0], history[-1])    # falls by more than 20x


@pytest.mark.parametrize("noise", [GaussianNoise(0.2), SaltAndPepperNoise(0.1), MaskingNoise(0.25)],
                         ids=["gaussian", "salt-and-pepper", "masking"])
def test_denoising_autoencoder_learns_to_reconstruct_the_clean_batch(noise):
    x = blobs()
    torch.manual_seed(0)
    dae = DenoisingAutoencoder(1, 16, 8, (8, 16), noise=noise)
    history = _train(dae, lambda m: m.loss(x))
    assert history[-1] < history[0] / 10, (history[0], history[-1])
    # the loss compares with the *clean* images: denoising noisy copies gives small error vs clean
    dae.eval()                                                   # eval: forward does not corrupt
    with torch.no_grad():
        noisy = dae.corrupt(x)
        assert ((dae(noisy) - x) ** 2).mean() < ((noisy - x) ** 2).mean()


def test_denoising_autoencoder_corrupts_in_training_mode_only():
    torch.manual_seed(0)
    x = blobs(4)
    dae = DenoisingAutoencoder(1, 16, 8, (8, 16), noise=MaskingNoise(0.5))
    dae.eval()
    torch.testing.assert_close(dae(x), ConvAutoencoder.forward(dae, x))
    dae.train()
    assert not torch.allclose(dae(x), ConvAutoencoder.forward(dae, x))


def test_vae_overfits_and_without_kl_the_posterior_collapses():
    """The lecture's "narrow distribution" cheat, in numbers: with beta = 0 the encoder shrinks sigma
    towards 0 and the KL to the prior explodes; with beta = 1 sigma stays a sizeable fraction of 1."""
    x = (blobs() > 0.5).float()                                 # binary images: the Bernoulli NLL can reach 0
    results = {}
    for beta in (1.0, 0.0):
        torch.manual_seed(0)
        vae = ConvVAE(1, 16, latent_dim=4, channels=(8, 16), beta=beta)
        history = _train(vae, lambda m: m.loss(x)["loss"])
        vae.train()
        with torch.no_grad():
            results[beta] = {k: v.item() for k, v in vae.loss(x, generator=torch.Generator().manual_seed(0)).items()}
        results[beta]["first"] = history[0]
    assert results[1.0]["loss"] < results[1.0]["first"] / 4                 # the ELBO loss falls by > 4x
    assert results[0.0]["sigma"] < 0.05 < 0.2 < results[1.0]["sigma"]
    assert results[0.0]["kl"] > 20 * results[1.0]["kl"]


def test_vae_shapes_sampling_and_eval_mode_is_deterministic():
    vae = ConvVAE(in_channels=3, image_size=(16, 8), latent_dim=5, channels=(4,))
    x = torch.rand(2, 3, 16, 8)
    out, mu, logvar = vae(x)
    assert out.shape == x.shape and mu.shape == logvar.shape == (2, 5)
    vae.eval()
    torch.testing.assert_close(vae(x)[0], vae(x)[0])
    torch.testing.assert_close(vae.reconstruct(x), torch.sigmoid(vae(x)[0]))
    samples = vae.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 3, 16, 8) and 0 <= samples.min() and samples.max() <= 1


def test_vae_trains_with_the_shared_fit_loop():
    from dlmi.train import fit

    x = (blobs(16) > 0.5).float()
    torch.manual_seed(0)
    vae = ConvVAE(1, 16, 4, (8, 16))
    fn = VAELoss(beta=1.0)
    history = fit(vae, [(x[:8], x[:8]), (x[8:], x[8:])], epochs=3, loss_fn=fn, lr=3e-3, device="cpu",
                  progress=False)
    assert history.epochs == 3 and history.last() < history.train["loss"][0]
    assert set(fn.last) == {"loss", "recon", "kl"}


# ---- noise statistics --------------------------------------------------------------------------------


def test_masking_noise_zeroes_exactly_the_requested_fraction_of_each_image():
    x = torch.ones(50, 1, 10, 10)
    y = masking_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert ((y == 0).flatten(1).sum(1) == 30).all()           # exactly round(0.3 * 100) per image
    assert ((y == 0) | (y == x)).all()
    # which components are hit is uniform: every position is hit ~30% of the time over many images
    hits = (masking_noise(torch.ones(4000, 1, 5, 5), 0.3, generator=torch.Generator().manual_seed(1)) == 0)
    rate = hits.double().mean(0)
    assert (rate - 0.3).abs().max() < 5 * math.sqrt(0.3 * 0.7 / 4000)
    assert torch.equal(masking_noise(x, 0.0), x)


def test_salt_and_pepper_corrupts_exactly_amount_with_half_salt():
    x = torch.full((200, 3, 8, 8), 0.5)
    y = salt_and_pepper_noise(x, amount=0.2, generator=torch.Generator().manual_seed(0))
    d = 3 * 8 * 8
    changed = (y != 0.5).flatten(1).sum(1)
    assert (changed == round(0.2 * d)).all()
    salt, pepper = (y == 1).sum().item(), (y == 0).sum().item()
    total = salt + pepper
    assert total == 200 * round(0.2 * d)
    assert abs(salt / total - 0.5) < 5 * math.sqrt(0.25 / total)
    assert torch.equal(y[y != 0.5].unique(), torch.tensor([0.0, 1.0]))


def test_gaussian_noise_has_the_requested_std_and_clipping():
    x = torch.full((100, 1, 20, 20), 0.5)
    y = gaussian_noise(x, std=0.1, clip=False, generator=torch.Generator().manual_seed(0))
    r = y - x
    assert abs(r.mean().item()) < 0.002 and r.std().item() == pytest.approx(0.1, rel=0.01)
    yc = gaussian_noise(x, std=1.0, generator=torch.Generator().manual_seed(0))
    assert yc.min() >= 0 and yc.max() <= 1 and (yc == 0).any() and (yc == 1).any()


# ---- bad input -------------------------------------------------------------------------------------------


def test_images_of_the_wrong_shape_or_dtype_raise_errors_naming_the_expected_shape():
    ae = ConvAutoencoder(in_channels=1, image_size=28, bottleneck=4)
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\), got \(5, 28, 28\); add the channel axis"):
        ae(torch.rand(5, 28, 28))
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\), got \(5, 3, 28, 28\)"):
        ae(torch.rand(5, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\), got \(5, 1, 32, 32\)"):
        ae.encode(torch.rand(5, 1, 32, 32))
    with pytest.raises(TypeError, match=r"floating-point.*x.float\(\) / 255.*uint8"):
        ae(torch.zeros(5, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ae([[0.0]])
    with pytest.raises(ValueError, match=r"codes must have shape \(batch, 4\)"):
        ae.decode(torch.zeros(2, 5))
    vae = ConvVAE(1, 28, latent_dim=3)
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\)"):
        vae.loss(torch.rand(2, 1, 14, 14))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*3 = 8"):
        ConvAutoencoder(1, 28, 4, channels=(8, 16, 32))
    with pytest.raises(ValueError, match="bottleneck"):
        ConvAutoencoder(1, 28, 0)


def test_mu_logvar_of_different_shapes_raise_errors_naming_the_expected_shape():
    with pytest.raises(ValueError, match=r"logvar must have the same shape as mu, \(4, 3\).*got \(4, 2\)"):
        kl_divergence(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"same shape as mu"):
        reparameterize(torch.zeros(4, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(batch, latent_dim\)"):
        kl_divergence(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="floating-point"):
        reparameterize(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2))


def test_noise_functions_reject_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        masking_noise(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        masking_noise(torch.zeros(2, 1, 4, 4), 1.5)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        SaltAndPepperNoise(amount=-0.1)
    with pytest.raises(ValueError, match="std"):
        GaussianNoise(std=-1)
    with pytest.raises(ValueError, match="batch axis"):
        gaussian_noise(torch.zeros(4))
    with pytest.raises(ValueError, match="beta"):
        vae_loss(torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 2), torch.zeros(1, 2), beta=-1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_models_and_noise_run_on_cuda():
    device = torch.device("cuda")
    x = blobs().to(device)
    vae = ConvVAE(1, 16, 4, (8, 16)).to(device)
    parts = vae.loss(x)
    parts["loss"].backward()
    assert vae.sample(2).device.type == "cuda"
    assert masking_noise(x, 0.5).device.type == "cuda"
    dae = DenoisingAutoencoder(1, 16, 8, (8, 16), noise=SaltAndPepperNoise(0.1)).to(device)
    assert dae.loss(x).device.type == "cuda"

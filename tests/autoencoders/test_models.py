"""Shapes of every autoencoder's latents and reconstructions, argument checks with messages
that name the thing to fix, dtype following the input."""
import importlib.util

import pytest
import torch

from sdeflow.autoencoders import build_autoencoder, list_autoencoders

TINY = dict(in_channels=3, channels=8, num_res_blocks=1)


def test_registry_lists_the_four_autoencoders():
    assert list_autoencoders() == ["ae", "kl", "linear", "vae"]
    with pytest.raises(ValueError, match=r"unknown autoencoder 'vqgan'; choices: \['ae'"):
        build_autoencoder("vqgan")


@pytest.mark.parametrize("name", ["ae", "vae", "kl"])
@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_latent_shape_for_every_factor(name, f):
    ae = build_autoencoder(name, **TINY, downsample=f, latent_channels=3)
    assert (ae.downsample, ae.latent_channels) == (f, 3)
    assert ae.latent_shape((3, 16, 24)) == (3, 16 // f, 24 // f)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, *ae.latent_shape((3, 16, 24)))
    assert ae.decode(z).shape == x.shape
    loss, metrics = ae.loss(x, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and set(metrics) == {"recon", "kl", "psnr"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(downsample=3), r"downsample must be one of \[1, 2, 4, 8\], got 3"),
    (dict(downsample=16), r"downsample must be one of \[1, 2, 4, 8\], got 16"),
    (dict(latent_channels=0), "latent_channels must be a positive integer, got 0"),
    (dict(downsample=4, channel_mult=[1, 2]), "channel_mult must be a list of log2"),
    (dict(recon="l3"), r"recon must be one of \['l1', 'l2'\]"),
    (dict(widths=[8]), "unknown argument widths"),
])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_autoencoder("kl", **kwargs)


def test_images_must_fit_the_factor_and_channels():
    ae = build_autoencoder("vae", **TINY, downsample=4)
    with pytest.raises(ValueError, match="not divisible by the down-sampling factor 4"):
        ae.latent_shape((3, 18, 16))
    with pytest.raises(ValueError, match=r"takes images \(3, H, W\)"):
        ae.latent_shape((1, 16, 16))


def test_a_plain_autoencoder_has_no_posterior():
    ae = build_autoencoder("ae", **TINY)
    with pytest.raises(TypeError, match="deterministic autoencoder: it has no posterior"):
        ae.posterior(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace", "bernoulli", "discretized"])
def test_vae_likelihoods_work_in_float64(likelihood):
    from sdeflow.autoencoders import elbo, iwae
    ae = build_autoencoder("vae", in_channels=1, channels=8, downsample=2,
                           likelihood=likelihood).double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 1
    mu, logvar = ae.posterior(x)
    assert mu.dtype == logvar.dtype == torch.float64 and mu.shape == (3, 4, 4, 4)
    e, w = elbo(ae, x, 2), iwae(ae, x, 8)
    assert e.dtype == torch.float64 and torch.isfinite(e).all() and torch.isfinite(w).all()
    xr = ae.decode(ae.encode(x))
    assert xr.shape == x.shape and xr.dtype == torch.float64
    if likelihood == "bernoulli":
        assert xr.abs().max() <= 1


def test_linear_vae_flattens_images_and_restores_their_shape():
    ae = build_autoencoder("linear", shape=[1, 4, 4], latent_dim=3)
    assert ae.latent_shape((1, 4, 4)) == (3,) and ae.downsample == 1
    x = torch.randn(5, 1, 4, 4)
    assert ae.encode(x).shape == (5, 3) and ae.decode(ae.encode(x)).shape == x.shape
    with pytest.raises(ValueError, match="takes inputs of shape"):
        ae.latent_shape((2, 4, 4))


@pytest.mark.skipif(importlib.util.find_spec("lpips") is not None, reason="lpips installed")
def test_perceptual_loss_without_lpips_is_a_clear_error():
    ae = build_autoencoder("kl", **TINY, perceptual_weight=1.0)  # builds: lpips is loaded on use
    with pytest.raises(ValueError, match="perceptual_weight > 0 needs the lpips package"):
        ae.loss(torch.zeros(1, 3, 8, 8))

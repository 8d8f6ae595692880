"""Latent diffusion against ground truth: with an affine decoder D(z) = W z + b, the exact
denoiser of a Gaussian-mixture latent, sampled through LatentDenoiser and decoded, must give
the push-forward mixture (means W μ_k / c + b, covariances W Σ_k Wᵀ / c²) — per-component moments
within their standard errors; the wrong scale factor (10 %) must be rejected. Plus the
plumbing: shapes, decode=False, guidance wrappers, inpainting through the latents."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sdeflow import Denoiser, sample
from sdeflow.guidance import ClassifierFreeGuidance
from sdeflow.inpainting import inpaint, repaint
from sdeflow.latent import LatentDenoiser, downsample_mask, find_latent
from sdeflow.oracle import GaussianMixture
from sdeflow.sde import get_sde
from tests.mixture_stats import assert_samples_mixture, rejects


class AffineCodec(nn.Module):
    """x = W z + b and its inverse (vectors)."""

    def __init__(self, W, b):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)

    def latent_shape(self, shape):
        return (self.W.shape[1],)

    def encode(self, x):
        return torch.linalg.solve(self.W, (x - self.b).T).T

    def decode(self, z):
        return z @ self.W.T + self.b


class PoolCodec(nn.Module):
    """A 2× average-pool encoder and nearest-upsampling decoder (images)."""

    def latent_shape(self, shape):
        return (shape[0], shape[1] // 2, shape[2] // 2)

    def encode(self, x):
        return F.avg_pool2d(x, 2)

    def decode(self, z):
        return F.interpolate(z, scale_factor=2, mode="nearest")


def _pushforward(gm: GaussianMixture, W, b, c) -> GaussianMixture:
    means = gm.means @ W.T / c + b
    covs = W @ gm.covs @ W.T / c**2
    return GaussianMixture(gm.weights, means, covs=covs)


def _setup(d=3):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(d, d, generator=g, dtype=torch.float64) + 2 * torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    gm = GaussianMixture.random(d, k=3, seed=1, scale=2.0)
    sde = get_sde("vp")
    return gm, AffineCodec(W, b), sde


def test_latent_sampling_gives_the_decoded_pushforward_and_rejects_a_wrong_scale():
    gm, codec, sde = _setup()
    c = 1.7
    model = LatentDenoiser(gm.denoiser(sde), codec, c, image_shape=(3,))
    x = sample(model, shape=(20000, 3), solver="heun", steps=100, seed=0, dtype=torch.float64)
    truth = _pushforward(gm, codec.W, codec.b, c)
    assert_samples_mixture(truth, x, what="latent heun")
    # power: the same latents decoded with a 10 % wrong scale factor
    wrong = LatentDenoiser(gm.denoiser(sde), codec, 1.1 * c, image_shape=(3,))
    xw = sample(wrong, shape=(20000, 3), solver="heun", steps=100, seed=0, dtype=torch.float64)
    assert rejects(truth, xw)
    # and exact draws of the push-forward pass (the noise floor of the check)
    assert not rejects(truth, truth.sample(20000, generator=torch.Generator().manual_seed(5)))


def test_decode_false_gives_latents_and_encode_inverts_decode():
    gm, codec, sde = _setup()
    model = LatentDenoiser(gm.denoiser(sde), codec, 2.0, image_shape=(3,))
    z = sample(model, shape=(64, 3), solver="heun", steps=20, seed=1, dtype=torch.float64,
               decode=False)
    x = sample(model, shape=(64, 3), solver="heun", steps=20, seed=1, dtype=torch.float64)
    torch.testing.assert_close(model.decode(z), x)
    torch.testing.assert_close(model.encode(x), z)
    with pytest.raises(ValueError, match="decode=True needs a latent model"):
        sample(gm.denoiser(sde), shape=(4, 3), steps=2, decode=True, dtype=torch.float64)


def test_image_shape_maps_to_the_latent_shape_and_bad_shapes_are_named():
    model = LatentDenoiser(Denoiser(lambda x, t: torch.zeros_like(x), get_sde("vp")),
                           PoolCodec(), 1.0, image_shape=(3, 8, 8))
    assert model.latent_shape == (3, 4, 4) and model.factor == 2
    x = sample(model, shape=(2, 3, 8, 8), solver="euler", steps=2, seed=0)
    assert x.shape == (2, 3, 8, 8)
    x = sample(model, shape=(2, 3, 4, 4), solver="euler", steps=2, seed=0)  # latent shape
    assert x.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"makes images \(B, 3, 8, 8\) from latents"):
        sample(model, shape=(2, 3, 6, 6), solver="euler", steps=2)


def test_guided_latent_models_still_decode():
    base = LatentDenoiser(Denoiser(lambda x, t, class_labels=None: torch.zeros_like(x),
                                   get_sde("vp")), PoolCodec(), 1.0, image_shape=(1, 4, 4))
    guided = ClassifierFreeGuidance(base, 2.0, uncond={"class_labels": 3})
    assert find_latent(guided) is base
    x = sample(guided, shape=(2, 1, 4, 4), solver="euler", steps=2, seed=0,
               cond={"class_labels": torch.tensor([0, 1])})
    assert x.shape == (2, 1, 4, 4)


def test_downsampled_mask_keeps_only_fully_known_cells():
    m = torch.ones(1, 1, 4, 4)
    m[..., 0, 0] = 0  # one unknown pixel spoils its 2×2 cell
    mz = downsample_mask(m, 2)
    assert mz.tolist() == [[[[0.0, 1.0], [1.0, 1.0]]]]
    with pytest.raises(ValueError, match="not divisible"):
        downsample_mask(torch.ones(1, 1, 5, 5), 2)


@pytest.mark.parametrize("method", [inpaint, repaint])
def test_latent_inpainting_pastes_known_pixels_and_decodes_the_rest(method):
    model = LatentDenoiser(Denoiser(lambda x, t: torch.zeros_like(x), get_sde("vp")),
                           PoolCodec(), 1.0, image_shape=(1, 4, 4))
    y = torch.arange(32, dtype=torch.float32).reshape(2, 1, 4, 4) / 32
    mask = torch.ones(4, 4)
    mask[:2, :2] = 0  # the top-left latent cell is unknown
    kw = dict(steps=4, seed=0) if method is inpaint else dict(steps=4, jump_length=2,
                                                                 resamplings=2, seed=0)
    x, stats = method(model, y, mask, return_stats=True, **kw)
    assert x.shape == y.shape and stats["nfe"] > 0
    known = mask.bool().expand_as(y)
    assert torch.equal(x[known], y[known])  # pasted back exactly
    # a zero denoiser completes the unknown cell with x̂0 = 0, decoded to 0
    assert torch.allclose(x[:, :, :2, :2], torch.zeros(2, 1, 2, 2), atol=1e-6)
    bad = torch.ones(4, 4)
    bad[::2, ::2] = 0  # every cell has an unknown pixel
    with pytest.raises(ValueError, match="no 2×2 block of the mask is fully known"):
        method(model, y, bad, **kw)
    with pytest.raises(ValueError, match="the images' size"):
        method(model, y, torch.ones(8, 8), **kw)


def test_latent_denoiser_refuses_bad_parts():
    den = Denoiser(lambda x, t: x, get_sde("vp"))
    with pytest.raises(TypeError, match="encode"):
        LatentDenoiser(den, nn.Linear(2, 2), 1.0, (2,))
    with pytest.raises(ValueError, match="positive and finite"):
        LatentDenoiser(den, PoolCodec(), float("nan"), (1, 4, 4))
    with pytest.raises(TypeError, match="wraps an sdeflow.Denoiser"):
        LatentDenoiser(lambda x, t: x, PoolCodec(), 1.0, (1, 4, 4))
    model = LatentDenoiser(den, PoolCodec(), 1.0, (1, 4, 4))
    with pytest.raises(ValueError, match=r"encodes images of shape \(B, 1, 4, 4\)"):
        model.encode(torch.zeros(2, 3, 4, 4))


class GlobalCodec(PoolCodec):
    """A pooling codec whose every code also sees the image's global mean (like a deep
    convolutional encoder's receptive field)."""

    def encode(self, x):
        return F.avg_pool2d(x, 2) + x.mean((1, 2, 3), keepdim=True)


def test_latent_inpainting_never_sees_the_hidden_pixels():
    model = LatentDenoiser(Denoiser(lambda x, t: 0.5 * x, get_sde("vp")), GlobalCodec(), 1.0,
                           image_shape=(1, 4, 4))
    y = torch.rand(2, 1, 4, 4)
    mask = torch.ones(4, 4)
    mask[:2, :2] = 0
    other = y.clone()
    other[:, :, :2, :2] += 5.0  # only the hidden pixels differ
    a = inpaint(model, y, mask, steps=3, seed=0, solver="euler")
    b = inpaint(model, other, mask, steps=3, seed=0, solver="euler")
    torch.testing.assert_close(a, b)

"""Training objectives: each named loss is the objective of its paper, written once in x0-space,
and is minimised by the true denoiser."""
import pytest
import torch

import sdeflow
from sdeflow.losses import WEIGHTINGS, dsm_loss, list_losses, loss_fn, sample_t, ssm_loss
from sdeflow.oracle import GaussianMixture

from .conftest import gen


@pytest.fixture
def gm():
    return GaussianMixture.ring()


@pytest.mark.parametrize("weighting", ["dsm", "eps", "v", "likelihood"])
def test_weighting_equals_its_papers_objective(gm, weighting):
    """Recompute the same (t, ε) draws and evaluate the objective in its native space."""
    sde = sdeflow.VPSDE()
    model = gm.denoiser(sde)
    x0 = gm.sample(256, generator=gen(0))
    got = dsm_loss(model, x0, weighting, generator=gen(1))
    g = gen(1)
    t = sample_t(sde, 256, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = sde.marginal(x0, t, eps)
    pred = model.predict(xt, t)
    s, sig = sde.s(t)[:, None], sde.sigma(t)[:, None]
    true_score = -eps / sig
    native = {
        "dsm": sig**2 * (pred.score - true_score) ** 2,
        "eps": (pred.eps - eps) ** 2,
        "v": (pred.v - (s * eps - sig * x0) / (s**2 + sig**2).sqrt()) ** 2,
        "likelihood": sde.g2(t)[:, None] * (pred.score - true_score) ** 2,
    }[weighting]
    torch.testing.assert_close(got, native.mean(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list_losses())
def test_true_denoiser_minimises_every_loss(gm, name):
    """With common random numbers, the exact model beats a biased one (x̂0 + 0.1, or 0.8·score)."""
    sde = sdeflow.EDMSDE()
    exact = gm.denoiser(sde)
    if name == "ssm":
        biased = sdeflow.Denoiser(lambda x, t: 0.8 * gm.score(x, sde.s(t), sde.sigma(t)), sde,
                                  prediction="score")
    else:
        biased = sdeflow.Denoiser(lambda x, t: gm.x0(x, sde.s(t), sde.sigma(t)) + 0.1, sde)
    x0 = gm.sample(4000, generator=gen(2))
    fn = loss_fn(name)
    assert fn(exact, x0, generator=gen(3)) < fn(biased, x0, generator=gen(3))


def test_ssm_matches_dsm_minimiser_direction(gm):
    """SSM's excess loss for s = c·s* is ½(1−c)²·E[σ²‖s*‖²]/D, zero at c = 1 (measured with
    common random numbers, so the constant cancels)."""
    sde = sdeflow.VPSDE()
    x0 = gm.sample(2000, generator=gen(4))

    def scaled(c):
        return sdeflow.Denoiser(lambda x, t: c * gm.score(x, sde.s(t), sde.sigma(t)), sde,
                                prediction="score")
    losses = [ssm_loss(scaled(c), x0, generator=gen(5)).item() for c in (0.6, 0.8, 1.0, 1.2)]
    assert losses[2] == min(losses)


def test_edm_time_sampler_is_lognormal():
    sde = sdeflow.EDMSDE()
    t = sample_t(sde, 20000, lognormal=True, generator=gen(6), dtype=torch.float64)
    assert abs(t.log().median().item() - (-1.2)) < 0.03  # P_mean; se of the median ≈ 0.01
    assert abs(t.log().std().item() - 1.2) < 0.03


def test_unknown_loss_raises():
    with pytest.raises(ValueError, match="choices"):
        loss_fn("l1")
    assert set(WEIGHTINGS) < set(list_losses())

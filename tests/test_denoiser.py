"""One wrapper, four parameterisations: every prediction type gives the same x0/eps/v/score."""
import pytest
import torch

import sdeflow
from sdeflow.denoiser import PREDICTIONS, Denoiser

from .conftest import gen


def _exact(gm, sde):
    """The oracle expressed in each parameterisation, converted by hand."""
    def target(pred):
        def net(x, t):
            s, sig = sde.s(t)[:, None], sde.sigma(t)[:, None]
            x0 = gm.x0(x, sde.s(t), sde.sigma(t))
            eps = (x - s * x0) / sig
            r = (s**2 + sig**2).sqrt()
            return {"x0": x0, "eps": eps, "score": -eps / sig, "v": (s * eps - sig * x0) / r}[pred]
        return net
    return target


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_parameterisation_gives_the_same_quantities(sde_case, mixture2d, prediction):
    _, sde, _ = sde_case
    ref = mixture2d.denoiser(sde)
    model = Denoiser(_exact(mixture2d, sde)(prediction), sde, prediction=prediction)
    x = torch.randn(64, 2, generator=gen(0), dtype=torch.float64)
    t = sde.t_min + (sde.T - sde.t_min) * torch.rand(64, generator=gen(1), dtype=torch.float64)
    x = sde.sigma(t)[:, None] * x
    a, b = ref.predict(x, t), model.predict(x, t)
    for name in ("x0", "eps", "v", "score"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-8, atol=1e-8)


def test_score_matches_oracle_score(mixture2d):
    sde = sdeflow.VPSDE()
    model = mixture2d.denoiser(sde)
    x = torch.randn(8, 2, generator=gen(2), dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(model.score(x, t), mixture2d.score(x, sde.s(t), sde.sigma(t)))


def test_edm_preconditioning_formulas():
    """With F ≡ 0, D = c_skip·x/s; with F ≡ 1, D − c_skip x/s = c_out (Karras et al. Table 1)."""
    sde, sd = sdeflow.VPSDE(), 0.5
    x = torch.randn(4, 3, generator=gen(3), dtype=torch.float64)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    nu = sde.noise_level(t)[:, None]
    seen = {}

    def F(value):
        def net(xin, c_noise):
            seen["in"], seen["noise"] = xin, c_noise
            return torch.full_like(xin, value)
        return net

    s = sde.s(t)[:, None]
    d0 = Denoiser(F(0.0), sde, precondition="edm", sigma_data=sd).x0(x, t)
    torch.testing.assert_close(d0, sd**2 / (nu**2 + sd**2) * x / s)
    torch.testing.assert_close(seen["in"], x / s / (nu**2 + sd**2).sqrt())
    torch.testing.assert_close(seen["noise"], 0.25 * nu[:, 0].log())
    d1 = Denoiser(F(1.0), sde, precondition="edm", sigma_data=sd).x0(x, t)
    torch.testing.assert_close(d1 - d0, (nu * sd / (nu**2 + sd**2).sqrt()).expand_as(x))


def test_nfe_counts_network_calls(mixture2d):
    model = mixture2d.denoiser(sdeflow.EDMSDE())
    x = torch.zeros(2, 2, dtype=torch.float64)
    model.predict(x, 1.0)
    model.score(x, 1.0)
    assert model.nfe == 2


def test_bad_inputs_raise():
    sde = sdeflow.EDMSDE()
    with pytest.raises(ValueError, match="choices"):
        Denoiser(lambda x, t: x, sde, prediction="noise")
    with pytest.raises(ValueError, match="precondition"):
        Denoiser(lambda x, t: x, sde, prediction="eps", precondition="edm")
    with pytest.raises(ValueError, match="shape"):
        Denoiser(lambda x, t: x[:, :1], sde).x0(torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="t must be"):
        Denoiser(lambda x, t: x, sde).x0(torch.zeros(2, 2), torch.ones(3))
    with pytest.raises(FloatingPointError, match="non-finite"):
        Denoiser(lambda x, t: x * float("nan"), sde).x0(torch.zeros(2, 2), 1.0)

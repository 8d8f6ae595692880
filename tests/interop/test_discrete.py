"""The generic discrete-time wrappers (no diffusers): any callable fn(x, timestep, **cond) on a
DDPM schedule ᾱ_n becomes a Denoiser on the fitted VP SDE that is fn at every trained level,
and whose DDIM on the times of integer timesteps is the discrete DDIM chain."""
import math

import pytest
import torch

import sdeflow
from sdeflow.interop import (discrete_times, fit_vp_sde, from_discrete, from_discrete_eps,
                             from_discrete_v, from_discrete_x0)

from ..conftest import gen

F64 = torch.float64
BETAS = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=F64) ** 2  # SD's scaled linear
ABAR = torch.cumprod(1 - BETAS, 0)
C = 0.7  # data ~ N(0, C² I): the exact ε, v and x̂0 at level n are closed forms


def _abar(n):
    """ᾱ at integer timesteps n (a tensor of shape (B,); float round-off of the time mapping
    allowed), refusing fractional ones: the oracle is only defined at trained levels."""
    assert (n - n.round()).abs().max() < 1e-6, n
    return ABAR[n.round().long()]


def _oracle(kind):
    def fn(x, n, **cond):
        a = _abar(n).reshape(-1, 1)
        s, sig = a.sqrt(), (1 - a).sqrt()
        x0 = s * C**2 * x / (a * C**2 + 1 - a)
        eps = (x - s * x0) / sig
        return dict(eps=eps, x0=x0, v=s * eps - sig * x0)[kind] + cond.get("offset", 0.0)
    return fn


def test_sde_is_fitted_to_the_trained_log_snr_range():
    lam = 0.5 * (ABAR.log() - torch.log1p(-ABAR))
    for schedule in ("linear", "cosine"):
        sde = fit_vp_sde(ABAR, schedule)
        ends = sde.log_snr(torch.tensor([sde.t_min, sde.T], dtype=F64))
        torch.testing.assert_close(ends, lam[[0, -1]], rtol=0, atol=1e-9)


@pytest.mark.parametrize("make,kind", [(from_discrete_eps, "eps"), (from_discrete_v, "v"),
                                       (from_discrete_x0, "x0")])
def test_each_parameterisation_is_the_function_at_trained_levels(make, kind):
    """At t(n) the wrapper calls fn at exactly n (the oracle refuses anything else) and gives
    the oracle's x̂0 whichever target fn predicts; cond keywords reach fn."""
    model = make(_oracle(kind), ABAR)
    x = torch.randn(4, 3, generator=gen(0), dtype=F64)
    n = torch.tensor([0, 1, 500, 999])
    t = discrete_times(model, n)
    torch.testing.assert_close(model.net.timestep(t), n.to(F64), rtol=0, atol=1e-9)
    want = _oracle("x0")(x, n)
    torch.testing.assert_close(model.x0(x, t), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.raw(x, t, offset=1.0) - model.raw(x, t),
                               torch.ones_like(x))


def test_fractional_timesteps_follow_log_snr():
    """Between levels the wrapper asks for the n with λ_n = λ(t) by linear interpolation;
    discrete_times is its inverse."""
    model = from_discrete_eps(lambda x, n: x, ABAR)
    n = torch.tensor([0.25, 10.5, 998.9], dtype=F64)
    torch.testing.assert_close(model.net.timestep(discrete_times(model, n)), n, rtol=0, atol=1e-9)


def _discrete_ddim(fn, x, steps):
    """The DDIM chain on the discrete schedule (Song et al. 2021, eq. 12, η = 0), last step to
    ᾱ = 1 (x̂0)."""
    for i, n in enumerate(steps):
        a = ABAR[n]
        a_prev = ABAR[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0, dtype=F64)
        eps = fn(x, torch.full((x.shape[0],), float(n), dtype=F64))
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


@pytest.mark.parametrize("shift", [0, 1])
def test_ddim_on_the_times_of_integer_steps_is_the_discrete_chain(shift):
    """Power: a grid shifted by one level (a wrong mapping) is off by far more than 1e-10."""
    fn = _oracle("eps")
    model = from_discrete(fn, ABAR, "eps")
    steps = list(range(999, 0, -111))
    x = torch.randn(8, 2, generator=gen(1), dtype=F64)
    ts = discrete_times(model, torch.tensor(steps) - shift)
    ours = sdeflow.sample(model, x, solver="ddim", timesteps=ts)
    err = (ours - _discrete_ddim(fn, x, steps)).abs().max().item()
    assert (err < 1e-10) == (shift == 0), err


def test_bad_schedules_and_predictions_are_refused():
    with pytest.raises(ValueError, match="strictly decreasing"):
        from_discrete_eps(lambda x, n: x, ABAR.flip(0))
    zsnr = torch.cat([ABAR[:-1], torch.zeros(1, dtype=F64)])
    with pytest.raises(ValueError, match="zero terminal SNR"):
        from_discrete_eps(lambda x, n: x, zsnr)
    with pytest.raises(ValueError, match="'eps', 'v' or 'x0'"):
        from_discrete(lambda x, n: x, ABAR, "score")
    with pytest.raises(TypeError, match="discrete_times"):
        discrete_times(sdeflow.Denoiser(lambda x, t: x, sdeflow.VPSDE()), [1])
    assert math.isfinite(fit_vp_sde(ABAR).T)

"""The SDE classes: coefficients consistent with their marginals, inverses exact, marginals
confirmed by simulating the forward SDE."""
import math

import pytest
import torch

import sdeflow
from sdeflow.sde import get_sde, list_sdes, sde_from_config

from .conftest import gen


def _grid(sde, n=50):
    return torch.linspace(sde.t_min, sde.T, n, dtype=torch.float64)[1:-1]


def test_drift_is_dlog_s_and_diffusion_matches_variance(sde_case):
    """f = d log s/dt and g² = dσ²/dt − 2fσ² (so p_0t is the SDE's transition), by autograd."""
    _, sde, _ = sde_case
    t = _grid(sde).requires_grad_(True)
    (dlogs,) = torch.autograd.grad(sde.s(t).log().sum() + 0 * t.sum(), t)  # s ≡ 1 has no graph
    (dvar,) = torch.autograd.grad((sde.sigma(t) ** 2).sum(), t)
    t = t.detach()
    torch.testing.assert_close(sde.f(t), dlogs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sde.g2(t), dvar - 2 * sde.f(t) * sde.sigma(t) ** 2, rtol=1e-9, atol=1e-12)


def test_inverses_are_exact(sde_case):
    _, sde, _ = sde_case
    t = _grid(sde)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(sde.t_from_sigma(sde.sigma(t)), t, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(sde.t_from_noise_level(sde.noise_level(t)), t, rtol=1e-9, atol=1e-11)


def test_time_of_a_log_snr_is_differentiable(sde_case):
    """dt/dλ through ``t_from_log_snr`` is 1/(dλ/dt) on every SDE (tuned grids are placed in λ
    and differentiated through this map; a bisection would give no gradient)."""
    _, sde, _ = sde_case
    t = _grid(sde).requires_grad_(True)
    (dlam,) = torch.autograd.grad(sde.log_snr(t).sum(), t)
    lam = sde.log_snr(t.detach()).requires_grad_(True)
    (dt,) = torch.autograd.grad(sde.t_from_log_snr(lam).sum(), lam)
    torch.testing.assert_close(dt * dlam, torch.ones_like(dt), rtol=1e-7, atol=0)


def test_log_snr_decreases(sde_case):
    _, sde, _ = sde_case
    lam = sde.log_snr(_grid(sde, 500))
    assert (lam[1:] < lam[:-1]).all()


def test_transitions_compose(sde_case):
    """p(x_t3 | x_t1) is the composition of t1→t2 and t2→t3: a13 = a23·a12, v13 = a23²v12 + v23."""
    _, sde, _ = sde_case
    t1, t2, t3 = (torch.tensor(sde.t_min + f * (sde.T - sde.t_min), dtype=torch.float64)
                  for f in (0.1, 0.4, 0.9))
    a12, v12 = sde.transition(t1, t2)
    a23, v23 = sde.transition(t2, t3)
    a13, v13 = sde.transition(t1, t3)
    torch.testing.assert_close(a13, a23 * a12, rtol=1e-12, atol=0)
    torch.testing.assert_close(v13, a23**2 * v12 + v23, rtol=1e-10, atol=1e-14)


def test_marginals_match_forward_simulation(sde_case):
    """Euler–Maruyama on dx = f x dt + g dw from the exact p_{t_min} of x0 ~ N(m, v) reproduces
    the closed-form mean s·m and variance s²v + σ² at a later time. n = 20000 paths: the
    variance's standard error is √(2/n) ≈ 1%; EM's bias with 2000 steps is far below it; the
    tolerance is 5 standard errors."""
    _, sde, _ = sde_case
    n, steps, m, v = 20000, 2000, 1.5, 0.3**2
    g = gen(0)
    ta = torch.tensor(sde.t_min, dtype=torch.float64)
    tb = torch.tensor(sde.t_min + 0.5 * (sde.T - sde.t_min), dtype=torch.float64)
    x = sde.s(ta) * (m + math.sqrt(v) * torch.randn(n, 1, generator=g, dtype=torch.float64)) \
        + sde.sigma(ta) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    # steps uniform in log(t) resolve the fast early phase of the VE/EDM SDEs
    ts = torch.exp(torch.linspace(ta.log(), tb.log(), steps + 1, dtype=torch.float64))
    for t0, t1 in zip(ts[:-1], ts[1:]):
        h = t1 - t0
        x = x + sde.drift(x, t0) * h + sde.diffusion(t0) * h.sqrt() * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
    mean, var = sde.s(tb) * m, sde.s(tb) ** 2 * v + sde.sigma(tb) ** 2
    se_mean, se_var = (var / n).sqrt(), var * math.sqrt(2 / n)
    assert abs(x.mean() - mean) < 5 * se_mean
    assert abs(x.var() - var) < 5 * se_var


def test_float64_in_float64_out(sde_case):
    _, sde, _ = sde_case
    t = torch.tensor([sde.t_min, sde.T], dtype=torch.float64)
    for fn in (sde.s, sde.sigma, sde.f, sde.g2, sde.log_snr):
        assert fn(t).dtype == torch.float64
    z = sde.prior_sample((3, 4), dtype=torch.float64)
    assert z.dtype == torch.float64 and sde.prior_log_prob(z).dtype == torch.float64


def test_prior_log_prob_is_the_gaussian_density(sde_case):
    _, sde, _ = sde_case
    z = sde.prior_sample((5, 3), generator=gen(1), dtype=torch.float64)
    std = sde.prior_std()
    expected = torch.distributions.Normal(0.0, std).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(z), expected)


def test_registry_and_config_round_trip():
    assert list_sdes() == ["edm", "subvp", "ve", "vp"]
    for name in list_sdes():
        sde = get_sde(name)
        again = sde_from_config(sde.config())
        assert type(again) is type(sde) and again.config() == sde.config()
    with pytest.raises(ValueError, match="choices"):
        get_sde("nope")


@pytest.mark.parametrize("make", [
    lambda: sdeflow.VESDE(sigma_min=1.0, sigma_max=0.5),
    lambda: sdeflow.VPSDE(beta_min=-1.0),
    lambda: sdeflow.VPSDE(schedule="quadratic"),
    lambda: sdeflow.VPSDE(schedule="cosine", T=1.0),
    lambda: sdeflow.EDMSDE(sigma_min=0.0),
])
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_check_t_rejects_out_of_range_and_nan():
    sde = sdeflow.EDMSDE()
    with pytest.raises(ValueError, match=r"\[t_min, T\]"):
        sde.check_t(torch.tensor([100.0]))
    with pytest.raises(ValueError, match="non-finite"):
        sde.check_t(torch.tensor([float("nan")]))


def test_edm_and_ve_are_the_same_family():
    """EDM is VE with σ(t) = t: same noise level ⇒ same log-SNR."""
    edm, ve = sdeflow.EDMSDE(), sdeflow.VESDE(sigma_min=0.002, sigma_max=80.0)
    t_ve = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    t_edm = edm.t_from_sigma(ve.sigma(t_ve))
    torch.testing.assert_close(edm.log_snr(t_edm), ve.log_snr(t_ve))

"""Exact likelihood through the PF-ODE against the closed-form log p_{t_min} of Gaussian
mixtures, the Hutchinson estimator's unbiasedness, bits/dim on a case with a known answer, and
the encode/decode maps."""
import math
from statistics import NormalDist

import pytest
import torch

import sdeflow
from sdeflow.likelihood import (bits_per_dim, decode, encode, interpolate, log_likelihood,
                                slerp)
from sdeflow.oracle import GaussianMixture

from .conftest import SDES, gen


def _exact(gm, sde, x, t):
    t = torch.tensor(t, dtype=torch.float64)
    return gm.log_prob(x, sde.s(t), sde.sigma(t))


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "edm"])
def test_exact_divergence_matches_log_density_2d(ring, sde_name):
    """Mean |error| ≤ 0.01 nats with the default prior N(0, σ(T)²) and rk45 at 1e-5
    (measured 8e-5 – 5.5e-4)."""
    sde = SDES[sde_name][0]()
    model = ring.denoiser(sde)
    x = ring.sample(64, generator=gen(0))
    lp = log_likelihood(model, x)
    assert lp.dtype == torch.float64
    assert (lp - _exact(ring, sde, x, sde.t_min)).abs().mean() < 0.01


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "edm"])
def test_exact_divergence_matches_log_density_64d(sde_name):
    """64-D anisotropic mixture: mean |error| ≤ 0.01 nats (measured 1.2e-3 – 1.6e-3) when the
    ODE's end is scored under the true p_T. With the default Gaussian prior the finite-T
    mismatch p_T ≠ N(0, σ(T)²) adds 0.016 (VP) – 0.05 (VE) nats: that is the model's error,
    not the solver's, and docs/benchmarks.md reports it."""
    gm = GaussianMixture.random(64, k=4, seed=0)
    sde = SDES[sde_name][0]()
    model = gm.denoiser(sde)
    x = gm.sample(16, generator=gen(1))
    T = torch.tensor(sde.T, dtype=torch.float64)
    lp = log_likelihood(model, x, prior_log_prob=lambda z: gm.log_prob(z, sde.s(T), sde.sigma(T)))
    assert (lp - _exact(gm, sde, x, sde.t_min)).abs().mean() < 0.01


def test_fixed_step_likelihood_converges(ring):
    """RK4 on the log-SNR grid: 25 → 50 steps cuts the error (measured 2.9e-4 → 6.8e-5 on VP)."""
    sde = sdeflow.VPSDE()
    model = ring.denoiser(sde)
    x = ring.sample(32, generator=gen(2))
    exact = _exact(ring, sde, x, sde.t_min)
    errs = [(log_likelihood(model, x, solver="rk4", steps=n, schedule="logsnr") - exact).abs().mean()
            for n in (25, 50)]
    assert errs[1] < 0.01 and errs[1] < errs[0] / 3


def _divergence(model, x, t: float, **opts):
    """∇·v(x, t) per row, as log_likelihood computes it: one Euler step of the likelihood ODE
    over [t, t + h] adds exactly h·∇·v(x, t) to log p (its ``delta``)."""
    h = 1e-3
    _, st = log_likelihood(model, x, solver="euler", steps=1, t_start=t, t_end=t + h,
                           return_stats=True, **opts)
    return st["delta"] / h


def _max_z(estimates, exact):
    """Largest |mean − exact| / standard error over the points (estimates: draws × points)."""
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    return ((estimates.mean(0) - exact) / se).abs().max().item()


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_divergence_is_unbiased_at_fixed_points(probe):
    """16-D anisotropic mixture, VP, 6 points at t = 0.01, 0.1, 0.5: 4096 independent
    one-probe estimates per point (one probe per row of a repeated batch) average to the exact
    divergence. Check: the largest |z| over the 18 points below the two-sided Bonferroni
    threshold at false-alarm rate 1e-4 (4.54); measured 1.8 (Rademacher), 2.2 (Gaussian). The
    estimates' standard error is 0.03–0.4 % (Rademacher) and 0.6–0.7 % (Gaussian) of the
    divergence, so a 5 % bias fails: the same check on 1.05 × the estimates measures
    |z| = 147 and 10."""
    gm = GaussianMixture.random(16, k=4, seed=0)
    model = gm.denoiser(sdeflow.VPSDE())
    points, draws = gm.sample(6, generator=gen(11)), 4096
    threshold = NormalDist().inv_cdf(1 - 1e-4 / (2 * 18))
    z, z_biased = [], []
    for t in (0.01, 0.1, 0.5):
        exact = _divergence(model, points, t)
        est = _divergence(model, points.repeat(draws, 1), t, divergence="hutchinson", probe=probe,
                          seed=12).reshape(draws, len(points))
        z.append(_max_z(est, exact))
        z_biased.append(_max_z(1.05 * est, exact))
    assert max(z) < threshold, (z, threshold)
    assert max(z_biased) > threshold, (z_biased, threshold)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_log_likelihood_is_centred_and_shrinks_with_probes(ring, probe):
    """Through the whole ODE: per-sample errors (independent probes) average to 0 within 4
    standard errors; 64 probes shrink the mean |error| at least 4× (√64 = 8 expected; measured
    9× for Rademacher). The bias check with power is the fixed-point test above."""
    sde = sdeflow.VPSDE()
    model = ring.denoiser(sde)
    x = ring.sample(128, generator=gen(3))
    exact = _exact(ring, sde, x, sde.t_min)
    err1 = log_likelihood(model, x, divergence="hutchinson", probe=probe, seed=4, rtol=1e-4,
                          atol=1e-4) - exact
    se = err1.std() / math.sqrt(err1.numel())
    assert err1.mean().abs() < 4 * se, (err1.mean(), se)
    err64 = log_likelihood(model, x[:32], divergence="hutchinson", probe=probe, n_probes=64,
                           seed=5, rtol=1e-4, atol=1e-4) - exact[:32]
    assert err64.abs().mean() < err1[:32].abs().mean() / 4


def test_hutchinson_probe_is_fixed_along_the_ode(ring):
    """The same seed gives the same estimate: probes are drawn once per call."""
    model = ring.denoiser(sdeflow.VPSDE())
    x = ring.sample(8, generator=gen(6))
    a = log_likelihood(model, x, divergence="hutchinson", seed=7)
    b = log_likelihood(model, x, divergence="hutchinson", seed=7)
    assert torch.equal(a, b)


def test_bits_per_dim_on_a_gaussian_with_known_answer():
    """8-bit data in 3-D scored by an exact Gaussian model N(μ, 0.3²I) on [−1, 1], with
    y = −1 + 2(x+u)/256. (1) For the very dequantisation draws used (replayed from the seed),
    bpd = −log p(y)/(D ln 2) + 7 is closed-form: ours matches it within 1e-3 bits (the ODE's
    error; the ODE's end is scored under the exact p_T). (2) The expectation over u, ½log(2πs²) + ((ȳ−μ)² + (2/256)²/12)/(2s²) per dim with
    ȳ the bin centre, matches the batch mean within 5e-3 bits (MC over 16 draws). (3) It sits
    above the discrete model's exact −log₂P(x)/D by less than 3e-3 bits on average."""
    mu, s = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 0.3
    gm = GaussianMixture([1.0], mu[None], stds=s)
    sde = sdeflow.EDMSDE()
    model = gm.denoiser(sde)
    y = gm.sample(32, generator=gen(8))
    x = ((y + 1) / 2 * 256).floor().clamp(0, 255)
    T = torch.tensor(sde.T, dtype=torch.float64)
    # score the ODE's end under the true p_T: the Gaussian prior's finite-T error is
    # O(|E x0| / σ_max) per dim, ~0.01 nats here, and not what this test is about
    res = bits_per_dim(model, x, n_dequant=16, seed=9,
                       prior_log_prob=lambda z: gm.log_prob(z, sde.s(T), sde.sigma(T)))
    assert res.offset_bits == 7.0 and res.bpd.shape == (32,) and res.n_dequant == 16
    normal = torch.distributions.Normal(mu, s)
    g = gen(9)
    draws = [-normal.log_prob(-1 + 2 * (x + torch.rand(x.shape, generator=g, dtype=x.dtype)) / 256)
             .mean(1) / math.log(2) + 7 for _ in range(16)]
    assert (res.bpd - torch.stack(draws).mean(0)).abs().max() < 1e-3
    ybar = -1 + 2 * (x + 0.5) / 256
    nll = 0.5 * math.log(2 * math.pi * s**2) + ((ybar - mu) ** 2 + (2 / 256) ** 2 / 12) / (2 * s**2)
    expected = nll.mean(1) / math.log(2) + 7
    assert (res.bpd - expected).mean().abs() < 5e-3
    lo, hi = -1 + 2 * x / 256, -1 + 2 * (x + 1) / 256
    discrete = -(normal.cdf(hi) - normal.cdf(lo)).log().mean(1) / math.log(2)
    assert -1e-3 < (res.bpd - discrete).mean() < 3e-3
    assert "+7.0000 bits/dim" in res.report()


def test_bits_per_dim_offset_follows_the_data_range():
    gm = GaussianMixture([1.0], [[0.5]], stds=0.2)
    model = gm.denoiser(sdeflow.VPSDE())
    x = torch.tensor([[100.0], [140.0]])
    assert bits_per_dim(model, x, data_range=(0.0, 1.0), seed=0).offset_bits == 8.0
    with pytest.raises(ValueError, match="integers"):
        bits_per_dim(model, x / 255)
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(model, x, data_range=(1.0, 0.0))


@pytest.mark.parametrize("dim", [2, 64])
def test_encode_decode_round_trip_at_solver_tolerance(dim):
    """decode(encode(x)) returns x within 20·tol at tol = 1e-7 (measured ≤ 6·tol), and the
    error shrinks ≥ 100× from tol 1e-5 to 1e-7."""
    gm = GaussianMixture.ring() if dim == 2 else GaussianMixture.random(64, k=4, seed=0)
    model = gm.denoiser(sdeflow.EDMSDE())
    x = gm.sample(16, generator=gen(10))
    errs = []
    for tol in (1e-5, 1e-7):
        z = encode(model, x, rtol=tol, atol=tol)
        errs.append((decode(model, z, rtol=tol, atol=tol) - x).abs().max().item())
    assert errs[1] < 20 * 1e-7 and errs[1] < errs[0] / 100, errs


def test_encoding_does_not_depend_on_the_batch(ring):
    model = ring.denoiser(sdeflow.VPSDE())
    x = ring.sample(12, generator=gen(11))
    together = encode(model, x)
    alone = torch.cat([encode(model, x[i:i + 1]) for i in (0, 5, 11)])
    torch.testing.assert_close(together[[0, 5, 11]], alone, rtol=0, atol=1e-12)


def test_encode_with_fixed_step_solvers_inverts_sampling(ring):
    """DDIM inversion and RK4 encoding on the same grid undo decoding to discretisation error."""
    model = ring.denoiser(sdeflow.VPSDE())
    x = ring.sample(8, generator=gen(12))
    for solver, steps, tol in (("rk4", 100, 1e-3), ("ddim", 500, 5e-2)):
        z = encode(model, x, solver=solver, steps=steps)
        back = decode(model, z, solver=solver, steps=steps)
        assert (back - x).abs().max() < tol, solver


def test_slerp_and_interpolation(ring):
    z0, z1 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)
    mid = slerp(z0, z1, 0.5)
    torch.testing.assert_close(mid.norm(), torch.tensor(3.0))  # stays on the sphere
    model = ring.denoiser(sdeflow.EDMSDE())
    a, b = ring.sample(2, generator=gen(13)).split(1)
    path = interpolate(model, a, b, n=5, rtol=1e-7, atol=1e-7)
    assert path.shape == (5, 2)
    torch.testing.assert_close(path[0], a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path[-1], b[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(divergence="trace"), ValueError, "choices"),
    (dict(probe="uniform", divergence="hutchinson"), ValueError, "choices"),
    (dict(n_probes=0, divergence="hutchinson"), ValueError, "positive integer"),
    (dict(solver="ddim"), ValueError, "choices"),
    (dict(solver="rk45", steps=10), ValueError, "adaptive"),
    (dict(t_start=0.5, t_end=0.1), ValueError, "t_end > t_start"),
])
def test_likelihood_bad_input(ring, kwargs, error, match):
    model = ring.denoiser(sdeflow.VPSDE())
    with pytest.raises(error, match=match):
        log_likelihood(model, ring.sample(2), **kwargs)


def test_nan_data_and_stochastic_encoders_are_refused(ring):
    model = ring.denoiser(sdeflow.VPSDE())
    with pytest.raises(ValueError, match="non-finite"):
        log_likelihood(model, torch.full((2, 2), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="ODE solver"):
        encode(model, ring.sample(2), solver="pc")

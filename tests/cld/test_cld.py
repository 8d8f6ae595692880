"""Critically-damped Langevin diffusion (:mod:`sdeflow.cld`): the closed-form kernel, the exact
mixture score, SSCS and the other samplers, the likelihood bound and hybrid score matching —
each check beside the same check on a subtly wrong case, which it must fail.

Statistics: the kernel and the Gaussian-data checks compare sample means and every covariance
entry with the closed form as z-scores (standard errors from the samples) against the
two-sided Bonferroni threshold at false-alarm rate 1e-4 (:data:`sdeflow.metrics.mixture.ALPHA`);
the ring checks are :mod:`tests.mixture_stats` (the stochastic-sampler tests' statistic).

SSCS's score (S) step: the default exponential Euler step (linearised around Gaussian data
N(0, σ_d²) with the model's ``sigma_data``) is second order on Gaussian data whose σ_d the model
knows, first order otherwise — as the paper's Euler step (``s_step="euler"``) always is; both
are measured below (order of the mean recursion, the Gaussian (x, v) marginal, the ring). No
known defect is pinned by an xfail.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

import sdeflow
import sdeflow.cld.sampling as cld_sampling
from sdeflow.cld import (CLD, CLDModel, join_state, list_cld_solvers, mixture_log_prob,
                         mixture_model, mixture_score, sample_cld, split_state)
from sdeflow.cld.losses import cld_loss, draw_cld_noise
from sdeflow.cld.sampling import ou_half_step
from sdeflow.likelihood import bits_per_dim, log_likelihood
from sdeflow.metrics.mixture import ALPHA
from sdeflow.oracle import GaussianMixture
from sdeflow.samplers.registry import Context

from ..conftest import gen
from ..mixture_stats import assert_samples_mixture, mixture_moments, rejects

F64 = torch.float64


def t64(t) -> torch.Tensor:
    return torch.tensor(t, dtype=F64)


def threshold(n_z: int, alpha: float = ALPHA) -> float:
    """|z| above which one of n_z normal z-scores lies with probability ≤ alpha."""
    return NormalDist().inv_cdf(1 - alpha / (2 * n_z))


def gaussian_z(u: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """z-scores of u's (n, k) sample mean and of every covariance entry (i ≤ j) against
    N(mean, cov); the products are centred at the true mean, standard errors from the samples."""
    n, k = u.shape
    d = u.to(F64) - mean
    zm = d.mean(0) / (d.std(0) / math.sqrt(n))
    i, j = torch.triu_indices(k, k)
    prod = d[:, i] * d[:, j]
    zc = (prod.mean(0) - cov[i, j]) / (prod.std(0) / math.sqrt(n))
    return torch.cat([zm, zc])


def max_abs(z: torch.Tensor) -> float:
    return z.abs().nan_to_num(nan=math.inf).max().item()


def kernel_moments(cld: CLD, t: float, x0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 2×2 covariance) of (x_t, v_t) given x₀ from the closed form."""
    a, b = cld.mean_coeffs(t64(t))
    sxx, sxv, svv = cld.cov(t64(t))
    return torch.stack([a, b]) * x0, torch.stack([torch.stack([sxx, sxv]), torch.stack([sxv, svv])])


def gaussian_marginal(cld: CLD, t: float, m: float, s2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of (x_t, v_t) per dimension for data N(m, s2)."""
    a, b = cld.mean_coeffs(t64(t))
    cov = kernel_moments(cld, t, 1.0)[1]
    ab = torch.stack([a, b])
    return ab * m, cov + s2 * torch.outer(ab, ab)


def gaussian_data(m: float = 0.0, s: float = 0.5) -> GaussianMixture:
    """One-dimensional data N(m, s²) as a one-component mixture (its oracle is CLD-exact)."""
    return GaussianMixture(torch.ones(1), torch.tensor([[m]]), stds=s)


# --------------------------------------------------------------------------------------------
# 1. the kernel
# --------------------------------------------------------------------------------------------

def simulate_forward(cld: CLD, x0: float, times, n: int, h: float, seed: int):
    """Euler–Maruyama (step h) on the forward CLD from x₀ with v₀ ~ N(0, γM): (n, 2) samples of
    (x_t, v_t) at each of ``times``."""
    g = gen(seed)
    x = torch.full((n,), float(x0), dtype=F64)
    v = math.sqrt(cld.gamma * cld.M) * torch.randn(n, generator=g, dtype=F64)
    out, t = [], 0.0
    for stop in times:
        for _ in range(round((stop - t) / h)):
            beta = float(cld.beta(t))
            z = torch.randn(n, generator=g, dtype=F64)
            noise = math.sqrt(2 * cld.Gamma * beta * h) * z
            x, v = x + h * beta * v / cld.M, v - h * beta * (x + cld.Gamma * v / cld.M) + noise
            t += h
        out.append(torch.stack([x, v], 1))
    return out


@pytest.mark.parametrize("cld", [CLD(), CLD(beta=0.5, beta_max=8.0)], ids=["constant", "linear"])
def test_kernel_matches_monte_carlo(cld):
    """20 000 Euler–Maruyama paths (h = 2.5e-4) at t = 0.02, 0.1, 0.4: 15 z-scores (means of
    x and v, Σxx, Σxv, Σvv at each time) against the threshold 4.50 — measured max |z| 1.7
    (constant β), 1.9 (linear); the closed-form covariance ×1.1 fails (10.8 both), ×0.9 too
    (11.6, 11.8)."""
    x0, times = 1.5, (0.02, 0.1, 0.4)
    paths = simulate_forward(cld, x0, times, n=20_000, h=2.5e-4, seed=0)

    def z(scale):
        zs = []
        for t, u in zip(times, paths):
            mean, cov = kernel_moments(cld, t, x0)
            zs.append(gaussian_z(u, mean, scale * cov))
        return torch.cat(zs)
    thr = threshold(z(1.0).numel())
    assert max_abs(z(1.0)) < thr, z(1.0)
    assert max_abs(z(1.1)) > thr and max_abs(z(0.9)) > thr


def van_loan(cld: CLD, B: float, M: float | None = None):
    """(exp(𝓑A), Σ(𝓑) from Σ₀ = diag(0, γM)) by Van Loan's matrix exponential (float64)."""
    M = cld.M if M is None else M
    Gamma = 2 * math.sqrt(M)
    A = torch.tensor([[0.0, 1 / M], [-1.0, -Gamma / M]], dtype=F64)
    Q = torch.tensor([[0.0, 0.0], [0.0, 2 * Gamma]], dtype=F64)
    C = torch.zeros(4, 4, dtype=F64)
    C[:2, :2], C[:2, 2:], C[2:, 2:] = -A, Q, A.T
    F = torch.linalg.matrix_exp(B * C)
    E = F[2:, 2:].T
    S0 = torch.diag(torch.tensor([0.0, cld.gamma * cld.M], dtype=F64))
    return E, E @ S0 @ E.T + E @ F[:2, 2:]


@pytest.mark.parametrize("cld", [CLD(), CLD(beta=0.5, beta_max=8.0), CLD(M=1.0, gamma=0.1)],
                         ids=["paper", "linear", "M1"])
def test_kernel_matches_matrix_exponential(cld):
    """Propagator and covariance agree with Van Loan's exp to 1e-10 for t in [1e-3, 1]
    (𝓑 from ~5e-4 to 4); the same with the mass 4 % off disagrees by > 1e-3."""
    for t in (1e-3, 0.01, 0.1, 0.5, 1.0):
        B = float(cld.B(t64(t)))
        E, S = van_loan(cld, B)
        e = torch.stack(cld.propagator(t64(B))).reshape(2, 2)
        mean, cov = kernel_moments(cld, t, 1.0)
        torch.testing.assert_close(e, E, rtol=1e-10, atol=1e-11)
        torch.testing.assert_close(mean, E[:, 0], rtol=1e-10, atol=1e-11)
        torch.testing.assert_close(cov, S, rtol=1e-10, atol=1e-11)
    _, S_wrong = van_loan(cld, float(cld.B(t64(0.1))), M=1.04 * cld.M)
    assert (kernel_moments(cld, 0.1, 1.0)[1] - S_wrong).abs().max() > 1e-3


def test_noise_covariance_is_accurate_for_small_increments():
    """At 𝓑 = 1e-6 the noise covariance matches its leading terms 2Γ(r⁴𝓑³/3, r²𝓑²/2, 𝓑) to
    1e-5 relative (next terms are O(r𝓑)); the textbook closed form of I₂ = ∫s²e^{-2rs} with
    e^{-2r𝓑} (catastrophic cancellation) is off by more than 1e-3."""
    cld = CLD()
    r, G = cld.r, cld.Gamma
    for B in (1e-6, 1e-4):
        got = torch.stack(cld.noise_cov(t64(B)))
        lead = 2 * G * torch.tensor([r**4 * B**3 / 3, r**2 * B**2 / 2, B], dtype=F64)
        torch.testing.assert_close(got, lead, rtol=10 * r * B, atol=0)
    B, x = 1e-6, 2 * r * 1e-6
    naive_i2 = (2 - math.exp(-x) * (x * x + 2 * x + 2)) / (2 * r) ** 3
    naive_xx = 2 * G * r**4 * naive_i2
    assert abs(naive_xx / float(cld.noise_cov(t64(B))[0]) - 1) > 1e-3


def test_kernel_tends_to_the_prior_and_starts_at_the_velocity_law():
    """At t = T = 20 (𝓑 = 80) the kernel is N(0, 1) × N(0, M) to 1e-12; at the default T = 1 the
    mean coefficient is still e^{-8}·9 = 3.0e-3. At t = 0: Σ = diag(0, γM), (a, b) = (1, 0),
    L = diag(0, √(γM)), ℓ = 1/√(γM)."""
    for M in (0.25, 1.0):
        cld = CLD(M=M, T=20.0)
        T = t64(cld.T)
        assert max(abs(float(c)) for c in cld.mean_coeffs(T)) < 1e-12
        torch.testing.assert_close(torch.stack(cld.cov(T)), torch.tensor([1.0, 0.0, M], dtype=F64),
                                   rtol=0, atol=1e-12)
    cld = CLD()
    assert float(cld.mean_coeffs(t64(1.0))[0]) == pytest.approx(9 * math.exp(-8), rel=1e-12)
    z = t64(0.0)
    gm = cld.gamma * cld.M
    assert [float(c) for c in cld.cov(z)] == [0.0, 0.0, pytest.approx(gm, rel=1e-15)]
    assert [float(c) for c in cld.mean_coeffs(z)] == [1.0, 0.0]
    assert [float(c) for c in cld.chol(z)] == [0.0, 0.0, pytest.approx(math.sqrt(gm), rel=1e-15)]
    assert float(cld.ell(z)) == pytest.approx(1 / math.sqrt(gm), rel=1e-15)


def test_hsm_scale_diverges_like_dsm_as_t_goes_to_zero():
    """ℓ_t = 1/L₂₂ → ∞ as t → 0⁺ like √(3/(2Γ𝓑)) — v₀'s share of v_t is revealed by x_t − a x₀ ≈
    r²𝓑 v₀ — and plain DSM's ℓ'_t like √(2/(Γ𝓑)), so ℓ'_t/ℓ_t → 2/√3: DSM's target in α units
    stays bounded (only t = 0 itself has the finite ℓ₀ = 1/√(γM)), as the module docstrings of
    process.py and losses.py state."""
    cld = CLD()
    for t in (1e-9, 1e-7):
        B = float(cld.B(t64(t)))
        ell = float(cld.ell(t64(t)))
        ell_dsm = 1 / float(cld.cholesky(*cld.noise_cov(t64(B)))[2])
        assert ell == pytest.approx(math.sqrt(3 / (2 * cld.Gamma * B)), rel=1e-5)
        assert ell_dsm / ell == pytest.approx(2 / math.sqrt(3), rel=1e-5)
    assert float(cld.ell(t64(1e-9))) > 1000 * float(cld.ell(t64(0.0)))


def test_kernel_keeps_the_dtype():
    cld = CLD(beta=1.0, beta_max=5.0)
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor([0.0, 1e-4, 0.3, 1.0], dtype=dtype)
        outs = [*cld.mean_coeffs(t), *cld.cov(t), *cld.chol(t), cld.ell(t), *cld.propagator(t),
                *cld.noise_cov(t)]
        assert all(o.dtype == dtype and o.shape == t.shape for o in outs)
        x0 = torch.randn(4, 3, generator=gen(0), dtype=dtype)
        u = cld.perturb(x0, t, torch.randn_like(x0), torch.randn_like(x0))
        assert u.dtype == dtype and u.shape == (4, 6)
    assert cld.mean_coeffs(t64(0.3))[0].dtype == F64


# --------------------------------------------------------------------------------------------
# 2. the exact mixture score
# --------------------------------------------------------------------------------------------

def sample_ut(gm: GaussianMixture, cld: CLD, t: float, n: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    x0 = gm.sample(n, generator=g)
    eps = torch.randn(2, *x0.shape, generator=g, dtype=F64)
    return cld.perturb(x0, torch.full((n,), t, dtype=F64), eps[0], eps[1])


def test_mixture_score_is_the_gradient_of_the_log_prob():
    """Anisotropic 3-D mixture, 64 points drawn from p_t at 6 times: both halves of
    mixture_score equal autograd of mixture_log_prob to 1e-9 (relative); the score taken at a
    time 1 % off fails the same comparison."""
    gm, cld = GaussianMixture.random(3, k=4, seed=2), CLD()

    def autograd(u, t):
        u = u.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mixture_log_prob(gm, cld, u, t).sum(), u)
        return g

    for t in (0.0, 1e-4, 1e-3, 0.05, 0.3, 1.0):
        u = sample_ut(gm, cld, t, 64, seed=1)
        g = autograd(u, t)
        s = torch.cat(mixture_score(gm, cld, u, t), dim=1)
        assert s.dtype == F64
        torch.testing.assert_close(s, g, rtol=1e-9, atol=1e-9 * g.abs().max().item())
    u = sample_ut(gm, cld, 0.05, 64, seed=1)
    off = torch.cat(mixture_score(gm, cld, u, 0.05 * 1.01), dim=1)
    assert (off - autograd(u, 0.05)).abs().max() > 1e-3 * autograd(u, 0.05).abs().max()


def test_mixture_log_prob_is_normalised_and_factorises_at_zero():
    """A 1-D mixture's p_t(x, v) integrates to 1 (trapezoid on a wide grid, to 1e-6) at
    t = 0.02, 0.3; the log-density shifted by log 1.01 integrates to 1.01. At t = 0 the joint is
    p(x) N(v; 0, γM) exactly."""
    gm, cld = GaussianMixture.random(1, k=3, seed=3), CLD()
    xs = torch.linspace(-6, 6, 961, dtype=F64)
    vs = torch.linspace(-4, 4, 641, dtype=F64)
    X, V = torch.meshgrid(xs, vs, indexing="ij")
    u = torch.stack([X.reshape(-1), V.reshape(-1)], 1)
    dA = (xs[1] - xs[0]) * (vs[1] - vs[0])
    for t in (0.02, 0.3):
        mass = mixture_log_prob(gm, cld, u, t).exp().sum() * dA
        assert float(mass) == pytest.approx(1.0, abs=1e-6)
        assert float(mass * 1.01) != pytest.approx(1.0, abs=1e-6)  # the check's resolution
    u0 = sample_ut(gm, cld, 0.0, 100, seed=4)
    x, v = split_state(u0)
    torch.testing.assert_close(mixture_log_prob(gm, cld, u0, 0.0),
                               gm.log_prob(x) + cld.velocity_log_prob(v), rtol=1e-12, atol=1e-12)


def test_mixed_preconditioning_is_exact_for_gaussian_data():
    """A mixed-preconditioned CLDModel whose network returns 0 is the exact model of data
    N(0, σ_d²) (its Gaussian skip term, to 1e-9); with σ_d 10 % off it is not."""
    cld = CLD()
    zero = CLDModel(lambda u, c: torch.zeros_like(split_state(u)[0]), cld, sigma_data=0.5)
    wrong = CLDModel(zero.net, cld, sigma_data=0.55)
    exact = mixture_model(gaussian_data(s=0.5), cld)
    for t in (1e-3, 0.1, 1.0):
        u = sample_ut(gaussian_data(s=0.5), cld, t, 256, seed=5)
        ref = exact.score_v(u, t)
        torch.testing.assert_close(zero.score_v(u, t), ref, rtol=1e-9, atol=1e-9)
        if t == 0.1:  # where σ_d matters most (5.7 % of the score; 5e-4 at 1e-3, 4e-7 at 1)
            assert (wrong.score_v(u, t) - ref).abs().max() > 1e-2 * ref.abs().max()


# --------------------------------------------------------------------------------------------
# 3. SSCS: exact linear part, and its order
# --------------------------------------------------------------------------------------------

def equilibrium_model(cld: CLD, scale: float = 1.0) -> CLDModel:
    """s_v = −v/(scale·M), as α = −s_v/ℓ = v/(scale·M·ℓ): the velocity's equilibrium score at
    scale 1, where SSCS's score step vanishes."""
    def net(u, t):
        v = split_state(u)[1]
        return v / (scale * cld.M * cld.ell(t)[:, None])
    return CLDModel(net, cld, precondition=None)


def test_sscs_is_exact_at_equilibrium_with_two_steps():
    """With s_v = −v/M the prior N(0, I) × N(0, M I) is stationary under the exact A steps, so
    2 SSCS steps keep it: 20 000 2-D samples pass (14 z-scores). The same check
    rejects Euler–Maruyama with 2 steps and SSCS with s_v = −v/(1.05M). Measured max |z|: 1.8,
    101, 10.3 (threshold 4.49)."""
    cld = CLD()
    mean = torch.zeros(4, dtype=F64)
    cov = torch.diag(torch.tensor([1.0, 1.0, cld.M, cld.M], dtype=F64))

    def z(solver, scale=1.0):
        u = sample_cld(equilibrium_model(cld, scale), shape=(20_000, 2), solver=solver, steps=2,
                       seed=0, dtype=F64, return_velocity=True)
        return gaussian_z(u, mean, cov)
    thr = threshold(14)
    assert max_abs(z("sscs")) < thr
    assert max_abs(z("euler_maruyama")) > thr
    assert max_abs(z("sscs", scale=1.05)) > thr


def heun_s_step(model, u, t, t_next, ctx, s_step=None):
    """SSCS with the score step solved by Heun's rule instead of Euler (2 NFE; ``s_step``
    ignored): the second-order Strang splitting, an independent reference the checks below must
    pass."""
    cld = model.sde
    t, t_next = torch.as_tensor(t, dtype=F64), torch.as_tensor(t_next, dtype=F64)
    tm = 0.5 * (t + t_next)
    u = ou_half_step(cld, u, cld.B(t) - cld.B(tm), ctx)
    x, v = split_state(u)
    dB = float(cld.B(t) - cld.B(t_next))

    def f(v):
        return 2 * cld.Gamma * (model.score_v(join_state(x, v), tm.to(u.dtype)) + v / cld.M)
    k1 = f(v)
    v = v + 0.5 * dB * (k1 + f(v + dB * k1))
    return ou_half_step(cld, join_state(x, v), cld.B(tm) - cld.B(t_next), ctx), k1


def gaussian_cov_z(solver: str, n: int = 20_000, steps: int = 100, s: float = 0.5,
                   sigma_data: float | None = None, **opts):
    """z-scores of (x, v) samples at t_min from data N(0, s²) with the exact score (5 z: means of
    x and v, Σxx, Σxv, Σvv); the model's σ_d is the data's s unless given."""
    cld = CLD()
    model = mixture_model(gaussian_data(s=s), cld, sigma_data=s if sigma_data is None else sigma_data)
    u = sample_cld(model, shape=(n, 1), solver=solver, steps=steps, seed=3, dtype=F64,
                   return_velocity=True, **opts)
    return gaussian_z(u, *gaussian_marginal(cld, cld.t_min, 0.0, s * s))


def test_gaussian_marginal_check_passes_a_second_order_splitting(monkeypatch):
    """Data N(0, 0.25), exact score, 100 steps, 20 000 samples: the splitting with a Heun score
    step reproduces the closed-form N(0, P(t_min)) (measured max |z| 2.6, on Var v: +2 %;
    threshold 4.26); Euler–Maruyama fails it (Var v +18 %, z = 15.6)."""
    thr = threshold(5)
    assert max_abs(gaussian_cov_z("euler_maruyama")) > thr
    monkeypatch.setattr(cld_sampling, "sscs_step", heun_s_step)
    assert max_abs(gaussian_cov_z("sscs")) < thr


def test_sscs_reproduces_the_gaussian_marginal():
    """Same data and check (100 steps, 20 000 samples, both x and v at t_min): SSCS with its
    default exponential S step passes with the data's σ_d = 0.5 (measured max |z| 1.84; Var x
    +0.2 %, Var v +1.9 %) and with the default, mismatched σ_d = 1 (1.82; Var x −1.8 %, Var v
    +1.8 %: at 100 steps this check does not resolve the mismatch, the order check below
    does); the paper's Euler S step fails on the velocity (Var v −10.7 %, z = −12.0; Var x
    −2.3 %, z = −2.4). At 200 / 400 steps the Euler step's Var v z is −6.3 / −3.1."""
    thr = threshold(5)
    assert max_abs(gaussian_cov_z("sscs")) < thr
    assert max_abs(gaussian_cov_z("sscs", sigma_data=1.0)) < thr
    z = gaussian_cov_z("sscs", s_step="euler")
    assert z[4] < -thr, z  # Σvv: the velocity variance at t_min too low


def test_pf_ode_reproduces_the_gaussian_marginal():
    """The (x, v) probability-flow ODE with the exact score, same data and check: RK4 with 25
    steps (100 NFE) passes (max |z| 0.96); Euler with 200 steps fails (Var x z = 38: the
    stiff velocity near t_min)."""
    thr = threshold(5)
    assert max_abs(gaussian_cov_z("rk4", steps=25)) < thr
    assert max_abs(gaussian_cov_z("euler", steps=200)) > thr


def mean_error(solver: str, steps: int, m: float = 1.5, s: float = 0.5,
               sigma_data: float | None = None, **opts) -> float:
    """|E u(t_min) − exact mean| of the sampler on data N(m, s²) with the exact (affine) score
    (model σ_d = s unless given), started from the exact mean of p_T: with every noise draw zero
    (Context.randn_like patched by the caller) the sampler runs its own mean recursion."""
    cld = CLD()
    (aT, bT), (a, b) = cld.mean_coeffs(t64(cld.T)), cld.mean_coeffs(t64(cld.t_min))
    u_T = torch.stack([aT, bT])[None] * m
    model = mixture_model(gaussian_data(m, s), cld, sigma_data=s if sigma_data is None else sigma_data)
    u = sample_cld(model, u_T, solver=solver, steps=steps, return_velocity=True, **opts)
    return float((u[0] - torch.stack([a, b]) * m).norm())


def observed_order(solver: str, n: int = 40, **opts) -> float:
    return math.log2(mean_error(solver, n, **opts) / mean_error(solver, 2 * n, **opts))


@pytest.fixture
def no_noise(monkeypatch):
    monkeypatch.setattr(Context, "randn_like", lambda self, x: torch.zeros_like(x))


SECOND_ORDER = 1.8  # an observed order at or above it counts as second order


def test_order_check_separates_first_and_second_order(no_noise, monkeypatch):
    """Observed order of the mean (quadratic grid, 40 → 80 steps, float64): Euler–Maruyama 1.02
    (fails ≥ 1.8), the Heun-S splitting 2.06 (passes)."""
    em = observed_order("euler_maruyama")
    assert 0.8 < em < SECOND_ORDER, em
    monkeypatch.setattr(cld_sampling, "sscs_step", heun_s_step)
    heun = observed_order("sscs")
    assert heun >= SECOND_ORDER, heun


@pytest.mark.parametrize("opts, second_order", [
    ({}, True),
    ({"s_step": "euler"}, False),
    ({"sigma_data": 1.0}, False),
    ({"sigma_data": 0.55}, False),
], ids=["exponential", "euler", "sigma_data_1", "sigma_data_0.55"])
def test_sscs_order(no_noise, opts, second_order):
    """SSCS on data N(1.5, 0.5²): the exponential S step with the data's σ_d = 0.5 is second
    order (errors 8.3e-4, 2.1e-4, 5.3e-5, 1.3e-5 at 20/40/80/160 steps; observed 2.00 at
    40 → 80); the paper's Euler S step (4.1e-2 → 2.0e-2: 1.03), the default σ_d = 1 (1.03) and
    σ_d 10 % off (0.55: 1.00) drop to order p − 1 = 1, as registered for the general case."""
    p = observed_order("sscs", **opts)
    if second_order:
        assert p >= SECOND_ORDER, p
    else:
        assert 0.8 < p < SECOND_ORDER, p
    assert cld_sampling.CLD_SOLVERS["sscs"].order == 1
    assert cld_sampling.CLD_SOLVERS["sscs_adaptive"].order == 1


# --------------------------------------------------------------------------------------------
# 4. samples of the 8-Gaussian ring with the exact score
# --------------------------------------------------------------------------------------------

N_RING = 10_000  # resolves the pooled width to ±0.5 %


def ring_draw(ring, solver, steps, score_scale=1.0, n=N_RING, seed=1, **opts):
    model = mixture_model(ring, CLD(), score_scale)  # σ_d = 1: the ring is not Gaussian anyway
    return sample_cld(model, shape=(n, 2), solver=solver, steps=steps, seed=seed, dtype=F64,
                      return_stats=True, **opts)


@pytest.mark.parametrize("solver, steps", [("sscs", 127), ("euler_maruyama", 400)])
def test_sampler_reproduces_the_ring(ring, solver, steps):
    """Measured here (threshold 4.71): SSCS max |z| 2.81 (width −1.14 %; seeds 2–4: 2.60, 3.32,
    2.68), Euler–Maruyama 1.96 (+0.3 %). SSCS widths at N = 20 000 (seed 1): −1.86 % at 63
    steps (fails, z = −5.4), −0.95 % at 100, −0.62 % at 127, −0.53 % at 200 (first order in
    general); Euler–Maruyama +2.8 % at 100, +1.7 % at 200, +0.85 % at 500 — hence the grids."""
    x, stats = ring_draw(ring, solver, steps)
    assert stats["nfe"] == steps
    assert_samples_mixture(ring, x, what=f"{solver} {steps} steps")


def test_sscs_exponential_s_step_narrows_the_ring_less_than_euler(ring):
    """The paper's Euler S step on the same draws (seed 1, 127 steps, N = 10 000): width −1.80 %
    (max |z| 3.77, a pass; seeds 2–4: 2.81, 4.77 (fails), 2.92 — at this N the ring check does
    not reliably separate the two S steps, so neither pass nor fail is asserted), 0.66 % below the
    exponential step's −1.14 %. The paired difference is what is stable: 0.66, 0.68, 0.68,
    0.67 % at seeds 1–4 (0.85 % ± 0.05 at 100 steps, 20 000 samples, 8 seeds), so the
    exponential step roughly halves the width error."""
    m_exp = mixture_moments(ring, ring_draw(ring, "sscs", 127)[0])
    m_euler = mixture_moments(ring, ring_draw(ring, "sscs", 127, s_step="euler")[0])
    print(f"ring width, 127 steps: exponential {m_exp.width - 1:+.4f}, euler "
          f"{m_euler.width - 1:+.4f}")
    assert m_euler.width < 1 and m_exp.width - m_euler.width > 0.004


def test_ring_check_rejects_a_wrong_score_and_a_wider_ring(ring):
    """At the same N: SSCS (127 steps) with the score ×1.1 fails (width 0.917, z = −19.0), and
    true draws of a ring with 10 % wider components fail (width 1.093, z = 16.5), while true
    draws of the ring pass (max |z| 2.2)."""
    assert rejects(ring, ring_draw(ring, "sscs", 127, score_scale=1.1)[0])
    assert rejects(ring, GaussianMixture.ring(std=0.275).sample(N_RING, generator=gen(5)))
    assert_samples_mixture(ring, ring.sample(N_RING, generator=gen(5)))


def test_sscs_adaptive_reproduces_the_ring(ring):
    """Adaptive SSCS at its default tolerances (rtol = atol = 0.02) reports nfe = accepted steps
    (179 here: one network call each, no rejections) and reproduces the ring: max |z| 2.33,
    width −1.16 % (seeds 2, 3: 2.81, 2.77; at N = 20 000: 180 NFE, 3.04, −1.06 %). The paper's
    Euler S step at the same tolerances: 179 NFE, width −2.10 %, z = −4.27 (a marginal pass)."""
    x, stats = ring_draw(ring, "sscs_adaptive", None)
    assert stats["steps"] is None and stats["nfe"] == stats["accepted"]
    assert 20 < stats["nfe"] < 1000
    assert_samples_mixture(ring, x, what="sscs_adaptive")


@pytest.mark.slow
def test_sscs_reproduces_the_ring_at_100_steps_and_20k_samples(ring):
    """SSCS at its default 100 steps, N = 20 000: the exponential S step passes (measured max
    |z| 2.69, width −0.95 %; seeds 2–8: 2.89, 3.34, 3.30, 4.07, 3.02, 2.96, 4.16), the paper's
    Euler step on the same draws fails (width −1.81 %, z = −5.21; seeds 2–8: 5.42, 5.76, 5.27,
    4.92, 4.77, 4.20 (the one pass), 6.56)."""
    assert_samples_mixture(ring, ring_draw(ring, "sscs", 100, n=20_000)[0],
                           what="sscs 100 steps")
    assert rejects(ring, ring_draw(ring, "sscs", 100, n=20_000, s_step="euler")[0])


# --------------------------------------------------------------------------------------------
# 5. the likelihood bound
# --------------------------------------------------------------------------------------------

def test_likelihood_bound_is_exact_with_the_exact_score(ring):
    """With the exact score the CLD bound log p(x₀, v₀) − log q(v₀) is log p(x₀) for every v₀:
    measured max error 1.7e-5 nats at rtol = atol = 1e-7 over 32 ring points (bound 1e-4);
    the score ×1.1 is off by ~6 nats on average."""
    x = ring.sample(32, generator=gen(0))
    truth = ring.log_prob(x)
    lp, stats = log_likelihood(mixture_model(ring, CLD()), x, rtol=1e-7, atol=1e-7, seed=0,
                               return_stats=True)
    err = (lp - truth).abs().max().item()
    print(f"CLD likelihood bound, exact score: max |error| {err:.2e} nats, NFE {stats['nfe']}")
    assert err < 1e-4
    assert torch.isfinite(stats["velocity"]).all()
    wrong = log_likelihood(mixture_model(ring, CLD(), 1.1), x[:8], seed=0)
    assert (wrong - truth[:8]).abs().mean() > 0.5


def test_bits_per_dim_on_a_cld_model():
    """bits_per_dim on a CLD model: finite, −nats/(D ln 2) + 7 bits, and the nats are
    log_likelihood of the same dequantised points with the same v₀ (the same generator)."""
    gm = GaussianMixture(torch.ones(2), torch.tensor([[-0.4, 0.2], [0.4, -0.2]]), stds=0.2)
    model = mixture_model(gm, CLD())
    x = ((gm.sample(6, generator=gen(1)).clamp(-0.99, 0.99) + 1) * 128).floor()
    res = bits_per_dim(model, x, generator=gen(2))
    assert torch.isfinite(res.bpd).all() and res.offset_bits == 7.0 and res.nfe > 0
    torch.testing.assert_close(res.bpd, -res.nats / (2 * math.log(2)) + 7.0)
    g = gen(2)
    y = -1 + 2 * (x + torch.rand(x.shape, generator=g, dtype=x.dtype)) / 256
    torch.testing.assert_close(res.nats, log_likelihood(model, y, generator=g))
    torch.testing.assert_close(res.nats, gm.log_prob(y), rtol=0, atol=2e-3)


# --------------------------------------------------------------------------------------------
# 6. hybrid vs plain denoising score matching
# --------------------------------------------------------------------------------------------

def per_sample_losses(model, x0, noise, loss, weighting="eps"):
    return cld_loss(model, x0, noise, loss=loss, weighting=weighting, reduce=False)


@pytest.mark.parametrize("weighting", ["eps", "likelihood"])
def test_hsm_has_lower_variance_than_dsm(ring, weighting):
    """Per-sample loss variance of the exact model, 20 000 draws. t in [1e-5, 1e-3]: DSM/HSM
    = 1.75 (eps), 1.80 (likelihood) — near t = 0 the targets are pure noise of variance 1 and
    (ℓ'/ℓ)² = 4/3, so the limit is 16/9, a bounded factor since both scales diverge alike
    (test_hsm_scale_diverges_like_dsm_as_t_goes_to_zero); t in [1e-5, 1]: 1.17 (eps), 1.97
    (likelihood)."""
    exact, x0 = mixture_model(ring, CLD()), ring.sample(20_000, generator=gen(0))
    ratio = {}
    for lo, hi in ((1e-5, 1e-3), (1e-5, 1.0)):
        noise = draw_cld_noise(x0, lo, hi, generator=gen(1))
        var = {k: per_sample_losses(exact, x0, noise, k, weighting).var().item()
               for k in ("hsm", "dsm")}
        ratio[hi] = var["dsm"] / var["hsm"]
    print(f"Var DSM / Var HSM ({weighting}): t ≤ 1e-3 {ratio[1e-3]:.3f}, full range "
          f"{ratio[1.0]:.3f}")
    assert 1.5 < ratio[1e-3] < 16 / 9 * 1.1
    assert ratio[1.0] > 1.0


@pytest.mark.parametrize("loss", ["hsm", "dsm"])
def test_losses_are_minimal_at_the_exact_model(ring, loss):
    """Paired draws (20 000, t in [1e-5, 1]): the score ×1.1 and ×0.9 models' losses exceed the
    exact model's by > 5 standard errors (measured z ≈ 36 for ×1.1)."""
    x0 = ring.sample(20_000, generator=gen(0))
    noise = draw_cld_noise(x0, 1e-5, 1.0, generator=gen(1))
    base = per_sample_losses(mixture_model(ring, CLD()), x0, noise, loss)
    for scale in (1.1, 0.9):
        d = per_sample_losses(mixture_model(ring, CLD(), scale), x0, noise, loss) - base
        z = d.mean() / (d.std() / math.sqrt(len(d)))
        assert z > 5, (scale, z)


# --------------------------------------------------------------------------------------------
# 7. errors
# --------------------------------------------------------------------------------------------

def test_errors():
    cld = CLD()
    model = equilibrium_model(cld)
    with pytest.raises(ValueError, match="unknown solver 'nope'.*sscs"):
        sample_cld(model, shape=(4, 2), solver="nope")
    with pytest.raises(ValueError, match="karras.*uniform.*quadratic"):
        sample_cld(model, shape=(4, 2), schedule="karras")
    for solver in ("sscs_adaptive", "rk45"):
        with pytest.raises(ValueError, match=f"{solver}.*adaptive"):
            sample_cld(model, shape=(4, 2), solver=solver, steps=10)
    with pytest.raises(ValueError, match="even size"):
        sample_cld(model, torch.zeros(4, 3), steps=2)
    for solver, steps in (("sscs", 2), ("sscs_adaptive", None)):
        with pytest.raises(ValueError, match="unknown s_step 'heun'.*exponential.*euler"):
            sample_cld(model, shape=(4, 2), solver=solver, steps=steps, s_step="heun")
    with pytest.raises(ValueError, match="even size"):
        split_state(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="M > 0"):
        CLD(M=-1)
    bad = CLDModel(lambda u, t: u, cld, precondition=None)
    with pytest.raises(ValueError, match="network returned shape"):
        bad.score_v(torch.zeros(4, 4), 0.5)
    with pytest.raises(ValueError, match="network returned shape"):
        sample_cld(bad, shape=(4, 2), steps=2)
    assert {"sscs", "euler_maruyama", "sscs_adaptive", "rk45"} <= set(list_cld_solvers())


def test_review_refusals_and_auto():
    """What does not apply to a CLD model is refused by name; solver='auto' is SSCS with the
    budget as its steps; adaptive SSCS reports running out of steps and bad step sizes."""
    from sdeflow.likelihood import decode, encode
    cld = CLD()
    model = equilibrium_model(cld)
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="karras.*not defined.*cld"):
        log_likelihood(model, x, solver="heun", steps=2, schedule="karras")
    for fn in (encode, decode):
        with pytest.raises(TypeError, match="CLD model"):
            fn(model, x)
    with pytest.raises(ValueError, match="schedule_opts"):
        sdeflow.sample(model, shape=(4, 2), steps=2, schedule_opts=dict(rho=3.0))
    _, st = sdeflow.sample(model, shape=(4, 2), solver="auto", steps=7, seed=0, return_stats=True)
    assert st["solver"] == "sscs" and st["nfe"] == 7 and st["steps"] == 7
    with pytest.raises(ValueError, match="auto"):
        sdeflow.sample(model, shape=(4, 2), solver="auto", schedule="uniform")
    with pytest.raises(RuntimeError, match="sscs_adaptive did not reach.*max_steps"):
        sample_cld(model, shape=(4, 2), solver="sscs_adaptive", max_steps=3, seed=0)
    for bad in (dict(h0=0.0), dict(h_min=0.0), dict(h_min=-1.0)):
        with pytest.raises(ValueError, match="must be positive"):
            sample_cld(model, shape=(4, 2), solver="sscs_adaptive", **bad)
    _, st = sample_cld(model, shape=(4, 2), solver="sscs_adaptive", seed=0, return_stats=True)
    assert st["schedule"] == "adaptive" and st["steps"] is None


def test_data_cov_is_the_gaussian_datas_covariance():
    cld = CLD()
    t = torch.tensor([0.01, 0.3, 1.0], dtype=torch.float64)
    a, b = cld.mean_coeffs(t)
    sxx, sxv, svv = cld.cov(t)
    pxx, pxv, pvv = cld.data_cov(t, 0.25)
    for got, want in ((pxx, a * a * .25 + sxx), (pxv, a * b * .25 + sxv), (pvv, b * b * .25 + svv)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    lam = torch.tensor([[0.1, 2.0]], dtype=torch.float64)
    assert cld.data_cov(t[:, None, None], lam)[0].shape == (3, 1, 2)

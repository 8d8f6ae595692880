"""Strong and weak orders of the stochastic Runge–Kutta methods (samplers/stochastic_rk.py) and
the Brownian path they run on (samplers/brownian.py).

Every step size runs on the *same* Brownian path: drawn at h = T/4 and refined by the bridge
down to T/1024. Strong error: E|X_h(T) − X(T)| over M paths; weak error: |E[X_h(T)²] −
E[X(T)²]| estimated on the same paths (paired, so its Monte-Carlo error is about the strong
error over √M, checked). An order is the least-squares slope of log error against log h over
h = T/4 … T/64, and passes when it lies in [p − 0.2, p + 0.3]; each order test applies its
window to a method one order lower too, and checks that it fails (the window tells the orders
apart).

Ground truth: exact solutions as functions of W(T) (time-dependent linear SDE, geometric
Brownian motion); for Ornstein–Uhlenbeck the exponential integrator on the T/1024 path
(error O(h²) ≈ 1e-7); for the nonlinear drift −sin x, which has no closed form, SRA3 on the
T/1024 path (16× finer than the finest h fitted).

Measured (M = 2000, seed 0) — strong: EM 1.04 (OU), 1.03 (linear), 1.01 (−sin x), 0.51 (GBM);
Milstein 0.96 (GBM); SRA1 / SRA3 1.52 / 1.52 (−sin x), and 2.06 / 2.03 (OU), 2.01 / 2.07
(linear): with linear drift the order-1.5 error terms, which carry f'', vanish. Weak (OU,
E X²): EM 0.97, SRA1 2.11.
"""
import math

import pytest
import torch

import sdeflow
from sdeflow.oracle import GaussianMixture
from sdeflow.samplers.brownian import BrownianMemory, BrownianPath, bridge, join
from sdeflow.samplers.registry import Context
from sdeflow.samplers.stochastic_rk import (SRA1, SRA3, ItoSDE, euler_maruyama_step,
                                            milstein_step, sde_fixed, sra_adaptive, sra_step)

from ..conftest import SDES, gen
from ..mixture_stats import assert_samples_mixture, rejects

M = 2000
T = 1.0
LEVELS = (2, 3, 4, 5, 6)  # h = T/4 … T/64
FINE = 10  # reference path, h = T/1024
Z_MAX = 4.5  # |z| bound for a few zero-mean statistics (P(|z| > 4.5) = 7e-6 each)


def window(p: float) -> tuple[float, float]:
    return p - 0.2, p + 0.3


def in_window(slope: float, p: float) -> bool:
    lo, hi = window(p)
    return lo <= slope <= hi


def fitted_order(errors: list[float]) -> float:
    """Least-squares slope of log error against log h over LEVELS."""
    lh = torch.tensor([math.log(T / 2**k) for k in LEVELS], dtype=torch.float64)
    le = torch.tensor(errors, dtype=torch.float64).log()
    lh, le = lh - lh.mean(), le - le.mean()
    return float((lh * le).sum() / (lh * lh).sum())


@pytest.fixture(scope="module")
def paths():
    """level → the same Brownian path (shape (M, 1)) on the grid of T·2^-level."""
    g = gen(0)
    path = BrownianPath.draw(torch.linspace(0, T, 2**LEVELS[0] + 1, dtype=torch.float64),
                             (M, 1), generator=g)
    out = {LEVELS[0]: path}
    for k in range(LEVELS[0] + 1, FINE + 1):
        path = path.refine(generator=g)
        if k in LEVELS or k == FINE:
            out[k] = path
    return out


def _sra(tab):
    def step(sde, t, x, h, dW, dZ):
        return sra_step(sde, tab, t, x, h, dW, dZ)[0]
    return step


METHODS = {"em": euler_maruyama_step, "milstein": milstein_step, "sra1": _sra(SRA1),
           "sra3": _sra(SRA3)}


def _const(c):
    return lambda t, x: torch.full_like(t, c)


# Ornstein–Uhlenbeck dx = −θx dt + σ dW
THETA, SIGMA = 1.0, 0.5
OU = ItoSDE(lambda t, x, rows: -THETA * x, _const(SIGMA), additive=True)
# dx = (β/√(1+t) − x/(2(1+t))) dt + αβ/√(1+t) dW: √(1+t)·x = x₀ + βt + αβW_t
ALPHA, BETA = 1.0, 1.0
LINEAR = ItoSDE(lambda t, x, rows: BETA / (1 + t[:, None]).sqrt() - x / (2 * (1 + t[:, None])),
                lambda t, x: ALPHA * BETA / (1 + t).sqrt(), additive=True)
# geometric Brownian motion dx = μx dt + σx dW: x = x₀ exp((μ − σ²/2)t + σW_t)
MU, SIGMA_GBM = 0.5, 0.5
GBM = ItoSDE(lambda t, x, rows: MU * x, lambda t, x: SIGMA_GBM * x)
# nonlinear drift, additive noise: f'' ≠ 0 brings out SRA's order 1.5
SINE = ItoSDE(lambda t, x, rows: -torch.sin(x), _const(2.0), additive=True)


def _x0(value=1.0):
    return torch.full((M, 1), value, dtype=torch.float64)


def ou_reference(path):
    """Exponential integrator, ∫₀ʰ e^{θu} dW_u ≈ ΔW + θ(hΔW − ΔZ) (exact: ∫u dW = hΔW − ΔZ)."""
    x = _x0()
    for (dW, dZ), h in zip(path, path.h):
        x = math.exp(-THETA * h) * (x + SIGMA * (dW + THETA * (h * dW - dZ)))
    return x


def _reference(name, paths):
    """(x₀, X(T) on the T/1024 path) for problem ``name``."""
    W = paths[FINE].dW.sum(0)
    if name == "ou":
        return _x0(), ou_reference(paths[FINE])
    if name == "linear":
        return _x0(), (_x0() + BETA * T + ALPHA * BETA * W) / math.sqrt(1 + T)
    if name == "gbm":
        return _x0(), _x0() * torch.exp((MU - SIGMA_GBM**2 / 2) * T + SIGMA_GBM * W)
    return _x0(0.5), sde_fixed(SINE, _x0(0.5), paths[FINE].ts, METHODS["sra3"], paths[FINE])


PROBLEMS = {"ou": OU, "linear": LINEAR, "gbm": GBM, "sine": SINE}


class Study:
    """Every problem's ground truth on the shared path, and the methods' errors against it."""

    def __init__(self, paths):
        self.paths = paths
        self.truth = {name: _reference(name, paths) for name in PROBLEMS}

    def run(self, problem, method):
        """X_h(T) at every level of LEVELS, and the reference X(T)."""
        (x0, ref), sde, step = self.truth[problem], PROBLEMS[problem], METHODS[method]
        return [sde_fixed(sde, x0.clone(), self.paths[k].ts, step, self.paths[k])
                for k in LEVELS], ref

    def strong_order(self, problem, method) -> float:
        xs, ref = self.run(problem, method)
        return fitted_order([(x - ref).abs().mean().item() for x in xs])


@pytest.fixture(scope="module")
def study(paths):
    return Study(paths)


# --- the Brownian path ------------------------------------------------------------------------

def test_refined_path_sums_back_to_the_coarse_path():
    coarse = BrownianPath.draw(torch.linspace(1.0, 0.0, 9, dtype=torch.float64), (64, 3),
                               generator=gen(1))
    fine = coarse.refine(generator=gen(2)).refine(generator=gen(3))
    assert len(fine) == 32 and torch.allclose(fine.ts[::4], coarse.ts, rtol=0, atol=1e-15)
    back = fine.coarsen().coarsen()
    for a, b in ((back.dW, coarse.dW), (back.dZ, coarse.dZ)):
        assert (a - b).abs().max() < 1e-14, "refinement must keep the coarse (ΔW, ΔZ)"
    again = coarse.refine(generator=gen(2))  # reproducible from the generator
    assert torch.equal(again.dW, coarse.refine(generator=gen(2)).dW)
    assert torch.allclose(fine.values()[-1], coarse.dW.sum(0), rtol=0, atol=1e-13)


def _moment_z(cols: list[torch.Tensor]) -> torch.Tensor:
    """z-scores of E[a_i a_j] − δ_ij for standardised variables (mean of the product over its
    standard error)."""
    z = []
    for i in range(len(cols)):
        for j in range(i, len(cols)):
            prod = cols[i] * cols[j] - float(i == j)
            z.append(prod.mean() / (prod.std() / math.sqrt(len(prod))))
    return torch.stack(z)


@pytest.mark.parametrize("theta", [0.5, 0.3])
def test_bridge_pieces_are_independent_brownian_increments(theta):
    """Given a coarse pair drawn with its exact law, the two pieces must be two independent
    exact pairs: standardised a = W/√h, b = (Z − hW/2)/√(h³/12) of both pieces are iid N(0, 1)
    — all 10 second moments within Z_MAX standard errors. A 5 % error in one piece's variance
    fails the same statistic (its power at n = 200 000)."""
    n, h = 200_000, torch.tensor(0.8, dtype=torch.float64)
    g = gen(4)
    z = torch.randn(4, n, generator=g, dtype=torch.float64)
    dW = h.sqrt() * z[0]
    dZ = h / 2 * dW + (h**3 / 12).sqrt() * z[1]
    W1, Z1, W2, Z2 = bridge(dW, dZ, h, theta, z[2], z[3])
    assert (W1 + W2 - dW).abs().max() < 1e-14
    W, Z = join(W1, Z1, W2, Z2, (1 - theta) * h)
    assert (W - dW).abs().max() < 1e-14 and (Z - dZ).abs().max() < 1e-14

    def std(W, Z, hh):
        return [W / hh.sqrt(), (Z - hh / 2 * W) / (hh**3 / 12).sqrt()]
    cols = std(W1, Z1, theta * h) + std(W2, Z2, (1 - theta) * h)
    assert _moment_z(cols).abs().max() < Z_MAX
    cols[0] = cols[0] * math.sqrt(1.05)
    assert _moment_z(cols).abs().max() > Z_MAX


def test_brownian_memory_bridges_what_it_has_revealed():
    """Reveal [0, 1], reject it, then take [0, 0.4], [0.4, 1]: the pieces join to the first
    answer exactly; a step past 1 draws fresh increments; W accumulates accepted steps only."""
    g = gen(5)
    x = torch.zeros(5, 2, dtype=torch.float64)
    mem = BrownianMemory(x, lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype))
    rows = torch.arange(5)

    def at(u):
        return torch.full((5,), float(u), dtype=torch.float64)
    first = mem.reveal(rows, at(0), at(1))
    mem.keep(first, torch.zeros(5, dtype=torch.bool))
    a = mem.reveal(rows, at(0), at(0.4))
    mem.keep(a, torch.ones(5, dtype=torch.bool))
    b = mem.reveal(rows, at(0.4), at(1))
    mem.keep(b, torch.ones(5, dtype=torch.bool))
    W, Z = join(a.dW, a.dZ, b.dW, b.dZ, 0.6)
    assert (W - first.dW).abs().max() < 1e-14 and (Z - first.dZ).abs().max() < 1e-14
    assert (mem.W - first.dW).abs().max() < 1e-14
    before = mem.W.clone()
    c = mem.reveal(rows, at(1), at(1.5))
    ok = torch.tensor([True, False, True, False, True])
    mem.keep(c, ok)
    assert torch.equal(mem.W[~ok], before[~ok]) and torch.equal(mem.W[ok], (before + c.dW)[ok])


# --- strong orders ----------------------------------------------------------------------------

def test_euler_maruyama_is_first_order_on_additive_noise(study):
    """EM's strong order is 1 when g does not depend on x; on GBM (order ½) the same window
    fails."""
    for problem in ("ou", "linear", "sine"):
        slope = study.strong_order(problem, "em")
        assert in_window(slope, 1.0), f"EM on {problem}: slope {slope:.2f}"
    assert not in_window(study.strong_order("gbm", "em"), 1.0)


@pytest.mark.parametrize("method", ["sra1", "sra3"])
def test_sra_has_strong_order_one_and_a_half(study, method):
    """On −sin x with σ = 2 SRA is order 1.5 and EM (order 1) fails the window. On linear
    drift (OU, time-dependent linear) the order-1.5 terms vanish and SRA measures 2."""
    slope = study.strong_order("sine", method)
    assert in_window(slope, 1.5), f"{method}: slope {slope:.2f}"
    assert not in_window(study.strong_order("sine", "em"), 1.5)
    for problem in ("ou", "linear"):
        slope = study.strong_order(problem, method)
        assert in_window(slope, 2.0), f"{method} on {problem}: slope {slope:.2f}"
        assert not in_window(study.strong_order(problem, "em"), 2.0)


def test_milstein_is_first_order_on_gbm_where_em_is_half(study):
    slope_mil, slope_em = study.strong_order("gbm", "milstein"), study.strong_order("gbm", "em")
    assert in_window(slope_mil, 1.0), f"Milstein on GBM: slope {slope_mil:.2f}"
    assert in_window(slope_em, 0.5), f"EM on GBM: slope {slope_em:.2f}"
    assert not in_window(slope_em, 1.0)


def test_milstein_is_euler_maruyama_on_additive_noise(paths, ring):
    """With g independent of x the Milstein correction ½ g ∂g/∂x (ΔW² − h) is zero: computed by
    autograd (OU written as σ + 0·x, not declared additive) it is exactly zero; the registered
    ``milstein`` gives ``euler_maruyama``'s samples from the same seed to round-off."""
    ou_general = ItoSDE(OU.f, lambda t, x: SIGMA + 0 * x)
    p = paths[LEVELS[-1]]
    a = sde_fixed(ou_general, _x0(), p.ts, milstein_step, p)
    assert torch.equal(a, sde_fixed(OU, _x0(), p.ts, euler_maruyama_step, p))
    model = ring.denoiser(sdeflow.VPSDE())
    x = sdeflow.sample(model, shape=(256, 2), dtype=torch.float64, solver="milstein", steps=30,
                       seed=7)
    y = sdeflow.sample(model, shape=(256, 2), dtype=torch.float64, solver="euler_maruyama",
                       steps=30, seed=7)
    assert (x - y).abs().max() < 1e-12


# --- weak order -------------------------------------------------------------------------------

def test_weak_orders_on_ornstein_uhlenbeck(study):
    """Weak error of E[X(T)²]: EM order 1, SRA1 order 2 (its drift part is a 2nd-order RK,
    c₂ = 3/4); EM fails SRA1's window. The paired estimates' standard errors are below
    15 % of the errors they measure (measured: at most 7 %)."""
    slopes = {}
    for method in ("em", "sra1"):
        xs, ref = study.run("ou", method)
        diffs = [x**2 - ref**2 for x in xs]
        errors = [d.mean().abs().item() for d in diffs]
        assert all(d.std().item() / math.sqrt(M) < 0.15 * e for d, e in zip(diffs, errors))
        slopes[method] = fitted_order(errors)
    assert in_window(slopes["em"], 1.0) and in_window(slopes["sra1"], 2.0), slopes
    assert not in_window(slopes["em"], 2.0)


# --- samplers ---------------------------------------------------------------------------------

def _check_ring(ring, sde_name, solver, **opts):
    model = ring.denoiser(SDES[sde_name][0]())
    x, stats = sdeflow.sample(model, shape=(20_000, 2), dtype=torch.float64, solver=solver,
                              seed=1, return_stats=True, **opts)
    assert_samples_mixture(ring, x, what=f"{solver} on {sde_name}")
    return stats


def test_sra1_reproduces_the_ring(ring):
    """SRA1 with the exact score, 50 steps (101 NFE) on VP: per-component weights, means and
    variances of 20 000 samples within the Bonferroni threshold of tests/mixture_stats.py
    (measured max |z| 2.6). A ring 10 % wider — in radius or in component std — fails the same
    check."""
    stats = _check_ring(ring, "vp", "sra1", steps=50)
    assert stats["nfe"] == 2 * 50 + 1
    for wider in (GaussianMixture.ring(radius=2.2), GaussianMixture.ring(std=0.275)):
        assert rejects(ring, wider.sample(20_000, generator=gen(3)))


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "edm"])
@pytest.mark.parametrize("solver,opts", [("sra1", {"steps": 50}), ("sra3", {"steps": 50}),
                                         ("sra_adaptive", {"rtol": 0.01, "atol": 0.01})])
def test_stochastic_rk_samplers_reproduce_the_ring(ring, sde_name, solver, opts):
    _check_ring(ring, sde_name, solver, **opts)


class _Forgetful(BrownianMemory):
    """Draws new noise after a rejection (what the memory exists to avoid)."""

    def keep(self, rev, ok):
        super().keep(rev, ok)
        bad = rev.rows[~ok]
        self.ends[bad], self.dW[bad], self.dZ[bad] = math.inf, 0.0, 0.0


def _adaptive_linear(tol: float, memory=BrownianMemory, n=20_000):
    x0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    ctx = Context(generator=gen(0))
    path = memory(x0, ctx.randn_like)
    x = sra_adaptive(LINEAR, x0, 0.0, T, rtol=tol, atol=tol, path=path, ctx=ctx)
    exact = (x0 + BETA * T + ALPHA * BETA * path.W) / math.sqrt(1 + T)
    W2, W4 = path.W**2, path.W**4
    z = torch.stack([(W2.mean() - T) / W2.std(), (W4.mean() - 3 * T**2) / W4.std()]) * math.sqrt(n)
    return (x - exact).abs().mean().item(), z, ctx.stats


def test_adaptive_sra_keeps_the_brownian_path():
    """With rejections (about one per three accepted steps at tol = 1e-2), the path the
    adaptive solver follows is still Brownian: E W(T)² = T and E W(T)⁴ = 3T² within Z_MAX
    standard errors. Drawing new noise after a rejection biases both (z ≈ −50). The error
    against the exact solution on that path falls with the tolerance."""
    err, z, stats = _adaptive_linear(1e-2)
    assert stats["rejected_mean"] > 1.0 and z.abs().max() < Z_MAX, (z, stats)
    assert _adaptive_linear(1e-2, _Forgetful)[1].max() < -Z_MAX
    err_loose = _adaptive_linear(1e-1, n=2000)[0]
    assert err < err_loose / 5, (err, err_loose)


def test_registry_entries_and_errors(ring):
    from sdeflow.samplers import get_solver, list_solvers
    assert {"milstein", "sra1", "sra3", "sra_adaptive"} <= set(list_solvers("sde"))
    assert get_solver("sra1").order == 1.5 and get_solver("sra_adaptive").adaptive
    # strong order 1 on additive noise (test_euler_maruyama_is_first_order_on_additive_noise),
    # and on our reverse SDEs the two give the same samples
    assert get_solver("euler_maruyama").order == get_solver("milstein").order == 1.0
    model = ring.denoiser(sdeflow.EDMSDE())
    _, stats = sdeflow.sample(model, shape=(8, 2), solver="sra3", steps=6, seed=0,
                              return_stats=True)
    assert stats["nfe"] == 3 * 6 + 1
    _, stats = sdeflow.sample(model, shape=(64, 2), solver="sra_adaptive", rtol=0.05, atol=0.05,
                              seed=0, return_stats=True)
    assert stats["steps"] is None and stats["accepted_mean"] > 0 and stats["nfe"] % 2 == 1
    with pytest.raises(ValueError, match="additive"):
        sra_step(GBM, SRA1, torch.zeros(2), torch.ones(2, 1), torch.ones(2), torch.ones(2, 1),
                 torch.ones(2, 1))
    with pytest.raises(ValueError, match="choices"):
        sdeflow.sample(model, shape=(8, 2), solver="sra_adaptive", tableau="sra9", seed=0)

"""The adaptive exponential Adams–Bashforth–Moulton solver against exact integrals and the
PF-ODE reference of the exact mixture denoiser."""
import pytest
import torch

import sdeflow
from sdeflow.samplers.adams import exp_adams_weights, exp_moments

from ..conftest import gen


def _quad(f, n: int = 200001):
    v = torch.linspace(0, 1, n, dtype=torch.float64)
    return torch.trapezoid(f(v), v, dim=-1)


def test_moments_match_quadrature_on_both_branches():
    """M_k(h) by series (h < 1) and recursion (h ≥ 1) vs the trapezoid rule (its error ≤ 2e-11)."""
    h = torch.tensor([1e-4, 0.3, 0.999, 1.0, 2.5, 8.0], dtype=torch.float64)
    M = exp_moments(h, 5)
    for k in range(5):
        q = _quad(lambda v: torch.exp(-h[:, None] * (1 - v)) * v ** k)
        torch.testing.assert_close(M[:, k], q, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_weights_integrate_polynomials_exactly(n):
    """Σ w_j P(v_j) = h∫₀¹ e^{−h(1−v)} P(v) dv for every P of degree < n (nodes as a multistep
    history: 1 = the corrector's new point, then 0, −r₁, …)."""
    g = gen(0)
    nodes = torch.tensor([[1.0, 0.0, -0.7, -1.9, -3.2][:n],
                          [1.0, 0.0, -1.0, -2.0, -3.0][:n]], dtype=torch.float64)
    h = torch.tensor([0.2, 1.7], dtype=torch.float64)
    w = exp_adams_weights(nodes, h)
    coef = torch.randn(n, generator=g, dtype=torch.float64)

    def P(v):
        return sum(c * v ** k for k, c in enumerate(coef))
    for b in range(2):
        exact = h[b] * _quad(lambda v: torch.exp(-h[b] * (1 - v)) * P(v))
        torch.testing.assert_close((w[b] * P(nodes[b])).sum(), exact, rtol=1e-8, atol=1e-10)


def test_one_node_is_ddim():
    """With one node the step is DDIM: x̃' = e^{−h}x̃ + (1 − e^{−h})D."""
    h = torch.tensor([0.05, 0.5, 3.0], dtype=torch.float64)
    w = exp_adams_weights(torch.zeros(3, 1, dtype=torch.float64), h)
    torch.testing.assert_close(w[:, 0], -torch.expm1(-h))


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_abm_adaptive_meets_its_tolerance(references, name):
    """Per-sample control: RMS error vs RK4-4096 below the tolerance at 1e-3, 1e-4, 1e-5
    (measured 0.03–0.5×), falling with it, and more steps for tighter tolerances."""
    model, x_T, _, ref = references[name]
    errs, nfes = [], []
    for tol in (1e-3, 1e-4, 1e-5):
        x, st = sdeflow.sample(model, x_T, solver="abm_adaptive", rtol=tol, atol=tol,
                               denoise=False, return_stats=True)
        errs.append((x - ref).pow(2).mean().sqrt().item())
        nfes.append(st["nfe"])
        assert errs[-1] < tol, (name, tol, errs)
        # one network call per iteration over the unfinished samples, plus the first at T
        assert 1 + st["accepted_max"] <= st["nfe"] <= 1 + st["accepted_max"] + st["rejected_max"]
    assert errs[0] > errs[1] > errs[2] and nfes[0] < nfes[1] < nfes[2], (errs, nfes)


def test_abm_adaptive_per_sample_does_not_depend_on_the_batch(references):
    model, x_T, _, _ = references["edm"]
    x = sdeflow.sample(model, x_T, solver="abm_adaptive", rtol=1e-4, atol=1e-4)
    alone = sdeflow.sample(model, x_T[7:8], solver="abm_adaptive", rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alone, x[7:8], rtol=1e-12, atol=1e-12)


def test_abm_adaptive_batch_control_is_one_step_for_all(references):
    """control="batch": one shared step, so every sample takes the same number of steps and the
    NFE is 1 + accepted + rejected; accuracy as for per-sample control."""
    model, x_T, _, ref = references["vp"]
    x, st = sdeflow.sample(model, x_T, solver="abm_adaptive", rtol=1e-4, atol=1e-4,
                           control="batch", denoise=False, return_stats=True)
    assert st["accepted_mean"] == st["accepted_max"] and st["rejected_mean"] == st["rejected_max"]
    assert st["nfe"] == 1 + st["accepted_max"] + st["rejected_max"]
    assert (x - ref).pow(2).mean().sqrt() < 1e-4


@pytest.mark.parametrize("order", [2, 3, 4])
def test_higher_orders_need_fewer_steps(references, order):
    """At rtol = atol = 1e-5 orders 2–4 meet the tolerance and NFE falls with the order up to
    3 (VP problem; order 1 — a DDIM predictor with a trapezoidal corrector — needs hundreds
    of steps there)."""
    model, x_T, _, ref = references["vp"]
    x, st = sdeflow.sample(model, x_T, solver="abm_adaptive", rtol=1e-5, atol=1e-5, order=order,
                           denoise=False, return_stats=True)
    assert (x - ref).pow(2).mean().sqrt() < 1e-5
    if order > 1:
        _, lower = sdeflow.sample(model, x_T, solver="abm_adaptive", rtol=1e-5, atol=1e-5,
                                  order=order - 1, denoise=False, return_stats=True)
        if order <= 3:
            assert st["nfe"] < lower["nfe"], (order, st["nfe"], lower["nfe"])


def test_abm_adaptive_rejects_bad_options(references):
    model, x_T, _, _ = references["edm"]
    for opts in (dict(order=5), dict(rtol=0.0), dict(control="shared")):
        with pytest.raises(ValueError):
            sdeflow.sample(model, x_T, solver="abm_adaptive", **opts)
    with pytest.raises(ValueError, match="adaptive"):
        sdeflow.sample(model, x_T, solver="abm_adaptive", steps=10)


@pytest.mark.parametrize("solver, name", [("abm_adaptive", "abm_adaptive"),
                                          ("dpm_adaptive", "dpm_adaptive"),
                                          ("rk45", "rk_adaptive"),
                                          ("adaptive_sde", "adaptive_sde")])
def test_adaptive_solvers_stop_on_nan_from_the_model(references, mixture2d, solver, name):
    """A network that returns NaN below σ = 1 (with the Denoiser's own check off) gives an error
    from the solver at once, not 200 rejected steps and a 'did not reach the end'."""
    model, x_T, _, _ = references["edm"]
    sde = model.sde

    def net(x, t):
        out = mixture2d.x0(x, sde.s(t), sde.sigma(t))
        return torch.where((sde.sigma(t) < 1)[:, None], torch.nan, out)
    broken = sdeflow.Denoiser(net, sde, prediction="x0", check_finite=False)
    with pytest.raises(FloatingPointError, match=f"{name}: non-finite"):
        sdeflow.sample(broken, x_T, solver=solver, max_steps=200, denoise=False)

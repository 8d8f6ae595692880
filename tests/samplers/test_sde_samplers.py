"""SDE, PC and annealed-Langevin samplers with the exact score reproduce the mixture, and every
member of the γ-family keeps the marginals.

Metric: unbiased MMD² (sum of RBF kernels) between 3000 samples and 3000 independent draws of
the 8-Gaussian ring. Threshold: 2 × the noise floor (largest |MMD²| between true samples over
10 pairs, ≈ 1.1e-3). That threshold rejects the ring with component std 0.35 instead of 0.25
(MMD² ≈ 5e-3, checked below); exact-score samplers measure ≤ 1.7e-3.
"""
import pytest
import torch

import sdeflow
from sdeflow.metrics import mmd2
from sdeflow.oracle import GaussianMixture

from ..conftest import SDES, gen

N = 3000


@pytest.fixture(scope="module")
def calibration(ring):
    ref = ring.sample(N, generator=gen(999))
    g = gen(0)
    floor = max(abs(mmd2(ring.sample(N, generator=g), ref)) for _ in range(10))
    return ref, 2 * floor


def _check(ring, sde_name, solver, calibration, **opts):
    ref, threshold = calibration
    make, _ = SDES[sde_name]
    model = ring.denoiser(make())
    x = sdeflow.sample(model, shape=(N, 2), dtype=torch.float64, solver=solver, seed=1, **opts)
    d = mmd2(x, ref)
    assert d < threshold, f"{solver} on {sde_name}: MMD² {d:.2e} ≥ threshold {threshold:.2e}"


def test_threshold_rejects_a_wrong_distribution(calibration):
    ref, threshold = calibration
    wrong = GaussianMixture.ring(std=0.35).sample(N, generator=gen(5))
    assert mmd2(wrong, ref) > 2 * threshold


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "edm"])
@pytest.mark.parametrize("solver", ["euler_maruyama", "reverse_diffusion", "ancestral", "pc"])
def test_sde_sampler_reproduces_mixture(ring, calibration, sde_name, solver):
    opts = {"steps": 250} if solver == "pc" else {}
    _check(ring, sde_name, solver, calibration, **opts)


@pytest.mark.parametrize("sde_name", ["ve", "edm"])
def test_annealed_langevin_reproduces_mixture(ring, calibration, sde_name):
    """NCSN sampling: 51 noise levels × 20 Langevin steps, step_lr = σ_L²/2."""
    sde = SDES[sde_name][0]()
    step_lr = 0.5 * sde.sigma(torch.tensor(sde.t_min, dtype=torch.float64)).item() ** 2
    _check(ring, sde_name, "annealed_langevin", calibration, steps=50, n_corrector_steps=20,
           step_lr=step_lr)


def test_ddim_eta_one_samples_the_mixture(ring, calibration):
    _check(ring, "vp", "ddim", calibration, steps=200, eta=1.0)


@pytest.mark.parametrize("sde_name", ["vp", "edm"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gamma_family_keeps_the_marginals(ring, calibration, sde_name, gamma):
    """dx = [f x − (1+γ²)/2 g² ∇log p_t] dt + γ g dw̄ has marginals p_t for every γ."""
    _check(ring, sde_name, "euler_maruyama", calibration, gamma=gamma,
           steps=1000 if gamma > 1 else 500)


def test_stochastic_samplers_are_reproducible_by_seed(ring):
    model = ring.denoiser(sdeflow.VPSDE())
    a = sdeflow.sample(model, shape=(8, 2), solver="pc", steps=20, seed=3)
    b = sdeflow.sample(model, shape=(8, 2), solver="pc", steps=20, seed=3)
    c = sdeflow.sample(model, shape=(8, 2), solver="pc", steps=20, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_pc_nfe_and_option_errors(ring):
    model = ring.denoiser(sdeflow.VESDE())
    _, st = sdeflow.sample(model, shape=(4, 2), solver="pc", steps=10, n_corrector_steps=2,
                           return_stats=True)
    assert st["nfe"] == 10 * 3 + 1
    with pytest.raises(ValueError, match="choices"):
        sdeflow.sample(model, shape=(4, 2), solver="pc", predictor="heun")
    with pytest.raises(TypeError, match="not used"):
        sdeflow.sample(model, shape=(4, 2), solver="pc", eta=0.5)
    with pytest.raises(ValueError, match="step_lr"):
        sdeflow.sample(model, shape=(4, 2), solver="annealed_langevin", step_lr=1.0)
    with pytest.raises(ValueError, match="gamma"):
        sdeflow.sample(model, shape=(4, 2), solver="euler_maruyama", gamma=-1.0)
    with pytest.raises(ValueError, match="S_churn"):
        sdeflow.sample(model, shape=(4, 2), solver="edm_stochastic", S_churn=-1.0)
    with pytest.raises(ValueError, match="rtol"):
        sdeflow.sample(model, shape=(4, 2), solver="adaptive_sde", rtol=0.0)


@pytest.mark.parametrize("sde_name", ["vp", "edm"])
def test_edm_stochastic_sampler_reproduces_mixture(ring, calibration, sde_name):
    """EDM Algorithm 2 with churn (S_churn = 40 over 40 steps, EDM's ImageNet settings)."""
    _check(ring, sde_name, "edm_stochastic", calibration, steps=40, schedule="karras")


def test_edm_sampler_without_churn_is_heun(ring):
    """S_churn = 0 is EDM's Algorithm 1: for the EDM SDE exactly our Heun in t."""
    model = ring.denoiser(sdeflow.EDMSDE())
    x_T = model.sde.prior_sample((16, 2), generator=gen(3), dtype=torch.float64)
    a = sdeflow.sample(model, x_T, solver="edm_stochastic", steps=18, S_churn=0.0, denoise=False)
    b = sdeflow.sample(model, x_T, solver="heun", steps=18, denoise=False)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_adaptive_sde_solver_reproduces_mixture(sde_name):
    """Gotta Go Fast at its default tolerances on a 64-D mixture (the regime it was designed
    for: the per-sample error norm averages over many coordinates). n = 2000, MMD² below
    2 × the true-vs-true floor (≈ 1e-3); measured −4e-4 (VE, 257 NFE) and 5.7e-4 (VP, 207 NFE)
    where Euler–Maruyama with 500 steps measures 2e-5 and 3.9e-4."""
    gm = GaussianMixture.random(64, k=4, seed=0)
    ref = gm.sample(2000, generator=gen(999))
    g = gen(0)
    floor = max(abs(mmd2(gm.sample(2000, generator=g), ref)) for _ in range(4))
    model = gm.denoiser(SDES[sde_name][0]())
    x, st = sdeflow.sample(model, shape=(2000, 64), dtype=torch.float64, solver="adaptive_sde",
                           seed=1, return_stats=True)
    assert mmd2(x, ref) < 2 * floor
    assert st["nfe"] < 500 and st["accepted_mean"] > 10

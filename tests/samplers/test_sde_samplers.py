"""Every stochastic sampler with the exact score reproduces the 8-Gaussian ring on every SDE,
every member of the γ-family keeps the marginals — and the check would catch the errors such
samplers make.

Check (:mod:`tests.mixture_stats`): each ring component's weight, mean and standard
deviation along both axes, estimated with the exact responsibilities, and the pooled width
√(mean λ̂/λ), as z-scores against the ring; it fails when the largest of the 41 |z| exceeds
4.71, the two-sided Bonferroni threshold at false-alarm rate 1e-4. N = 5000 samples a run
(20 000 did not fit the suite's time budget) resolve the width to ±0.7 % and each component's
std to ±2 % (one standard error).

Power, shown below: all of a sampler's noise ×1.15 or ×0.9, a score 10 % too large or too
small, and a ring whose components are 10 % wider each fail it (|z| 6.6–19.3; the one
exception, PC with a score ×1.1, is explained at the slow test). The MMD² check this
replaces (3000 samples against 2 × the true-vs-true floor) passed all of them.

Discretisation bias, measured on the width at N = 10 000–20 000 (± 0.4–0.5 %) with the grids
below: Euler–Maruyama +0.4–0.6 %, reverse diffusion +1.2–1.5 % (−0.1 % at 1000 steps), PC
+1.4–1.7 % (its reverse-diffusion predictor at 250 steps; snr = 0.1 does not change it),
ancestral on the log-SNR grid −0.4…+0.4 % (−2.2 % on VP's uniform grid), SDE-DPM-Solver++
−0.9…−0.2 %, EDM's churn sampler +1.2…+1.7 % at 160 steps (+3.7…+5.3 % at its default 40,
which this check rejects; −0.1 % at 320).
"""
from pathlib import Path

import pytest
import torch

import sdeflow
from sdeflow.oracle import GaussianMixture
from sdeflow.samplers.registry import Context

from ..conftest import SDES, gen
from ..mixture_stats import assert_samples_mixture, mixture_moments, rejects

N = 5000

# The stochastic samplers of sdeflow.list_solvers("sde") checked by the tests below, with the
# grid each is checked on; every other one is in CHECKED_ELSEWHERE.
SAMPLERS = {
    "euler_maruyama": {},  # 500 uniform steps
    "reverse_diffusion": {},  # 500 uniform steps
    "ancestral": {"schedule": "logsnr"},  # 500 steps
    "pc": {"steps": 250},  # reverse diffusion + one Langevin step (snr 0.16): 500 NFE
    "dpmpp_2m_sde": {"steps": 100, "schedule": "logsnr"},
    "edm_stochastic": {"steps": 160, "schedule": "karras"},  # S_churn = 40
}
SDE_NAMES = ["ve", "vp", "subvp", "edm"]
# SDE samplers not in SAMPLERS → the file in tests/samplers/ (::test) that checks them.
CHECKED_ELSEWHERE = {
    "consistency": "test_consistency_sampler.py",  # needs a consistency model
    "milstein": "test_sde_order.py", "sra1": "test_sde_order.py", "sra3": "test_sde_order.py",
    "sra_adaptive": "test_sde_order.py",
    "sa_solver": "test_hmc_sa.py",
    "annealed_langevin": "test_sde_samplers.py::test_annealed_langevin_reproduces_mixture",
    "adaptive_sde": "test_sde_samplers.py::test_adaptive_sde_solver_reproduces_mixture",
}


def plant_noise(monkeypatch, factor: float) -> None:
    """Scale every noise draw a sampler makes (not x_T, which the SDE's prior draws)."""
    randn_like = Context.randn_like
    monkeypatch.setattr(Context, "randn_like", lambda self, x: factor * randn_like(self, x))


def exact_model(gm, sde, score_factor: float = 1.0):
    """The exact denoiser, or one whose score is ``score_factor`` × the exact one."""
    if score_factor == 1.0:
        return gm.denoiser(sde)

    def score(x, t):
        return score_factor * gm.score(x, sde.s(t), sde.sigma(t))
    return sdeflow.Denoiser(score, sde, prediction="score")


def draw(gm, sde_name, solver, n=N, score_factor=1.0, **opts):
    model = exact_model(gm, SDES[sde_name][0](), score_factor)
    return sdeflow.sample(model, shape=(n, gm.dim), dtype=torch.float64, solver=solver, seed=1,
                          **opts)


def _cases():
    """Every sampler × SDE; by default each sampler on two of the four SDEs (alternating, so
    every SDE is covered), the rest with ``-m slow`` (the default run stays under 10 min)."""
    for i, solver in enumerate(sorted(SAMPLERS)):
        for j, sde_name in enumerate(SDE_NAMES):
            quick = j in ((0, 1) if i % 2 == 0 else (2, 3))
            yield pytest.param(sde_name, solver, marks=() if quick else pytest.mark.slow)


@pytest.mark.parametrize("sde_name, solver", list(_cases()))
def test_sde_sampler_reproduces_mixture(ring, sde_name, solver):
    """Measured max |z| 2.0–3.5 over the 24 cases (largest: the widths of reverse diffusion
    and PC, +2.5 %)."""
    assert_samples_mixture(ring, draw(ring, sde_name, solver, **SAMPLERS[solver]),
                           what=f"{solver} on {sde_name}")


def test_every_registered_sde_sampler_is_checked():
    """A new SDE sampler fails here until SAMPLERS or CHECKED_ELSEWHERE names it; an exempted
    one's file (and test) must exist and the file must name it."""
    registered = set(sdeflow.list_solvers("sde"))
    assert not set(SAMPLERS) & set(CHECKED_ELSEWHERE)
    unchecked = registered - set(SAMPLERS) - set(CHECKED_ELSEWHERE)
    assert not unchecked, f"SDE samplers without a test: {sorted(unchecked)}"
    gone = (set(SAMPLERS) | set(CHECKED_ELSEWHERE)) - registered
    assert not gone, f"not registered SDE samplers: {sorted(gone)}"
    for name, where in CHECKED_ELSEWHERE.items():
        file, _, test = where.partition("::")
        text = (Path(__file__).parent / file).read_text()
        assert f'"{name}"' in text and (not test or f"def {test}(" in text), (name, where)


def test_the_check_rejects_a_ring_10_percent_wider(ring):
    """True draws pass (max |z| 3.1); components 10 % wider fail (width z = 12.7); a ring of
    10 % larger radius fails on the means (|z| = 21)."""
    assert_samples_mixture(ring, ring.sample(N, generator=gen(5)))
    assert rejects(ring, GaussianMixture.ring(std=0.275).sample(N, generator=gen(5)))
    assert rejects(ring, GaussianMixture.ring(radius=2.2).sample(N, generator=gen(5)))


# (solver, SDE, planted error): every kind of error once in the default run, on the two
# cheapest samplers (measured |z| 14.1, 11.4, 14.9, 9.9); the slow test below plants every
# error in every sampler on every SDE.
ERRORS = [("noise", 1.15), ("noise", 0.9), ("score", 1.1), ("score", 0.9)]
PLANTED = [("dpmpp_2m_sde", "vp", ("noise", 1.15)), ("dpmpp_2m_sde", "edm", ("score", 1.1)),
           ("edm_stochastic", "ve", ("noise", 0.9)), ("edm_stochastic", "vp", ("score", 0.9))]


def _id(error):
    return f"{error[0]}{error[1]}"


def draw_with_error(ring, monkeypatch, sde_name, solver, error):
    kind, factor = error
    if kind == "noise":
        plant_noise(monkeypatch, factor)
        return draw(ring, sde_name, solver, **SAMPLERS[solver])
    return draw(ring, sde_name, solver, score_factor=factor, **SAMPLERS[solver])


@pytest.mark.parametrize("solver, sde_name, error", PLANTED,
                         ids=[f"{a}-{b}-{_id(e)}" for a, b, e in PLANTED])
def test_the_check_rejects_a_planted_error(ring, monkeypatch, solver, sde_name, error):
    assert rejects(ring, draw_with_error(ring, monkeypatch, sde_name, solver, error))


# PC's Langevin corrector takes a step ε ∝ 1/‖score‖², so a score ×1.1 shrinks its steps
# and the corrector undoes part of the error: the samples come out only 2.2–3.5 % narrow
# (|z| 3.2–5.3), against 4–8 % for every other sampler, and PC's own +1.5–2.5 % lies
# between. A score ×0.9 it does not absorb (width +7–8 %, |z| 9.4–10.4).
PC_ABSORBS = "PC's snr-scaled corrector absorbs much of a score ×1.1"


def every_planted_error():
    for solver in sorted(SAMPLERS):
        for sde_name in SDE_NAMES:
            for error in ERRORS:
                absorbed = solver == "pc" and error == ("score", 1.1)
                yield pytest.param(solver, sde_name, error, id=f"{solver}-{sde_name}-{_id(error)}",
                                   marks=pytest.mark.xfail(reason=PC_ABSORBS, strict=False)
                                   if absorbed else ())


@pytest.mark.slow
@pytest.mark.parametrize("solver, sde_name, error", list(every_planted_error()))
def test_the_check_rejects_every_planted_error(ring, monkeypatch, solver, sde_name, error):
    """Measured |z| 6.6–19.3 over the 92 other cases."""
    assert rejects(ring, draw_with_error(ring, monkeypatch, sde_name, solver, error))


def test_the_check_works_in_16_dimensions():
    """SDE-DPM-Solver++ on a 16-D anisotropic 4-component mixture (133 z-scores, threshold
    4.95): the exact score passes (max |z| 4.1, on one mean; 2.8–3.0 with other seeds and at
    N = 20 000), noise ×0.9 fails (width 0.905, z = −41)."""
    gm = GaussianMixture.random(16, k=4, seed=0)
    opts = SAMPLERS["dpmpp_2m_sde"]
    assert_samples_mixture(gm, draw(gm, "vp", "dpmpp_2m_sde", **opts))
    with pytest.MonkeyPatch.context() as mp:
        plant_noise(mp, 0.9)
        assert rejects(gm, draw(gm, "vp", "dpmpp_2m_sde", **opts))


@pytest.mark.parametrize("sde_name", ["ve", pytest.param("edm", marks=pytest.mark.slow)])  # 18 s each
def test_annealed_langevin_reproduces_mixture(ring, sde_name):
    """NCSN sampling: 51 noise levels × 20 Langevin steps, step_lr = σ_L²/2. Not exact: at
    the high levels its step is half the density's variance, and 20 steps at the low levels do
    not undo that, so the components come out wider (width +2.6 % VE, +3.6 % EDM at N = 8000,
    ±0.55 %; +0.9 % and +3.2 % here). Checked: weights and means as for every sampler, the
    width within 6 % — which noise ×1.15 (width +10–16 % in every sampler above) fails."""
    sde = SDES[sde_name][0]()
    step_lr = 0.5 * sde.sigma(torch.tensor(sde.t_min, dtype=torch.float64)).item() ** 2
    x = draw(ring, sde_name, "annealed_langevin", steps=50, n_corrector_steps=20, step_lr=step_lr)
    m = mixture_moments(ring, x)
    assert max(m.weight_z.abs().max(), m.mean_z.abs().max()) < m.threshold(), m.summary()
    assert abs(m.width - 1) < 0.06, m.summary()


def test_ddim_eta_one_is_ancestral(ring):
    """DDIM with η = 1 is the ancestral sampler checked above, draw for draw."""
    model = ring.denoiser(sdeflow.VPSDE())
    a = sdeflow.sample(model, shape=(64, 2), dtype=torch.float64, solver="ddim", eta=1.0,
                       steps=30, seed=4)
    b = sdeflow.sample(model, shape=(64, 2), dtype=torch.float64, solver="ancestral", steps=30,
                       seed=4)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp", "edm"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gamma_family_keeps_the_marginals(ring, sde_name, gamma):
    """dx = [f x − (1+γ²)/2 g² ∇log p_t] dt + γ g dw̄ has marginals p_t for every γ
    (Euler–Maruyama, 500 steps: max |z| 2.0–3.3)."""
    x = draw(ring, sde_name, "euler_maruyama", gamma=gamma, steps=500)
    assert_samples_mixture(ring, x, what=f"γ = {gamma} on {sde_name}")


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
    for: the per-sample error norm averages over many coordinates), 2000 samples: the check
    (517 z-scores, threshold 5.21) passes — max |z| 3.2 (VE, 257 NFE) and 3.3 (VP, 207 NFE),
    width 1.0005 and 0.998 (±0.2 %) — and rejects true draws of the mixture with every
    covariance 10 % wider in std (width z = 40)."""
    gm = GaussianMixture.random(64, k=4, seed=0)
    model = gm.denoiser(SDES[sde_name][0]())
    x, st = sdeflow.sample(model, shape=(2000, 64), dtype=torch.float64, solver="adaptive_sde",
                           seed=1, return_stats=True)
    assert_samples_mixture(gm, x, what=sde_name)
    assert st["nfe"] < 500 and st["accepted_mean"] > 10
    wider = GaussianMixture(gm.weights, gm.means, covs=1.21 * gm.covs)
    assert rejects(gm, wider.sample(2000, generator=gen(2)))

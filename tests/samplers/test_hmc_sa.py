"""The HMC corrector (samplers/pc.py) and SA-Solver (samplers/sa_solver.py) against the exact
Gaussian-mixture score (float64).

Check: :mod:`tests.mixture_stats` — every component's weight, mean and variances, and the
pooled width, as z-scores against the known mixture, failing above the Bonferroni threshold
(4.71 for the 8-Gaussian ring at false-alarm rate 1e-4). Where a sampler is held to it, the
test also shows that it rejects a 10 % error (a wider target, or noise 10 % too large).
Distances between samplers: Σz² over all of the check's z-scores (41 for the ring; ≈ 41 for
a perfect sampler) and the pooled width.
"""
import math

import pytest
import torch

import sdeflow
from sdeflow.metrics import mmd2
from sdeflow.oracle import GaussianMixture
from sdeflow.samplers.exponential import dpmpp_multistep
from sdeflow.samplers.pc import CORRECTORS
from sdeflow.samplers.registry import Context
from sdeflow.samplers.sa_solver import sa_solver, sa_update, sa_weights

from ..conftest import SDES, gen
from ..mixture_stats import assert_samples_mixture, mixture_moments, rejects

N = 20_000


def chi2(gm, x) -> tuple[float, float]:
    """(Σz² of the mixture check's z-scores, pooled width) of ``x`` against ``gm``."""
    m = mixture_moments(gm, x)
    total = sum(z.pow(2).sum().item() for z in (m.weight_z, m.mean_z, m.std_z)) + m.width_z**2
    return total, m.width


def ring_at(sde, t: float, widen: float = 1.0) -> GaussianMixture:
    """p_t of the ring (radius 2, std 0.25): components N(s μ_k, (s²·0.25² + σ²) I)."""
    tt = torch.tensor(t, dtype=torch.float64)
    s, sig = sde.s(tt).item(), sde.sigma(tt).item()
    return GaussianMixture.ring(k=8, radius=2 * s, std=widen * math.sqrt(s * s * 0.0625 + sig * sig))


# --- HMC corrector ------------------------------------------------------------------------------

def _corrector_chain(name, model, x, t, blocks, n_steps, seed=11, **opts):
    ctx = Context(generator=gen(seed))
    tb = torch.full((x.shape[0],), t, dtype=x.dtype)
    for _ in range(blocks):
        x = CORRECTORS[name](model, x, tb, tb, ctx, n_steps, **opts)
    return x


def test_hmc_corrector_converges_to_p_t_from_a_wrong_start(ring):
    """VP at t = 0.2 (noise level σ/s = 0.72: neighbouring components overlap), exact score,
    every point started from 2 × a draw of p_t (the ring scaled ×2). 8 blocks of 5 BAOAB steps
    (40 NFE, snr 0.16, friction 1) reach p_t: max |z| 2.2 (seeds 11–14: 1.9–3.2; threshold
    4.71); p_t widened by 10 % measures 17. Langevin at the same snr and NFE is far off (max
    |z| 107, components 83 % too wide) and at 100 NFE still fails (5.3, +1.3 %: its O(ε)
    bias)."""
    sde = sdeflow.VPSDE()
    model = ring.denoiser(sde, prediction="score")
    target = ring_at(sde, 0.2)
    start = 2 * target.sample(N, generator=gen(7))
    assert_samples_mixture(target, _corrector_chain("hmc", model, start, 0.2, blocks=8, n_steps=5),
                           what="HMC")
    assert rejects(target, ring_at(sde, 0.2, widen=1.1).sample(N, generator=gen(5)))
    slow = _corrector_chain("langevin", model, start, 0.2, blocks=40, n_steps=1)
    assert mixture_moments(target, slow).width > 1.5


def test_hmc_corrector_costs_one_nfe_per_step(ring):
    model = ring.denoiser(sdeflow.VESDE())
    _, st = sdeflow.sample(model, shape=(4, 2), solver="pc", steps=10, corrector="hmc",
                           n_corrector_steps=3, return_stats=True)
    assert st["nfe"] == 10 * (3 + 1) + 1
    with pytest.raises(ValueError, match="friction"):
        sdeflow.sample(model, shape=(4, 2), solver="pc", corrector="hmc", friction=-1.0)
    with pytest.raises(TypeError, match="not used"):
        sdeflow.sample(model, shape=(4, 2), solver="pc", corrector="langevin", friction=1.0)


def test_one_hmc_step_per_level_is_a_langevin_step(ring):
    """With fresh momentum v₀ and one BAOAB step, x' = x + ε²(1+c)/4 ∇log p_t + (ε/2)((1+c)v₀
    + √(1−c²)ξ): a Langevin step of size ε²(1+c)/4 — checked on the exact formula."""
    model = ring.denoiser(sdeflow.VPSDE(), prediction="score")
    x = ring.sample(64, generator=gen(1))
    t = torch.full((64,), 0.3, dtype=torch.float64)
    out = CORRECTORS["hmc"](model, x, t, t, Context(generator=gen(2)), 1)
    g = gen(2)
    v0, xi = (torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(2))
    score = model.score(x, t)
    eps = 2 * 0.16 * v0.norm(dim=1).mean() / score.norm(dim=1).mean()
    c = math.exp(-2 * 0.16 * 1.0)
    expected = x + eps**2 * (1 + c) / 4 * score + eps / 2 * ((1 + c) * v0 + math.sqrt(1 - c * c) * xi)
    assert (out - expected).abs().max() < 1e-12


def test_pc_with_hmc_beats_langevin_at_equal_nfe(ring):
    """PC on the VP ring, 25 levels × (4 corrector steps + reverse-diffusion predictor) = 126
    NFE, 5000 points; both leave the components too wide (the predictor's error on 25 levels),
    HMC about half as much. Measured over seeds 1–3: Σz² Langevin 651–730, HMC 228–317 (snr
    0.16, friction 1); pooled width +14.3–15.5 % vs +7.6–9.6 %. Seed 1: 722 vs 274, +15.2 % vs
    +8.5 %. (On VE both correctors are at the level of exact samples: nothing to gain.)"""
    model = ring.denoiser(sdeflow.VPSDE())
    dist = {}
    for corrector in ("langevin", "hmc"):
        x = sdeflow.sample(model, shape=(5000, 2), dtype=torch.float64, solver="pc", steps=25,
                           corrector=corrector, n_corrector_steps=4, seed=1)
        dist[corrector] = chi2(ring, x)
    assert dist["hmc"][0] < 0.6 * dist["langevin"][0], dist
    assert dist["hmc"][1] - 1 < 0.7 * (dist["langevin"][1] - 1), dist


@pytest.mark.slow
def test_pc_with_hmc_beats_langevin_on_a_16d_mixture():
    """The same comparison on a 16-D anisotropic 4-component mixture (VP, 25 levels × 4
    corrector steps, 5000 points), MMD² to a fresh draw: seeds 1–3 measured Langevin
    2.3e-3–2.5e-3, HMC 0.8e-3–1.2e-3 (seed 1: 2.3e-3 vs 0.8e-3); |MMD²| of two true draws
    ≤ 3.3e-4. (~20 s.)"""
    gm = GaussianMixture.random(16, k=4, seed=0)
    model = gm.denoiser(sdeflow.VPSDE())
    ref = gm.sample(5000, generator=gen(999))
    dist = {}
    for corrector in ("langevin", "hmc"):
        x = sdeflow.sample(model, shape=(5000, 16), dtype=torch.float64, solver="pc", steps=25,
                           corrector=corrector, n_corrector_steps=4, seed=1)
        dist[corrector] = mmd2(x, ref)
    assert dist["hmc"] < 0.6 * dist["langevin"], dist


# --- SA-Solver ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ode_references(mixture2d):
    """name → (model, x_T, x(t_min) by RK45 at rtol = atol = 1e-10); agrees with RK4 at 4096
    steps to 1.4e-10 (VP) and 7e-11 (EDM)."""
    refs = {}
    for name in ("vp", "edm"):
        sde = SDES[name][0]()
        model = mixture2d.denoiser(sde)
        x_T = sde.prior_sample((32, 2), generator=gen(0), dtype=torch.float64)
        ref = sdeflow.sample(model, x_T, solver="rk45", rtol=1e-10, atol=1e-10, denoise=False)
        refs[name] = (model, x_T, ref)
    return refs


@pytest.mark.parametrize("p, c, order", [(3, 4, 4), (3, 0, 3), (1, 2, 2)])
def test_sa_solver_with_tau_zero_solves_the_ode_at_its_order(ode_references, p, c, order):
    """τ = 0, uniform log-SNR grid, 40…320 steps: observed orders within ±0.35 of min(c, p + 1)
    (measured: p3c4 4.19–4.30, p3 alone 2.98–3.03, p1c2 1.91–2.00 on VP and EDM; VE alike),
    and 320 steps of the default p3c4 lie within 1e-7 of the ODE solution (6e-8, 9e-8)."""
    steps = [40, 80, 160, 320]
    for name, (model, x_T, ref) in ode_references.items():
        errs = [(sdeflow.sample(model, x_T, solver="sa_solver", tau=0.0, steps=n, schedule="logsnr",
                                denoise=False, predictor_order=p, corrector_order=c) - ref)
                .abs().max().item() for n in steps]
        observed = [math.log(errs[i] / errs[i + 1]) / math.log(2) for i in range(3)]
        assert all(abs(o - order) < 0.35 for o in observed), (name, errs, observed)
        if (p, c) == (3, 4):
            assert errs[-1] < 1e-7, (name, errs)


def test_first_order_sa_solver_is_sde_dpm_solver_1_and_ddim(ring):
    """p = 1 without corrector: with τ² = η it is SDE-DPM-Solver++ of order 1 (same noise draws),
    with τ = 0 DDIM — to round-off."""
    model = ring.denoiser(sdeflow.VPSDE())
    ts = sdeflow.get_timesteps(model.sde, 12, "logsnr", dtype=torch.float64)
    x_T = model.sde.prior_sample((64, 2), generator=gen(1), dtype=torch.float64)
    a = sa_solver(model, x_T, ts, Context(generator=gen(3)), tau=1.0, predictor_order=1,
                  corrector_order=0)
    b = dpmpp_multistep(model, x_T, ts, Context(generator=gen(3)), order=1, eta=1.0)
    assert (a - b).abs().max() < 1e-12
    a = sa_solver(model, x_T, ts, Context(), tau=0.0, predictor_order=1, corrector_order=0)
    b = sdeflow.sample(model, x_T, solver="ddim", timesteps=ts, denoise=False)
    assert (a - b).abs().max() < 1e-12


class _LoudContext(Context):
    """Injects noise 10 % too large: what the ring check must catch."""

    def randn_like(self, x):
        return 1.1 * super().randn_like(x)


def test_sa_solver_with_tau_one_samples_the_ring(ring):
    """τ = 1 (the reverse SDE), defaults p = 3, c = 4, 50 steps on VE's log-SNR grid, 20k
    points: max |z| 2.5 (seeds 1–4: 2.0–3.0; threshold 4.71); the same solver with its noise
    10 % too large measures 20 (components 8 % too wide). NFE = steps + 1 (the final
    denoising). On EDM's Karras grid 50 steps leave the components 1–2 % too wide (max |z| up
    to 4.9); 100 steps pass (1.9–2.8)."""
    sde = SDES["ve"][0]()
    model = ring.denoiser(sde)
    x, st = sdeflow.sample(model, shape=(N, 2), dtype=torch.float64, solver="sa_solver", steps=50,
                           schedule="logsnr", seed=1, return_stats=True)
    assert st["nfe"] == 51
    assert_samples_mixture(ring, x, what="SA-Solver")
    ts = sdeflow.get_timesteps(sde, 50, "logsnr", dtype=torch.float64)
    x_T = sde.prior_sample((N, 2), generator=gen(1), dtype=torch.float64)
    assert rejects(ring, model.x0(sa_solver(model, x_T, ts, _LoudContext(generator=gen(2))), ts[-1]))


def test_sa_solver_option_errors(ring):
    model = ring.denoiser(sdeflow.VPSDE())
    for bad in (dict(predictor_order=5), dict(corrector_order=5), dict(tau=-0.5),
                dict(tau=math.nan), dict(tau=lambda t: math.nan if t < 0.5 else 1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            sdeflow.sample(model, shape=(4, 2), solver="sa_solver", steps=5, **bad)


def test_sa_solver_on_a_grid_ending_at_t_zero(ring):
    """σ(0) = 0 makes the last step's λ' and h infinite; its H → ∞ limit is x' = s'·x̂0 with no
    noise. With p = 1, no corrector and τ = 0 that is DDIM's last step too."""
    model = ring.denoiser(sdeflow.VPSDE())
    grid = [1.0, 0.5, 0.1, 0.0]
    for opts in (dict(), dict(tau=0.0, predictor_order=2, corrector_order=3)):
        x = sdeflow.sample(model, shape=(64, 2), dtype=torch.float64, solver="sa_solver",
                           timesteps=grid, denoise=False, seed=0, **opts)
        assert torch.isfinite(x).all(), opts
    x_T = model.sde.prior_sample((64, 2), generator=gen(1), dtype=torch.float64)
    a = sdeflow.sample(model, x_T, solver="sa_solver", timesteps=grid, denoise=False, tau=0.0,
                       predictor_order=1, corrector_order=0)
    b = sdeflow.sample(model, x_T, solver="ddim", timesteps=grid, denoise=False)
    assert (a - b).abs().max() < 1e-12


def test_sa_solver_constrains_and_reports_each_step_once_at_its_corrected_state(ring):
    """τ = 0, p = 1, c = 2 on a 4-step grid: the constraint runs once per step, and the callback
    sees the state each step ends at — after the corrector, x₁ = SA-Corrector(x₀; x̂0(x₀),
    x̂0(x₁ᴾ)), rebuilt here from sa_update and sa_weights — and the last step's result."""
    model = ring.denoiser(sdeflow.VPSDE())
    sde = model.sde
    ts = sdeflow.get_timesteps(sde, 4, "logsnr", dtype=torch.float64)
    x0 = sde.prior_sample((16, 2), generator=gen(1), dtype=torch.float64)
    seen, calls = [], []

    def constraint(t, x, ctx):
        calls.append(t)
        return x
    ctx = Context(callback=lambda t, x: seen.append((t, x)), constraint=constraint)
    out = sa_solver(model, x0, ts, ctx, tau=0.0, predictor_order=1, corrector_order=2)
    assert len(calls) == 4 and [t for t, _ in seen] == list(ts[1:])
    assert torch.equal(seen[-1][1], out)
    lam, s, sig = sde.log_snr(ts), sde.s(ts), sde.sigma(ts)
    tau = torch.zeros(4, dtype=torch.float64)
    w_p, w_c = sa_weights(lam, tau, [1] * 4, False)[0], sa_weights(lam, tau, [2] * 4, True)[0]

    def step(ms, w):
        return sa_update(x0, ms, w, lam[1] - lam[0], 0.0, s[1], sig[1] / sig[0], sig[1], None)
    m0 = model.x0(x0, ts[0])
    x1 = step([model.x0(step([m0], w_p), ts[1]), m0], w_c)
    assert (seen[0][1] - x1).abs().max() < 1e-12

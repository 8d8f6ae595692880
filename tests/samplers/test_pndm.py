"""PNDM (Liu et al. 2022) on the exact mixture denoiser in float64: its transfer is the paper's
eq. 9 and DDIM's step, its warm starts are RK4 and Heun where they must be, it converges at
fourth order where fixed Adams–Bashforth weights allow it (and DDIM and iPNDM's first-order
start do not pass the same check), it runs on every SDE and reports its NFE."""
import math

import pytest
import torch

import sdeflow
from sdeflow.samplers.ddim import ddim_step
from sdeflow.samplers.pndm import pndm_transfer
from sdeflow.samplers.registry import Context

from ..conftest import SDES, gen


def _noise_level_grid(sde, n, start=5.0, end=2.0):
    """n steps uniform in σ̃ = σ/s from ``start`` to ``end``: the grid on which PNDM's fixed
    Adams–Bashforth weights are those of equal steps."""
    return sde.t_from_noise_level(torch.linspace(start, end, n + 1, dtype=torch.float64))


def _start(sde, mixture, t):
    """32 draws of the exact marginal p_t."""
    g = gen(0)
    return sde.s(t) * mixture.sample(32, generator=g) + sde.sigma(t) * torch.randn(
        32, 2, generator=g, dtype=torch.float64)


def _reference(model, x):
    """The PF-ODE solution over σ̃ ∈ [5, 2]: RK4 with 512 steps (within 1e-12 of 2048 here)."""
    return sdeflow.sample(model, x, solver="rk4", timesteps=_noise_level_grid(model.sde, 512),
                          denoise=False)


def _observed_order(model, x, ref, solver, steps=(20, 40), **opts):
    """(errors, observed order) on the σ̃-uniform grid over σ̃ ∈ [5, 2] against ``ref``."""
    sde = model.sde
    errs = [(sdeflow.sample(model, x, solver=solver, timesteps=_noise_level_grid(sde, n),
                            denoise=False, **opts) - ref).abs().max().item() for n in steps]
    return errs, math.log(errs[0] / errs[1]) / math.log(steps[1] / steps[0])


def test_transfer_is_the_papers_eq9_and_ddims_step(mixture2d):
    """φ in ᾱ = s² form (paper, eq. 9, as diffusers' ``_get_prev_sample`` writes it) on VP;
    φ with e = ε̂(x, t) is the deterministic DDIM step on every SDE."""
    sde = sdeflow.VPSDE()
    x, e = torch.randn(8, 2, generator=gen(1), dtype=torch.float64), \
        torch.randn(8, 2, generator=gen(2), dtype=torch.float64)
    t, t_next = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    a, a_next = sde.s(t) ** 2, sde.s(t_next) ** 2
    denom = a * (1 - a_next).sqrt() + (a * (1 - a) * a_next).sqrt()
    eq9 = (a_next / a).sqrt() * x - (a_next - a) * e / denom
    torch.testing.assert_close(pndm_transfer(sde, x, e, t, t_next), eq9, rtol=1e-12, atol=1e-12)
    for name, (make, _) in SDES.items():
        sde = make()
        model = mixture2d.denoiser(sde)
        ones = torch.ones(8, dtype=torch.float64)
        t, t_next = 0.6 * sde.T * ones, 0.3 * sde.T * ones
        x = _start(sde, mixture2d, t[0])[:8]
        torch.testing.assert_close(pndm_transfer(sde, x, model.eps(x, t), t, t_next),
                                   ddim_step(model, x, t, t_next, Context()),
                                   rtol=1e-12, atol=1e-12, msg=name)


def test_warm_starts_are_rk4_and_heun_for_the_edm_sde(mixture2d):
    """For s ≡ 1, σ = t (EDM) the PF-ODE is dx/dt = ε̂ and φ is Euler's step, so three PRK
    steps are exactly three classical RK4 steps (the midpoint in σ̃ is the midpoint in t), and
    the first PLMS step is Heun's — on any grid."""
    model = mixture2d.denoiser(sdeflow.EDMSDE())
    x_T = model.sde.prior_sample((32, 2), generator=gen(3), dtype=torch.float64)
    a = sdeflow.sample(model, x_T, solver="pndm", steps=3, schedule="karras", denoise=False)
    b = sdeflow.sample(model, x_T, solver="rk4", steps=3, schedule="karras", denoise=False)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-11)
    ts = sdeflow.get_timesteps(model.sde, 7, "karras", dtype=torch.float64)[2:4]  # one step
    a = sdeflow.sample(model, x_T, solver="pndm", warm_start="plms", timesteps=ts, denoise=False)
    b = sdeflow.sample(model, x_T, solver="heun", timesteps=ts, denoise=False)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-11)


def test_plms_is_diffusers_recurrence(mixture2d):
    """warm_start="plms" against diffusers' ``step_plms`` written out on VP in ᾱ = s² (eq. 9):
    ε̂ at x_T, then at its DDIM step (mean of the two, the second one not kept), then the
    2-, 3- and 4-term combinations of the kept values — over 6 steps."""
    sde = sdeflow.VPSDE()
    model = mixture2d.denoiser(sde)
    ts = sdeflow.get_timesteps(sde, 6, "uniform", dtype=torch.float64)
    x_T = sde.prior_sample((16, 2), generator=gen(5), dtype=torch.float64)

    def eq9(x, e, t, t_prev):
        a, a_prev = sde.s(t) ** 2, sde.s(t_prev) ** 2
        denom = a * (1 - a_prev).sqrt() + (a * (1 - a) * a_prev).sqrt()
        return (a_prev / a).sqrt() * x - (a_prev - a) * e / denom

    def eps(x, t):
        return model.eps(x, t * torch.ones(16, dtype=torch.float64))
    ets = [eps(x_T, ts[0])]
    x = eq9(x_T, (ets[0] + eps(eq9(x_T, ets[0], ts[0], ts[1]), ts[1])) / 2, ts[0], ts[1])
    weights = {2: (-1, 3), 3: (5, -16, 23), 4: (-9, 37, -59, 55)}  # oldest first
    denoms = {2: 2, 3: 12, 4: 24}
    for i in range(1, 6):
        ets = (ets + [eps(x, ts[i])])[-4:]
        e = sum(w * v for w, v in zip(weights[len(ets)], ets)) / denoms[len(ets)]
        x = eq9(x, e, ts[i], ts[i + 1])
    ours = sdeflow.sample(model, x_T, solver="pndm", warm_start="plms", timesteps=ts,
                          denoise=False)
    torch.testing.assert_close(ours, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["edm", "vp"])
def test_pndm_converges_at_fourth_order(mixture2d, sde_name):
    """On steps equal in σ̃ over σ̃ ∈ [5, 2] (where ε̂ changes along the path, so the warm
    start matters), 20 → 40 steps: PNDM's observed order ≥ 3.3 (measured 3.63 on both SDEs,
    error 1.3e-6 (EDM) at 40 steps; 3.81, 3.90, 3.95 on to 320 steps on EDM). The same check
    rejects DDIM (measured 1.00) and iPNDM, whose first-order DDIM start limits it to order 2
    here (measured 2.57; 2.03 at 160 → 320)."""
    model = mixture2d.denoiser(SDES[sde_name][0]())
    t_start = model.sde.t_from_noise_level(torch.tensor(5.0, dtype=torch.float64))
    x = _start(model.sde, mixture2d, t_start)
    ref = _reference(model, x)
    errs, order = _observed_order(model, x, ref, "pndm")
    assert order >= 3.3 and errs[1] < 1e-5, (errs, order)
    for solver in ("ddim", "ipndm"):
        errs, order = _observed_order(model, x, ref, solver)
        assert order < 3.3, (solver, errs, order)


def test_plms_warm_start_converges_at_high_order(mixture2d):
    """diffusers' PLMS start (Heun, then 2- and 3-term Adams–Bashforth) is third order at worst
    (local errors O(h³) on two steps); 20 → 40 steps measure 3.60 (and 3.73, 3.75, 3.68 on to
    320 steps, falling towards 3): assert ≥ 3.3, with an error within 1.5× PRK's and a result
    that is not PRK's."""
    model = mixture2d.denoiser(sdeflow.EDMSDE())
    x = _start(model.sde, mixture2d, torch.tensor(5.0, dtype=torch.float64))
    ref = _reference(model, x)
    errs, order = _observed_order(model, x, ref, "pndm", warm_start="plms")
    prk_errs, _ = _observed_order(model, x, ref, "pndm")
    assert order >= 3.3 and errs[1] < 1.5 * prk_errs[1], (errs, order, prk_errs)
    assert errs != prk_errs


def test_pndm_runs_on_every_sde(mixture2d):
    """Every SDE, both warm starts: (a) in x̃ = x/s and σ̃ all SDEs share one PF-ODE, so from the
    same x̃ on σ̃-uniform grids the results agree to round-off (checks s, σ and the PRK midpoints
    of each); (b) on the SDE's own schedule over [T, t_min], 50 steps are within 5e-3 of the
    PF-ODE solution (RK4, 256 steps) and at least 10× closer than DDIM (measured 6.7e-4 –
    2.0e-3, 25–58×)."""
    x_tilde = _start(sdeflow.EDMSDE(), mixture2d, torch.tensor(5.0, dtype=torch.float64))
    ends = {}
    for name, (make, schedule) in SDES.items():
        sde = make()
        model = mixture2d.denoiser(sde)
        ts = _noise_level_grid(sde, 12)
        x_T = sde.prior_sample((32, 2), generator=gen(0), dtype=torch.float64)
        ref = sdeflow.sample(model, x_T, solver="rk4", steps=256, schedule=schedule, denoise=False)
        ddim = (sdeflow.sample(model, x_T, solver="ddim", steps=50, schedule=schedule,
                               denoise=False) - ref).abs().max().item()
        for warm_start in ("prk", "plms"):
            x = sdeflow.sample(model, sde.s(ts[0]) * x_tilde, solver="pndm", timesteps=ts,
                               warm_start=warm_start, denoise=False)
            ends[name, warm_start] = x / sde.s(ts[-1])
            torch.testing.assert_close(ends[name, warm_start], ends["ve", warm_start], rtol=0,
                                       atol=1e-10, msg=f"{name} {warm_start}")
            err = (sdeflow.sample(model, x_T, solver="pndm", steps=50, schedule=schedule,
                                  warm_start=warm_start, denoise=False) - ref).abs().max().item()
            assert err < 5e-3 and err < ddim / 10, (name, warm_start, err, ddim)


@pytest.mark.parametrize("warm_start, steps, nfe", [
    ("prk", 10, 4 * 3 + 7), ("prk", 3, 12), ("prk", 2, 8), ("prk", 1, 4),
    ("plms", 10, 11), ("plms", 4, 5), ("plms", 1, 2)])
def test_nfe(mixture2d, warm_start, steps, nfe):
    """PRK: 4 NFE on each of the first three steps, then 1; PLMS: n + 1 (two calls on the first
    step). The final denoising adds one; the model counts the calls itself."""
    model = mixture2d.denoiser(sdeflow.VPSDE())
    x_T = torch.randn(4, 2, dtype=torch.float64, generator=gen(4))
    x, stats = sdeflow.sample(model, x_T, solver="pndm", steps=steps, warm_start=warm_start,
                              return_stats=True)
    assert stats["nfe"] == nfe + 1 and torch.isfinite(x).all() and x.dtype == torch.float64
    assert stats["steps"] == steps


def test_bad_options_are_refused(mixture2d):
    model = mixture2d.denoiser(sdeflow.EDMSDE())
    x_T = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="warm_start 'rk4'.*choices.*'prk', 'plms'"):
        sdeflow.sample(model, x_T, solver="pndm", steps=5, warm_start="rk4")
    with pytest.raises(TypeError):
        sdeflow.sample(model, x_T, solver="pndm", steps=5, order=3)
    info = sdeflow.samplers.get_solver("pndm")
    assert info.kind == "ode" and info.order == 4 and info.default_steps == 50

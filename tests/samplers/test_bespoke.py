"""BNS solvers: the linear coefficients read off every one-call-per-step solver reproduce it
exactly; DDIM's match their closed form; bad coefficients and solvers are refused."""
import pytest
import torch

import sdeflow
from sdeflow.samplers.bespoke import linear_coefficients
from sdeflow.schedules import get_timesteps

from ..conftest import SDES, gen

MULTISTEP = ["ddim", "euler", "dpmpp_2m", "dpmpp_3m", "unipc", "deis", "ipndm"]


@pytest.mark.parametrize("sde_name", ["vp", "edm", "ve"])
def test_coefficients_reproduce_every_multistep_solver(mixture2d, sde_name):
    """Sampling with the read-off (a, c) equals the solver itself to 1e-11 (float64, 7 steps,
    orders and lower-order final steps included)."""
    make, schedule = SDES[sde_name]
    sde = make()
    model = mixture2d.denoiser(sde)
    x = sde.prior_sample((16, 2), generator=gen(0), dtype=torch.float64)
    ts = get_timesteps(sde, 7, schedule, dtype=torch.float64)
    for solver in MULTISTEP:
        a, c = linear_coefficients(sde, solver, ts)
        assert a.shape == (7,) and c.shape == (7, 7) and not c.triu(1).any()
        ours = sdeflow.sample(model, x, solver="bns", timesteps=ts, a=a, c=c, denoise=False)
        theirs = sdeflow.sample(model, x, solver=solver, timesteps=ts, denoise=False)
        scale = theirs.abs().max()
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=1e-11,
                                   msg=f"{sde_name} {solver}")


def test_coefficients_follow_the_final_step_convention_of_a_trailing_grid(mixture2d):
    """On a grid that ends above t_min iPNDM counts the final x̂0 call as a step (sample()'s
    convention); the read-off coefficients reproduce that, so a BNS search starting from them
    starts from the named iPNDM configuration (to 1e-11; the plain orders differ by > 1e-3)."""
    from sdeflow.samplers.registry import Context, get_solver
    sde = sdeflow.VPSDE()
    model = mixture2d.denoiser(sde)
    x = sde.prior_sample((16, 2), generator=gen(0), dtype=torch.float64)
    ts = get_timesteps(sde, 4, "logsnr_trailing", allow_free_end=True)
    a, c = linear_coefficients(sde, "ipndm", ts)
    ours = sdeflow.sample(model, x, solver="bns", timesteps=ts, a=a, c=c)
    named = sdeflow.sample(model, x, solver="ipndm", steps=4, schedule="logsnr_trailing")
    torch.testing.assert_close(ours, named, rtol=0, atol=1e-11)
    plain = model.x0(get_solver("ipndm").fn(model, x, ts, Context()), ts[-1])
    assert (plain - named).abs().max() > 1e-3


def test_ddim_coefficients_in_closed_form():
    r"""DDIM: x_{j+1} = (σ_{j+1}/σ_j) x_j + (s_{j+1} − s_j σ_{j+1}/σ_j) m_j, so
    a_j = σ_j/σ_0 and c_{jk} = (s_{k+1} − s_k σ_{k+1}/σ_k) σ_j/σ_{k+1}."""
    sde = sdeflow.VPSDE()
    ts = get_timesteps(sde, 5, "logsnr", dtype=torch.float64)
    a, c = linear_coefficients(sde, "ddim", ts)
    s, sig = sde.s(ts), sde.sigma(ts)
    torch.testing.assert_close(a, sig[1:] / sig[0], rtol=1e-12, atol=0)
    for j in range(1, 6):
        for k in range(j):
            want = (s[k + 1] - s[k] * sig[k + 1] / sig[k]) * sig[j] / sig[k + 1]
            torch.testing.assert_close(c[j - 1, k], want, rtol=1e-12, atol=1e-15)


def test_coefficients_are_differentiable_in_the_grid():
    sde = sdeflow.EDMSDE()
    ts = get_timesteps(sde, 4, "karras", dtype=torch.float64).requires_grad_(True)
    a, c = linear_coefficients(sde, "dpmpp_2m", ts)
    (g,) = torch.autograd.grad(a.sum() + c.sum(), [ts])
    assert torch.isfinite(g).all() and g[1:].abs().max() > 0


def test_bad_solvers_and_coefficients_are_refused(mixture2d):
    sde = sdeflow.EDMSDE()
    model = mixture2d.denoiser(sde)
    x = sde.prior_sample((4, 2), generator=gen(0), dtype=torch.float64)
    ts = get_timesteps(sde, 3, "karras", dtype=torch.float64)
    for solver in ("heun", "dpm_solver_2"):
        with pytest.raises(ValueError, match="once per step"):
            linear_coefficients(sde, solver, ts)
    with pytest.raises(ValueError, match="fixed-step ODE"):
        linear_coefficients(sde, "euler_maruyama", ts)
    a, c = linear_coefficients(sde, "ddim", ts)
    with pytest.raises(ValueError, match="needs its coefficients"):
        sdeflow.sample(model, x, solver="bns", timesteps=ts)
    with pytest.raises(ValueError, match="shape"):
        sdeflow.sample(model, x, solver="bns", steps=4, a=a, c=c)
    upper = c.clone()
    upper[0, 2] = 1.0
    with pytest.raises(ValueError, match="lower triangular"):
        sdeflow.sample(model, x, solver="bns", timesteps=ts, a=a, c=upper)
    with pytest.raises(ValueError, match="finite"):
        sdeflow.sample(model, x, solver="bns", timesteps=ts, a=a * float("nan"), c=c)
    with pytest.raises(ValueError, match="constraint"):
        sdeflow.sample(model, x, solver="bns", timesteps=ts, a=a, c=c,
                       constraint=lambda t, x, ctx: x)

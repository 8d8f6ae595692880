"""The lookahead first step (``first_step="lookahead"``, samplers/first_step.py): the network is
called exactly where the method says (never at t₀; once at t₁ from x₁' = (σ₁/σ₀)·x₀) and that
call serves the second grid time too, so n steps cost n calls; what it returns at both times is
the x̂0 of that call, with ε̂/score consistent with the solver's own state; and on an exact
mixture model it is more accurate than the plain start at the same budget (its figures on more
problems: docs/benchmarks.md)."""
import pytest
import torch

import sdeflow
from sdeflow.denoiser import Denoiser
from sdeflow.samplers import get_solver
from sdeflow.samplers.registry import Context
from sdeflow.schedules import get_timesteps
from tests.conftest import gen

LOOKAHEAD = ("ipndm", "deis", "dpmpp_2m", "dpmpp_3m", "unipc")


class Spy:
    """The exact mixture denoiser, recording every (x, t) the network sees."""

    def __init__(self, gm, sde):
        self.gm, self.sde, self.calls = gm, sde, []

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return self.gm.x0(x, self.sde.s(t), self.sde.sigma(t))


@pytest.mark.parametrize("solver", LOOKAHEAD)
def test_lookahead_calls_the_network_where_the_method_says(solver, ring):
    """Never at t₀; first at t₁ from x₁' = (σ₁/σ₀)x₀; not again at t₁; n steps + the final x̂0
    call cost n calls; the solver's first step lands on DDIM's point with that call's x̂0."""
    sde = sdeflow.VPSDE()
    spy = Spy(ring, sde)
    model = Denoiser(spy, sde)
    x_T = sde.prior_sample((16, 2), generator=gen(0), dtype=torch.float64)
    ts = get_timesteps(sde, 6, "karras_trailing", dtype=torch.float64, allow_free_end=True)
    seen = []
    x, st = sdeflow.sample(model, x_T, solver=solver, timesteps=ts, first_step="lookahead",
                           return_stats=True, callback=lambda t, x: seen.append(x.clone()))
    assert st["nfe"] == 6 == len(spy.calls)
    (x1p, t1), (_, t2) = spy.calls[:2]
    assert torch.all(t1 == ts[1]) and torch.all(t2 == ts[2])
    torch.testing.assert_close(x1p, sde.sigma(ts[1]) / sde.sigma(ts[0]) * x_T, rtol=1e-14, atol=0)
    x0 = ring.x0(x1p, sde.s(ts[1]), sde.sigma(ts[1]))
    r = (sde.sigma(ts[1]) / sde.s(ts[1])) / (sde.sigma(ts[0]) / sde.s(ts[0]))
    ddim = sde.s(ts[1]) * (r * x_T / sde.s(ts[0]) + (1 - r) * x0)  # (1) of the module docstring
    torch.testing.assert_close(seen[0], ddim, rtol=1e-10, atol=1e-12)
    plain = sdeflow.sample(model, x_T, solver=solver, timesteps=ts, return_stats=True)[1]
    assert plain["nfe"] == 7  # one call per grid time and the final x̂0


def test_the_second_time_reuses_the_call_with_the_solvers_own_state(ring):
    """At t₁ the wrapped model answers the cached x̂0 with ε̂ = (x₁ − s x̂0)/σ of the state the
    solver passes — not the prediction at x₁' (a stale ε̂), and without a call."""
    from sdeflow.samplers.first_step import LookaheadFirst
    sde = sdeflow.EDMSDE()
    spy = Spy(ring, sde)
    model = Denoiser(spy, sde)
    ts = torch.tensor([80.0, 20.0, 5.0], dtype=torch.float64)
    look = LookaheadFirst(model, ts)
    x0 = sde.prior_sample((8, 2), generator=gen(1), dtype=torch.float64)
    first = look.predict(x0, ts[0])
    x1 = x0 + 0.3  # any state the solver reached
    second = look.predict(x1, ts[1] * torch.ones(8, dtype=torch.float64))
    assert len(spy.calls) == 1 and model.nfe == 1
    torch.testing.assert_close(second.x0, first.x0)
    torch.testing.assert_close(second.eps, (x1 - second.x0) / 20.0)
    # power: the prediction at x₁' = (20/80)·x₀ reused verbatim (a stale ε̂) fails that check
    assert not torch.allclose((0.25 * x0 - first.x0) / 20.0, second.eps)
    torch.testing.assert_close(first.eps, (x0 - first.x0) / 80.0)
    torch.testing.assert_close(second.score, -second.eps / 20.0)
    look.predict(x1, ts[2])  # later calls go to the network
    assert len(spy.calls) == 2
    with pytest.raises(RuntimeError, match="second call"):
        bad = LookaheadFirst(model, ts)
        bad.predict(x0, ts[0])
        bad.predict(x1, ts[2])


@pytest.mark.parametrize("sde", [sdeflow.VPSDE(), sdeflow.EDMSDE()], ids=["vp", "edm"])
def test_lookahead_beats_the_plain_start_at_the_same_budget(sde, ring):
    """iPNDM on gits_trailing (``auto``'s 2-D shape) at 5–20 NFE, 512 draws of the exact ring
    model: with the lookahead (one more step for the same calls) the RMS error against the
    exact PF-ODE is 0.78–0.91× the plain start's under VP and 0.51–1.13× under EDM; asserted:
    a geometric mean below 0.9 and no budget above 1.2×."""
    model = ring.denoiser(sde)
    x_T = sde.prior_sample((512, 2), generator=gen(2), dtype=torch.float64)
    ref = model.x0(sdeflow.sample(model, x_T, solver="rk4", steps=800, denoise=False), sde.t_min)
    ratios = []
    for nfe in (5, 6, 8, 10, 12, 15, 20):
        errs = {}
        for first, steps in (("network", nfe - 1), ("lookahead", nfe)):
            x, st = sdeflow.sample(model, x_T, solver="ipndm", steps=steps, first_step=first,
                                   schedule="gits_trailing", return_stats=True)
            assert st["nfe"] == nfe
            errs[first] = (x - ref).pow(2).mean().sqrt()
        ratios.append(errs["lookahead"] / errs["network"])
    ratios = torch.stack(ratios)
    assert ratios.log().mean().exp() < 0.9 and ratios.max() < 1.2, ratios


def test_first_step_refuses_what_it_cannot_do(ring):
    model = ring.denoiser(sdeflow.EDMSDE())
    x_T = torch.randn(4, 2, generator=gen(0), dtype=torch.float64) * 80
    with pytest.raises(ValueError, match="first_step='analytic'.*choices"):
        sdeflow.sample(model, x_T, solver="ipndm", steps=4, first_step="analytic")
    with pytest.raises(ValueError, match="solver 'heun'.*'lookahead' for the one-call"):
        sdeflow.sample(model, x_T, solver="heun", steps=4, first_step="lookahead")
    sdeflow.sample(model, x_T, solver="heun", steps=2, first_step="network")  # the default
    with pytest.raises(ValueError, match="at least 2 steps"):
        sdeflow.sample(model, x_T, solver="ipndm", steps=1, first_step="lookahead")
    assert not get_solver("heun").first_step and get_solver("ipndm").first_step
    assert sorted(n for n in sdeflow.list_solvers() if get_solver(n).first_step) == sorted(LOOKAHEAD)
    ts = get_timesteps(model.sde, 3, "karras", dtype=torch.float64)
    out = get_solver("ipndm").fn(model, x_T, ts, Context(), first_step="network")
    assert torch.isfinite(out).all()

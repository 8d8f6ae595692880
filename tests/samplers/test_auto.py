"""solver="auto" and the schedules it draws on (vp_uniform, vp_trailing, ays, gits): a valid
configuration for every SDE and every budget 1–1000 NFE, spending exactly the budget; the
VP-time grids equal the VP SDE's own uniform grid and diffusers' trailing spacing; the shapes
keep their endpoints and order. Their accuracy is measured in benchmarks/solvers.py."""
import pytest
import torch

import sdeflow
from sdeflow.samplers.auto import (HIGH_DIM, LOOKAHEAD_NFE, LOOKAHEAD_NOISE_NFE, WIDE_DIM,
                                   auto_config, nfe_of)
from sdeflow.schedules import FREE_END, get_timesteps
from tests.conftest import SDES

BUDGETS = [*range(1, 41), 50, 64, 100, 1000]


@pytest.mark.parametrize("dim", [2, 64])
def test_auto_spends_exactly_its_budget_on_every_sde(sde_case, dim, ring):
    name, sde, _ = sde_case
    gm = sdeflow.oracle.GaussianMixture.random(dim, k=2, seed=0) if dim > 2 else ring
    model = gm.denoiser(sde)
    x_T = sde.prior_sample((3, dim), generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    ref = model.x0(sdeflow.sample(model, x_T, solver="rk4", steps=400, denoise=False), sde.t_min)
    scale = gm.sample(4000, generator=torch.Generator().manual_seed(1)).norm(dim=1).max()
    for nfe in BUDGETS if dim == 2 else BUDGETS[:40]:  # above 30 NFE the rule ignores D
        cfg = auto_config(sde, nfe, dim)
        assert cfg["solver"] in sdeflow.list_solvers("ode") and cfg["steps"] >= 1
        x, st = sdeflow.sample(model, x_T, solver="auto", steps=nfe, return_stats=True)
        assert st["nfe"] == nfe and torch.isfinite(x).all(), (name, dim, nfe, cfg)
        assert x.norm(dim=1).max() < 1.25 * scale, (name, dim, nfe)  # near the data's ball
        if nfe >= 30:  # and on the ODE's answer (its accuracy: benchmarks/solvers.py)
            assert (x - ref).norm(dim=1).max() < 0.05 * scale, (name, dim, nfe)


@pytest.mark.parametrize("name", sorted(SDES))
def test_auto_config_is_valid_for_every_budget_1_to_1000(name):
    """Every budget 1–1000 on every SDE and data dimension (both sides of HIGH_DIM, and an
    image's): a registered one-call-per-step ODE solver, steps + final denoising = the budget,
    and a grid that builds — steps + 1 strictly decreasing finite times from T to no earlier
    than t_min (a free-end grid only with the final denoising; grids built for every budget to
    100 and every hundredth above, where a single rule applies)."""
    from sdeflow.samplers import get_solver
    sde, grids = SDES[name][0](), set()
    for dim in (1, HIGH_DIM - 1, HIGH_DIM, WIDE_DIM, 3 * 32 * 32):
        for nfe in range(1, 1001):
            cfg = auto_config(sde, nfe, dim)
            info = get_solver(cfg["solver"])
            assert info.kind == "ode" and not info.adaptive and cfg["solver"] in ONE_CALL
            assert nfe_of(cfg) == nfe, (name, dim, nfe, cfg)
            look = cfg["opts"].get("first_step") == "lookahead"
            assert cfg["steps"] + cfg["denoise"] == nfe + look and (look <= info.first_step)
            assert cfg["opts"] in ({}, {"first_step": "lookahead"}) and cfg["denoise"] in (True, False)
            assert look == (4 <= nfe <= LOOKAHEAD_NFE), (name, dim, nfe, cfg)  # an x̂0 model's
            assert cfg["denoise"] or cfg["schedule"] not in FREE_END
            if nfe <= 100 or nfe % 100 == 0:  # above 30 NFE one rule (iPNDM on logsnr)
                grids.add((cfg["steps"], cfg["schedule"], cfg["denoise"]))
    for steps, schedule, denoise in grids:  # each distinct grid once
        ts = get_timesteps(sde, steps, schedule, dtype=torch.float64, allow_free_end=denoise)
        assert len(ts) == steps + 1 and torch.isfinite(ts).all()
        assert (ts[1:] < ts[:-1]).all() and ts[0] == sde.T and ts[-1] >= sde.t_min * (1 - 1e-9)


ONE_CALL = ("ddim", "ipndm", "unipc", "dpmpp_2m", "dpmpp_3m", "deis")  # NFE = steps (+ x̂0)


def test_auto_follows_the_dimension_and_the_budget():
    sde = sdeflow.VPSDE()
    low, high = auto_config(sde, 10, 2), auto_config(sde, 10, HIGH_DIM)
    assert low["solver"] != high["solver"] or low["schedule"] != high["schedule"]
    assert auto_config(sde, 5, 64)["schedule"] == "ays_trailing"
    assert auto_config(sde, 5, 2)["schedule"] == "gits_trailing"
    assert auto_config(sde, 12, 64)["schedule"] == "ays_trailing"
    assert auto_config(sde, 12, WIDE_DIM - 1)["schedule"] == "ays_trailing"
    assert auto_config(sde, 12, WIDE_DIM)["schedule"] == "karras_trailing"
    assert auto_config(sde, 7, WIDE_DIM)["schedule"] == "karras_trailing"
    assert auto_config(sde, 30, WIDE_DIM - 1)["schedule"] == "ays_trailing"
    assert auto_config(sde, 6, 3 * 32 * 32)["schedule"] == "ays_trailing"
    assert auto_config(sde, 1, 64)["steps"] == 1 and auto_config(sde, 1, 64)["denoise"] is False


def test_auto_gives_noise_predicting_networks_the_karras_shape(ring):
    """A network whose x̂0 = (x − σ ε̂)/s is derived from an ε (or score) prediction without EDM
    preconditioning gets ``karras_trailing`` at every budget 4–30 from D = 16 (its error in x̂0
    is σ̃ times its error in ε̂: more calls at large σ̃); below, and for x̂0-, v- and
    EDM-preconditioned networks, the dimension's shape; 1–3 and > 30 NFE are the same. At any
    D its iPNDM order is 2 up to 8 NFE, 3 up to 20 and 4 above (the network's error in ε̂ is amplified
    by the Adams–Bashforth weights); x̂0 networks keep order 4. The lookahead first step (one
    more step on the same calls) up to 8 NFE for ε networks, up to 12 for x̂0 ones."""
    from sdeflow import Denoiser
    from sdeflow.samplers.auto import predicts_noise
    sde = sdeflow.VPSDE()
    for dim in (2, HIGH_DIM - 1, HIGH_DIM, 64, WIDE_DIM, 3 * 32 * 32):
        for nfe in range(4, 31):
            cfg = auto_config(sde, nfe, dim, noise_prediction=True)
            want = "karras_trailing" if dim >= HIGH_DIM else "gits_trailing"
            assert (cfg["solver"], cfg["schedule"]) == ("ipndm", want), (dim, nfe)
            order = 2 if nfe <= 8 else 3 if nfe <= 20 else 4
            look = {"first_step": "lookahead"} if nfe <= LOOKAHEAD_NOISE_NFE else {}
            assert cfg["opts"] == {"order": order, **look}, (dim, nfe)
            assert cfg["steps"] == nfe - 1 + bool(look) and nfe_of(cfg) == nfe
            x0_look = {"first_step": "lookahead"} if nfe <= LOOKAHEAD_NFE else {}
            assert auto_config(sde, nfe, dim)["opts"] == x0_look, (dim, nfe)
        for nfe in (1, 2, 3, 31, 100):
            assert auto_config(sde, nfe, dim, True) == auto_config(sde, nfe, dim)
    assert auto_config(sde, 5, 64)["schedule"] == "ays_trailing"  # the x̂0 network's rule
    net = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert predicts_noise(Denoiser(net, sde, prediction="eps"))
    assert predicts_noise(Denoiser(net, sde, prediction="score"))
    assert not predicts_noise(Denoiser(net, sde, prediction="v"))
    assert not predicts_noise(Denoiser(net, sde, prediction="x0"))
    assert not predicts_noise(Denoiser(net, sdeflow.EDMSDE(), prediction="x0", precondition="edm"))
    assert not predicts_noise(ring.denoiser(sde))  # an exact x̂0 oracle
    # sample() passes the model's parameterisation on
    gm = sdeflow.oracle.GaussianMixture.random(HIGH_DIM, k=2, seed=0)
    eps_model = Denoiser(lambda x, t: gm.denoiser(sde).predict(x, t).eps, sde, prediction="eps")
    _, st = sdeflow.sample(eps_model, shape=(3, HIGH_DIM), solver="auto", steps=8,
                           return_stats=True)
    assert (st["schedule"], st["options"], st["nfe"]) == \
        ("karras_trailing", {"order": 2, "first_step": "lookahead"}, 8)
    x_T = sde.prior_sample((3, HIGH_DIM), generator=torch.Generator().manual_seed(0))
    got = sdeflow.sample(eps_model, x_T, solver="auto", steps=8)
    for order, first, same in ((2, "lookahead", True), (4, "lookahead", False),
                               (2, "network", False)):
        ref = sdeflow.sample(eps_model, x_T, solver="ipndm", order=order, steps=8,
                             schedule="karras_trailing", first_step=first)
        assert torch.equal(got, ref) is same, (order, first)
    _, st = sdeflow.sample(gm.denoiser(sde), shape=(3, HIGH_DIM), solver="auto", steps=8,
                           return_stats=True)
    assert st["schedule"] == "ays_trailing"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_auto_refuses_a_budget_that_is_not_a_positive_integer(bad, ring):
    model = ring.denoiser(sdeflow.EDMSDE())
    with pytest.raises(ValueError, match="NFE budget"):
        sdeflow.sample(model, shape=(2, 2), solver="auto", steps=bad)


@pytest.mark.parametrize("extra", [dict(schedule="karras"), dict(denoise=False), dict(eta=0.5)])
def test_auto_refuses_what_it_chooses_itself(extra, ring):
    with pytest.raises(ValueError, match="auto"):
        sdeflow.sample(ring.denoiser(sdeflow.EDMSDE()), shape=(2, 2), solver="auto", steps=5,
                       **extra)


def test_vp_uniform_is_the_vp_sdes_uniform_grid_and_vp_trailing_diffusers_trailing():
    vp = sdeflow.VPSDE()
    for n in (1, 5, 10, 50):
        assert torch.allclose(get_timesteps(vp, n, "vp_uniform"), get_timesteps(vp, n, "uniform"),
                              rtol=0, atol=1e-9)
    # diffusers' trailing spacing with N calls: t = 1 − k/N (k < N), x̂0 at the last
    for nfe in (5, 8, 10, 20):
        ts = get_timesteps(vp, nfe - 1, "vp_trailing", allow_free_end=True)
        want = 1 - torch.arange(nfe, dtype=torch.float64) / nfe
        assert torch.allclose(ts, want, atol=1e-9), nfe
    # power: uniform steps in t of another SDE are not its VP-time grid
    edm = sdeflow.EDMSDE()
    assert not torch.allclose(get_timesteps(edm, 10, "vp_uniform"), get_timesteps(edm, 10, "uniform"))


@pytest.mark.parametrize("schedule", ["vp_uniform", "vp_trailing", "ays", "gits"])
def test_new_schedules_are_decreasing_with_their_endpoints(sde_case, schedule):
    _, sde, _ = sde_case
    for n in (1, 2, 3, 7, 10, 33, 200):
        ts = get_timesteps(sde, n, schedule, allow_free_end=True)
        assert len(ts) == n + 1 and (ts[1:] < ts[:-1]).all() and ts[0] == sde.T
        if schedule in FREE_END:
            assert ts[-1] > sde.t_min  # ends early: x̂0 is taken there
        else:
            assert ts[-1] == sde.t_min


def test_shapes_hit_their_published_knots_at_ten_steps():
    sde = sdeflow.EDMSDE()
    for name, knots in sdeflow.schedules.SHAPES.items():
        nu = sde.noise_level(get_timesteps(sde, 10, name)).log()
        u = (nu - nu[-1]) / (nu[0] - nu[-1])
        assert torch.allclose(u, torch.tensor(knots, dtype=torch.float64), atol=1e-9), name


def test_auto_refuses_a_distilled_model(ring):
    distilled = ring.denoiser(sdeflow.EDMSDE())
    distilled.timesteps = [80.0, 1.0, 0.002]
    with pytest.raises(ValueError, match="distilled model samples on its own grid.*omit"):
        sdeflow.sample(distilled, shape=(2, 2), solver="auto", steps=4)


def test_auto_runs_dpm_solver_v3_on_gits_for_a_noise_predicting_network_with_statistics(ring):
    """Given DPM-Solver-v3's statistics (``sdeflow ems``), ``auto`` runs that solver on
    ``gits_trailing`` for a noise-predicting network from D = 16 at 4–30 NFE (``STATS_NFE``:
    0.38–0.67× its error without them on two ε U-Nets of the digits, docs/benchmarks.md); every
    other case — fewer or more calls, low dimension, an x̂0 network — keeps its rule, and the
    statistics then go unused."""
    from sdeflow import Denoiser
    from sdeflow.samplers.auto import STATS_NFE
    from sdeflow.samplers.ems import estimate_statistics
    sde = sdeflow.VPSDE()
    for dim in (2, HIGH_DIM - 1, HIGH_DIM, WIDE_DIM, 3 * 32 * 32):
        for nfe in range(1, 41):
            for eps in (True, False):
                cfg = auto_config(sde, nfe, dim, eps, statistics=True)
                if eps and dim >= HIGH_DIM and nfe in STATS_NFE:
                    assert cfg == dict(solver="dpm_solver_v3", steps=nfe - 1,
                                       schedule="gits_trailing", opts={}, denoise=True)
                else:
                    assert cfg == auto_config(sde, nfe, dim, eps), (dim, nfe, eps)
    assert (STATS_NFE.start, STATS_NFE.stop) == (4, 31)  # the budgets measured
    gm = sdeflow.oracle.GaussianMixture.random(HIGH_DIM, k=2, seed=0)
    eps_model = Denoiser(lambda x, t: gm.denoiser(sde).predict(x, t).eps, sde, prediction="eps")
    stats = estimate_statistics(eps_model, (HIGH_DIM,), n=32, points=12, seed=1)
    x_T = sde.prior_sample((3, HIGH_DIM), generator=torch.Generator().manual_seed(0))
    got, st = sdeflow.sample(eps_model, x_T, solver="auto", steps=8, statistics=stats,
                             return_stats=True)
    assert (st["solver"], st["schedule"], st["nfe"]) == ("dpm_solver_v3", "gits_trailing", 8)
    assert st["options"] == {"statistics": "ModelStatistics"}  # named, not dumped
    ref = sdeflow.sample(eps_model, x_T, solver="dpm_solver_v3", steps=7,
                         schedule="gits_trailing", statistics=stats)
    assert torch.equal(got, ref)
    _, st = sdeflow.sample(eps_model, x_T, solver="auto", steps=8, return_stats=True)
    assert st["solver"] == "ipndm"  # no statistics: the rule without them
    _, st = sdeflow.sample(eps_model, x_T, solver="auto", steps=31, statistics=stats,
                           return_stats=True)
    assert (st["solver"], st["schedule"]) == ("ipndm", "logsnr")  # above 30 NFE: unused
    _, st = sdeflow.sample(gm.denoiser(sde), x_T, solver="auto", steps=8, statistics=stats,
                           return_stats=True)
    assert (st["solver"], st["schedule"]) == ("ipndm", "ays_trailing")  # an x̂0 model
    with pytest.raises(ValueError, match="statistics="):
        sdeflow.sample(eps_model, x_T, solver="auto", steps=8, statistics=stats, order=2)

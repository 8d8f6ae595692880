"""Tuned time steps: on the exact 2-D ring denoiser, a tuned 4-step DPM-Solver++(2M) grid
has a much smaller error than the best named schedule on noise it was never tuned on; tuned
grids save, load and drive `sdeflow sample`; bad requests are refused."""
import json
import math
from pathlib import Path

import pytest
import torch

import sdeflow
from sdeflow.cli import main
from sdeflow.oracle import GaussianMixture
from sdeflow.schedules import ends_early, get_timesteps
from sdeflow.tuning import (TunedSchedule, _Objective, blend_grids, theta_from_timesteps, timesteps_from_theta,
                            tune_timesteps)

from .conftest import gen


@pytest.fixture(scope="module")
def ring_edm():
    sde = sdeflow.EDMSDE()
    return GaussianMixture.ring().denoiser(sde), sde


def test_theta_parameterisation_round_trips(ring_edm):
    _, sde = ring_edm
    ts = sdeflow.schedules.get_timesteps(sde, 6, "karras")
    back = timesteps_from_theta(sde, theta_from_timesteps(sde, ts), sde.T, sde.t_min)
    torch.testing.assert_close(back, ts, rtol=1e-9, atol=1e-12)
    # any θ gives a valid grid with exact endpoints
    wild = timesteps_from_theta(sde, torch.tensor([5.0, -3.0, 0.0, 9.0]), sde.T, sde.t_min)
    assert wild[0] == sde.T and wild[-1] == sde.t_min and (wild[1:] < wild[:-1]).all()
    # free end: one more weight (the gap below the last time), N intervals ending above t_min
    theta = theta_from_timesteps(sde, ts, sde.t_min)
    assert len(theta) == 7
    free = timesteps_from_theta(sde, theta, sde.T, sde.t_min, free_end=True)
    assert len(free) == 7 and free[-1] > sde.t_min and (free[1:] < free[:-1]).all()
    torch.testing.assert_close(sde.log_snr(free[1:]), sde.log_snr(ts[1:]), rtol=0, atol=0.02)


def test_grid_is_differentiable_through_the_solver(ring_edm):
    """The calibration loss has a gradient in θ (what the default tuner follows): it matches a
    central finite difference to 1e-4 relative."""
    from sdeflow.samplers import get_solver
    from sdeflow.samplers.registry import Context
    model, sde = ring_edm
    x = sde.prior_sample((16, 2), generator=gen(3), dtype=torch.float64)
    theta = theta_from_timesteps(sde, sdeflow.schedules.get_timesteps(sde, 4, "logsnr"), sde.t_min)

    def loss(th):
        ts = timesteps_from_theta(sde, th, sde.T, sde.t_min, free_end=True)
        return model.x0(get_solver("dpmpp_2m").fn(model, x, ts, Context()), ts[-1]).pow(2).mean()
    th = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(th), [th])
    e = torch.zeros_like(theta)
    e[1] = 1e-6
    fd = (loss(theta + e) - loss(theta - e)) / 2e-6
    torch.testing.assert_close(g[1], fd, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("method, free_end", [("gradient", True), ("pattern", False)])
def test_tuned_grid_beats_named_schedules_on_held_out_noise(ring_edm, tmp_path, method, free_end):
    """Calibration: 64 draws (seed 1000); validation 64 (seed 1001); evaluation: 256 draws
    (seed 0) used nowhere in tuning. Measured: best named schedule (logsnr) RMSE 0.158 →
    tuned 0.049 (pattern search, fixed end; 3.2×) and 0.046 (gradient, free end; 3.4×);
    asserted ≥ 2×."""
    model, sde = ring_edm
    draw = lambda n, s: sde.prior_sample((n, 2), generator=gen(s), dtype=torch.float64)  # noqa: E731
    res = tune_timesteps(model, draw(64, 1000), x_heldout=draw(64, 1001), solver="dpmpp_2m",
                         steps=4, calibration_seed=1000, method=method, free_end=free_end,
                         max_evals=200 if method == "gradient" else 400)
    assert res.method == method and res.free_end == free_end
    assert (res.timesteps[-1] > sde.t_min) == free_end
    assert res.calibration_loss < res.start_loss and not res.kept_start
    x_eval = draw(256, 0)
    ref = sdeflow.sample(model, x_eval, solver="rk45", rtol=1e-8, atol=1e-8)

    def err(**kw):
        return (sdeflow.sample(model, x_eval, solver="dpmpp_2m", **kw) - ref).pow(2).mean().sqrt().item()
    named = min(err(steps=4, schedule=s) for s in ("karras", "logsnr", "uniform", "quadratic"))
    path = res.save(tmp_path / "tuned.json")
    loaded = TunedSchedule.load(path)
    assert loaded == res
    tuned = err(timesteps=loaded.tensor(sde))
    assert tuned < named / 2, (tuned, named)


def test_tuning_refuses_sde_and_adaptive_solvers_and_wrong_sde(ring_edm, tmp_path):
    model, sde = ring_edm
    x = sde.prior_sample((8, 2), generator=gen(0), dtype=torch.float64)
    for solver in ("euler_maruyama", "rk45"):
        with pytest.raises(ValueError, match="fixed-step ODE"):
            tune_timesteps(model, x, solver=solver)
    with pytest.raises(ValueError, match="unknown tuning method"):
        tune_timesteps(model, x, solver="euler", method="adam")
    res = tune_timesteps(model, x, solver="euler", steps=3, max_evals=10)
    with pytest.raises(ValueError, match="tuned for SDE"):
        res.tensor(sdeflow.VPSDE())


def test_tune_steps_cli_and_sampling_with_the_file(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--steps", "200", "--hidden", "32", "--depth", "1", "--out", str(run),
                 "--no-tensorboard"]) == 0
    out = tmp_path / "tuned.json"
    assert main(["tune-steps", str(run), "--solver", "dpmpp_2m", "--steps", "4",
                 "--n-calib", "64", "--max-evals", "20", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["base_solver"] == "dpmpp_2m" and rep["steps"] == len(rep["timesteps"]) - 1
    # 4 steps + the final x̂0 call; auto's configuration at those 5 calls, when it wins, runs 5
    # steps with its lookahead first step
    lookahead = rep["solver_opts"].get("first_step") == "lookahead"
    assert len(rep["timesteps"]) == 5 + lookahead and (not lookahead or rep["fallback"])
    # the tuned grid, or the candidate that beat it on the validation pool
    assert rep["solver"] == "dpmpp_2m" if rep["fallback"] is None else \
        rep["fallback"].split("/")[0].split("(")[0] == rep["solver"]
    assert rep["heldout_loss"] == min(rep["heldout_losses"].values())
    assert rep["calibration_seed"] == 1000
    # the gradient search never ends worse than its start; the pool search may trade that away
    assert rep["calibration_loss"] <= rep["start_loss"] or rep["search_choice"] != "tuned"
    assert rep["pool"] == 4096  # stratified draws by default
    # validation on 4096 draws, doubled (to 4 × 4096) only while the choice is unstable
    assert rep["heldout_pool"] in (4096, 8192, 16384)
    assert rep["heldout_p_change"] <= 0.1 or rep["heldout_pool"] == 16384
    # the pool line search ran on the calibration pool and its choice has the least pool loss
    assert rep["search_choice"] == min(rep["search_losses"], key=rep["search_losses"].get)
    plain = tmp_path / "plain.json"
    assert main(["tune-steps", str(run), "--steps", "4", "--n-calib", "64", "--max-evals", "5",
                 "--pool", "0", "--out", str(plain)]) == 0
    assert json.loads(plain.read_text())["pool"] == 0
    assert main(["tune-steps", str(run), "--steps", "4", "--n-calib", "64", "--pool", "10",
                 "--out", str(plain)]) == 2  # a pool smaller than the draws: a clear error
    assert main(["tune-steps", str(run), "--steps", "4", "--n-calib", "64", "--pool-partners",
                 "-2", "--out", str(plain)]) == 2
    assert main(["tune-steps", str(run), "--steps", "4", "--n-calib", "64", "--pool", "256",
                 "--heldout-pool", "128", "--out", str(plain)]) == 2
    assert main(["tune-steps", str(run), "--steps", "4", "--n-calib", "64", "--pool", "0",
                 "--heldout-pool", "8192", "--out", str(plain)]) == 2
    # choose-steps: the stratified and the plain-draws tuning on one common pool
    chosen = tmp_path / "chosen.json"
    assert main(["choose-steps", str(run), str(out), str(plain), "--pool", "512", "--n-ref",
                 "64", "--out", str(chosen)]) == 0
    assert json.loads(chosen.read_text()) in (json.loads(out.read_text()),
                                               json.loads(plain.read_text()))
    assert main(["choose-steps", str(run), str(out), "--pool", "64", "--n-ref", "64",
                 "--out", str(chosen)]) == 2
    s = tmp_path / "s"
    assert main(["sample", str(run), "-n", "50", "--timesteps-file", str(out), "--out", str(s)]) == 0
    assert json.loads(s.with_suffix(".json").read_text())["nfe"] == 5
    assert main(["sample", str(run), "--timesteps-file", str(out), "--steps", "3"]) == 2
    # --coefficients: a BNS solver file that `sample` runs at the same NFE
    bns = tmp_path / "bns.json"
    assert main(["tune-steps", str(run), "--solver", "unipc", "--steps", "4", "--coefficients",
                 "--n-calib", "64", "--max-evals", "20", "--out", str(bns)]) == 0
    rep = json.loads(bns.read_text())
    assert rep["solver"] in ("bns", "unipc") and rep["base_solver"] == "unipc"
    if rep["solver"] == "bns":
        assert len(rep["solver_opts"]["a"]) == 4 and len(rep["solver_opts"]["c"]) == 4
    assert main(["sample", str(run), "-n", "50", "--timesteps-file", str(bns), "--out", str(s)]) == 0
    assert json.loads(s.with_suffix(".json").read_text())["nfe"] == 5


def test_tune_steps_default_base_is_dpm_solver_v3_with_statistics_estimated(tmp_path, capsys,
                                                                          monkeypatch):
    """Without --solver, tune-steps tunes the benchmarks' winning base, DPM-Solver-v3, and
    estimates its statistics into the checkpoint folder when there are none (then reuses
    them); --coefficients starts from UniPC and --method pattern (no gradients) from
    DPM-Solver++(2M); v3 with --method pattern and no statistics is a clear error."""
    from sdeflow.samplers.ems import ModelStatistics, statistics_path
    run = tmp_path / "run"
    assert main(["train", "--steps", "100", "--hidden", "16", "--depth", "1", "--out", str(run),
                 "--no-tensorboard"]) == 0
    quick = ["--steps", "3", "--n-calib", "16", "--pool", "0", "--max-evals", "2"]
    out = tmp_path / "t.json"
    assert not statistics_path(run).exists()
    capsys.readouterr()
    assert main(["tune-steps", str(run), *quick, "--out", str(out)]) == 0
    assert "estimating them as `sdeflow ems` does" in capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert rep["base_solver"] == "dpm_solver_v3"
    assert rep["solver_opts"]["statistics"] == str(statistics_path(run).resolve())
    assert ModelStatistics.load(statistics_path(run)).lam.numel() == 200  # ems' defaults
    assert main(["tune-steps", str(run), *quick, "--out", str(out)]) == 0
    assert "estimating" not in capsys.readouterr().err  # found in the folder this time
    for flags, base in ((["--coefficients"], "unipc"), (["--method", "pattern"], "dpmpp_2m")):
        assert main(["tune-steps", str(run), *quick, *flags, "--out", str(out)]) == 0
        assert json.loads(out.read_text())["base_solver"] == base
    statistics_path(run).unlink()
    assert main(["tune-steps", str(run), *quick, "--solver", "dpm_solver_v3", "--method",
                 "pattern", "--out", str(out)]) == 2
    assert "needs the model's statistics" in capsys.readouterr().err
    with monkeypatch.context() as m:  # a folder that cannot be written: tuned all the same
        save, folder = ModelStatistics.save, statistics_path(run)

        def refuse(self, path):
            if Path(path) == folder:
                raise PermissionError(13, "Permission denied")
            return save(self, path)
        m.setattr(ModelStatistics, "save", refuse)
        assert main(["tune-steps", str(run), *quick, "--out", str(out)]) == 0
    assert "could not write" in capsys.readouterr().err and not statistics_path(run).exists()
    assert main(["sample", str(run), "-n", "8", "--timesteps-file", str(out), "--out",
                 str(tmp_path / "s")]) == 0  # --out's file carries the statistics


def test_tuned_coefficients_beat_a_tuned_grid_on_held_out_noise(tmp_path):
    """BNS (grid + coefficients of DPM-Solver++(2M), window 3) on an 8-D, 3-component mixture
    under EDM, 4 steps: calibration 256 draws (seed 1000), validation 256 (seed 1001),
    evaluation 256 (seed 0). Measured: tuned grid alone (64 draws) RMSE 0.145, BNS 0.080;
    asserted BNS < 0.7× the tuned grid and < 0.5× the best named schedule."""
    gm = GaussianMixture.random(8, k=3, seed=1)
    sde = sdeflow.EDMSDE()
    model = gm.denoiser(sde)
    draw = lambda n, s: sde.prior_sample((n, 8), generator=gen(s), dtype=torch.float64)  # noqa: E731
    x_eval = draw(256, 0)
    ref = sdeflow.sample(model, x_eval, solver="rk45", rtol=1e-8, atol=1e-8)

    def err(res=None, **kw):
        kw = kw or dict(solver=res.solver, timesteps=res.tensor(sde), **res.solver_opts)
        return (sdeflow.sample(model, x_eval, **kw) - ref).pow(2).mean().sqrt().item()
    grid = tune_timesteps(model, draw(64, 1000), x_heldout=draw(64, 1001), solver="dpmpp_2m",
                          steps=4, max_evals=200, fallback=False)  # the tuned grid itself
    bns = tune_timesteps(model, draw(256, 1000), x_heldout=draw(256, 1001), solver="dpmpp_2m",
                         steps=4, max_evals=200, coefficients=True)
    assert bns.solver == "bns" and bns.base_solver == "dpmpp_2m" and not bns.kept_start
    assert bns.heldout_loss < bns.heldout_start_loss
    named = min(err(solver="dpmpp_2m", steps=4, schedule=s) for s in ("karras", "logsnr"))
    loaded = TunedSchedule.load(bns.save(tmp_path / "bns.json"))
    assert loaded == bns
    e_grid, e_bns = err(grid), err(loaded)
    assert e_bns < 0.7 * e_grid and e_bns < 0.5 * named, (e_bns, e_grid, named)
    with pytest.raises(ValueError, match="method='gradient'"):
        tune_timesteps(model, draw(8, 1), solver="dpmpp_2m", coefficients=True, method="pattern")
    with pytest.raises(ValueError, match="window"):
        tune_timesteps(model, draw(8, 1), solver="dpmpp_2m", coefficients=True, window=0)


def test_step_form_round_trips():
    from sdeflow.samplers.bespoke import linear_coefficients, step_form, unrolled_form
    sde = sdeflow.VPSDE()
    ts = sdeflow.schedules.get_timesteps(sde, 6, "logsnr", dtype=torch.float64)
    a, c = linear_coefficients(sde, "unipc", ts)
    rho, w = step_form(a, c)
    # UniPC's own step: x_{j+1} = (σ_{j+1}/σ_j) x_j + (weights on the last 3 x̂0 at most)
    torch.testing.assert_close(rho, sde.sigma(ts[1:]) / sde.sigma(ts[:-1]), rtol=1e-12, atol=0)
    assert not w.tril(-3).any()
    a2, c2 = unrolled_form(rho, w)
    torch.testing.assert_close(a2, a, rtol=1e-12, atol=0)
    torch.testing.assert_close(c2, c, rtol=1e-12, atol=1e-15)


def test_tuning_never_returns_worse_than_the_best_named_configuration(ring_edm):
    """The best named solver × schedule is chosen on the calibration draws, then compared with
    the tuned result on the held-out draws: a crippled tuning run (DDIM, 2 iterations) falls back
    to it, a good one (DPM-Solver++(2M), 150 iterations) keeps its tuned grid. Either way the
    returned configuration's held-out loss is ≤ the named candidate's, and ``heldout_loss`` is
    the returned configuration's (untrimmed held-out RMS, as ``heldout_best_named_loss``)."""
    from sdeflow.tuning import _trimmed_rms
    model, sde = ring_edm
    draw = lambda n, s: sde.prior_sample((n, 2), generator=gen(s), dtype=torch.float64)  # noqa: E731
    x_val = draw(64, 1001)
    ref = sdeflow.sample(model, x_val, solver="rk45", rtol=1e-6, atol=1e-6)

    def heldout(res):
        x = sdeflow.sample(model, x_val, solver=res.solver, timesteps=res.tensor(sde),
                           **res.solver_opts)
        return _trimmed_rms((x - ref).pow(2).mean(1))
    weak = tune_timesteps(model, draw(32, 1000), x_heldout=x_val, reference_heldout=ref,
                          solver="ddim", steps=4, max_evals=2)
    assert weak.fallback is not None and weak.solver != "ddim"
    name, schedule = weak.fallback.split("/")
    assert name.startswith(weak.solver) and (name == weak.solver) == (not weak.solver_opts)
    assert "(3)" not in name and schedule in sdeflow.list_schedules()
    assert heldout(weak) == pytest.approx(weak.heldout_loss, rel=1e-6)
    assert weak.heldout_loss == pytest.approx(weak.heldout_best_named_loss, rel=1e-9)
    good = tune_timesteps(model, draw(64, 1000), x_heldout=x_val, reference_heldout=ref,
                          solver="dpmpp_2m", steps=4, max_evals=150)
    assert good.fallback is None and heldout(good) == pytest.approx(good.heldout_loss, rel=1e-6)
    assert good.heldout_loss < good.heldout_best_named_loss
    off = tune_timesteps(model, draw(32, 1000), x_heldout=x_val, reference_heldout=ref,
                         solver="ddim", steps=4, max_evals=2, fallback=False)
    assert off.fallback is None and heldout(off) > weak.heldout_loss  # what the fallback fixes
    assert heldout(off) == pytest.approx(off.heldout_loss, rel=1e-6)


def test_tuning_refuses_cld_models_and_free_end_starts(ring_edm):
    from sdeflow.cld import CLD, CLDModel
    model, sde = ring_edm
    cld_model = CLDModel(lambda u, t: u[:, :2] * 0, CLD(), precondition=None)
    with pytest.raises(TypeError, match="tuning works on Denoiser models"):
        tune_timesteps(cld_model, torch.zeros(4, 4), steps=2)
    x = sde.prior_sample((4, 2), generator=gen(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="vp_trailing.*ends early"):
        tune_timesteps(model, x, steps=2, start_schedules=("vp_trailing",), max_evals=1)


def test_stratified_draws_are_unbiased_and_concentrate_the_hard_draws():
    """``stratified_draws`` on a 16-D mixture under EDM with iPNDM at 8 steps, where 93 % of the
    pool's squared error sits in its worst 5 % of draws (those that change component). Over 40
    re-drawn strata, Σ w e of the per-draw error e (against RK45) has mean equal to the pool's
    mean error (within 4 standard errors) and a spread below 0.2× that of the mean of as many
    plain draws (measured 0.01×); weighting the same draws uniformly (1/n) overestimates the
    pool error by far more than 4 standard errors — the weights are what makes it unbiased."""
    from sdeflow.tuning import stratified_draws
    gm = GaussianMixture.random(16, k=4, seed=3, std_range=(0.05, 0.2))
    sde = sdeflow.EDMSDE()
    model = gm.denoiser(sde)
    pool = sde.prior_sample((512, 16), generator=gen(7), dtype=torch.float64)
    ref = sdeflow.sample(model, pool, solver="rk45", rtol=1e-7, atol=1e-7)
    e = (sdeflow.sample(model, pool, solver="ipndm", steps=8) - ref).pow(2).mean(1)
    n, reps = 32, 40
    strat, uniform, plain = [], [], []
    for r in range(reps):
        idx, w = stratified_draws(model, pool, n, solver="ipndm", steps=8, generator=gen(r))
        assert w.sum().item() == pytest.approx(1.0) and len(set(idx.tolist())) == n
        strat.append((w * e[idx]).sum())
        uniform.append(e[idx].mean())
        plain.append(e[torch.randperm(512, generator=gen(10_000 + r))[:n]].mean())
    strat, uniform, plain = map(torch.stack, (strat, uniform, plain))
    se = strat.std() / reps ** 0.5
    assert abs(strat.mean() - e.mean()) < 4 * se
    assert strat.std() < 0.2 * plain.std()  # measured: 0.01
    assert uniform.mean() - e.mean() > 20 * se
    with pytest.raises(ValueError, match="pool size"):
        stratified_draws(model, pool, 513)
    with pytest.raises(ValueError, match="sum to 1"):
        tune_timesteps(model, pool[:4], steps=2, max_evals=1,
                       calibration_weights=torch.full((4,), 0.3, dtype=torch.float64))


def test_pool_losses_see_rare_crossings_that_plain_validation_misses():
    """``pool_losses`` on synthetic answers over a pool of 4096 draws (8-D): candidate A has a
    small error everywhere (RMS 0.05); B is more accurate on typical draws (0.04) but sends 6
    draws (0.15 %) 3 units away, as a grid that pushes a draw into another mode does — over the
    pool B is 2.4× worse. With 128 references chosen by disagreement, A wins on every one of 20
    re-drawn random strata; 128 plain validation draws choose B in most of them (the failure the
    pool is for). B's estimate is unbiased (mean of 200 strata within 4 standard errors of the
    pool value) and, with C = A but for the 6 crossed draws, the estimated MSE difference C − A
    is the pool's exactly (every differing draw is enumerated)."""
    from sdeflow.tuning import pool_losses
    N, D, n = 4096, 8, 128
    g = gen(0)
    truth = torch.randn(N, D, generator=g, dtype=torch.float64)
    a = truth + 0.05 * torch.randn(N, D, generator=g, dtype=torch.float64)
    b = truth + 0.04 * torch.randn(N, D, generator=g, dtype=torch.float64)
    crossed = torch.randperm(N, generator=g)[:6]
    b[crossed] += 3.0
    c = a.clone()
    c[crossed] += 3.0
    pool = torch.arange(N, dtype=torch.float64)[:, None]  # draws name their own reference
    calls = []

    def reference(x):
        calls.append(len(x))
        return truth[x[:, 0].long()]
    mse = lambda y: (y - truth).pow(2).mean(1)  # noqa: E731
    assert mse(b).mean().sqrt() > 2 * mse(a).mean().sqrt()
    wins, plain_b = 0, 0
    for r in range(20):
        est = pool_losses(dict(tuned=b, a=a), reference, pool, n, generator=gen(r))
        wins += est["a"] < est["tuned"]
        idx = torch.randperm(N, generator=gen(1000 + r))[:n]
        plain_b += mse(b)[idx].mean() < mse(a)[idx].mean()
    assert wins == 20 and plain_b >= 10 and set(calls) == {n}
    ests = torch.tensor([pool_losses(dict(tuned=a, b=b), reference, pool, n,
                                     generator=gen(100 + r))["b"] ** 2 for r in range(200)],
                        dtype=torch.float64)
    assert abs(ests.mean() - mse(b).mean()) < 4 * ests.std() / 200 ** 0.5
    est = pool_losses(dict(tuned=a, c=c), reference, pool, n, generator=gen(5))
    assert est["c"] ** 2 - est["tuned"] ** 2 == pytest.approx(
        (mse(c).mean() - mse(a).mean()).item(), rel=1e-9)
    # the power: a 10 % error on the crossed draws' distance is seen
    c2 = a.clone()
    c2[crossed] += 3.3
    est2 = pool_losses(dict(tuned=a, c=c2), reference, pool, n, generator=gen(5))
    assert est2["c"] ** 2 - est2["tuned"] ** 2 > 1.15 * (est["c"] ** 2 - est["tuned"] ** 2)


def test_tuning_validates_on_a_pool_and_returns_the_best_candidate_over_it(ring_edm):
    """``heldout_draws``: tuning DDIM's 4-step grid for 2 iterations (a weak tuned result) with
    a validation pool of 1024 draws, 128 of them with references. The candidates' estimated
    losses are recorded; the returned configuration is the one with the least, and over the
    whole pool (1024 references) its RMS error is within 5 % of the best candidate's."""
    model, sde = ring_edm
    draw = lambda n, s: sde.prior_sample((n, 2), generator=gen(s), dtype=torch.float64)  # noqa: E731
    pool = draw(1024, 1001)
    res = tune_timesteps(model, draw(32, 1000), x_heldout=pool, heldout_draws=128,
                         solver="ddim", steps=4, max_evals=2)
    assert res.heldout_pool == 1024 and "tuned" in res.heldout_losses
    # the tuned grid, its start, 3 named configurations and auto's (iPNDM with its lookahead)
    assert "ddim/" + res.start_schedule in res.heldout_losses and len(res.heldout_losses) == 6
    assert res.heldout_loss == min(res.heldout_losses.values())
    assert res.heldout_best_named_loss == res.heldout_losses[res.best_named]
    assert res.fallback is not None and res.solver != "ddim"  # a named configuration won
    ref = sdeflow.sample(model, pool, solver="rk45", rtol=1e-6, atol=1e-6)

    def over_pool(solver, ts, opts):
        x = sdeflow.sample(model, pool, solver=solver, timesteps=ts, **opts)
        return (x - ref).pow(2).mean().sqrt().item()
    from sdeflow.tuning import _auto_candidate, _named_grid, _Objective
    obj = _Objective(model, "ddim", 4, {}, {}, True, False, 3, 0.2)
    truth, auto = {}, _auto_candidate(obj, 2)
    for label in res.heldout_losses:
        if label == "tuned":
            continue
        if label in auto:
            grid, name, opts = auto[label]
            truth[label] = over_pool(name, grid, opts)
            continue
        name, schedule = label.split("/")
        opts = dict(order=3) if name.endswith("(order=3)") else {}
        truth[label] = over_pool(name.split("(")[0], _named_grid(obj, schedule), opts)
    returned = over_pool(res.solver, res.tensor(sde), res.solver_opts)
    assert returned <= 1.05 * min(truth.values())
    with pytest.raises(ValueError, match="pool size"):
        tune_timesteps(model, draw(8, 0), x_heldout=pool, heldout_draws=1024, steps=2)
    with pytest.raises(ValueError, match="give neither"):
        tune_timesteps(model, draw(8, 0), x_heldout=pool, heldout_draws=8, steps=2,
                       reference_heldout=pool)
    with pytest.raises(ValueError, match="needs x_heldout"):
        tune_timesteps(model, draw(8, 0), heldout_draws=8, steps=2)


def test_named_ranking_for_the_pool_drops_configurations_with_the_same_answers(ring_edm):
    """On two steps DPM-Solver++(3M) has no history beyond 2M's, so the two give the same
    answers on every schedule: the plain ranking lists both, the ranking that fills the
    validation pool's candidate slots (``distinct``) keeps one. On six steps they differ and
    both are kept (the check does not merge distinct configurations)."""
    from sdeflow.tuning import _Objective, _rank_named
    model, sde = ring_edm
    x = sde.prior_sample((64, 2), generator=gen(3), dtype=torch.float64)
    ref = sdeflow.sample(model, x, solver="rk45", rtol=1e-7, atol=1e-7)

    def pairs(steps, distinct):
        obj = _Objective(model, "ddim", steps, {}, {}, True, False, 3, 0.2)
        ranked = _rank_named(obj, (x, ref, None), distinct=distinct)
        return ranked, {(n, s) for n, _, s in ranked}
    full, p_full = pairs(2, False)
    dist, p_dist = pairs(2, True)
    schedules = {s for _, _, s in full}
    assert all(("dpmpp_2m", s) in p_full and ("dpmpp_3m", s) in p_full for s in schedules)
    assert not any(("dpmpp_2m", s) in p_dist and ("dpmpp_3m", s) in p_dist for s in schedules)
    assert len(schedules) <= len(full) - len(dist)  # at least one per schedule dropped
    _, p6 = pairs(6, True)
    assert all(("dpmpp_2m", s) in p6 and ("dpmpp_3m", s) in p6 for s in schedules)


def test_choice_instability_is_large_only_where_a_few_rare_draws_decide():
    """``choice_instability`` on synthetic per-draw errors of 4096 draws (uniform weights):
    B beats A on typical draws (error 0.8× A's, 2.0 less in sum). With B sending 3 draws into
    another mode (error 1 each, 0.07 %) B loses over the pool, but the choice rests on those 3
    draws and a re-drawn pool would often have two or fewer (42 %) — the bootstrap says so
    (> 0.25). With 40 such draws (1 %)
    or with B 2× worse on every draw, the choice is stable (≤ 0.02); a copy of the chosen
    candidate under another name does not count as a change."""
    from sdeflow.tuning import choice_instability
    N = 4096
    g = gen(3)
    a = 0.05 ** 2 * torch.rand(N, generator=g, dtype=torch.float64) * 2
    w = torch.full((N,), 1.0 / N, dtype=torch.float64)

    def b_with(crossed: int) -> torch.Tensor:
        b = 0.8 * a.clone()
        b[torch.randperm(N, generator=g)[:crossed]] = 1.0
        return b
    rare = dict(tuned=b_with(3), a=a)
    assert (rare["tuned"] @ w) > (a @ w)  # A is chosen
    assert (0.2 * a).sum() == pytest.approx(2.0, rel=0.1)  # B's saving on typical draws
    assert choice_instability(rare, w, generator=gen(0)) > 0.25
    assert choice_instability(dict(tuned=b_with(40), a=a), w, generator=gen(0)) <= 0.02
    assert choice_instability(dict(tuned=2 * a, a=a), w, generator=gen(0)) <= 0.02
    assert choice_instability(dict(tuned=a, copy=a.clone()), w, generator=gen(0)) == 0.0
    # ... nor one reached by another route, equal up to rounding (a named grid the pool line
    # search returned as the tuned one); a real difference of 1e-6 still counts
    from sdeflow.tuning import unseen_lead
    rounded = dict(tuned=a * (1 + 1e-13), named=a)
    assert choice_instability(rounded, w, generator=gen(0)) == 0.0
    assert unseen_lead(rounded, w, N) == math.inf
    assert unseen_lead(dict(tuned=a * (1 + 1e-6), named=a), w, N) < 1.0


def test_pool_validation_grows_the_pool_while_the_choice_is_unstable(ring_edm, monkeypatch):
    """``heldout_start``: validation starts on the pool's first 256 draws and doubles them while
    the bootstrap instability exceeds ``max_p_change``: with 1 it stops at 256, with 0 it goes
    on until the choice is certain or the pool (1024) is used up; bad sizes are refused."""
    model, sde = ring_edm
    draw = lambda n, s: sde.prior_sample((n, 2), generator=gen(s), dtype=torch.float64)  # noqa: E731
    pool, cal = draw(1024, 1001), draw(32, 1000)
    kw = dict(x_heldout=pool, heldout_draws=32, solver="ipndm", steps=8, max_evals=2,
              heldout_start=256, unseen_draws=0.0)  # the bootstrap rule alone
    # near-tied candidates: the choice is unstable at 256 draws
    first = tune_timesteps(model, cal, max_p_change=1.0, **kw)
    assert first.heldout_pool == 256 and 0.0 <= first.heldout_p_change <= 1.0
    import sdeflow.tuning as tuning
    ref_rows, plain_sample = [], tuning.sample

    def counting(model, x, **opts):  # the references' rows (RK45, tuning's default reference)
        if opts.get("solver") == "rk45":
            ref_rows.append(len(x))
        return plain_sample(model, x, **opts)
    monkeypatch.setattr(tuning, "sample", counting)
    grown = tune_timesteps(model, cal, max_p_change=0.0, **kw)
    assert grown.heldout_pool == 1024 or grown.heldout_p_change == 0.0
    stages = [256 * 2 ** k for k in range(3) if 256 * 2 ** k <= grown.heldout_pool]
    # references: 32 per 256 pool draws at each stage; a draw chosen again is not re-solved
    solved = sum(ref_rows) - 32  # minus the calibration draws' own reference
    assert solved <= sum(32 * s // 256 for s in stages)
    assert len(stages) > 1 and solved < sum(32 * s // 256 for s in stages)
    assert grown.heldout_pool > 256 or first.heldout_p_change == 0.0
    assert grown.heldout_loss == min(grown.heldout_losses.values())
    with pytest.raises(ValueError, match="heldout_start"):
        tune_timesteps(model, cal, **{**kw, "heldout_start": 2048})
    with pytest.raises(ValueError, match="heldout_start"):
        tune_timesteps(model, cal, **{**kw, "heldout_start": 16})
    with pytest.raises(ValueError, match="max_p_change"):
        tune_timesteps(model, cal, max_p_change=1.5, **kw)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="unseen_draws"):
            tune_timesteps(model, cal, **{**kw, "unseen_draws": bad})


def test_unseen_lead_flags_a_lead_that_rests_on_absent_rare_draws():
    """``unseen_lead`` on synthetic per-draw errors of 4096 draws (uniform weights). B is 0.95×
    A on typical draws and sends none to another mode; A sends 2 (error 1 each). The bootstrap
    calls B's win stable (≤ 0.1) — but B's lead (≈ 2.5 crossings' worth) is less than the 3
    crossings the rule of three allows a candidate seen with none: unseen_lead < 1, the pool
    must grow. Power: with A crossing on 12, or with no crossings at all and B 0.95× A, the lead
    covers three unseen draws (≥ 1); where B truly crosses at A's rate ×3 (6 per 4096), the
    doubled pool shows it and chooses A. With stratified validation weights (256 of the 4096
    pool draws: the 128 where the candidates disagree most at 1/4096, the rest at their larger
    weight) the lead is in the same units: the pool size sets them, not the validation size."""
    from sdeflow.tuning import choice_instability, unseen_lead
    N = 4096
    g = gen(4)
    a = 0.05 ** 2 * torch.rand(N, generator=g, dtype=torch.float64) * 2
    w = torch.full((N,), 1.0 / N, dtype=torch.float64)

    def crossed(e: torch.Tensor, k: int) -> torch.Tensor:
        e = e.clone()
        e[torch.randperm(len(e), generator=g)[:k]] = 1.0
        return e
    two = dict(tuned=0.95 * a, a=crossed(a, 2))
    assert choice_instability(two, w, generator=gen(0)) <= 0.1  # the bootstrap trusts it
    assert unseen_lead(two, w, N) < 1.0  # the rule of three does not
    assert unseen_lead(dict(tuned=0.95 * a, a=crossed(a, 12)), w, N) >= 1.0
    assert unseen_lead(dict(tuned=0.95 * a, a=a), w, N) >= 1.0  # no rare draws anywhere
    assert unseen_lead(two, w, N, count=0.0) == math.inf
    assert unseen_lead(dict(tuned=a, copy=a.clone()), w, N) == math.inf  # no real rival
    # the doubled pool (8192): B's 12 crossings outweigh A's 4 — the choice flips to A
    a2 = torch.cat([a, 0.05 ** 2 * torch.rand(N, generator=g, dtype=torch.float64) * 2])
    b2 = 0.95 * a2
    b2[N + torch.randperm(N, generator=g)[:12]] = 1.0
    w2 = torch.full((2 * N,), 1.0 / (2 * N), dtype=torch.float64)
    errs = dict(tuned=b2, a=crossed(a2, 4))
    assert (errs["a"] @ w2) < (errs["tuned"] @ w2) and unseen_lead(errs, w2, 2 * N) >= 1.0
    from sdeflow.tuning import _stratify
    d = (two["a"] - two["tuned"]).abs()
    idx, ws = _stratify(d, 256, 0.5, gen(5))
    sub = lambda errs: {k: v[idx] for k, v in errs.items()}  # noqa: E731
    assert unseen_lead(sub(two), ws, N) == pytest.approx(unseen_lead(two, w, N), rel=0.5)
    assert unseen_lead(sub(two), ws, N) < 1.0
    assert unseen_lead(sub(dict(tuned=0.95 * a, a=crossed(a, 12))), ws, N) >= 1.0


def test_pool_validation_always_compares_auto_and_grows_on_a_thin_lead(ring_edm, monkeypatch):
    """``solver="auto"``'s configuration at the same NFE is among the validation candidates
    whatever the calibration ranking; ``unseen_draws`` grows the pool by itself (bootstrap check
    off: ``max_p_change=1``) when the lead is thinner than that many worst draws, and not at 0."""
    from sdeflow.samplers.auto import auto_config
    model, sde = ring_edm
    draw = lambda n, s: sde.prior_sample((n, 2), generator=gen(s), dtype=torch.float64)  # noqa: E731
    pool, cal = draw(1024, 1001), draw(32, 1000)
    kw = dict(x_heldout=pool, heldout_draws=32, solver="dpmpp_2m", steps=6, max_evals=2,
              heldout_start=256, max_p_change=1.0, named_candidates=1)
    import sdeflow.tuning as tuning
    cfg = auto_config(sde, 7, 2)
    label = tuning.config_label(cfg["solver"], cfg["opts"], cfg["schedule"])
    # the calibration ranking's best named configuration is another one
    monkeypatch.setattr(tuning, "_rank_named", lambda *a, **k: [("dpmpp_2m", {}, "karras")])
    never = tune_timesteps(model, cal, unseen_draws=0.0, **kw)
    assert set(never.heldout_losses) == {"tuned", "dpmpp_2m/logsnr", "dpmpp_2m/karras", label}
    assert never.heldout_loss == never.heldout_losses[label]  # auto wins here, and is returned
    assert never.fallback == label and never.solver == cfg["solver"]
    assert never.heldout_pool == 256 and never.heldout_lead is None
    always = tune_timesteps(model, cal, unseen_draws=1e9, **kw)  # no lead covers 1e9 draws
    assert always.heldout_pool == 1024 and always.heldout_lead < 1.0
    # without a pool (plain held-out draws) the fall-back compares auto's configuration too
    plain = tune_timesteps(model, cal, x_heldout=pool[:64], solver="dpmpp_2m", steps=6,
                           max_evals=2)
    assert plain.best_named == label and plain.fallback == label
    # and no fall-back, no candidates beyond the tuned grid and its start
    bare = tune_timesteps(model, cal, fallback=False, **{**kw, "unseen_draws": 0.0})
    assert set(bare.heldout_losses) == {"tuned", "dpmpp_2m/logsnr"}


def test_auto_candidate_carries_the_order_auto_chose_for_a_noise_predicting_network():
    """The tuned pipeline's ``auto`` candidate runs what ``sample(solver="auto")`` would: for
    an ε network iPNDM with the lowered order (named with it), for an x̂0 one the default; with
    DPM-Solver-v3's statistics among the tuned solver's options, an ε network's ``auto`` from
    D = 16 is that solver on ``gits_trailing`` with them."""
    from types import SimpleNamespace

    from sdeflow import Denoiser
    from sdeflow.tuning import _auto_candidate
    sde = sdeflow.VPSDE()
    net = lambda x, t: torch.zeros_like(x)  # noqa: E731
    look = {"first_step": "lookahead"}  # one more step on the same calls (up to 8 for ε)
    cases = [("eps", 6, "ipndm(order=2, first_step=lookahead)/gits_trailing",
              {"order": 2, **look}, 8),
             ("eps", 11, "ipndm(order=3)/gits_trailing", {"order": 3}, 12),
             ("x0", 6, "ipndm(first_step=lookahead)/gits_trailing", look, 8)]
    for prediction, steps, label, opts, points in cases:
        obj = SimpleNamespace(model=Denoiser(net, sde, prediction=prediction), steps=steps,
                              opts={})
        cand = _auto_candidate(obj, 2)
        assert list(cand) == [label]
        grid, solver, got = cand[label]
        assert (solver, got, len(grid)) == ("ipndm", opts, points)
    stats = object()  # only carried through
    obj = SimpleNamespace(model=Denoiser(net, sde, prediction="eps"), steps=7,
                          opts={"statistics": stats})
    (label, (grid, solver, got)), = _auto_candidate(obj, 64).items()
    assert (label, solver, got, len(grid)) == ("dpm_solver_v3/gits_trailing", "dpm_solver_v3",
                                               {"statistics": stats}, 8)
    obj.model = Denoiser(net, sde, prediction="x0")  # an x̂0 network: the statistics go unused
    assert list(_auto_candidate(obj, 64)) == ["ipndm(first_step=lookahead)/ays_trailing"]


def test_blend_grids_interpolates_in_log_snr():
    sde = sdeflow.VPSDE()
    a = get_timesteps(sde, 6, "karras")
    b = get_timesteps(sde, 6, "gits")
    assert torch.allclose(blend_grids(sde, a, b, 0.0), a, rtol=1e-9, atol=0)
    assert torch.allclose(blend_grids(sde, a, b, 1.0), b, rtol=1e-9, atol=0)
    mid = blend_grids(sde, a, b, 0.5)
    assert torch.allclose(sde.log_snr(mid), (sde.log_snr(a) + sde.log_snr(b)) / 2, atol=1e-9)
    assert (mid[1:] < mid[:-1]).all() and mid[0] == a[0] and mid[-1] == a[-1]
    trailing = get_timesteps(sde, 6, "ays_trailing", allow_free_end=True)  # ends early
    free = blend_grids(sde, a, trailing, 0.5)
    assert a[-1] < free[-1] < trailing[-1]
    with pytest.raises(ValueError, match="same length"):
        blend_grids(sde, a, b[:-1], 0.5)
    with pytest.raises(ValueError, match="alpha"):
        blend_grids(sde, a, b, 1.5)


def test_pool_line_search_counts_crossings_the_gradient_search_cannot_see():
    """A grid tuned by gradient on 32 plain draws fits the draws that stay in their component;
    scored on a pool of 2048 (references for 256) with the named schedules and blends, the
    search returns a grid whose exact pool RMS — every draw against a 256-step RK4 reference —
    is at most the best named schedule's. Power: the gradient-tuned grid itself fails that
    check (it crosses more), by far more than the pool estimate's error."""
    gm = GaussianMixture.random(32, k=6, seed=3)
    sde = sdeflow.VPSDE()
    model = gm.denoiser(sde)
    g = torch.Generator().manual_seed(1)
    pool = sde.prior_sample((2048, 32), generator=g, dtype=torch.float64)
    cal = sde.prior_sample((32, 32), generator=g, dtype=torch.float64)
    ref = sdeflow.sample(model, pool, solver="rk4", steps=256)

    def exact(res):
        x = sdeflow.sample(model, pool, solver=res.solver, timesteps=res.tensor(sde))
        return (x - ref).pow(2).mean().sqrt().item()
    plain = tune_timesteps(model, cal, solver="ipndm", steps=5, max_evals=60)
    found = tune_timesteps(model, cal, solver="ipndm", steps=5, max_evals=60,
                           calibration_pool=pool, pool_draws=256)
    assert plain.search_choice is None and plain.search_runs == 0
    assert found.search_choice == min(found.search_losses, key=found.search_losses.get)
    # tuned, 12 named schedules, then the blends of tuned + 3 partners: 6 pairs × 3 weights
    assert len(found.search_losses) == found.search_runs == 13 + 3 * 6
    named = min((sdeflow.sample(model, pool, solver="ipndm", steps=5, schedule=s) - ref)
                .pow(2).mean().sqrt().item() for s in found.search_losses
                if s != "tuned" and "+" not in s)  # every named schedule, exactly
    assert exact(found) <= 1.02 * named
    assert exact(plain) > 1.2 * named  # the same check rejects the gradient-tuned grid
    # the returned grid is the chosen blend of the labelled grids
    if "+" in found.search_choice:
        a, rest = found.search_choice.split("+")
        alpha, b = rest.split("*")
        grid = {"tuned": plain.tensor()}
        for name in (a, b):
            if name != "tuned":
                grid[name] = get_timesteps(sde, 5, name, allow_free_end=True)
        want = blend_grids(sde, grid[a], grid[b], float(alpha))
        assert torch.allclose(found.tensor(), want, rtol=1e-6, atol=0)
    # a grid that ends at t_min keeps its end through the search's free-end form, so a named
    # schedule scored there is that schedule (iPNDM's last step included: ends_early)
    obj = _Objective(model, "ipndm", 5, {}, {}, True, False, 3, 0.2)
    for name in ("karras", "logsnr", "ays_trailing"):
        grid = get_timesteps(sde, 5, name, allow_free_end=True)
        back = obj.unpack(theta_from_timesteps(sde, grid, sde.t_min, min_gap=0.0))[0]
        assert torch.allclose(back, grid, rtol=1e-9, atol=0)
        assert ends_early(sde, back) == ends_early(sde, grid)
    with pytest.raises(ValueError, match="coefficients"):
        tune_timesteps(model, cal, solver="unipc", steps=5, coefficients=True,
                       calibration_pool=pool)
    with pytest.raises(ValueError, match="shared by every draw"):
        tune_timesteps(model, cal, solver="ipndm", steps=5, calibration_pool=pool,
                       cond=dict(y=torch.zeros(len(cal), dtype=torch.long)))
    with pytest.raises(ValueError, match="shaped like x_cal"):
        tune_timesteps(model, cal, solver="ipndm", steps=5, calibration_pool=pool[:, :8])
    with pytest.raises(ValueError, match="pool_draws"):
        tune_timesteps(model, cal, solver="ipndm", steps=5, calibration_pool=pool,
                       pool_draws=4096)
    with pytest.raises(ValueError, match="pool_partners"):
        tune_timesteps(model, cal, solver="ipndm", steps=5, calibration_pool=pool,
                       pool_partners=-1)


def test_choose_tuned_compares_tuned_files_on_one_common_pool(ring_edm, capsys):
    """Three tuned files for one budget (iPNDM on three grids): ``choose_tuned`` runs each on
    one pool of 512 draws with references for 256 and returns the least-loss one; its loss
    estimates match the exact pool RMS (every draw against RK45) to 2 %, and the one chosen is
    the exact argmin, ≥ 10 % ahead of the next — a 10 % worse file is not chosen."""
    from sdeflow.tuning import choose_tuned
    model, sde = ring_edm
    files = {name: TunedSchedule(solver="ipndm", steps=6, sde=sde.config(), calibration_loss=0.0,
                                 start_loss=0.0, start_schedule=name,
                                 timesteps=get_timesteps(sde, 6, name).tolist())
             for name in ("karras", "logsnr", "uniform")}
    pool = sde.prior_sample((512, 2), generator=gen(5), dtype=torch.float64)
    best, losses = choose_tuned(model, files, pool, 256, generator=gen(0))
    ref = sdeflow.sample(model, pool, solver="rk45", rtol=1e-6, atol=1e-6)
    exact = {k: (sdeflow.sample(model, pool, solver="ipndm", timesteps=f.tensor(sde)) - ref)
             .pow(2).mean().sqrt().item() for k, f in files.items()}
    for k in files:
        assert losses[k] == pytest.approx(exact[k], rel=0.02)
    assert best == min(exact, key=exact.get)
    runner_up = sorted(exact.values())[1]
    assert runner_up > 1.1 * exact[best]
    # in chunks, with a progress bar (3 files × 4 chunks + 2 reference chunks): same answer
    capsys.readouterr()
    assert choose_tuned(model, files, pool, 256, generator=gen(0), chunk=128,
                        progress=True) == (best, losses)
    err = capsys.readouterr().err
    assert "choose among tuned" in err and "14/14" in err
    with pytest.raises(ValueError, match="at least one"):
        choose_tuned(model, {}, pool)
    with pytest.raises(ValueError, match="pool size"):
        choose_tuned(model, files, pool, 512)
    with pytest.raises(ValueError, match="tuned for SDE"):
        choose_tuned(GaussianMixture.ring().denoiser(sdeflow.VPSDE()), files, pool, 256)
    other = TunedSchedule(solver="ipndm", steps=9, sde=sde.config(), calibration_loss=0.0,
                          start_loss=0.0, start_schedule="karras",
                          timesteps=get_timesteps(sde, 9, "karras").tolist())
    with pytest.raises(ValueError, match="different numbers of network calls"):
        choose_tuned(model, {**files, "10 NFE": other}, pool, 256)


def test_config_label_keeps_one_slash_the_schedules():
    """Candidate labels name a file option (DPM-Solver-v3's statistics) by its file name and an
    object by its type, so the label's only "/" separates the schedule (labels are parsed as
    ``solver(opts)/schedule``)."""
    from pathlib import Path

    from sdeflow.tuning import config_label
    for stats in ("/runs/a/ckpt-1/ems.safetensors", Path("/runs/a/ems.safetensors")):
        label = config_label("dpm_solver_v3", {"statistics": stats}, "quadratic")
        assert label == "dpm_solver_v3(statistics=ems.safetensors)/quadratic"
    assert config_label("ipndm", {"order": 2, "first_step": "lookahead"}, "gits_trailing") == \
        "ipndm(order=2, first_step=lookahead)/gits_trailing"
    assert config_label("dpm_solver_v3", {"statistics": object()}, "ays") == \
        "dpm_solver_v3(statistics=object)/ays"
    assert config_label("ddim", {}, "logsnr") == "ddim/logsnr"

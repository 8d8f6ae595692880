"""DPM-Solver-v3 (Zheng et al. 2023) and its empirical model statistics, against ground truth in
float64: the statistics of a Gaussian are its closed-form ones, the solver is exact for it in
one step (DPM-Solver++ is not; statistics 10 % off are not), it is DDIM with zero statistics,
it converges at order p (p + 1 with the corrector) on every SDE, and bad statistics files and
inputs get clear errors."""
import math
from pathlib import Path

import pytest
import torch

import sdeflow
from sdeflow.checkpoint import CheckpointError
from sdeflow.oracle import GaussianMixture
from sdeflow.samplers.ems import (ModelStatistics, estimate_statistics, same_weights,
                                  statistics_path, weights_fingerprint)
from sdeflow.schedules import get_timesteps

from ..conftest import SDES, gen

MEAN = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
STD = torch.tensor([0.3, 1.2, 0.05], dtype=torch.float64)


def _gaussian():
    return GaussianMixture(torch.ones(1), MEAN[None], covs=torch.diag(STD ** 2)[None])


def _exact_flow(sde, x_T):
    """The PF-ODE map of N(μ, diag c) from T to t_min: in x̃ = x/s, σ̃ = σ/s each coordinate is
    μ + (x̃ − μ)·√((c + σ̃²)/(c + σ̃_T²))."""
    t = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    nu, s = sde.noise_level(t), sde.s(t)
    c = STD ** 2
    return s[1] * (MEAN + (x_T / s[0] - MEAN) * ((c + nu[1] ** 2) / (c + nu[0] ** 2)).sqrt())


@pytest.fixture(scope="module")
def gaussian_stats():
    out = {}
    for name in ("vp", "edm"):
        sde = SDES[name][0]()
        model = _gaussian().denoiser(sde)
        out[name] = (model, estimate_statistics(model, (3,), n=64, points=800, seed=3,
                                                dtype=torch.float64))
    return out


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_statistics_of_a_gaussian_are_its_closed_form(gaussian_stats, name):
    """For N(μ, diag c): ∇ₓx̂0 = diag(αc/(α²c + σ²)), so l is exact (Hutchinson's estimator is
    exact for a diagonal Jacobian); f = x̂0 − l x = μ(1 − αl) does not depend on x, so s = 0 and
    b = df/dλ (central differences: within 1e-3 of the largest |b| on 800 points)."""
    model, st = gaussian_stats[name]
    sde = model.sde
    t = sde.t_from_log_snr(st.lam)
    alpha, sigma = sde.s(t)[:, None], sde.sigma(t)[:, None]
    c = STD ** 2
    l_exact = alpha * c / (alpha ** 2 * c + sigma ** 2)
    torch.testing.assert_close(st.l, l_exact, rtol=1e-6, atol=1e-9)
    assert st.s.abs().max() < 1e-6
    f = MEAN * (1 - alpha * l_exact)
    df = torch.gradient(f, spacing=(st.lam,), dim=0)[0]
    assert (st.b - df)[1:-1].abs().max() < 1e-3 * df.abs().max()


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_one_step_is_exact_for_a_gaussian(gaussian_stats, name):
    """One DPM-Solver-v3 step from T to t_min lands within 1e-4 (RMS) of the exact PF-ODE map;
    one DPM-Solver++ step misses by > 1e-2, and the same v3 step with l 10 % too large misses
    by > 1e-3 (statistics matter, the check has the power to see it)."""
    model, st = gaussian_stats[name]
    sde = model.sde
    x_T = sde.prior_sample((512, 3), generator=gen(1), dtype=torch.float64)
    exact = _exact_flow(sde, x_T)

    def rms(x):
        return (x - exact).pow(2).mean().sqrt().item()
    v3 = sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=1, statistics=st, denoise=False)
    assert rms(v3) < 1e-4
    dpmpp = sdeflow.sample(model, x_T, solver="dpmpp_2m", steps=1, denoise=False)
    assert rms(dpmpp) > 1e-2
    wrong = ModelStatistics(st.lam, 1.1 * st.l, st.s, st.b)
    assert rms(sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=1, statistics=wrong,
                              denoise=False)) > 1e-3


def test_zero_statistics_make_it_ddim(mixture2d):
    """With l = s = b = 0, order 1 and no corrector, each step is DDIM's (up to the trapezoid
    quadrature of the exponential integrals: 1e-6 relative)."""
    sde = sdeflow.VPSDE()
    model = mixture2d.denoiser(sde)
    lam = sde.log_snr(torch.tensor([sde.T, sde.t_min], dtype=torch.float64))
    grid = torch.linspace(float(lam[0]), float(lam[1]), 5, dtype=torch.float64)
    zero = ModelStatistics(grid, *(torch.zeros(5, 2, dtype=torch.float64) for _ in range(3)))
    x_T = sde.prior_sample((64, 2), generator=gen(2), dtype=torch.float64)
    kw = dict(steps=8, schedule="logsnr", denoise=False)
    v3 = sdeflow.sample(model, x_T, solver="dpm_solver_v3", statistics=zero, order=1,
                        corrector=False, **kw)
    ddim = sdeflow.sample(model, x_T, solver="ddim", **kw)
    torch.testing.assert_close(v3, ddim, rtol=1e-6, atol=1e-7)
    assert (v3 - sdeflow.sample(model, x_T, solver="dpmpp_2m", **kw)).abs().max() > 1e-3


def test_coefficients_in_chunks_of_dimensions_equal_all_at_once(monkeypatch):
    """Large samples: the coefficients computed over chunks of the dimensions (so the
    quadrature's memory is bounded) equal those of one pass, for a (2, 3, 5) sample."""
    from sdeflow.samplers import dpm_solver_v3 as v3
    sde = sdeflow.VPSDE()
    lam = torch.linspace(-10.5, 10.5, 30, dtype=torch.float64)
    r = torch.Generator().manual_seed(0)
    phase = torch.rand(2, 3, 5, generator=r, dtype=torch.float64) * 6
    l, s, b = (0.3 * torch.sin(k * lam.view(-1, 1, 1, 1) / 4 + phase) for k in (1, 2, 3))
    stats = ModelStatistics(lam, torch.sigmoid(l), s, b)
    ts = get_timesteps(sde, 6, "logsnr")
    whole = v3.v3_coefficients(sde, stats, ts)
    calls = []
    one = v3._coefficients
    monkeypatch.setattr(v3, "_coefficients", lambda *a: calls.append(a[1].shape) or one(*a))
    monkeypatch.setattr(v3, "_CHUNK", 4000)  # a few dimensions at a time
    chunked = v3.v3_coefficients(sde, stats, ts)
    assert len(calls) >= 3 and all(len(c) == 1 and c[0] < 30 for c in calls)
    for a, c in zip(whole, chunked):
        for x, y in zip(_flat(a), _flat(c)):
            assert x.shape == (2, 3, 5)
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    assert len(whole) == 6 and sum(len(_flat(a)) for a in whole) > 30
    # and so are the gradients in the grid (what tuning differentiates)
    grads = []
    for chunk in (1 << 22, 4000):
        monkeypatch.setattr(v3, "_CHUNK", chunk)
        tg = ts.clone().requires_grad_(True)
        sum((t * (k + 1)).sum() for k, st in enumerate(v3.v3_coefficients(sde, stats, tg))
            for t in _flat(st)).backward()
        grads.append(tg.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def _flat(step):
    return [step.phi, *step.w, step.const, *(step.wc or []),
            *([] if step.constc is None else [step.constc])]


@pytest.fixture(scope="module")
def mixture_stats(mixture2d):
    out = {}
    for name in ("vp", "ve", "subvp", "edm"):
        model = mixture2d.denoiser(SDES[name][0]())
        out[name] = estimate_statistics(model, (2,), n=256, points=200, seed=1,
                                        dtype=torch.float64)
    return out


@pytest.mark.parametrize("name", ["vp", "ve", "subvp", "edm"])
def test_orders_of_convergence(references, mixture_stats, name):
    """Max error at 40 and 80 steps on the 2-D ring against RK4 with 4096 steps (the ODE is
    exactly reformulated whatever the statistics, so they cannot change the order): order 2
    without the corrector observes 1.7–2.5 (measured 1.78–2.05), order 2 with it ≥ 2.5 (measured
    2.61–3.37); order 1 with the corrector (p − 1 + 1) fails that check (1.95–2.09). Finer grids
    than these see the statistics' linear interpolation between their 200 log-SNRs (order 2.0–2.6
    from 80 to 160 steps)."""
    model, x_T, schedule, ref = references[name]
    st = mixture_stats[name]

    def observed(order, corrector):
        errs = [(sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=n, schedule=schedule,
                                denoise=False, statistics=st, order=order, corrector=corrector)
                 - ref).abs().max().item() for n in (40, 80)]
        return math.log2(errs[0] / errs[1])
    assert 1.7 < observed(2, False) < 2.5
    assert observed(2, True) >= 2.5
    assert observed(1, True) < 2.3


def test_statistics_file_round_trip_and_errors(tmp_path, mixture2d):
    sde = sdeflow.EDMSDE()
    model = mixture2d.denoiser(sde)
    st = estimate_statistics(model, (2,), n=16, points=5, seed=0, dtype=torch.float64)
    path = st.save(tmp_path / "ems.safetensors")
    back = ModelStatistics.load(path)
    for k in ("lam", "l", "s", "b"):
        assert torch.equal(getattr(back, k), getattr(st, k))
    assert back.sde == st.sde == sde.config()
    assert back.model == st.model == weights_fingerprint(model) and back.condition is None
    # statistics of another SDE whose log-SNR range covers this one's: refused, not used
    subvp = estimate_statistics(mixture2d.denoiser(sdeflow.SubVPSDE()), (2,), n=16, points=5,
                                dtype=torch.float64)
    vp = mixture2d.denoiser(sdeflow.VPSDE())
    with pytest.raises(ValueError, match="estimated under SDE"):
        sdeflow.sample(vp, torch.zeros(4, 2, dtype=torch.float64), solver="dpm_solver_v3",
                       steps=3, statistics=subvp)
    x_T = sde.prior_sample((4, 2), generator=gen(0), dtype=torch.float64)
    by_path = sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=3, statistics=str(path))
    torch.testing.assert_close(by_path, sdeflow.sample(model, x_T, solver="dpm_solver_v3",
                                                       steps=3, statistics=st))
    # a foreign safetensors file, a truncated one
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="other.safetensors.*not model statistics"):
        ModelStatistics.load(tmp_path / "other.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        ModelStatistics.load(tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="needs statistics="):
        sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=3)
    with pytest.raises(ValueError, match=r"shape \(2,\), got \(3,\)"):
        sdeflow.sample(model, torch.zeros(4, 3, dtype=torch.float64), solver="dpm_solver_v3",
                       steps=3, statistics=st)
    narrow = ModelStatistics(st.lam[1:], st.l[1:], st.s[1:], st.b[1:])
    with pytest.raises(ValueError, match="outside the statistics' range"):
        sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=3, statistics=narrow)
    with pytest.raises(ValueError, match="non-finite"):
        ModelStatistics(st.lam, st.l * float("nan"), st.s, st.b)
    with pytest.raises(ValueError, match="increasing"):
        ModelStatistics(st.lam.flip(0), st.l, st.s, st.b)
    with pytest.raises(ValueError, match="order must be"):
        sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=3, statistics=st, order=4)
    with pytest.raises(ValueError, match="n >= 2"):
        estimate_statistics(model, (2,), n=1)


class _Net(torch.nn.Module):
    """A small trained-looking network: x̂0 = tanh(W x) scaled by the noise level."""

    def __init__(self, seed):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, 2, generator=gen(seed), dtype=torch.float64))
            self.lin.bias.copy_(torch.randn(2, generator=gen(seed + 10), dtype=torch.float64))

    def forward(self, x, t):
        return torch.tanh(self.lin(x)) / (1 + t[:, None])


def test_statistics_files_and_updates_are_remembered_across_calls(tmp_path, mixture2d,
                                                                  monkeypatch):
    """Sampling in batches: the file is read and the updates are built once, and the same
    answer comes back; a rewritten file is read again."""
    from sdeflow.samplers import dpm_solver_v3 as v3
    sde = sdeflow.VPSDE()
    model = mixture2d.denoiser(sde)
    path = estimate_statistics(model, (2,), n=16, points=20, dtype=torch.float64).save(
        tmp_path / "ems.safetensors")
    loads, builds = [], []
    load, build = ModelStatistics.load, v3.v3_coefficients
    monkeypatch.setattr(ModelStatistics, "load", lambda p: loads.append(p) or load(p))
    monkeypatch.setattr(v3, "v3_coefficients", lambda *a: builds.append(1) or build(*a))
    x_T = sde.prior_sample((8, 2), generator=gen(0), dtype=torch.float64)
    kw = dict(solver="dpm_solver_v3", steps=4, statistics=str(path))
    first = sdeflow.sample(model, x_T, **kw)
    assert torch.equal(first, sdeflow.sample(model, x_T, **kw))
    assert len(loads) == 1 and len(builds) == 1
    sdeflow.sample(model, x_T, **{**kw, "steps": 5})  # another grid: built again
    assert len(loads) == 1 and len(builds) == 2
    zero = load(path)
    ModelStatistics(zero.lam, *(torch.zeros_like(zero.l) for _ in range(3))).save(path)
    assert not torch.equal(first, sdeflow.sample(model, x_T, **kw)) and len(loads) == 2
    # an object changed in place, or given other tensors, is built again
    st = load(path)
    kw = dict(solver="dpm_solver_v3", steps=4, statistics=st)
    before = sdeflow.sample(model, x_T, **kw)
    n = len(builds)
    st.s.add_(0.5)
    changed = sdeflow.sample(model, x_T, **kw)
    st.b = st.b + 0.5
    assert len({before.sum().item(), changed.sum().item(),
                sdeflow.sample(model, x_T, **kw).sum().item()}) == 3 and len(builds) == n + 2
    # a grid that needs gradients (tuning, through the solver) is never taken from the cache
    ts = get_timesteps(sde, 4, "logsnr").requires_grad_(True)
    for _ in range(2):
        v3._updates(sde, st, ts, 3, True, None, torch.device("cpu"))
    assert len(builds) == n + 4


def test_inference_mode_and_unhashable_models_are_not_remembered(tmp_path):
    """Statistics and a network made under torch.inference_mode have no version counters:
    v3 samples with them, building its updates each time; a model object that cannot be
    hashed still gets a fingerprint."""
    from sdeflow.samplers import dpm_solver_v3 as v3
    sde = sdeflow.VPSDE()
    path = estimate_statistics(sdeflow.Denoiser(_Net(0), sde), (2,), n=16, points=5).save(
        tmp_path / "ems.safetensors")
    x_T = sde.prior_sample((4, 2), generator=gen(0), dtype=torch.float64)
    v3.clear_cache()
    with torch.inference_mode():
        model = sdeflow.Denoiser(_Net(0), sde)
        st = ModelStatistics.load(path)
        runs = [sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=3, statistics=st)
                for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])
    assert not v3._CACHE  # nothing remembered

    class Unhashable:
        __hash__ = None

        def parameters(self):
            return [torch.ones(3), -torch.ones(2)]
    assert weights_fingerprint(Unhashable()) == [5.0, 1.0, 5.0, 5.0]


def test_statistics_of_other_weights_warn():
    """Statistics record the weights' fingerprint: the same network (also in float32) samples
    silently, a network with other weights gets a warning naming the fix."""
    import warnings
    sde = sdeflow.VPSDE()
    model = sdeflow.Denoiser(_Net(0), sde)
    st = estimate_statistics(model, (2,), n=16, points=5, seed=0)
    x_T = sde.prior_sample((4, 2), generator=gen(0), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=3, statistics=st)
    assert st.model is not None and st.model == weights_fingerprint(model)
    assert same_weights(st.model, weights_fingerprint(sdeflow.Denoiser(_Net(0), sde).float()))
    torch.manual_seed(0)  # a network of 65 792 weights cast to half precision: the same weights
    wide = sdeflow.Denoiser(torch.nn.Linear(256, 256), sde)
    for dtype in (torch.float16, torch.bfloat16):
        assert same_weights(weights_fingerprint(wide), weights_fingerprint(wide.to(dtype)))
    bumped = sdeflow.Denoiser(_Net(0), sde)
    with torch.no_grad():
        bumped.net.lin.weight[0, 0] *= 1.001  # one weight 0.1 % off: other weights
    assert not same_weights(st.model, weights_fingerprint(bumped))
    other = sdeflow.Denoiser(_Net(1), sde)
    assert not same_weights(st.model, weights_fingerprint(other))
    with pytest.warns(UserWarning, match="other weights.*sdeflow ems"):
        sdeflow.sample(other, x_T, solver="dpm_solver_v3", steps=3, statistics=st)


def test_tuned_schedule_saves_statistics_held_in_memory(tmp_path, mixture2d):
    """tune_timesteps with a ModelStatistics object (not a file): saving the schedule writes
    the statistics beside it and names them, so the file samples as the object did."""
    from sdeflow.tuning import TunedSchedule, tune_timesteps
    sde = sdeflow.EDMSDE()
    model = mixture2d.denoiser(sde)
    st = estimate_statistics(model, (2,), n=16, points=20, seed=0, dtype=torch.float64)
    x = sde.prior_sample((16, 2), generator=gen(1), dtype=torch.float64)
    res = tune_timesteps(model, x, solver="dpm_solver_v3", steps=3, max_evals=2, statistics=st)
    path = res.save(tmp_path / "tuned.json")
    back = TunedSchedule.load(path)
    assert Path(back.solver_opts["statistics"]) == (tmp_path / "tuned.statistics.safetensors")
    torch.testing.assert_close(
        sdeflow.sample(model, x, solver="dpm_solver_v3", timesteps=back.tensor(sde),
                       statistics=st),
        sdeflow.sample(model, x, solver=back.solver, timesteps=back.tensor(sde),
                       **back.solver_opts))


def test_reports_nfe_and_runs_in_float32(mixture2d):
    """One network call per step (+ the final denoising); float32 in, float32 out."""
    sde = sdeflow.VPSDE()
    model = mixture2d.denoiser(sde)
    st = estimate_statistics(model, (2,), n=32, points=20, seed=0, dtype=torch.float64)
    x_T = sde.prior_sample((8, 2), generator=gen(0), dtype=torch.float32)
    x, stats = sdeflow.sample(model, x_T, solver="dpm_solver_v3", steps=6, statistics=st,
                              return_stats=True)
    assert stats["nfe"] == 7 and x.dtype == torch.float32 and bool(torch.isfinite(x).all())


def test_cli_ems_sample_and_tune(tmp_path, capsys):
    """`sdeflow ems` writes statistics into the checkpoint folder, where `sample --solver
    dpm_solver_v3` and `tune-steps --solver dpm_solver_v3` find them (or anywhere, given by
    --solver-opts); the tuned file samples at its NFE; bad requests are refused with exit code
    2 and a message naming the problem."""
    import json

    from sdeflow.cli import main
    run = tmp_path / "run"
    assert main(["train", "--steps", "200", "--hidden", "32", "--depth", "1", "--out", str(run),
                 "--no-tensorboard"]) == 0
    s = tmp_path / "s"
    capsys.readouterr()
    assert main(["sample", str(run), "--solver", "dpm_solver_v3", "--out", str(s)]) == 2
    assert "needs statistics=" in capsys.readouterr().err
    assert main(["ems", str(run), "--num", "64", "--points", "20"]) == 0
    assert ModelStatistics.load(statistics_path(run)).shape == (2,)
    assert statistics_path(run).parent.name.startswith("ckpt-")  # with the weights
    assert main(["sample", str(run), "-n", "50", "--solver", "dpm_solver_v3", "--steps", "5",
                 "--schedule", "ays", "--out", str(s)]) == 0
    assert json.loads(s.with_suffix(".json").read_text())["nfe"] == 6
    tuned = tmp_path / "tuned.json"
    assert main(["tune-steps", str(run), "--solver", "dpm_solver_v3", "--steps", "4",
                 "--n-calib", "32", "--pool", "256", "--max-evals", "5", "--out", str(tuned)]) == 0
    rep = json.loads(tuned.read_text())
    assert rep["base_solver"] == "dpm_solver_v3"
    assert rep["solver_opts"]["statistics"] == str(statistics_path(run).resolve())
    assert main(["sample", str(run), "-n", "50", "--timesteps-file", str(tuned),
                 "--out", str(s)]) == 0
    assert json.loads(s.with_suffix(".json").read_text())["nfe"] == 5
    # statistics elsewhere, by --solver-opts; it overrides a tuned file's own (files that moved)
    ems = tmp_path / "ems.safetensors"
    assert main(["ems", str(run), "--num", "64", "--points", "20", "--out", str(ems)]) == 0
    opts = json.dumps({"statistics": str(ems)})
    assert main(["sample", str(run), "-n", "50", "--solver", "dpm_solver_v3", "--steps", "5",
                 "--solver-opts", opts, "--out", str(s)]) == 0
    statistics_path(run).unlink()
    if rep["solver"] == "dpm_solver_v3":
        assert main(["sample", str(run), "-n", "50", "--timesteps-file", str(tuned), "--out",
                     str(s)]) == 2
    assert main(["sample", str(run), "-n", "50", "--timesteps-file", str(tuned), "--solver-opts",
                 opts if rep["solver"] == "dpm_solver_v3" else "{}", "--out", str(s)]) == 0
    capsys.readouterr()
    assert main(["ems", str(run), "--points", "2", "--out", str(ems)]) == 2
    assert "--points" in capsys.readouterr().err
    assert main(["ems", str(run), "--class", "1"]) == 2
    assert "--class needs a class-conditional model" in capsys.readouterr().err
    assert main(["sample", str(run), "--solver", "dpm_solver_v3", "--solver-opts",
                 json.dumps({"statistics": str(run / "latest")}), "--out", str(s)]) == 2


def test_statistics_of_other_conditioning_warn(tmp_path, mixture2d):
    """`sample` warns when the statistics file was estimated for other conditioning options
    (e.g. a class) than the run's, and is silent when they agree."""
    import argparse
    import warnings

    from sdeflow.cli.common import check_condition, run_condition
    st = estimate_statistics(mixture2d.denoiser(sdeflow.VPSDE()), (2,), n=16, points=5,
                             condition="class=3 guidance=2.0")
    path = str(st.save(tmp_path / "ems.safetensors"))
    grid = dict(solver="dpm_solver_v3", statistics=path)

    def args(label, w):
        return run_condition(argparse.Namespace(class_label=label, prompt=None, guidance=w,
                                                classifier=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_condition(grid, args(3, 2.0))
    with pytest.warns(UserWarning, match="class=3 guidance=2.0.*unconditional"):
        check_condition(grid, args(None, None))
    with pytest.warns(UserWarning, match="class=4"):
        check_condition(grid, args(4, 2.0))
    # guidance 0 is no guidance: statistics of the class alone match it
    st.condition = "class=3"
    grid["statistics"] = str(st.save(tmp_path / "class3.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_condition(grid, args(3, 0.0))
    # statistics held in memory are checked too; a file's metadata is read without its tensors
    from sdeflow.samplers.ems import condition_mismatch
    assert "statistics were estimated for class=3, this run is unconditional" in \
        condition_mismatch("dpm_solver_v3", {"statistics": st}, None)
    assert condition_mismatch("dpm_solver_v3", {"statistics": st}, "class=3") is None
    assert condition_mismatch("unipc", {"statistics": st}, None) is None
    assert ModelStatistics.read_about(grid["statistics"]) == dict(sde=st.sde, model=st.model,
                                                                 condition="class=3")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        condition_mismatch("dpm_solver_v3", {"statistics": str(bad)}, None)
    # ... but with a classifier, guidance 0 is a scale (no --guidance means 1)
    assert "guidance=0.0" in run_condition(argparse.Namespace(class_label=3, prompt=None,
                                                              guidance=0.0, classifier="clf"))

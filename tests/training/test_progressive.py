"""Progressive distillation (Salimans & Ho 2022) against ground truth: the exact Gaussian-mixture
denoiser is the teacher, so the distilled students are measured against the exact PF-ODE map
(rk45 on the exact denoiser, rtol = atol = 1e-8) from the same noise."""
import pytest
import torch

import sdeflow
from sdeflow.data import get_data
from sdeflow.metrics import mmd2
from sdeflow.samplers.ddim import ddim_step
from sdeflow.samplers.registry import Context
from sdeflow.training import Trainer, train
from sdeflow.training.progressive import ProgressiveConfig, pd_target

from ..conftest import gen

EPS64 = torch.finfo(torch.float64).eps


def test_pd_target_makes_one_ddim_step_land_where_two_teacher_steps_do(sde_case, mixture2d):
    """x̃ is the x̂₀ of one DDIM step t → s that lands on the teacher's z_s after t → u → s:
    equal to float64 round-off (8 ε relative to the terms summed) on every SDE."""
    name, sde, schedule = sde_case
    teacher = mixture2d.denoiser(sde)
    ts = sdeflow.get_timesteps(sde, 16, schedule)
    i = torch.arange(8).repeat(32)
    t, u, s = ts[2 * i], ts[2 * i + 1], ts[2 * i + 2]
    g = gen(0)
    x0 = mixture2d.sample(len(i), generator=g)
    z_t = sde.marginal(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ctx = Context()
    z_s = ddim_step(teacher, ddim_step(teacher, z_t, t, u, ctx), u, s, ctx)
    target = pd_target(teacher, z_t, t, u, s)
    assert target.dtype == torch.float64
    student = sdeflow.Denoiser(lambda x, _t: target, sde, prediction="x0")
    one_step = ddim_step(student, z_t, t, s, ctx)
    scale = z_s.abs() + (sde.sigma(s) / sde.sigma(t))[:, None] * z_t.abs()
    assert ((one_step - z_s).abs() <= 8 * EPS64 * scale).all(), name
    # and the target is no copy of x0 (two teacher steps are not the data)
    assert (target - x0).abs().max() > 0.1


@pytest.mark.parametrize("kw, match", [
    (dict(steps=100), r"steps \(100\) must equal rounds × steps_per_round = 6 × 500 = 3000"),
    (dict(first_round_steps=800, steps=100), r"800 \+ 5 × 500 = 3300"),
    (dict(start_steps=12), "power of two"),
    (dict(final_steps=0), "positive integers"),
    (dict(schedule="nope"), "schedule 'nope' not in"),
    (dict(schedule="vp_trailing"), "'vp_trailing' ends early"),
    (dict(teacher=3), "teacher must be str, got 3"),  # not a failed look-up of run "3"
])
def test_bad_configs_name_what_to_fix(kw, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveConfig(**kw).validate()


# The 2-D ring: N₀ = 32 (the exact teacher's DDIM-32 is 0.34× the MMD floor, DDIM-16 2.7×),
# rounds 32 → 16 → 8 → 4 → 2 → 1 with a longer first round (the fresh MLP learns the denoiser
# there): 2100 steps of a 2×64 MLP, ~20 s on one core.
RING = dict(data="gmm", start_steps=32, final_steps=1, first_round_steps=900, steps_per_round=300,
            steps=2100, batch_size=256, lr=5e-3, warmup=50, ema_decay=0.98,
            model_kwargs=dict(hidden=64, depth=2, emb_dim=32), ckpt_every=300, keep=3,
            log_every=100, tensorboard=False)
# The 16-D mixture: N₀ = 64 (DDIM-64 is 0.67× the floor, DDIM-32 1.4×), the default 3×256
# MLP: 4000 steps, ~160 s on one core.
MIXTURE16 = dict(data="mixture", data_kwargs=dict(dim=16, k=4, seed=0), start_steps=64,
                 final_steps=1, first_round_steps=1500, steps_per_round=500, steps=4000,
                 batch_size=512, lr=2e-3, ema_decay=0.98, ckpt_every=500, keep=3,
                 log_every=100, tensorboard=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small networks on vectors: a second thread only adds synchronisation (measured on two
    busy cores: 9 ms a training step on one thread, 60 ms on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _distil(tmp_path_factory, settings: dict) -> dict:
    """The run, its students by step count (the last three checkpoints: 4, 2 and 1 steps), one
    noise x_T (3000 draws) for all and its exact PF-ODE image, the mixture and the SDE."""
    cfg = ProgressiveConfig(**settings)
    run = tmp_path_factory.mktemp("pd") / cfg.data
    train(cfg, run, progress=False)
    mixture = get_data(cfg.data, **cfg.data_kwargs).mixture
    sde = sdeflow.get_sde(cfg.sde, **cfg.sde_kwargs)
    x_T = sde.prior_sample((3000, mixture.dim), generator=gen(123), dtype=torch.float64)
    exact = sdeflow.sample(mixture.denoiser(sde), x_T, solver="rk45", rtol=1e-8, atol=1e-8,
                           denoise=False)
    students = {len(m.timesteps) - 1: m for m in
                (sdeflow.load(ck)[0] for ck in sorted(run.glob("ckpt-*")))}
    return dict(run=run, students=students, x_T=x_T, exact=exact, mixture=mixture, sde=sde)


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    return _distil(tmp_path_factory, RING)


def _errors(case, steps: int) -> tuple[float, float]:
    """RMS distance to the exact ODE solution of the student at ``steps`` and of DDIM with as
    many steps on the exact denoiser."""
    student = sdeflow.sample(case["students"][steps], case["x_T"].float()).double()
    plain = sdeflow.sample(case["mixture"].denoiser(case["sde"]), case["x_T"], solver="ddim",
                           steps=steps, denoise=False)
    return tuple((x - case["exact"]).norm(dim=1).pow(2).mean().sqrt().item()
                 for x in (student, plain))


def _mmd_over_floor(case, steps: int, scale: float = 1.0, n: int = 2000) -> float:
    """MMD² of the student's samples (times ``scale``) to data, over the noise floor: the
    largest |MMD²| of six fresh n-draws of the data."""
    mixture = case["mixture"]
    ref = mixture.sample(n, generator=gen(7))
    floor = max(abs(mmd2(mixture.sample(n, generator=gen(10 + i)), ref)) for i in range(6))
    x = sdeflow.sample(case["students"][steps], case["x_T"][:n].float())
    return mmd2(scale * x, ref) / floor


@pytest.mark.slow  # shares a 19 s distillation fixture: the default run stays under 10 min on 2 cores
@pytest.mark.parametrize("steps, bound", [(4, 0.12), (2, 0.12), (1, 0.13)])
def test_students_reproduce_the_exact_pf_ode_map(ring_run, steps, bound):
    """RMS distance to the exact ODE solution from the same x_T (ring radius 2, mode std 0.25),
    measured: 4 steps 0.078, 2 steps 0.084, 1 step 0.087 — the teacher's DDIM-32 itself is
    0.045 off, DDIM on the exact denoiser at 4 / 2 / 1 steps 0.51 / 1.34 / 2.00. Bound ~1.5×
    the measured (seed and thread-count changes), and under ¼ of undistilled DDIM's."""
    err, ddim = _errors(ring_run, steps)
    assert err < bound and err < ddim / 4, (err, ddim)


@pytest.mark.slow  # shares a 19 s distillation fixture: the default run stays under 10 min on 2 cores
def test_four_step_samples_are_within_twice_the_mmd_floor(ring_run):
    """Measured 1.16× the floor; the same samples scaled by 1.1 are 17× it (the test sees a
    subtly wrong student), undistilled DDIM at 4 steps 107×."""
    assert _mmd_over_floor(ring_run, 4) < 2
    assert _mmd_over_floor(ring_run, 4, scale=1.1) > 2


@pytest.mark.slow
def test_a_sixteen_dimensional_mixture_distils_to_four_two_and_one_steps(tmp_path_factory):
    """16-D, four components (data RMS norm 4.3). RMS error to the exact ODE map, measured:
    4 steps 0.48, 2 steps 0.54, 1 step 0.55 (teacher DDIM-64 0.28; DDIM at 4 / 2 / 1 steps
    1.61 / 2.43 / 3.89); bounds 0.7 / 0.8 / 0.8 and under ½ of DDIM's. 4-step samples 0.62×
    the MMD floor (×1.1: 11×)."""
    case = _distil(tmp_path_factory, MIXTURE16)
    for steps, bound in ((4, 0.7), (2, 0.8), (1, 0.8)):
        err, ddim = _errors(case, steps)
        assert err < bound and err < ddim / 2, (steps, err, ddim)
    assert _mmd_over_floor(case, 4) < 2
    assert _mmd_over_floor(case, 4, scale=1.1) > 2


@pytest.mark.slow  # shares a 19 s distillation fixture: the default run stays under 10 min on 2 cores
def test_a_loaded_student_samples_on_its_own_grid_and_refuses_others(ring_run):
    model, cfg = sdeflow.load(ring_run["run"])
    assert cfg.KIND == "progressive_distillation" and cfg.schedule == "uniform"
    assert torch.equal(model.timesteps, torch.tensor([1.0, 1e-3], dtype=torch.float64))
    x, stats = sdeflow.sample(model, shape=(8, 2), seed=0, return_stats=True)
    assert (stats["solver"], stats["steps"], stats["nfe"]) == ("ddim", 1, 1)
    assert torch.equal(x, sdeflow.sample(model, shape=(8, 2), seed=0, steps=1))  # same grid
    grid = r"distilled for 1 deterministic DDIM step on t = \[1, 0.001\] \(model.timesteps\)"
    for other in (dict(steps=2), dict(solver="heun"), dict(eta=1.0), dict(t_end=0.01),
                  dict(timesteps=[1.0, 0.5, 1e-3])):
        with pytest.raises(ValueError, match=grid + ".*force=True"):
            sdeflow.sample(model, shape=(8, 2), seed=0, **other)
    _, stats = sdeflow.sample(model, shape=(8, 2), seed=0, steps=3, force=True,
                              return_stats=True)
    assert (stats["steps"], stats["nfe"]) == (3, 3)


TINY = dict(data="gmm", start_steps=8, final_steps=1, first_round_steps=2, steps_per_round=2,
            batch_size=32, model_kwargs=dict(hidden=16, depth=1, emb_dim=8), ckpt_every=3,
            log_every=1, tensorboard=False)


def test_resume_is_exact_across_round_boundaries(tmp_path):
    """Six steps (round ends at 2 and 4) against three, a checkpoint (a run killed there) and
    three resumed: identical student, EMA, teacher and step counter, and the same losses."""
    full = train(ProgressiveConfig(steps=6, **TINY), tmp_path / "a", progress=False)
    killed = Trainer(ProgressiveConfig(steps=6, **TINY))
    for _ in range(3):
        killed.train_step()
    killed.save(tmp_path / "b")
    resumed = train(ProgressiveConfig(steps=6, **TINY), tmp_path / "b", resume=True,
                    progress=False)
    for name in ("model", "teacher"):
        a, b = full.nets[name].state_dict(), resumed.nets[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert all(torch.equal(a, b) for a, b in zip(full.ema["model"].parameters(),
                                                 resumed.ema["model"].parameters()))
    assert int(resumed.nets["teacher"].step) == 6
    rows = [[ln.split(",") for ln in (tmp_path / r / "loss.csv").read_text().splitlines()[1:]]
            for r in "ab"]
    assert [r[:2] for r in rows[0][3:]] == [r[:2] for r in rows[1]]
    assert [r[-1] for r in rows[0]] == ["0", "0", "1", "1", "2", "2"]  # the round


def test_at_a_round_end_the_students_ema_becomes_teacher_and_new_student(tmp_path):
    st = Trainer(ProgressiveConfig(steps=6, **TINY))
    st.train_step()
    assert not all(torch.equal(a, b) for a, b in zip(st.ema["model"].parameters(),
                                                     st.nets["model"].parameters()))
    st.train_step()  # the end of round 0
    ema = st.ema["model"].state_dict()
    for net in (st.nets["model"], st.nets["teacher"].model):
        assert all(torch.equal(v, ema[k]) for k, v in net.state_dict().items())
    assert st.nets["teacher"].round(st.cfg) == 1
    assert not st.nets["teacher"].training  # no dropout in the targets


def test_a_trained_teacher_is_copied_into_the_student(tmp_path):
    """With a score-model run as teacher the student is its architecture and starts as its
    (EMA) weights; SDE and parameterisation come from the teacher's config."""
    from sdeflow.train import TrainConfig
    teacher_cfg = TrainConfig(data="gmm", sde="vp", steps=2, batch_size=16, tensorboard=False,
                              model_kwargs=dict(hidden=16, depth=1, emb_dim=8))
    train(teacher_cfg, tmp_path / "teacher", progress=False)
    st = Trainer(ProgressiveConfig(teacher=str(tmp_path / "teacher"), steps=6, **{
        k: v for k, v in TINY.items() if k != "model_kwargs"}))
    teacher, _ = sdeflow.load(tmp_path / "teacher")
    assert (st.cfg.sde, st.cfg.prediction, st.cfg.precondition) == ("vp", "x0", "edm")
    assert st.cfg.model_kwargs == dict(dim=2, hidden=16, depth=1, emb_dim=8)
    for net in (st.nets["model"], st.nets["teacher"].model):
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), teacher.parameters()))

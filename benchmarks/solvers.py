"""Few-step sampling (5–20 NFE): sdeflow's solvers against k-diffusion's samplers on the same
exact mixture denoiser, the same prior draws and the same answer.

Problems: the 8-Gaussian ring (2-D) and a 6-component anisotropic 64-D mixture, each under the
EDM SDE (σ 80 → 0.002) and the VP SDE (t 1 → 1e-3, i.e. σ̃ = σ/s from 157 → 0.01). k-diffusion
works in EDM's variables, so for VP it integrates x̃ = x/s in σ̃ with D(x̃; σ̃) = x̂0(s x̃, t(σ̃))
— the same ODE. Answer: x̂0 at t_min of the PF-ODE solution (RK4, ``--ref-steps`` 1024 steps,
then the exact denoiser; 4096 steps change it by ≤ 3e-9 on all four problems). Every method ends
with a denoised output and its NFE counts every network call. Error: RMS over coordinates and
over ``--n-eval`` prior draws (default 4096). Each row also counts ``other_mode``: the draws whose
answer lies in another mixture component than the reference's, and gives ``rmse_same_mode``, the
RMS error over the rest. In 64-D those draws (they start near the boundary between two
components' basins: 0.02–4 % of them, fewer as NFE grows) carry most of the RMS at every
budget, so the RMS needs thousands of draws to be stable: with 256 or 512 draws its ratio to the
best anchor moved by up to ±30 % between seeds.

k-diffusion's samplers: sample_dpmpp_2m, sample_heun, sample_lms (Karras grids, σ → 0 last
step), sample_dpm_fast, sample_dpm_adaptive (rtol=atol from 0.2 to 0.01).

diffusers' schedulers, driven by the same exact denoiser: EDMDPMSolverMultistepScheduler in
(x̃, σ̃) (Karras σ, ρ = 7, orders 2 and 3); DPMSolverMultistepScheduler (DPM-Solver++ 2M/3M),
UniPCMultistepScheduler (bh2, orders 2/3) and DEISMultistepScheduler (order 3) on 1000 discrete
VP levels built for the problem (``trained_betas``): for the VP SDE its ᾱ at t-uniform times
from t_min to T (DDPM's training grid), for EDM σ̃ log-uniform from σ_min to σ_max with
ᾱ = 1/(1 + σ̃²) — the same ODE, since every SDE's PF-ODE is one ODE in (x/s, σ/s). Each ends
with σ = 0 (its last model output is the answer); NFE = number of model calls.

sdeflow ``<solver>/tuned``: the grid of ``sdeflow.tuning.tune_timesteps`` for that budget
(200 Adam iterations through the solver, final time free, then the pool line search over
named grids and log-SNR blends on the calibration pool — ``--no-pool-search`` leaves it out —
and the fall-back to the best named configuration), calibrated on 128 prior draws (seed 1000)
and validated on 128 more (seed 1001), both stratified from pools of ``--pool`` (default 4096,
as ``tune-steps``; 0: plain; the validation pool doubled up to ``--heldout-pool``, default 4 ×
``--pool``, while the choice is unstable); the error is measured on the benchmark's
draws (seed ``--eval-seed``, default 0), which tuning never sees. ``<base>/bns`` (up to
``BNS_MAX_NFE`` = 10; above, it fits the calibration draws' outliers and loses to the tuned
grid): a bespoke non-stationary solver (``tune_timesteps(coefficients=True)``: grid *and* the
solver's linear-multistep coefficients, starting from ``<base>``'s, window 3) calibrated on
``--n-calib-bns`` draws (default 512; seed 1000, validation seed 1001). ``--no-tune`` skips
the tuned rows (minutes instead of tens of minutes); ``--tune-device cuda`` runs the tuning on
a GPU (everything else stays on the CPU). DPM-Solver-v3 (``dpm_solver_v3``) runs only when
named (``--solvers dpm_solver_v3``, ``--tuned-bases dpm_solver_v3``), with statistics estimated
from 1024 of the problem's PF-ODE trajectories (seed 1000) and cached in ``--ems-dir``.
``--errors-dir DIR`` keeps every row's per-draw squared errors (and which draws crossed) in
one file per problem; ``benchmarks/ratio_intervals.py`` then gives each ratio to the best
anchor a paired bootstrap interval — at 15–20 NFE in high dimension, where 0–3 crossed draws
of 4096 decide a cell, it shows whether the draws resolve it (``--n-eval 65536 --ref-steps 64
--ref-schedule karras`` for cells that need more draws).
Usage: python benchmarks/solvers.py [--markdown] [--out docs/solvers_results.jsonl] [--no-tune]
       [--n-calib 128] [--n-calib-bns 512] [--tune-device cpu] [--problems gmm64-edm,...]
       [--nfes 5 6 ...] [--n-eval 4096] [--eval-seed 0] [--ref-steps 1024] [--pool 4096]
       [--heldout-pool 16384] [--no-pool-search] [--choose-from runs.jsonl [--choice-pool N]]
       [--tuned-bases dpmpp_2m,unipc,ipndm,dpm_solver_v3] [--bns-bases unipc] [--ems-dir DIR]
       [--ref-cache DIR] [--ref-schedule karras] [--errors-dir DIR]
       [--auto-only | --tuned-only | --ours-only [--solvers ipndm,...] [--schedules ...]]
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from anchors import k_diffusion_sampling
from common import PerDrawErrors, config_label, run_benchmark

import sdeflow
from sdeflow.oracle import GaussianMixture
from sdeflow.samplers.ems import estimate_statistics

NFES = [5, 6, 8, 10, 12, 15, 20]
# (label, solver, options, NFE per step, extra calls): every named solver
OURS = [("dpmpp_2m", "dpmpp_2m", {}, 1, 0), ("dpmpp_3m", "dpmpp_3m", {}, 1, 0),
        ("unipc", "unipc", {}, 1, 0), ("unipc(3)", "unipc", dict(order=3), 1, 0),
        ("deis", "deis", {}, 1, 0), ("ipndm", "ipndm", {}, 1, 0),
        ("pndm(plms)", "pndm", dict(warm_start="plms"), 1, 1),
        ("dpm_solver_2", "dpm_solver_2", {}, 2, 0), ("dpm_solver_3", "dpm_solver_3", {}, 3, 0),
        ("heun", "heun", {}, 2, 0), ("ddim", "ddim", {}, 1, 0),
        ("dpm_solver_v3", "dpm_solver_v3", dict(statistics=None), 1, 0)]
SCHEDULES = ("karras", "logsnr", "vp_uniform", "vp_trailing", "ays", "gits", "karras_trailing",
             "logsnr_trailing", "ays_trailing", "gits_trailing")
TUNED = ["dpmpp_2m", "unipc", "ipndm"]  # dpm_solver_v3 too with --tuned-bases
BNS_BASES = ["unipc"]
BNS_MAX_NFE = 10


def problems():
    hi = GaussianMixture.random(64, k=6, seed=0)
    ring = GaussianMixture.ring()
    dev = [(f"{g}-{s}", gm, sde) for g, gm in (("ring2d", ring), ("gmm64", hi))
           for s, sde in (("edm", sdeflow.EDMSDE()), ("vp", sdeflow.VPSDE()))]
    return (dev + held_out_problems() + fresh_problems() + third_problems() + fourth_problems()
            + fifth_problems() + sixth_problems())


def held_out_problems():
    """Problems the first choices of solver="auto" and the tuning code never saw (its third
    revision was chosen on them too): a 256-D mixture with strongly unequal weights under EDM,
    a 16-D one under the cosine VP SDE, and a 3-D one under sub-VP."""
    big = GaussianMixture.random(256, k=4, seed=11, std_range=(0.05, 0.4))
    big = GaussianMixture(torch.tensor([0.55, 0.25, 0.15, 0.05]), big.means, covs=big.covs)
    mid = GaussianMixture.random(16, k=5, seed=12, scale=1.5)
    small = GaussianMixture.random(3, k=6, seed=13, scale=2.0, std_range=(0.05, 0.3))
    return [("gmm256w-edm", big, sdeflow.EDMSDE()),
            ("gmm16-vpcos", mid, sdeflow.VPSDE(schedule="cosine")),
            ("gmm3-subvp", small, sdeflow.SubVPSDE())]


def fresh_problems():
    """A second held-out set, designed (2026-12-04) before any run on it, to check a revision
    of solver="auto" chosen on the seven above: a 32-D mixture of 8 narrow components (std
    0.02–0.1, where small noise levels need resolving) under EDM, and a 96-D one with unequal
    weights under the linear VP SDE."""
    narrow = GaussianMixture.random(32, k=8, seed=21, std_range=(0.02, 0.1))
    wide = GaussianMixture.random(96, k=5, seed=22, std_range=(0.1, 0.5))
    wide = GaussianMixture(torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05]), wide.means, covs=wide.covs)
    return [("gmm32n-edm", narrow, sdeflow.EDMSDE()), ("gmm96w-vp", wide, sdeflow.VPSDE())]


def third_problems():
    """A third held-out set, designed (2026-12-04) before any run on it and before the sweep
    of the other solvers on trailing grids, to check the fourth revision of solver="auto" on
    problems no rule was chosen on: a 48-D mixture of 12 close components (means N(0, 0.7²))
    under EDM, a 192-D one of 3 components under the cosine VP SDE, and an 8-D one of 6 narrow
    components under the linear VP SDE."""
    many = GaussianMixture.random(48, k=12, seed=31, scale=0.7, std_range=(0.05, 0.3))
    big = GaussianMixture.random(192, k=3, seed=32, std_range=(0.1, 0.4))
    small = GaussianMixture.random(8, k=6, seed=33, scale=1.5, std_range=(0.05, 0.3))
    return [("gmm48m-edm", many, sdeflow.EDMSDE()),
            ("gmm192-vpcos", big, sdeflow.VPSDE(schedule="cosine")),
            ("gmm8-vp", small, sdeflow.VPSDE())]


def fourth_problems():
    """A fourth held-out set, designed (2026-12-05) before any run on it, to check the
    lookahead first step of solver="auto" (docs/solver_notes.md): a 24-D mixture of 7
    components under linear VP, a 128-D one of 5 narrow components under EDM, a 4-D one under
    the cosine VP SDE, and a 64-D one whose means all sit 2 per coordinate away from 0 (data
    far from the origin, where an analytic first step errs most) under sub-VP."""
    mid = GaussianMixture.random(24, k=7, seed=41, std_range=(0.1, 0.5))
    narrow = GaussianMixture.random(128, k=5, seed=42, std_range=(0.03, 0.15))
    small = GaussianMixture.random(4, k=5, seed=43, scale=2.0, std_range=(0.1, 0.4))
    far = GaussianMixture.random(64, k=4, seed=44)
    far = GaussianMixture(far.weights, far.means + 2.0, covs=far.covs)
    return [("gmm24-vp", mid, sdeflow.VPSDE()), ("gmm128n-edm", narrow, sdeflow.EDMSDE()),
            ("gmm4-vpcos", small, sdeflow.VPSDE(schedule="cosine")),
            ("gmm64c-subvp", far, sdeflow.SubVPSDE())]


def fifth_problems():
    """A fifth held-out set, designed (2026-12-05, fourteenth session) before any run on it,
    to check the grid shape of solver="auto" at 4–6 NFE in very high dimension (D ≥ 128;
    docs/solver_notes.md): a 160-D mixture of 6 components under linear VP, a 320-D one of 4
    narrow components under EDM, a 128-D one of 5 spread-out components under sub-VP and a
    224-D one with strongly unequal weights under the cosine VP SDE."""
    mid = GaussianMixture.random(160, k=6, seed=51)
    narrow = GaussianMixture.random(320, k=4, seed=52, std_range=(0.05, 0.3))
    spread = GaussianMixture.random(128, k=5, seed=53, scale=1.5)
    wide = GaussianMixture.random(224, k=5, seed=54)
    wide = GaussianMixture(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]), wide.means, covs=wide.covs)
    return [("gmm160-vp", mid, sdeflow.VPSDE()), ("gmm320n-edm", narrow, sdeflow.EDMSDE()),
            ("gmm128-subvp", spread, sdeflow.SubVPSDE()),
            ("gmm224w-vpcos", wide, sdeflow.VPSDE(schedule="cosine"))]


def sixth_problems():
    """A sixth held-out set, designed (2026-12-05, sixteenth session) before any run on it, to
    check a floor under solver="auto"'s noise range (σ̃ ≥ 0.002, rule F; rejected,
    docs/benchmarks.md), which changes only SDEs whose σ̃(t_min) lies below it — of ours,
    sub-VP (1.1e-4): a 48-D mixture of 5 components and a 12-D one of 4 narrow components
    (below D = 16, the low-dimensional shape), both under sub-VP."""
    mid = GaussianMixture.random(48, k=5, seed=61)
    small = GaussianMixture.random(12, k=4, seed=62, std_range=(0.1, 0.5))
    return [("gmm48-subvp", mid, sdeflow.SubVPSDE()), ("gmm12n-subvp", small, sdeflow.SubVPSDE())]


def run(emit, n: int = 4096, tune: bool = True, n_calib: int = 128, n_calib_bns: int = 512,
        tune_device: str = "cpu", only=None, eval_seed: int = 0, ref_steps: int = 1024,
        auto_only: bool = False, tuned_only: bool = False, pool: int = 4096,
        heldout_pool: int | None = None,
        ours_only: bool = False, solvers=None, schedules=None, k_diffusion_only: bool = False,
        pool_search: bool = True, choose_from=None, choice_pool: int = 16384,
        tuned_bases=None, bns_bases=None, ems_dir: str = "outputs/ems", ref_cache=None,
        ref_schedule=None, errors_dir=None):
    unknown = set(solvers or ()) - {label for label, *_ in OURS} - {"none"}
    if unknown:
        raise SystemExit(f"--solvers: unknown {sorted(unknown)}; choose from "
                         f"{[label for label, *_ in OURS]} or 'none' (no named rows)")
    kd = k_diffusion_sampling()
    outer_emit = emit
    emit(dict(meta=True, k_diffusion=kd is not None))
    if k_diffusion_only and kd is None:
        raise SystemExit("--k-diffusion-only: k-diffusion's sampling module is not importable "
                         "(pip install --no-deps k-diffusion)")
    keeps = []  # per-draw errors of each problem, written even if a later problem fails
    try:
        for name, gm, sde in problems():
            if only and name not in only:
                continue
            model = gm.denoiser(sde)
            tag = f"{name}-n{n}-seed{eval_seed}"
            x_T, ref, half = evaluation_set(name, model, gm.dim, n, eval_seed, ref_steps,
                                            ref_cache, ref_schedule)
            keep = PerDrawErrors(Path(errors_dir) / f"{tag}.safetensors", ref_steps=ref_steps,
                                 ref_schedule=ref_schedule or "default") if errors_dir else None
            emit = keep.wrap(outer_emit) if keep else outer_emit
            keeps += [keep] if keep else []
            ref_mode = gm.responsibilities(ref).argmax(1)
            emit(dict(problem=name, meta=True, ref_steps=ref_steps, n_eval=n,
                      ref_schedule=ref_schedule or "default",
                      ref_vs_half_steps_rms=(half - ref[:256]).pow(2).mean().sqrt().item(),
                      ref_vs_half_steps_other_mode=int(
                          (gm.responsibilities(half).argmax(1) != ref_mode[:256]).sum())))

            def err(x):
                """RMS error, the number of draws that ended in another component and the RMS
                error over the others."""
                sq, other = draw_errors(gm, x, ref, ref_mode)
                if keep:
                    keep.note(sq, other)
                return dict(rmse=sq.mean().sqrt().item(), other_mode=int(other.sum()),
                            rmse_same_mode=sq[~other].mean().sqrt().item())
            if choose_from:
                run_choice(emit, name, model, sde, gm.dim, x_T, err, choose_from, choice_pool)
                continue
            if k_diffusion_only:
                if kd is not None:
                    run_k_diffusion(emit, kd, name, gm, sde, x_T, err)
                continue
            def statistics():
                """DPM-Solver-v3's statistics of the problem's model, from 1024 trajectories of
                the calibration seed (1000), cached as a file the tuned rows can name."""
                path = Path(ems_dir) / f"{name}.safetensors"
                if not path.exists():
                    start = time.perf_counter()
                    estimate_statistics(model, (gm.dim,), n=1024, points=200, seed=1000,
                                        dtype=torch.float64).save(path)
                    emit(dict(problem=name, meta=True, ems=str(path), ems_trajectories=1024,
                              ems_points=200, ems_seconds=round(time.perf_counter() - start, 1)))
                return str(path.resolve())
            for label, solver, opts, per_step, extra in [] if auto_only or tuned_only else OURS:
                if solvers and label not in solvers or not solvers and solver == "dpm_solver_v3":
                    continue  # v3 (statistics of its own) only when asked for by name
                if "statistics" in opts:
                    opts = dict(opts, statistics=statistics())
                for schedule in schedules or SCHEDULES:
                    for nfe in NFES:
                        steps = (nfe - 1 - extra) // per_step
                        if steps < 1:
                            continue
                        x, st = sdeflow.sample(model, x_T, solver=solver, steps=steps,
                                               schedule=schedule, return_stats=True, **opts)
                        emit(dict(problem=name, impl="sdeflow", solver=f"{label}/{schedule}",
                                  nfe=st["nfe"], **err(x)))
            for nfe in [] if tuned_only else NFES:
                x, st = sdeflow.sample(model, x_T, solver="auto", steps=nfe, return_stats=True)
                emit(dict(problem=name, impl="sdeflow", solver="auto", config=config_label(st),
                          nfe=st["nfe"], **err(x)))
            if auto_only or ours_only:
                continue
            if not tuned_only:
                run_diffusers(emit, name, gm, sde, x_T, err)
                if kd is not None:
                    run_k_diffusion(emit, kd, name, gm, sde, x_T, err)
            if tune:
                bases = TUNED if tuned_bases is None else tuned_bases
                run_tuned(emit, name, model, sde, gm.dim, x_T, err, n_calib, n_calib_bns,
                          tune_device, pool, heldout_pool, pool_search, bases,
                          BNS_BASES if bns_bases is None else bns_bases,
                          {"dpm_solver_v3": dict(statistics=statistics())}
                          if "dpm_solver_v3" in bases else {})
    finally:
        for keep in keeps:
            try:
                keep.save()
            except OSError as e:  # say so, without hiding an error of the run itself
                print(f"could not write {keep.path}: {e}", file=sys.stderr)


def evaluation_set(name, model, dim: int, n: int, seed: int, ref_steps: int, ref_cache=None,
                   ref_schedule=None):
    """(the problem's ``n`` evaluation draws of ``seed`` in float64, their :func:`reference`
    answer, its half-step check), the answer cached in the folder ``ref_cache`` as
    ``<name>-n<n>-seed<seed>-rk<steps>[-<schedule>].safetensors``."""
    x_T = model.sde.prior_sample((n, dim), generator=torch.Generator().manual_seed(seed),
                                 dtype=torch.float64)
    rk = f"rk{ref_steps}" + (f"-{ref_schedule}" if ref_schedule else "")
    cache = Path(ref_cache) / f"{name}-n{n}-seed{seed}-{rk}.safetensors" if ref_cache else None
    return (x_T, *reference(model, x_T, ref_steps, cache, ref_schedule))


def reference(model, x_T, ref_steps: int, cache: Path | None = None, schedule=None):
    """The answer for the draws ``x_T``: x̂0 at t_min of the PF-ODE solution (RK4,
    ``ref_steps`` steps), and, for the reference's own error, the same with half the steps on
    the first 256 draws; ``schedule``: RK4's time grid (default: the sampler's). ``cache``: a
    file that keeps both between runs (for 128–320-D problems the reference takes 5–15
    minutes on one core at 1024 steps). It stores the draws with the answer and is
    used only if they are these very draws; an unreadable file is solved again and replaced."""
    from safetensors.torch import load_file, save_file
    if cache is not None and cache.exists():
        try:
            got = load_file(cache)
            if got["x_T"].shape == x_T.shape and torch.equal(got["x_T"], x_T):
                return got["ref"], got["half"]
        except Exception as e:  # a truncated or foreign file: say so, then solve again
            print(f"reference cache {cache} unreadable ({e}); solving again", file=sys.stderr)
    sde, grid = model.sde, {"schedule": schedule} if schedule else {}
    ref = model.x0(sdeflow.sample(model, x_T, solver="rk4", steps=ref_steps, denoise=False,
                                  **grid), sde.t_min)
    half = model.x0(sdeflow.sample(model, x_T[:256], solver="rk4", steps=ref_steps // 2,
                                   denoise=False, **grid), sde.t_min)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file(dict(ref=ref.contiguous(), half=half.contiguous(), x_T=x_T.contiguous()), tmp)
        tmp.replace(cache)
    return ref, half


def draw_errors(gm, x, ref, ref_mode):
    """(per-draw mean squared error of ``x`` against the answer ``ref``, whether each draw
    ended in another component of ``gm`` than the answer's ``ref_mode``)."""
    return (x - ref).pow(2).mean(1), gm.responsibilities(x).argmax(1) != ref_mode


def add_evaluation_args(ap, nfes=None) -> None:
    """The options naming the problems, budgets and evaluation draws with their reference,
    shared by this script, named_sweep.py and probe_named.py."""
    ap.add_argument("--problems", help="comma-separated subset of "
                                       + ",".join(p[0] for p in problems()))
    ap.add_argument("--nfes", type=int, nargs="+", default=nfes or NFES, help="NFE budgets")
    ap.add_argument("--n-eval", type=int, default=4096, help="evaluation draws")
    ap.add_argument("--ref-steps", type=int, default=1024, help="RK4 steps of the reference")
    ap.add_argument("--ref-schedule", help="RK4's grid for the reference (default: the "
                    "sampler's; karras with --ref-steps 64 is within 5e-5 RMS of 1024 steps "
                    "on the 128-320-D mixtures, 16x cheaper)")
    ap.add_argument("--ref-cache", help="folder that keeps each problem's reference "
                    "solution between runs (checked against the draws it was made for)")


def select_problems(spec: str | None) -> list:
    """``(name, mixture, sde)`` of the comma-separated problem names ``spec`` (None: all); an
    unknown name stops the script with the list to choose from."""
    known = {name: (gm, sde) for name, gm, sde in problems()}
    only = spec.split(",") if spec else list(known)
    unknown = [p for p in only if p not in known]
    if unknown:
        raise SystemExit(f"--problems: unknown {unknown}; choose from {list(known)}")
    return [(name, *known[name]) for name in only]


def anchor_errors(name, gm, sde, x_T, ref, nfe: int) -> dict:
    """``{"impl|solver|nfe": (per-draw squared error, whether the draw ended in another
    component than the answer's)}`` of every anchor (diffusers, and k-diffusion where it is
    installed) within a budget of ``nfe`` network calls, on the draws ``x_T`` with answer
    ``ref`` — what benchmarks/named_sweep.py and probe_named.py set their rows against."""
    ref_mode, last, out = gm.responsibilities(ref).argmax(1), {}, {}

    def err(x):
        sq, other = last["row"] = draw_errors(gm, x, ref, ref_mode)
        return dict(rmse=sq.mean().sqrt().item(), other_mode=int(other.sum()))

    def keep(r):
        if "rmse" in r and r["nfe"] <= nfe and math.isfinite(r["rmse"]):
            out[f'{r["impl"]}|{r["solver"]}|{r["nfe"]}'] = last["row"]
    saved, NFES[:] = list(NFES), [nfe]
    try:
        run_diffusers(keep, name, gm, sde, x_T, err)
        kd = k_diffusion_sampling()
        if kd is not None:
            run_k_diffusion(keep, kd, name, gm, sde, x_T, err)
    finally:
        NFES[:] = saved
    return out


def run_k_diffusion(emit, kd, name, gm, sde, x_T, err, model=None):
    """k-diffusion's samplers driven by the exact denoiser of ``gm`` — or by ``model`` (any
    Denoiser, e.g. a trained U-Net) when given — on the problem's own noise range."""
    s_T = sde.s(torch.tensor(sde.T, dtype=torch.float64))
    nu_min = float(sde.noise_level(torch.tensor(sde.t_min, dtype=torch.float64)))
    nu_max = float(sde.noise_level(torch.tensor(sde.T, dtype=torch.float64)))
    calls = [0]

    def denoiser(xt, nu):
        calls[0] += 1
        t = sde.t_from_noise_level(nu.to(torch.float64).clamp(nu_min, nu_max))
        s = sde.s(t).view(-1, *[1] * (xt.ndim - 1))
        if model is not None:
            with torch.no_grad():
                return model.x0((s * xt).to(x_T.dtype), t.to(x_T.dtype)).to(xt.dtype)
        return gm.x0(s * xt, sde.s(t), sde.sigma(t))
    xt_T = x_T / s_T

    def anchor(label, fn, *args, budget=None, **kw):
        calls[0] = 0
        start = time.perf_counter()
        try:
            x = fn(denoiser, xt_T, *args, disable=True, **kw)
        except FloatingPointError as e:  # a network fed a diverged state
            emit(dict(problem=name, impl="k-diffusion", solver=label, nfe=budget,
                      failed_after=calls[0], failed=str(e)))
            return
        emit(dict(problem=name, impl="k-diffusion", solver=label, nfe=calls[0], **err(x),
                  seconds=time.perf_counter() - start))
    for nfe in NFES:
        sig = kd.get_sigmas_karras(nfe, nu_min, nu_max, device="cpu").to(x_T.dtype)
        anchor("dpmpp_2m", kd.sample_dpmpp_2m, sig, budget=nfe)
        anchor("lms", kd.sample_lms, sig, budget=nfe)
        sig_h = kd.get_sigmas_karras((nfe + 1) // 2, nu_min, nu_max, device="cpu").to(x_T.dtype)
        anchor("heun", kd.sample_heun, sig_h, budget=nfe)
        anchor("dpm_fast", kd.sample_dpm_fast, nu_min, nu_max, nfe, budget=nfe)
    for tol in (0.2, 0.1, 0.05, 0.02, 0.01):
        anchor(f"dpm_adaptive(tol {tol})", kd.sample_dpm_adaptive, nu_min, nu_max, rtol=tol,
               atol=tol)


def run_tuned(emit, name, model, sde, dim, x_T, err, n_calib: int = 128, n_calib_bns: int = 512,
              device: str = "cpu", pool: int = 0, heldout_pool: int | None = None,
              pool_search: bool = True, bases=TUNED, bns_bases=BNS_BASES, base_opts=None,
              dtype=torch.float64):
    """The tuned pipeline as ``tune-steps`` runs it: calibration and validation draws of its
    own (seeds 1000, 1001) — with ``pool``, calibration stratified from a pool of that many
    prior draws (``tuning.stratified_draws``) and validation chosen after tuning from a second
    pool where the candidates disagree (``heldout_draws``; its first ``pool`` draws, doubled
    up to ``heldout_pool``, default 4·pool, while the choice is unstable: ``heldout_start``),
    as ``tune-steps`` does by default —, with ``pool_search`` the pool line search on the
    calibration pool (grid rows only: ``tune_timesteps(calibration_pool=...)``), the fall-back
    to the best candidate, then measured on the benchmark's draws. ``bases``: the solvers
    whose grids are tuned, ``bns_bases`` those whose coefficients are; ``base_opts`` their
    options (DPM-Solver-v3's statistics). ``dim``: the draws' dimension, or their shape (an
    image model's (C, H, W)); ``dtype``: the draws' (float32 for a trained network)."""
    from sdeflow.tuning import stratified_draws, tune_timesteps

    base_opts = base_opts or {}

    def draws(n, solver, steps, coefficients):
        sizes = (max(n, pool), max(n, heldout_pool or 4 * pool))
        shape = (dim,) if isinstance(dim, int) else tuple(dim)
        xs = [sde.prior_sample((size, *shape), generator=torch.Generator().manual_seed(1000 + k),
                               dtype=dtype).to(device) for k, size in enumerate(sizes)]
        if not pool:
            return xs, {}
        idx, w = stratified_draws(model, xs[0], n, solver=solver, steps=steps,
                                  generator=torch.Generator().manual_seed(1000),
                                  solver_opts=base_opts.get(solver))
        # validation: n draws chosen from the second pool after tuning (heldout_draws)
        search = {} if coefficients or not pool_search or len(xs[0]) <= n else dict(
            calibration_pool=xs[0], pool_draws=min(512, len(xs[0]) - 1))  # pool line search
        return [xs[0][idx.to(device)], xs[1]], dict(calibration_weights=w, heldout_draws=n,
                                                    heldout_start=max(n + 1, pool), **search)
    jobs = [(solver, "tuned", False, n_calib) for solver in bases]
    jobs += [(solver, "bns", True, n_calib_bns) for solver in bns_bases]
    for solver, label, coefficients, n_cal in jobs:
        for nfe in NFES:
            if coefficients and nfe > BNS_MAX_NFE:
                continue
            start = time.perf_counter()
            cal, weights = draws(n_cal, solver, nfe - 1, coefficients)
            res = tune_timesteps(model, cal[0], x_heldout=cal[1], solver=solver,
                                 steps=nfe - 1, max_evals=200, calibration_seed=1000,
                                 coefficients=coefficients, **weights,
                                 **base_opts.get(solver, {}))
            x, st = sdeflow.sample(model, x_T, solver=res.solver, timesteps=res.tensor(sde),
                                   return_stats=True, **res.solver_opts)
            emit(dict(problem=name, impl="sdeflow", solver=f"{solver}/{label}", nfe=st["nfe"],
                      **err(x), start_schedule=res.start_schedule, kept_start=res.kept_start,
                      t_end=res.timesteps[-1], method=res.method, n_calibration=n_cal,
                      calibration_loss=res.calibration_loss, heldout_loss=res.heldout_loss,
                      pool=pool, heldout_pool=res.heldout_pool, fallback=res.fallback,
                      best_named=res.best_named, heldout_losses=res.heldout_losses,
                      heldout_p_change=res.heldout_p_change, heldout_lead=res.heldout_lead,
                      search_choice=res.search_choice,
                      returned=dict(solver=res.solver, timesteps=res.timesteps,
                                    solver_opts=res.solver_opts),
                      tuning_device=device, tuning_seconds=round(time.perf_counter() - start, 1)))


def run_choice(emit, name, model, sde, dim, x_T, err, files, pool: int = 16384, n: int = 512):
    """The tuned pipeline's last step when several tuned files exist for one budget (one per
    base solver, and BNS): ``tuning.choose_tuned`` compares what each returned on one common
    validation pool (seed 1002, ``pool`` prior draws, references for ``n`` of them) and keeps
    the least loss — rather than comparing the rows' own validation losses, each estimated on
    other draws, whose least is biased towards the row whose estimate happened to be low.
    Rows from ``files`` (earlier ``--tuned-only`` runs; their ``returned`` configurations)."""
    import json
    from sdeflow.tuning import TunedSchedule, choose_tuned
    rows = [r for f in files for r in map(json.loads, open(f))
            if r.get("problem") == name and "returned" in r and r["nfe"] in NFES]
    x_pool = sde.prior_sample((pool, dim), generator=torch.Generator().manual_seed(1002),
                              dtype=torch.float64)
    for nfe in sorted({r["nfe"] for r in rows}):
        cands = {r["solver"]: TunedSchedule(**r["returned"], steps=len(r["returned"]["timesteps"])
                                            - 1, sde=sde.config(), calibration_loss=math.nan,
                                            start_loss=math.nan, start_schedule="")
                 for r in rows if r["nfe"] == nfe}
        best, losses = choose_tuned(model, cands, x_pool, n,
                                    generator=torch.Generator().manual_seed(1002))
        res = cands[best]
        x, st = sdeflow.sample(model, x_T, solver=res.solver, timesteps=res.tensor(sde),
                               return_stats=True, **res.solver_opts)
        emit(dict(problem=name, impl="sdeflow", solver="tuned/chosen", nfe=st["nfe"], **err(x),
                  chosen=best, choice_losses=losses, choice_pool=pool))


def run_diffusers(emit, name, gm, sde, x_T, err, model=None):
    """diffusers' schedulers driven by the exact denoiser of ``gm`` — or by ``model`` (any
    Denoiser, e.g. a trained U-Net) when given — on the problem's own noise levels."""
    try:
        import diffusers
    except ImportError:
        return
    f64 = torch.float64
    nu_min = float(sde.noise_level(torch.tensor(sde.t_min, dtype=f64)))
    nu_max = float(sde.noise_level(torch.tensor(sde.T, dtype=f64)))
    s_T = sde.s(torch.tensor(sde.T, dtype=f64))
    calls = [0]

    def D(xt, nu):  # the denoiser in (x̃, σ̃)
        calls[0] += 1
        nu = torch.as_tensor(nu, dtype=f64).clamp(nu_min, nu_max).reshape(-1)
        t = sde.t_from_noise_level(nu)
        s = sde.s(t).reshape(-1, *[1] * (xt.ndim - 1)) if t.numel() > 1 else sde.s(t)
        if model is not None:
            tt = t.expand(xt.shape[0]) if t.numel() == 1 else t
            with torch.no_grad():
                return model.x0((s * xt).to(x_T.dtype), tt.to(x_T.dtype)).to(xt.dtype)
        return gm.x0(s * xt, sde.s(t), sde.sigma(t))

    def emit_row(label, x):
        emit(dict(problem=name, impl="diffusers", solver=label, nfe=calls[0], **err(x)))

    # EDM scheduler in (x̃, σ̃): model output F with c_skip x̃ + c_out F = D (epsilon type)
    for order in (2, 3):
        for nfe in NFES:
            sch = diffusers.EDMDPMSolverMultistepScheduler(sigma_min=nu_min, sigma_max=nu_max,
                                                           solver_order=order)
            sch.set_timesteps(nfe)
            x, calls[0], sd = (x_T / s_T).clone(), 0, sch.config.sigma_data
            for i, t in enumerate(sch.timesteps):
                sig = sch.sigmas[i].to(f64)
                c_skip, c_out = sd**2 / (sig**2 + sd**2), sig * sd / (sig**2 + sd**2).sqrt()
                out = (D(x, sig) - c_skip * x) / c_out
                x = sch.step(out, t, x).prev_sample
            emit_row(f"EDMDPMSolverMultistep(order {order})", x)
    # discrete VP schedulers on 1000 levels made for this problem
    if sde.name == "vp":
        tn = torch.linspace(sde.t_min, sde.T, 1000, dtype=f64)
        nus = sde.noise_level(tn)
    else:
        nus = torch.logspace(torch.tensor(nu_min).log10(), torch.tensor(nu_max).log10(), 1000,
                             dtype=f64)
    abar = 1 / (1 + nus**2)
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=f64), abar[:-1]])
    kinds = [("DPMSolverMultistep(2M)", diffusers.DPMSolverMultistepScheduler, dict(solver_order=2)),
             ("DPMSolverMultistep(3M)", diffusers.DPMSolverMultistepScheduler, dict(solver_order=3)),
             ("UniPCMultistep(order 2)", diffusers.UniPCMultistepScheduler, dict(solver_order=2)),
             ("UniPCMultistep(order 3)", diffusers.UniPCMultistepScheduler, dict(solver_order=3)),
             ("DEISMultistep(order 3)", diffusers.DEISMultistepScheduler, dict(solver_order=3))]
    for label, cls, kw in kinds:
        for nfe in NFES:
            sch = cls(trained_betas=betas.numpy(), timestep_spacing="linspace",
                      final_sigmas_type="zero", **kw) if cls is not diffusers.DEISMultistepScheduler \
                else cls(trained_betas=betas.numpy(), timestep_spacing="linspace", **kw)
            sch.set_timesteps(nfe)
            x_vp, calls[0] = (x_T / s_T) / (1 + nu_max**2) ** 0.5, 0
            try:
                for t in sch.timesteps:
                    nu = nus[int(t)]
                    xt = x_vp * (1 + nu**2).sqrt()
                    eps = (xt - D(xt, nu)) / nu
                    x_vp = sch.step(eps.to(x_vp.dtype), t, x_vp).prev_sample
            except (torch.linalg.LinAlgError, FloatingPointError) as e:
                # UniPC(3)'s solve on a short grid; a network fed a diverged state
                emit(dict(problem=name, impl="diffusers", solver=label, nfe=nfe, failed=str(e)))
                continue
            if torch.isfinite(x_vp).all():
                emit_row(label, x_vp)
            else:
                emit(dict(problem=name, impl="diffusers", solver=label, nfe=nfe,
                          failed="non-finite output"))


def markdown(rows):
    out = ["| problem | NFE | best sdeflow (solver/schedule (NFE): error) | best named schedule | "
           "best anchor (k-diffusion or diffusers) | ratio best/anchor | auto: config, ratio to "
           "anchor | draws in another mode: best / anchor | error on the other draws: best / "
           "anchor |", "|---|---|---|---|---|---|---|---|---|"]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == problem and math.isfinite(r.get("rmse", math.nan))]
        for nfe in NFES:
            ours = [r for r in sub if r["impl"] == "sdeflow" and r["nfe"] <= nfe]
            named = [r for r in ours if not r["solver"].endswith(("/tuned", "/bns"))
                     and r["solver"] != "auto"]
            auto = [r for r in ours if r["solver"] == "auto" and r["nfe"] == nfe]
            theirs = [r for r in sub if r["impl"] != "sdeflow" and r["nfe"] <= nfe]
            if not ours or not theirs:
                continue
            o, t = min(ours, key=lambda r: r["rmse"]), min(theirs, key=lambda r: r["rmse"])
            n = min(named, key=lambda r: r["rmse"]) if named else None  # --solvers none
            out.append(f"| {problem} | ≤{nfe} | {o['solver']} ({o['nfe']}): {o['rmse']:.2e} | "
                       + (f"{n['solver']}: {n['rmse']:.2e} | " if n else "– | ")
                       + f"{t['impl']} {t['solver']} ({t['nfe']}): "
                       f"{t['rmse']:.2e} | **{o['rmse'] / t['rmse']:.2f}** | "
                       + (f"{auto[0]['config']}: **{auto[0]['rmse'] / t['rmse']:.2f}** | "
                          if auto else "– | ") +
                       f"{o.get('other_mode', '–')} / {t.get('other_mode', '–')} | "
                       f"{o.get('rmse_same_mode', math.nan):.2e} / "
                       f"{t.get('rmse_same_mode', math.nan):.2e} |")
    return "\n".join(out)


def main():
    def add(ap):
        add_evaluation_args(ap)
        ap.add_argument("--no-tune", action="store_true", help="skip the tuned-grid rows")
        ap.add_argument("--n-calib", type=int, default=128,
                        help="calibration (and validation) draws per tuned grid")
        ap.add_argument("--n-calib-bns", type=int, default=512,
                        help="calibration (and validation) draws per BNS solver")
        ap.add_argument("--tune-device", default="cpu", help="where the tuning runs (cpu, cuda)")
        ap.add_argument("--auto-only", action="store_true",
                        help="only the solver='auto' rows (merge them with an earlier run)")
        ap.add_argument("--ours-only", action="store_true",
                        help="only our named and auto rows (no anchors, no tuning)")
        ap.add_argument("--solvers", help="named rows: comma-separated labels of OURS (e.g. ipndm; "
                        "'none': only auto and the anchors)")
        ap.add_argument("--schedules", help="named rows: comma-separated schedules")
        ap.add_argument("--k-diffusion-only", action="store_true",
                        help="only k-diffusion's anchor rows (merge them with a run made "
                             "where its sampling module was missing)")
        ap.add_argument("--tuned-only", action="store_true",
                        help="only the tuned rows (merge them with an earlier --no-tune run)")
        ap.add_argument("--pool", type=int, default=4096,
                        help="stratify the tuned rows' draws from pools this large (0: plain)")
        ap.add_argument("--heldout-pool", type=int, default=None,
                        help="largest validation pool (default 4 × --pool): doubled from "
                             "--pool while the choice is unstable")
        ap.add_argument("--no-pool-search", action="store_true",
                        help="tuned rows without the pool line search (tune_timesteps' "
                             "calibration_pool)")
        ap.add_argument("--choose-from", help="comma-separated jsonl files of --tuned-only runs: "
                        "choose among each budget's tuned rows on one common validation pool "
                        "(rows solver='tuned/chosen'; no other rows)")
        ap.add_argument("--choice-pool", type=int, default=16384,
                        help="prior draws of that common validation pool (seed 1002)")
        ap.add_argument("--tuned-bases", help="comma-separated solvers whose grids are tuned "
                        f"(default: {','.join(TUNED)}; dpm_solver_v3 estimates its statistics)")
        ap.add_argument("--bns-bases", help="comma-separated solvers whose coefficients are "
                        f"tuned (default: {','.join(BNS_BASES)}; '' for none)")
        ap.add_argument("--ems-dir", default="outputs/ems",
                        help="where DPM-Solver-v3's statistics of each problem are cached")
        ap.add_argument("--eval-seed", type=int, default=0,
                        help="seed of the evaluation draws (tuning uses 1000 and 1001)")
        ap.add_argument("--errors-dir", help="keep every row's per-draw squared errors in "
                        "DIR/<problem>-n<N>-seed<S>.safetensors, for paired intervals "
                        "(benchmarks/ratio_intervals.py)")

    def body(emit, a):
        NFES[:] = a.nfes
        run(emit, n=a.n_eval, tune=not a.no_tune, n_calib=a.n_calib, n_calib_bns=a.n_calib_bns,
            tune_device=a.tune_device, only=a.problems and a.problems.split(","),
            eval_seed=a.eval_seed, ref_steps=a.ref_steps, auto_only=a.auto_only,
            tuned_only=a.tuned_only, pool=a.pool, heldout_pool=a.heldout_pool,
            ours_only=a.ours_only, k_diffusion_only=a.k_diffusion_only,
            pool_search=not a.no_pool_search, choice_pool=a.choice_pool,
            choose_from=a.choose_from and a.choose_from.split(","),
            solvers=a.solvers and a.solvers.split(","),
            schedules=a.schedules and a.schedules.split(","),
            tuned_bases=a.tuned_bases and a.tuned_bases.split(","),
            bns_bases=None if a.bns_bases is None else [b for b in a.bns_bases.split(",") if b],
            ems_dir=a.ems_dir, ref_cache=a.ref_cache, ref_schedule=a.ref_schedule,
            errors_dir=a.errors_dir)
    run_benchmark(__doc__, body, markdown, add)


if __name__ == "__main__":
    main()

"""``sdeflow sample``, ``sdeflow evaluate`` and ``sdeflow tune-steps``: draw from a trained
score model with any registered solver, score the draws, or tune a solver's time grid."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from .common import (add_command, add_sampling_args, check_condition, device, grid_args, json_dict,
                     load_run, run_condition, write_report)
from .controllable import add_guidance_args, guided_model

# `sdeflow ems`'s defaults (tune-steps estimates DPM-Solver-v3's statistics with them too)
EMS = dict(n=1024, points=200, batch=256, seed=1000)

__all__ = ["add_sample", "cmd_sample", "add_evaluate", "cmd_evaluate", "add_tune_steps",
           "cmd_tune_steps", "add_choose_steps", "cmd_choose_steps", "add_ems", "cmd_ems"]


def add_sample(sub) -> None:
    p = add_command(sub, "sample", cmd_sample, checkpoint=True)
    p.add_argument("-n", "--num", type=int, default=2000, help="number of samples")
    add_guidance_args(p)
    add_sampling_args(p)
    p.add_argument("--out", default="outputs/samples", help="output prefix (.npy, .png, .json)")


def _toy_reference(cfg, x, seed: int, stats: dict):
    """For toy data: fresh data draws to plot beside ``x``, and their sliced Wasserstein
    distance to ``x`` in ``stats``; None for images."""
    from ..data import get_data, list_vector_data
    from ..metrics import sliced_wasserstein
    if cfg.data not in list_vector_data():
        return None
    data = get_data(cfg.data, **cfg.data_kwargs).draw(len(x), torch.Generator().manual_seed(seed + 1))[0]
    stats["sliced_wasserstein_to_data"] = sliced_wasserstein(x, data)
    return {f"data ({cfg.data})": data}


def cmd_sample(a) -> int:
    """sample a trained checkpoint

    Load a checkpoint (run directory or ckpt folder), draw samples with any registered solver,
    save them (.npy) and a scatter plot (2-D) or an image grid.
    """
    import numpy as np

    from ..plotting import save_samples
    from ..samplers import sample
    dev = device()
    model, cfg = load_run(a.checkpoint, ("denoiser", "cld"), device=dev)
    task = getattr(cfg, "task", None)  # score models may be image-to-image models
    if task is not None:
        raise ValueError(f"this model was trained for --task {task}: use `sdeflow "
                         f"{'sr' if task == 'sr' else 'colorize'}`")
    model, cond = guided_model(a, model, cfg, a.num, dev)
    grid = grid_args(a, model, unconditional=not cond, dim=math.prod(cfg.shape),
                     condition=run_condition(a))
    check_condition(grid, run_condition(a))
    with torch.no_grad():
        x, stats = sample(model, shape=(a.num, *cfg.shape), seed=a.seed,
                          device=dev, cond=cond, progress=True, return_stats=True, **grid)
    x = x.cpu()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out.with_suffix(".npy"), x.numpy())
    reference = _toy_reference(cfg, x, a.seed, stats)
    save_samples(x, out.with_suffix(".png"), f"{stats['solver']}, NFE={stats['nfe']}", reference)
    write_report(out.with_suffix(".json"), stats, indent=None)
    print(f"wrote {out.with_suffix('.npy')}, {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    return 0


def add_evaluate(sub) -> None:
    p = add_command(sub, "evaluate", cmd_evaluate, checkpoint=True)
    p.add_argument("-n", "--num", type=int, default=1437, help="number of samples")
    add_sampling_args(p)
    p.add_argument("--batch", type=int, default=500, help="samples per batch")
    p.add_argument("--inception-weights", default=None,
                   help="path to pt_inception-2015-12-05 weights, for FID/KID (offline)")
    p.add_argument("--out", default="outputs/eval", help="output folder")


def _test_captions(cfg, n: int, seed: int):
    """({"tokens": (n, L)}, digit labels) of captions of the test split for a text model
    (its samples are scored against the captions' digits); ({}, None) for other models."""
    if not getattr(cfg, "text_cond", False):
        return {}, None
    from ..data import get_data
    kw = {k: v for k, v in cfg.data_kwargs.items() if k != "split"}
    from ..data import SPLIT_DATA
    if cfg.data in SPLIT_DATA:
        kw["split"] = "test"
    data = get_data(cfg.data, **kw)
    _, y, tokens = data.draw_captioned(n, torch.Generator().manual_seed(seed + 7))
    return {"tokens": tokens}, y


def cmd_evaluate(a) -> int:
    """sample a checkpoint and score it: metrics JSON + grid

    Draw --num samples from a checkpoint with any solver and score them against the model's
    data: MMD²/sliced Wasserstein for toy data; for the digits, the Fréchet distance in a digit
    classifier's feature space (FDD) beside its train-vs-test noise floor, classifier
    confidence and class balance; FID/KID for image data when --inception-weights is given.
    A text-conditional model samples captions of the test split (its digit accuracy is
    against the captions' digits).
    Writes OUT/metrics.json and OUT/samples.png.
    """
    from ..evaluate import draw_samples, evaluate_samples
    from ..plotting import save_samples
    model, cfg = load_run(a.checkpoint, ("denoiser", "cld"), device=device())
    labels = torch.arange(a.num) % cfg.num_classes if getattr(cfg, "class_cond", False) else None
    cond, text_labels = _test_captions(cfg, a.num, a.seed)
    grid = grid_args(a, model, unconditional=labels is None and not cond,
                     dim=math.prod(cfg.shape))
    check_condition(grid, None)  # every class in turn, or the test captions: no one condition
    x, st = draw_samples(model, cfg, a.num, batch=a.batch, seed=a.seed, labels=labels,
                         cond=cond, progress=True, **grid)
    labels = text_labels if text_labels is not None else labels
    steps = len(grid["timesteps"]) - 1 if "timesteps" in grid else a.steps
    report = dict(checkpoint=str(a.checkpoint), data=cfg.data, solver=grid["solver"], steps=steps,
                  timesteps_file=a.timesteps_file,  # the grid itself, from it or installed:
                  timesteps=grid["timesteps"].tolist() if "timesteps" in grid else None,
                  **st, **evaluate_samples(x, cfg, labels=labels,
                                           inception_weights=a.inception_weights, seed=a.seed))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_samples(x, out / "samples.png", f"{grid['solver']}, NFE {st['nfe']}")
    write_report(out / "metrics.json", report)
    print(f"wrote {out / 'metrics.json'} and {out / 'samples.png'}")
    return 0


def _tunable_solvers() -> list[str]:
    """Fixed-step ODE solvers whose grid tune-steps can move (bns is tune-steps' own output)."""
    from ..samplers import get_solver, list_solvers
    return [s for s in list_solvers("ode") if not get_solver(s).adaptive and s != "bns"]


def add_tune_steps(sub) -> None:
    p = add_command(sub, "tune-steps", cmd_tune_steps, checkpoint=True)
    p.add_argument("--solver", default=None, choices=_tunable_solvers(),
                   help="the solver whose grid is tuned (with --coefficients: the starting "
                        "solver, one network call per step). Default: the base that won the "
                        "benchmarks (docs/benchmarks.md, issue 20): dpm_solver_v3 — its "
                        "statistics estimated first as `sdeflow ems` does when the checkpoint "
                        "folder has none (1024 trajectories, 200 network calls with a backward "
                        "pass each; written there) —; unipc with --coefficients; dpmpp_2m with "
                        "--method pattern (no gradients, so no statistics)")
    p.add_argument("--steps", type=int, default=9, help="grid intervals (NFE ≈ steps × NFE/step + 1)")
    p.add_argument("--n-calib", type=int, default=128, help="calibration (and validation) draws")
    _add_pool_args(p)
    p.add_argument("--calib-seed", type=int, default=1000,
                   help="seed of the calibration draws (validation uses calib-seed + 1)")
    p.add_argument("--method", choices=["gradient", "pattern"], default="gradient",
                   help="Adam on the grid through solver and network, or pattern search "
                        "(no gradients; for models that cannot be differentiated)")
    p.add_argument("--fixed-end", action="store_true",
                   help="keep the last time at t_min (default: tune where the final denoising "
                        "happens too)")
    p.add_argument("--coefficients", action="store_true",
                   help="tune the solver's linear-multistep coefficients with the grid (gradient "
                        "method; Shaul et al. 2024); for few steps (≤ 8–10 NFE); give it more "
                        "calibration draws (--n-calib 512 or more) than a grid")
    p.add_argument("--max-evals", type=int, default=200,
                   help="iterations (gradient: one forward + backward pass each) or solver runs "
                        "(pattern) the search may spend")
    p.add_argument("--solver-opts", type=json_dict, default={},
                   help="options of --solver as JSON, e.g. '{\"statistics\": "
                        "\"outputs/ems.safetensors\"}' for dpm_solver_v3 (from `sdeflow ems`)")
    p.add_argument("--out", default="outputs/tuned_schedule.json")
    p.add_argument("--install", action="store_true",
                   help="also put the result in the checkpoint folder (tuned/nfe<N>.json, N "
                        "its network calls), where `sample` and `evaluate` without --solver "
                        "use it whenever --steps is N (unconditional sampling)")


def _add_pool_args(p) -> None:
    """tune-steps' calibration and validation pools: --pool, --heldout-pool, --pool-partners."""
    p.add_argument("--pool", type=int, default=None,
                   help="stratify: choose the --n-calib calibration (and validation) draws from "
                        "a pool of this many prior draws (default: 4096, or --n-calib if more), "
                        "the hardest half (where the solver changes most when its steps are "
                        "quadrupled: draws near a boundary between modes) always in, weighted so "
                        "the loss stays the pool's mean error; the validation draws are chosen "
                        "after tuning from a second pool, where the tuned grid, its start and "
                        "the 3 best named solver × schedule disagree most, and the best of them "
                        "on those is returned; costs ≈ pool × 10 × steps network calls without "
                        "gradients (0: plain draws)")
    p.add_argument("--heldout-pool", type=int, default=None,
                   help="largest validation pool (default: 4 × --pool): validation starts on "
                        "--pool draws and doubles them while the choice is unstable — while "
                        "the bootstrap probability that another candidate would win on a "
                        "re-drawn pool exceeds 0.1, as when a few draws that one candidate "
                        "sends into another mode decide it — or while the chosen one's lead "
                        "is smaller than three unseen such draws would cost it (rule of three: "
                        "none in N draws only bounds their rate below 3/N); solver 'auto' at "
                        "the same NFE is among the candidates whenever it is a one-call "
                        "solver there (4–30 NFE)")
    p.add_argument("--pool-partners", type=int, default=3,
                   help="after the search, score the grids on the whole --pool (needs --pool "
                        "> --n-calib; references for 512 draws, half where the grids disagree "
                        "most, half at random), so that draws the solver "
                        "sends into another mode count at their rate: the solver on every "
                        "named schedule, then blends in log-SNR (α = 1/4, 1/2, 3/4) of the "
                        "tuned grid and this many of the best of those, pairwise; the least "
                        "loss is the tuned grid (0: tuned against the named ones only; -1: "
                        "off; not with --coefficients); costs ≈ 31 solver runs on the pool without "
                        "gradients at 3 partners (12 schedules, 18 blends; 25 with --fixed-end) "
                        "and up to 1024 reference solves")


def cmd_tune_steps(a) -> int:
    """optimise a solver's time steps for a trained model

    Tune the time grid of a fixed-step ODE solver for a checkpoint and a step budget: the grid
    is moved (in log-SNR) to minimise the RMS distance of the solver's samples to an adaptive
    RK45 reference on --n-calib calibration noise draws (by gradient descent through the
    solver, or a derivative-free pattern search), validated on as many separate draws; with
    --coefficients the solver's multistep coefficients are tuned too (a bespoke
    non-stationary 'bns' solver). Evaluation noise (sample/evaluate --seed) is a third,
    separate set. Writes a JSON schedule for `sdeflow sample/evaluate --timesteps-file`; with
    --install also into the checkpoint folder, where `sample` and `evaluate` without --solver
    use it whenever --steps is its NFE.
    """
    from ..tuning import tune_timesteps
    dev = device()
    model, cfg = load_run(a.checkpoint, "denoiser", device=dev)
    if a.pool is None:
        a.pool = max(4096, a.n_calib)
    if a.pool_partners < -1:
        raise ValueError(f"--pool-partners must be ≥ 0, or -1 to turn the pool line search off; "
                         f"got {a.pool_partners}")
    if a.pool and a.pool < a.n_calib:
        raise ValueError(f"--pool ({a.pool}) must be at least --n-calib ({a.n_calib})")
    if a.heldout_pool is not None and not a.pool:
        raise ValueError("--heldout-pool needs a pool: validation grows a pool chosen after "
                         "tuning, and --pool 0 validates on plain draws (drop one of them)")
    if a.heldout_pool is None:
        a.heldout_pool = 4 * a.pool
    if a.pool and a.heldout_pool < a.pool:
        raise ValueError(f"--heldout-pool ({a.heldout_pool}) must be at least --pool ({a.pool})")
    _tuning_base(a, model, cfg, dev)  # after the checks: it may estimate statistics first
    if isinstance(a.solver_opts.get("statistics"), str):  # so the file works from anywhere
        a.solver_opts["statistics"] = str(Path(a.solver_opts["statistics"]).resolve())
    check_condition(dict(solver=a.solver, **a.solver_opts), None)  # tuning is unconditional
    sizes = (a.pool or a.n_calib, a.heldout_pool if a.pool > a.n_calib else a.pool or a.n_calib)
    draws = [model.sde.prior_sample((size, *cfg.shape),
                                    generator=torch.Generator().manual_seed(a.calib_seed + k))
             .to(dev) for k, size in enumerate(sizes)]
    weights = {}
    if a.pool:  # stratified calibration draws (sdeflow.tuning.stratified_draws); validation
        from ..tuning import stratified_draws  # draws chosen from the other pool after tuning
        idx, weights["calibration_weights"] = stratified_draws(
            model, draws[0], a.n_calib, solver=a.solver, steps=a.steps,
            generator=torch.Generator().manual_seed(a.calib_seed), solver_opts=a.solver_opts)
        if a.pool_partners >= 0 and a.pool > a.n_calib and not a.coefficients:
            weights["calibration_pool"] = draws[0]  # the pool line search
            weights["pool_partners"] = a.pool_partners
            weights["pool_draws"] = min(512, a.pool - 1)
        draws[0] = draws[0][idx.to(dev)]
        if a.pool > a.n_calib:
            weights["heldout_draws"] = a.n_calib
            weights["heldout_start"] = a.pool
    res = tune_timesteps(model, draws[0], x_heldout=draws[1], solver=a.solver, steps=a.steps,
                         max_evals=a.max_evals, calibration_seed=a.calib_seed, progress=True,
                         method=a.method, free_end=not a.fixed_end, coefficients=a.coefficients,
                         **weights, **a.solver_opts)
    res.pool = a.pool
    res.save(a.out)
    print(json.dumps({k: v for k, v in res.__dict__.items() if k not in ("timesteps", "solver_opts")},
                     indent=2))
    print(f"wrote {a.out}")
    if a.install:
        from ..tuning import install
        path, nfe = install(res, model, a.checkpoint, draws[1][:1])
        print(f"installed {path}: `sdeflow sample {a.checkpoint} --steps {nfe}` samples with it")
    return 0


def _tuning_base(a, model, cfg, dev) -> None:
    """Set ``a.solver`` (default: :func:`add_tune_steps`' rule) and, for DPM-Solver-v3, its
    statistics: those of the checkpoint folder, else estimated now with `sdeflow ems`'s
    defaults (unconditional, as tuning is) and written there, as `sdeflow ems` would."""
    from ..samplers.ems import estimate_statistics, statistics_path, with_default_statistics
    if a.solver is None:
        a.solver = ("unipc" if a.coefficients else "dpmpp_2m" if a.method == "pattern"
                    else "dpm_solver_v3")
    a.solver_opts = with_default_statistics(a.solver, a.solver_opts, a.checkpoint)
    if a.solver != "dpm_solver_v3" or a.solver_opts.get("statistics") is not None:
        return
    if a.method == "pattern":
        raise ValueError("--solver dpm_solver_v3 --method pattern: the solver needs the "
                         f"model's statistics (`sdeflow ems {a.checkpoint}`, which needs "
                         "gradients); give --solver-opts '{\"statistics\": FILE}' or another "
                         "--solver")
    path = statistics_path(a.checkpoint)
    print(f"tune-steps: no DPM-Solver-v3 statistics for {a.checkpoint}: estimating them as "
          f"`sdeflow ems` does ({EMS['n']} trajectories, {EMS['points']} log-SNRs) into "
          f"{path}", file=sys.stderr)
    stats = estimate_statistics(model, tuple(cfg.shape), progress=True, device=dev, **EMS)
    try:
        a.solver_opts["statistics"] = str(stats.save(path))
    except OSError as e:  # a read-only folder: tune with them all the same (--out gets a copy)
        print(f"tune-steps: could not write {path} ({e}); tuning with the statistics unsaved",
              file=sys.stderr)
        a.solver_opts["statistics"] = stats


def add_choose_steps(sub) -> None:
    p = add_command(sub, "choose-steps", cmd_choose_steps, checkpoint=True)
    p.add_argument("files", nargs="+", help="tuned schedules (JSON from `sdeflow tune-steps`), "
                                            "e.g. one per base solver for the same NFE")
    p.add_argument("--pool", type=int, default=16384, help="prior draws of the common pool")
    p.add_argument("--n-ref", type=int, default=512,
                   help="draws of the pool that get a reference (half where the files disagree "
                        "most, half at random)")
    p.add_argument("--seed", type=int, default=1002,
                   help="seed of the pool: use draws none of the files was tuned or validated "
                        "on (tune-steps uses --calib-seed 1000 and 1001)")
    p.add_argument("--out", default="outputs/chosen_schedule.json",
                   help="where the chosen file is copied")


def cmd_choose_steps(a) -> int:
    """choose the best of several tuned schedules on one common pool

    Compare tuned schedules for the same model and budget (one `tune-steps` file per base
    solver, a BNS one, ...) on one pool of fresh prior draws — every file run on every draw,
    references for --n-ref of them — and copy the one with the least estimated RMS error to
    --out. Why not the files' own validation losses: each was estimated on other draws, and the
    least of several noisy estimates favours the one that happened to come out low.
    """
    from ..tuning import TunedSchedule, choose_tuned
    dev = device()
    model, cfg = load_run(a.checkpoint, "denoiser", device=dev)
    files = {str(f): TunedSchedule.load(f) for f in a.files}
    if not 1 <= a.n_ref < a.pool:
        raise ValueError(f"--n-ref must be between 1 and --pool - 1 ({a.pool - 1}), got {a.n_ref}")
    pool = model.sde.prior_sample((a.pool, *cfg.shape),
                                  generator=torch.Generator().manual_seed(a.seed)).to(dev)
    best, losses = choose_tuned(model, files, pool, a.n_ref, progress=True,
                                generator=torch.Generator().manual_seed(a.seed))
    files[best].save(a.out)
    print(json.dumps(dict(chosen=best, losses=losses, pool=a.pool, n_ref=a.n_ref), indent=2))
    print(f"wrote {a.out}")
    return 0


def add_ems(sub) -> None:
    p = add_command(sub, "ems", cmd_ems, checkpoint=True)
    p.add_argument("-n", "--num", type=int, default=EMS["n"],
                   help="PF-ODE trajectories the statistics average over")
    p.add_argument("--points", type=int, default=EMS["points"],
                   help="log-SNRs, equally spaced over the SDE's range, where they are estimated")
    p.add_argument("--batch", type=int, default=EMS["batch"], help="draws per network call")
    p.add_argument("--seed", type=int, default=EMS["seed"],
                   help="seed of the prior draws and probes")
    add_guidance_args(p)
    p.add_argument("--out", default=None,
                   help="where to write them (default: ems.safetensors in the checkpoint folder, "
                        "where `sample`, `tune-steps` and `serve` look for DPM-Solver-v3's "
                        "statistics when none are given)")


def cmd_ems(a) -> int:
    """estimate DPM-Solver-v3's empirical model statistics

    Estimate the statistics l, s, b of DPM-Solver-v3 (Zheng et al. 2023) for a checkpoint from
    --num of its own PF-ODE trajectories (no data needed; --points network calls with a
    backward pass each, on every trajectory). Sample with them by `sdeflow sample CKPT
    --solver dpm_solver_v3 --steps N --schedule ays`, or tune the solver's grid with `sdeflow
    tune-steps CKPT --solver dpm_solver_v3` (both find them in the checkpoint folder; statistics
    written elsewhere are given by --solver-opts '{"statistics": "OUT"}'). The conditioning
    options (--class, --prompt, --guidance) estimate them for the model sampled that way. The
    file records them and the weights' fingerprint (v3 warns when it is used with other
    weights).
    """
    from ..samplers.ems import estimate_statistics, statistics_path
    if a.num < 2 or a.points < 3 or a.batch < 1:
        raise ValueError(f"need --num ≥ 2, --points ≥ 3 and --batch ≥ 1 (got {a.num}, "
                         f"{a.points}, {a.batch})")
    if a.classifier:
        raise ValueError("--classifier: classifier guidance's gradient is detached from x, so "
                         "the statistics' Jacobian would miss it; estimate them without it, or "
                         "guide a class-conditional model (--class, --guidance)")
    dev = device()
    model, cfg = load_run(a.checkpoint, "denoiser", device=dev)
    model, cond = guided_model(a, model, cfg, a.num, dev)
    stats = estimate_statistics(model, tuple(cfg.shape), n=a.num, points=a.points,
                                batch=a.batch, seed=a.seed, progress=True, device=dev, cond=cond,
                                condition=run_condition(a))
    path = stats.save(a.out or statistics_path(a.checkpoint))
    print(json.dumps(dict(points=a.points, trajectories=a.num, condition=stats.condition,
                          log_snr=[float(stats.lam[0]), float(stats.lam[-1])],
                          l_mean=float(stats.l.mean()), s_mean=float(stats.s.mean()))))
    print(f"wrote {path}")
    return 0

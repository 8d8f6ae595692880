"""One- and few-step generation on the digits: progressive-distillation students, consistency
distillation (CD) and consistency training from scratch (iCT) against the best training-free
solvers of ours at the same number of network evaluations.

    python benchmarks/distillation.py --teacher runs/digits --work runs/distill \\
        --markdown --out docs/distillation_results.jsonl --grids docs

Teacher: the demo's digits U-Net (trained first, the demo's config, when ``--teacher`` has no
checkpoint). Each program is trained into ``--work/<name>`` unless it already holds a finished
run; its wall time is kept in ``--work/<name>/wall_seconds.json`` so a re-run reports it too.

* ``pd``: progressive distillation from ``--pd-start`` DDIM steps down to 1, ``--pd-round``
  optimiser steps a round, every round's student kept (``ckpt-<round end>``);
* ``cd``: consistency distillation, Heun teacher steps on the N = 18 Karras grid, target EMA μ;
* ``ict``: improved consistency training from scratch (same U-Net, pseudo-Huber, N(k) 10→1280).

Every row samples 1437 images from the same prior draws (seed 0) and scores them with the digits
metric (FDD against the test split; noise floor = train vs test, 1.18). Training-free rows at a
budget of B evaluations: DPM-Solver++(2M), UniPC and DDIM on the SDE's schedule (B − 1 steps and
the final denoising call, or B steps without it, whichever is better), and DPM-Solver++(2M) on a
grid tuned for that budget (``sdeflow.tuning``; 128 calibration draws, seed 1000; validation
seed 1001) with and without its coefficients (BNS). Consistency models sample with
``solver="consistency"`` at ``steps = B`` on the schedule's grid; a PD student at B steps is
the student of the round that ends at B steps, on its own grid.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from common import run_benchmark
from torch import Tensor

import sdeflow
from sdeflow.metrics.digits import digits_metrics

BUDGETS = [1, 2, 4, 8]
FREE = ["dpmpp_2m", "unipc", "ddim"]


# --- training -----------------------------------------------------------------------------------
def programs(a) -> dict:
    """The three distillation configs of the benchmark (each resolved against the teacher)."""
    from sdeflow.training.consistency import (ConsistencyDistillationConfig,
                                              ConsistencyTrainingConfig)
    from sdeflow.models import default_model_kwargs
    from sdeflow.training.progressive import ProgressiveConfig
    rounds = (a.pd_start - 1).bit_length()
    common = dict(data="digits", batch_size=a.batch_size, seed=0, sample_every=0, log_every=50)
    return {
        "pd": ProgressiveConfig(teacher=a.teacher, start_steps=a.pd_start, final_steps=1,
                                steps_per_round=a.pd_round, steps=rounds * a.pd_round,
                                lr=a.pd_lr, ema_decay=a.pd_ema, warmup=50,
                                ckpt_every=a.pd_round, keep=rounds + 1, **common),
        "cd": ConsistencyDistillationConfig(teacher=a.teacher, steps=a.cd_steps, lr=a.cd_lr,
                                            sigma_data=0.5, loss=a.cd_loss, mu=a.cd_mu,
                                            ema_decay=0.999, ckpt_every=1000, **common),
        "ict": ConsistencyTrainingConfig(model="unet", model_kwargs=a.unet_kwargs
                                         or default_model_kwargs("unet", (1, 8, 8)),
                                         steps=a.ict_steps, lr=a.ict_lr, sigma_data=0.5,
                                         ema_decay=0.999, ckpt_every=1000, **common),
    }


def train_all(a) -> dict:
    """Train every missing run; {name: wall seconds of its training}."""
    from sdeflow.demo import digits_config
    from sdeflow.training import train
    walls = {}
    jobs = {"teacher": (digits_config(), Path(a.teacher))}
    jobs.update({k: (cfg, Path(a.work) / k) for k, cfg in programs(a).items() if k in a.programs})
    for name, (cfg, run) in jobs.items():
        stamp = run / "wall_seconds.json"
        if not stamp.exists():
            t0 = time.perf_counter()
            train(cfg, run, resume=(run / "latest").exists())
            run.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps(dict(seconds=time.perf_counter() - t0,
                                             threads=torch.get_num_threads(), steps=cfg.steps)))
        walls[name] = json.loads(stamp.read_text())
    return walls


def step_seconds(a, name: str, n: tuple[int, int] = (20, 80)) -> float:
    """Seconds per optimiser step of program ``name``: the difference of two short runs (so
    start-up is left out), measured separately from the long run, which may have shared the
    cores with other work."""
    import dataclasses
    import tempfile

    from sdeflow.demo import digits_config
    from sdeflow.training import train
    cfg = digits_config() if name == "teacher" else programs(a)[name]
    times = []
    for steps in n:
        extra = dict(steps_per_round=steps, steps=steps * cfg.rounds) if name == "pd" else \
            dict(steps=steps)
        short = dataclasses.replace(cfg, ckpt_every=10**6, log_every=10**6, **extra)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train(short, Path(tmp) / "run", progress=False)
            times.append(time.perf_counter() - t0)
    return (times[1] - times[0]) / (n[1] - n[0]) if name != "pd" else \
        (times[1] - times[0]) / ((n[1] - n[0]) * cfg.rounds)


# --- evaluation ---------------------------------------------------------------------------------
def scored(x: Tensor) -> dict:
    m = digits_metrics(x.clamp(-1, 1).cpu())
    return dict(fdd=round(m["fdd"], 3), floor=round(m["fdd_floor_train_vs_test"], 3),
                confidence=round(m["confidence"], 3), class_kl=round(m["class_kl"], 4))


def timed_sample(model, x_T, **opts):
    with torch.no_grad():
        t0 = time.perf_counter()
        x, st = sdeflow.sample(model, x_T, return_stats=True, **opts)
        return x, st["nfe"], time.perf_counter() - t0


def training_free(model, x_T, cal, refs, budget, max_evals):
    """Rows ``(label, x, nfe, seconds)`` of the training-free solvers at ``budget`` NFE."""
    from sdeflow.tuning import tune_timesteps
    sched = model.sde.default_schedule
    for solver in FREE:
        tries = [dict(steps=budget, denoise=False)] + ([dict(steps=budget - 1)] if budget > 1 else [])
        best = None
        for opts in tries:
            x, nfe, sec = timed_sample(model, x_T, solver=solver, **opts)
            row = (f"{solver}/{sched}", x, nfe, sec, scored(x))
            best = row if best is None or row[4]["fdd"] < best[4]["fdd"] else best
        yield best
    if budget < 2:
        return
    for label, coefficients in (("dpmpp_2m/tuned", False), ("dpmpp_2m/bns", True)):
        tuned = tune_timesteps(model, cal[0], x_heldout=cal[1], solver="dpmpp_2m",
                               steps=budget - 1, reference=refs[0], reference_heldout=refs[1],
                               max_evals=max_evals, coefficients=coefficients)
        x, nfe, sec = timed_sample(model, x_T, solver=tuned.solver,
                                   timesteps=tuned.tensor(model.sde), **tuned.solver_opts)
        yield (label, x, nfe, sec, scored(x))


def distilled(a, budget, x_T):
    """Rows of the distilled models at ``budget`` NFE."""
    work = Path(a.work)
    if "pd" in a.programs:
        cfg = programs(a)["pd"]
        ends = dict(zip([cfg.start_steps >> (r + 1) for r in range(cfg.rounds)], cfg.round_ends()))
        if budget in ends:
            student, _ = sdeflow.load(work / "pd" / f"ckpt-{ends[budget]:08d}")
            x, nfe, sec = timed_sample(student, x_T)
            yield (f"PD student ({budget} step{'s' * (budget > 1)})", x, nfe, sec, scored(x))
    for name in ("cd", "ict"):
        if name in a.programs:
            model, _ = sdeflow.load(work / name)
            x, nfe, sec = timed_sample(model, x_T, solver="consistency", steps=budget)
            yield (f"{name.upper()} ({budget}-step)", x, nfe, sec, scored(x))


def body(emit, a):
    from sdeflow.plotting import labelled_grids
    a.programs = a.programs.split(",")
    walls = train_all(a)
    for name, w in walls.items():
        per_step = step_seconds(a, name) if a.measure_cost else None
        emit(dict(kind="cost", program=name, seconds=round(w["seconds"], 1), steps=w["steps"],
                  threads=w["threads"], step_ms=per_step and round(1000 * per_step, 1),
                  quiet_seconds=per_step and round(per_step * w["steps"], 1)))
    teacher, cfg = sdeflow.load(a.teacher)
    sde, shape = teacher.sde, tuple(cfg.shape)
    x_T = sde.prior_sample((a.n, *shape), generator=torch.Generator().manual_seed(0))
    cal = [sde.prior_sample((a.n_calib, *shape), generator=torch.Generator().manual_seed(1000 + k))
           for k in (0, 1)]
    with torch.no_grad():
        refs = [sdeflow.sample(teacher, c, solver="rk45", rtol=1e-4, atol=1e-4) for c in cal]
        x, nfe, sec = timed_sample(teacher, x_T, solver="rk45", rtol=1e-4, atol=1e-4)
    emit(dict(kind="sample", budget=None, method="teacher, RK45 1e-4", nfe=nfe,
              seconds=round(sec, 2), **scored(x)))
    for budget in a.budgets:
        panels = {}
        for label, x, nfe, sec, m in [*training_free(teacher, x_T, cal, refs, budget, a.tune_iters),
                                      *distilled(a, budget, x_T)]:
            emit(dict(kind="sample", budget=budget, method=label, nfe=nfe, seconds=round(sec, 2), **m))
            panels[f"{label}, NFE {nfe}, FDD {m['fdd']:.2f}"] = x[:36].clamp(-1, 1)
        labelled_grids(panels, Path(a.grids) / f"distill_nfe{budget}.png", nrow=6,
                       title=f"digits, {budget} network evaluation{'s' * (budget > 1)} "
                             f"(noise floor FDD {m['floor']:.2f})")


def markdown(rows):
    cost = [r for r in rows if r.get("kind") == "cost"]
    samples = [r for r in rows if r.get("kind") == "sample" and r["budget"] is not None]
    budgets = sorted({r["budget"] for r in samples})
    out = ["| method | " + " | ".join(f"{b} NFE: FDD (s)" for b in budgets) + " |",
           "|---|" + "---:|" * len(budgets)]
    family = lambda m: m.split(" (")[0]  # noqa: E731 — "PD student (4 steps)" → one row
    for fam in dict.fromkeys(family(r["method"]) for r in samples):
        cells = []
        for b in budgets:
            r = [r for r in samples if family(r["method"]) == fam and r["budget"] == b]
            cells.append(f"{r[0]['fdd']:.2f} ({r[0]['seconds']:.1f})" if r else "—")
        out.append(f"| {fam} | " + " | ".join(cells) + " |")
    ref = [r for r in rows if r.get("kind") == "sample" and r["budget"] is None]
    if ref:
        out.append(f"\nteacher with RK45 (1e-4): FDD {ref[0]['fdd']:.2f} at NFE {ref[0]['nfe']}; "
                   f"noise floor {ref[0]['floor']:.2f}")
    out += ["", "| training | steps | ms/step (quiet) | steps × ms/step (s) | wall of the run (s) |",
            "|---|---:|---:|---:|---:|"]
    out += [f"| {r['program']} | {r['steps']} | {r.get('step_ms') or '—'} | "
            f"{r.get('quiet_seconds') or '—'} | {r['seconds']:.0f} |" for r in cost]
    return "\n".join(out)


def args(ap):
    ap.add_argument("--teacher", default="runs/digits", help="the teacher's run directory")
    ap.add_argument("--work", default="runs/distill", help="where the distilled runs go")
    ap.add_argument("--grids", default="outputs", help="folder of the distill_nfe*.png grids")
    ap.add_argument("--programs", default="pd,cd,ict", help="comma-separated subset of pd,cd,ict")
    ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
    ap.add_argument("--measure-cost", action="store_true",
                    help="also time each program's optimiser step in two short runs")
    ap.add_argument("--n", type=int, default=1437, help="samples per row")
    ap.add_argument("--n-calib", type=int, default=128, help="calibration draws of the tuned grids")
    ap.add_argument("--tune-iters", type=int, default=100, help="Adam iterations of a tuned grid")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pd-start", type=int, default=32, help="the teacher's DDIM steps in round 0")
    ap.add_argument("--pd-round", type=int, default=800, help="optimiser steps per PD round")
    ap.add_argument("--pd-lr", type=float, default=3e-4)
    ap.add_argument("--pd-ema", type=float, default=0.995)
    ap.add_argument("--cd-steps", type=int, default=2500)
    ap.add_argument("--cd-lr", type=float, default=5e-4)
    ap.add_argument("--cd-mu", type=float, default=0.95)
    ap.add_argument("--cd-loss", default="l2")
    ap.add_argument("--ict-steps", type=int, default=5000)
    ap.add_argument("--ict-lr", type=float, default=1e-3)
    ap.add_argument("--unet-kwargs", type=json.loads, default=None,
                    help="iCT's U-Net (default: the teacher's)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra_args=args)

"""Few-step sampling on a trained image model: the digits metric (FDD, with its noise floor)
vs NFE for the fast solvers on the digits U-Net of `make demo`, and one grid per NFE budget.

    python benchmarks/digits_nfe.py --run runs/digits --markdown --out docs/digits_nfe_results.jsonl

The run directory is trained first (the demo's config) if it has no checkpoint. Every solver
starts from the same 1437 prior draws (seed 0); ``dpmpp_2m/tuned`` uses a grid tuned by
``sdeflow.tuning`` on ``--n-calib`` other draws (default 128; seed 1000, validated on seed
1001; RK45 at 1e-4 as the reference; 100 Adam iterations through solver and U-Net, final time
free), ``dpmpp_2m/bns`` the same with DPM-Solver++(2M)'s coefficients tuned too (a bespoke
non-stationary solver). ``--device cuda`` runs everything but the metric on a GPU (the prior
draws are made on the CPU, so they are the same draws).
"""
from __future__ import annotations

from pathlib import Path

import torch
from common import run_benchmark

import sdeflow
from sdeflow.metrics.digits import digits_metrics

BUDGETS = [5, 10, 20]
SOLVERS = [("dpmpp_2m", 1), ("dpmpp_3m", 1), ("unipc", 1), ("ipndm", 1), ("deis", 1),
           ("heun", 2), ("ddim", 1)]


def body(emit, a):
    from sdeflow.demo import digits_config
    from sdeflow.plotting import labelled_grids
    from sdeflow.train import load_denoiser, train
    from sdeflow.tuning import tune_timesteps
    run = Path(a.run)
    if not (run / "latest").exists():
        train(digits_config(), run)
    model, cfg = load_denoiser(run, device=a.device)
    sde = model.sde
    x_T = sde.prior_sample((1437, *cfg.shape), generator=torch.Generator().manual_seed(0)).to(a.device)
    cal = [sde.prior_sample((a.n_calib, *cfg.shape), generator=torch.Generator().manual_seed(1000 + k))
           .to(a.device) for k in (0, 1)]
    with torch.no_grad():  # reference answers of the calibration draws, shared by all budgets
        refs = [sdeflow.sample(model, c, solver="rk45", rtol=1e-4, atol=1e-4) for c in cal]
    for nfe in a.budgets:
        panels = {}
        runs = [(f"{s}/{sde.default_schedule}", s, dict(steps=(nfe - 1) // k)) for s, k in SOLVERS
                if (nfe - 1) // k >= 1]
        for label, coefficients in (("dpmpp_2m/tuned", False), ("dpmpp_2m/bns", True)):
            tuned = tune_timesteps(model, cal[0], x_heldout=cal[1], solver="dpmpp_2m",
                                   steps=nfe - 1, reference=refs[0], reference_heldout=refs[1],
                                   max_evals=100, coefficients=coefficients)
            runs.append((label, tuned.solver, dict(timesteps=tuned.tensor(sde), **tuned.solver_opts)))
        for label, solver, opts in runs:
            with torch.no_grad():
                x, st = sdeflow.sample(model, x_T, solver=solver, return_stats=True, **opts)
            x = x.clamp(-1, 1).cpu()
            m = digits_metrics(x)
            emit(dict(budget=nfe, solver=label, nfe=st["nfe"], fdd=round(m["fdd"], 4),
                      floor=round(m["fdd_floor_train_vs_test"], 4),
                      confidence=round(m["confidence"], 4), class_kl=round(m["class_kl"], 4)))
            if label in ("dpmpp_2m/bns", "dpmpp_2m/tuned", f"dpmpp_2m/{sde.default_schedule}",
                         f"unipc/{sde.default_schedule}", f"heun/{sde.default_schedule}"):
                panels[f"{label}, NFE {st['nfe']}, FDD {m['fdd']:.2f}"] = x[:36]
        labelled_grids(panels, Path(a.grids) / f"digits_nfe{nfe}.png", nrow=6,
                       title=f"digits U-Net, budget {nfe} NFE (noise floor FDD {m['fdd_floor_train_vs_test']:.2f})")


def markdown(rows):
    out = ["| solver | " + " | ".join(f"≤{b} NFE: FDD (conf.)" for b in BUDGETS) + " |",
           "|---|" + "---|" * len(BUDGETS)]
    for solver in dict.fromkeys(r["solver"] for r in rows):
        cells = []
        for b in BUDGETS:
            r = [r for r in rows if r["solver"] == solver and r["budget"] == b]
            cells.append(f"{r[0]['fdd']:.2f} ({r[0]['confidence']:.2f}), NFE {r[0]['nfe']}" if r else "—")
        out.append(f"| {solver} | " + " | ".join(cells) + " |")
    out.append(f"\nnoise floor (train vs test): {rows[0]['floor']:.2f}")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--run", default="runs/digits", help="digits run directory")
    ap.add_argument("--grids", default="docs", help="where the per-budget grids go")
    ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS, help="NFE budgets")
    ap.add_argument("--n-calib", type=int, default=128, help="calibration (and validation) draws")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

"""A rejected candidate for solver="auto" at 5–6 NFE: UniPC on a *decision-bracketing* grid,
against `auto` and the best anchor, on the mixture problems and on trained digits U-Nets.

Where it comes from: the grids the tuned pipeline returns at 5–6 NFE on the high-dimensional
mixtures (UniPC base) put two close calls around one noise level and then jump to σ̃ ≲ 1 — for
gmm64 at σ̃ ≈ 7.1 and 4.3, for gmm96w 8.5 and 5.8, for gmm256w 17.5 and 9.7: around σ̃_d =
√(D/2), where two unit-scale draws ≈ √(2D) apart are told apart (docs/solver_notes.md). The
candidate makes that a rule with no tuning: after σ̃_max, calls at 1.25 σ̃_d and 0.8 σ̃_d, then
geometric steps to σ̃ = ``--sigma-end`` (0.1), the final x̂0 call there (NFE = steps + 1).

Rows (JSON lines): for each mixture problem of ``benchmarks/solvers.py`` with D ≥ 16 and each
budget, the RMS error of `auto` and of the candidate (UniPC orders 2 and 3) against the
problem's PF-ODE answer (RK4, 1024 steps; 512 from D = 192) on the benchmark's 4096 evaluation
draws (seed 0), with ``ratio`` to the best anchor's RMS from ``--anchors`` (the anchor rows of
earlier runs on the same draws) and ``other_mode`` (draws ending in another component than the
reference). With ``--digits RUN``: the same rows on a trained digits U-Net, error against the
network's own PF-ODE (RK45 at 1e-6) on ``-n`` draws, ratio to the best anchor row of
``--digits-anchors`` (a `digits_auto.py --metric rmse` run on the same draws).

    python benchmarks/decision_grid.py --markdown --out docs/decision_grid_results.jsonl
    python benchmarks/decision_grid.py --problems none --digits runs/digits \
        --digits-anchors docs/digits_rmse_results.jsonl
"""
from __future__ import annotations

import json
import math

import torch
from common import run_benchmark

import sdeflow

BUDGETS = [5, 6]
ANCHOR_FILES = ["docs/solvers_auto_results.jsonl", "docs/solvers_kd_anchor_results.jsonl",
                "docs/solvers_fresh_results.jsonl", "docs/solvers_third_results.jsonl",
                "docs/solvers_256d_4096_results.jsonl"]


def decision_grid(sde, nfe: int, dim: int, sigma_end: float = 0.1) -> torch.Tensor:
    r"""σ̃_max, 1.25 σ̃_d, 0.8 σ̃_d, then nfe − 3 steps geometric in σ̃ down to ``sigma_end``;
    :math:`\tilde\sigma_d = \sqrt{D/2}`. ``nfe`` − 1 steps and the final x̂0 call."""
    sd = math.sqrt(dim / 2)
    k = nfe - 3
    tail = [0.8 * sd * (sigma_end / (0.8 * sd)) ** ((i + 1) / k) for i in range(k)]
    sig = torch.tensor([1.25 * sd, 0.8 * sd, *tail], dtype=torch.float64)
    return torch.cat([torch.tensor([sde.T], dtype=torch.float64), sde.t_from_noise_level(sig)])


def best_anchors(files) -> dict:
    """(problem, nfe) → the least RMS of a diffusers or k-diffusion row in ``files``."""
    best: dict = {}
    for f in files:
        with open(f) as fh:
            for r in map(json.loads, fh):
                if r.get("impl") in ("diffusers", "k-diffusion") and r.get("rmse") is not None:
                    key = (r.get("problem", "digits"), r.get("budget", r.get("nfe")))
                    best[key] = min(best.get(key, math.inf), r["rmse"])
    return best


def rows_for(emit, problem, model, x_T, score, dim, budgets, anchors, sigma_end):
    """`auto` and the candidate (UniPC orders 2, 3) at each budget; ``score(x)`` → dict with
    ``rmse`` (and ``other_mode`` where it applies)."""
    for nfe in budgets:
        runs = [("auto", dict(solver="auto", steps=nfe))] + [
            (f"unipc({o})/decision", dict(solver="unipc", order=o,
                                          timesteps=decision_grid(model.sde, nfe, dim,
                                                                  sigma_end)))
            for o in (2, 3)]
        for label, kw in runs:
            with torch.no_grad():
                x, st = sdeflow.sample(model, x_T, return_stats=True, **kw)
            s = score(x)
            ref = anchors.get((problem, nfe))
            emit(dict(problem=problem, solver=label, config=f"{st['solver']}/{st['schedule']}",
                      budget=nfe, nfe=st["nfe"], **s,
                      ratio=None if ref is None else round(s["rmse"] / ref, 4)))


def mixtures(emit, a, anchors):
    import solvers
    for name, gm, sde in solvers.problems():
        if a.problems != "all" and name not in a.problems.split(",") or gm.dim < 16:
            continue
        model = gm.denoiser(sde)
        x_T = sde.prior_sample((4096, gm.dim), generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
        steps = 512 if gm.dim >= 192 else 1024
        ref = model.x0(sdeflow.sample(model, x_T, solver="rk4", steps=steps, denoise=False),
                       sde.t_min)
        mode = gm.responsibilities(ref).argmax(1)

        def score(x):
            return dict(rmse=(x - ref).pow(2).mean().sqrt().item(),
                        other_mode=int((gm.responsibilities(x).argmax(1) != mode).sum()))
        rows_for(emit, name, model, x_T, score, gm.dim, a.budgets, anchors, a.sigma_end)


def digits(emit, a):
    from sdeflow.tuning import REFERENCE
    model, cfg = sdeflow.load(a.digits)
    x_T = model.sde.prior_sample((a.n, *cfg.shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = sdeflow.sample(model, x_T, **REFERENCE)
    anchors = best_anchors([a.digits_anchors]) if a.digits_anchors else {}

    def score(x):
        return dict(rmse=(x.to(ref) - ref).pow(2).mean().sqrt().item())
    rows_for(emit, f"digits:{a.digits}", model, x_T, score, math.prod(cfg.shape), a.budgets,
             {(f"digits:{a.digits}", b): v for (_, b), v in anchors.items()}, a.sigma_end)


def body(emit, a):
    if min(a.budgets) < 4:
        raise SystemExit("--budgets: at least 4 NFE (the pair, one step below it, the x̂0 call)")
    if a.problems != "none":
        mixtures(emit, a, best_anchors(ANCHOR_FILES))
    if a.digits:
        digits(emit, a)


def markdown(rows):
    budgets = sorted({r["budget"] for r in rows})
    out = ["| problem | solver | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
           "|---|---|" + "---:|" * len(budgets)]
    for key in dict.fromkeys((r["problem"], r["solver"]) for r in rows):
        cells = [next((f"{r['ratio']:.3f}" if r.get("ratio") is not None else f"{r['rmse']:.4f}"
                       for r in rows if (r["problem"], r["solver"]) == key
                       and r["budget"] == b), "–") for b in budgets]
        out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--problems", default="all",
                    help="comma-separated mixture problems of benchmarks/solvers.py (D ≥ 16 only), "
                         "'all' or 'none'")
    ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS,
                    help="NFE budgets (at least 4: the pair and one step below it)")
    ap.add_argument("--sigma-end", type=float, default=0.1, help="σ̃ of the last grid point")
    ap.add_argument("--digits", default=None, help="also a trained digits run directory")
    ap.add_argument("-n", type=int, default=512, help="prior draws on the digits run")
    ap.add_argument("--digits-anchors", default=None,
                    help="a digits_auto.py --metric rmse JSON-lines file on the same draws")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

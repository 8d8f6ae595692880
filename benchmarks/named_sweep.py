"""Could *any* named configuration of ours reach the goal? Every solver × schedule × first step ×
final step of ours at a budget, against the anchors, with the best of ours chosen per cell.

For each problem of ``benchmarks/solvers.py`` and each budget: every configuration in
:data:`SOLVERS` (one-call multistep solvers at their orders and variants, the multi-call ones
within the budget) on every named schedule, with the plain or the lookahead first step (for the
solvers that take it) and with or without the final x̂0 call, at the most steps that stay within
the budget — the same draws, answer and anchors (diffusers and k-diffusion) as
``benchmarks/solvers.py``. Each cell's row gives the best of ours over the best anchor with a
paired bootstrap interval in which *both* bests are chosen again in every replicate
(:func:`sdeflow.metrics.rmse_ratio` with the tested side a set), beside ``solver="auto"``'s.

The best of several hundred configurations per cell is optimistic for us: it answers whether any
rule choosing among named configurations could reach the goal (≤ 0.7× the best anchor, issue
20) at that cell. If even that interval lies above the goal, no such rule can; the cell needs
another method (tuning, the model's statistics).

Usage: python benchmarks/named_sweep.py --problems gmm8-vp,gmm24-vp --nfes 5 6
       [--ref-cache DIR] [--n-eval 4096] [--below 0.7] [--markdown] [--out FILE.jsonl]
"""
from __future__ import annotations

import itertools

import solvers as bench  # the problems, their draws and answer, the anchors
import torch
from common import interval, run_benchmark

import sdeflow
from sdeflow.metrics import rmse_ratio
from sdeflow.samplers.registry import get_solver
from sdeflow.schedules import list_schedules
from sdeflow.tuning import config_label

#: (solver, options): one network call per step, then the multi-call ones
SOLVERS = [("ipndm", {}), ("ipndm", dict(order=3)), ("ipndm", dict(order=2)),
           ("unipc", {}), ("unipc", dict(order=3)), ("unipc", dict(variant="bh1")),
           ("unipc", dict(order=3, variant="bh1")), ("dpmpp_2m", {}), ("dpmpp_3m", {}),
           ("deis", {}), ("ddim", {}), ("pndm", {}), ("dpm_solver_2", {}),
           ("dpm_solver_3", {}), ("heun", {})]
ALIASES = ("edm",)  # another name of "karras"


def configurations():
    """(solver, options, schedule, denoise) of every named configuration swept."""
    for (solver, opts), schedule, lookahead, denoise in itertools.product(
            SOLVERS, list_schedules(), (False, True), (True, False)):
        if schedule in ALIASES or lookahead and not get_solver(solver).first_step:
            continue
        yield solver, dict(opts, first_step="lookahead") if lookahead else opts, schedule, denoise


def steps_within(model, x, solver, opts, schedule, denoise, nfe):
    """The most steps whose network calls stay within ``nfe`` (None: none do, or the
    configuration is refused at every count, e.g. a trailing grid without its final x̂0
    call; a count it refuses, such as the lookahead's single step, is skipped)."""
    best = None
    for steps in range(1, nfe + 2):
        try:
            _, st = sdeflow.sample(model, x, solver=solver, steps=steps, schedule=schedule,
                                   denoise=denoise, return_stats=True, **opts)
        except ValueError:
            continue
        if st["nfe"] > nfe:
            return best
        best = steps
    return best


def sweep(emit, name, gm, sde, x_T, ref, nfe, below):
    """One cell: every configuration's per-draw errors, the anchors', and the best-of row."""
    model = gm.denoiser(sde)
    ref_mode = gm.responsibilities(ref).argmax(1)
    rows = {}

    def err(x):
        sq, other = rows["last"] = bench.draw_errors(gm, x, ref, ref_mode)
        return dict(rmse=sq.mean().sqrt().item(), other_mode=int(other.sum()))
    anchors = bench.anchor_errors(name, gm, sde, x_T, ref, nfe)
    ours = {}
    with torch.no_grad():
        for solver, opts, schedule, denoise in configurations():
            steps = steps_within(model, x_T[:2], solver, opts, schedule, denoise, nfe)
            if steps is None:
                continue
            x = sdeflow.sample(model, x_T, solver=solver, steps=steps, schedule=schedule,
                               denoise=denoise, **opts)
            label = f"{config_label(solver, opts, schedule)}/{steps}{'+x0' if denoise else ''}"
            err(x)
            if torch.isfinite(rows["last"][0]).all():
                ours[label] = rows["last"]
        err(sdeflow.sample(model, x_T, solver="auto", steps=nfe))
        auto = rows["last"]
    emit(cell_row(name, nfe, ours, anchors, auto, below))


def cell_row(name, nfe, ours, anchors, auto, below):
    """The best of ours and ``auto`` over the best anchor, with their intervals."""
    a_keys, o_keys = list(anchors), list(ours)
    comp = torch.stack([anchors[k][0] for k in a_keys])
    best = rmse_ratio(torch.stack([ours[k][0] for k in o_keys]), comp, below=below)
    ci = rmse_ratio(auto[0], comp, below=below)
    chosen, anchor = o_keys[best.chosen], a_keys[best.best]
    top = sorted(o_keys, key=lambda k: float(ours[k][0].mean()))[:5]
    return dict(problem=name, nfe=nfe, n=comp.shape[1], configurations=len(o_keys),
                anchors=len(a_keys), best_anchor=anchor,
                anchor_other_mode=int(anchors[anchor][1].sum()),
                best_of_ours=best.ratio, low=best.low, high=best.high, p_below=best.p_below,
                best_config=chosen, other_mode=int(ours[chosen][1].sum()),
                auto=ci.ratio, auto_low=ci.low, auto_high=ci.high,
                auto_other_mode=int(auto[1].sum()), below=below,
                top5={k: float(ours[k][0].mean().sqrt() / comp[best.best].mean().sqrt())
                      for k in top})


def body(emit, a):
    chosen = bench.select_problems(a.problems)
    if any(nfe < 1 for nfe in a.nfes):
        raise SystemExit(f"--nfes: budgets must be ≥ 1 network call, got {a.nfes}")
    for name, gm, sde in chosen:
        x_T, ref, _ = bench.evaluation_set(name, gm.denoiser(sde), gm.dim, a.n_eval, 0,
                                           a.ref_steps, a.ref_cache, a.ref_schedule)
        for nfe in a.nfes:
            sweep(emit, name, gm, sde, x_T, ref, nfe, a.below)


def markdown(rows):
    out = ["| problem | NFE | best of ours [90 %] (crossed) | its configuration | `auto` "
           "[90 %] (crossed) | best anchor (crossed) |", "|---|---:|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['nfe']} | "
                   f"{interval(r['best_of_ours'], r['low'], r['high'])} ({r['other_mode']}) | "
                   f"{r['best_config']} | {interval(r['auto'], r['auto_low'], r['auto_high'])} "
                   f"({r['auto_other_mode']}) | {r['best_anchor']} ({r['anchor_other_mode']}) |")
    return "\n".join(out)


def extra(ap):
    bench.add_evaluation_args(ap, nfes=[5, 6])
    ap.add_argument("--below", type=float, default=0.7, help="the goal (issue 20: 0.7)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

"""``solver="auto"`` with a cheap per-model probe: would choosing among a few named
configurations on the model's own draws reach the goal of issue 20 (≤ 0.7× the best anchor)?

For each problem of ``benchmarks/solvers.py`` and each budget: the configurations of
:data:`CANDIDATES` (``auto`` and six winners of ``benchmarks/named_sweep.py`` at 5–6 NFE) are run
on ``--n-probe`` prior draws of their own seed (``--probe-seed``) against an RK4 answer (64
steps on the karras grid); the least RMS is the probe's pick. The pick is then measured on the
benchmark's evaluation draws and answer against the anchors (diffusers and k-diffusion within
the budget), with a paired bootstrap interval (:func:`sdeflow.metrics.rmse_ratio`), beside
``auto``'s. No selection uses the evaluation draws.

Usage: python benchmarks/probe_named.py --problems gmm8-vp,gmm24-vp --nfes 5 6
       [--ref-cache DIR] [--n-eval 4096] [--n-probe 1024] [--markdown] [--out FILE.jsonl]
"""
from __future__ import annotations

import solvers as bench  # the problems, their draws and answer, the anchors
import torch
from common import interval, run_benchmark

import sdeflow
from sdeflow.metrics import rmse_ratio

_LA = dict(first_step="lookahead")
#: (label, solver, options, schedule, final x̂0 call, steps beyond the budget); auto first
CANDIDATES = [("auto", "auto", {}, None, None, 0),
              ("unipc3/vp_uniform", "unipc", dict(order=3, **_LA), "vp_uniform", False, 1),
              ("unipc3/uniform", "unipc", dict(order=3, **_LA), "uniform", False, 1),
              ("unipc3/karras_trailing+x0", "unipc", dict(order=3, **_LA), "karras_trailing",
               True, 0),
              ("ipndm/vp_uniform", "ipndm", dict(_LA), "vp_uniform", False, 1),
              ("unipc3/gits_trailing+x0", "unipc", dict(order=3, **_LA), "gits_trailing", True, 0),
              ("ipndm/gits", "ipndm", dict(_LA), "gits", False, 1)]


def run(model, x, cand, nfe):
    """One candidate's answers at ``nfe`` network calls (checked)."""
    _, solver, opts, schedule, denoise, extra = cand
    kw = {} if solver == "auto" else dict(schedule=schedule, denoise=denoise, **opts)
    out, st = sdeflow.sample(model, x, solver=solver, steps=nfe + extra, return_stats=True, **kw)
    if st["nfe"] != nfe:
        raise RuntimeError(f"{cand[0]} made {st['nfe']} calls at a budget of {nfe}")
    return out


def cell(emit, name, gm, sde, probe, evaluation, nfe):
    """The probe's pick at one budget, measured on the evaluation draws against the anchors."""
    model = gm.denoiser(sde)
    (x_p, ref_p), (x_e, ref_e) = probe, evaluation
    mode = gm.responsibilities(ref_e).argmax(1)
    anchors = {k: (sq.double(), int(other.sum())) for k, (sq, other)
               in bench.anchor_errors(name, gm, sde, x_e, ref_e, nfe).items()}
    with torch.no_grad():
        probe_rmse = [float((run(model, x_p, c, nfe) - ref_p).pow(2).mean().sqrt())
                      for c in CANDIDATES]
        ours = []
        for c in CANDIDATES:
            sq, other = bench.draw_errors(gm, run(model, x_e, c, nfe), ref_e, mode)
            ours.append((sq.double(), int(other.sum())))
    pick = min(range(len(CANDIDATES)), key=probe_rmse.__getitem__)
    keys = list(anchors)
    comp = torch.stack([anchors[k][0] for k in keys])
    ci, ca = rmse_ratio(ours[pick][0], comp), rmse_ratio(ours[0][0], comp)
    emit(dict(problem=name, nfe=nfe, n=comp.shape[1], n_probe=x_p.shape[0],
              pick=CANDIDATES[pick][0], probe_rmse=dict(zip((c[0] for c in CANDIDATES),
                                                           probe_rmse)),
              ratio=ci.ratio, low=ci.low, high=ci.high, other_mode=ours[pick][1],
              auto=ca.ratio, auto_low=ca.low, auto_high=ca.high, auto_other_mode=ours[0][1],
              best_anchor=keys[ci.best], anchor_other_mode=anchors[keys[ci.best]][1],
              eval_ratio={c[0]: float(o[0].mean().sqrt() / comp[ci.best].mean().sqrt())
                          for c, o in zip(CANDIDATES, ours)}))


def body(emit, a):
    chosen = bench.select_problems(a.problems)
    if any(nfe < 4 for nfe in a.nfes):
        raise SystemExit(f"--nfes: the candidates need budgets ≥ 4 network calls, got {a.nfes}")
    for name, gm, sde in chosen:
        model = gm.denoiser(sde)
        x_p, ref_p, _ = bench.evaluation_set(name, model, gm.dim, a.n_probe, a.probe_seed, 64,
                                             a.ref_cache, "karras")
        x_e, ref_e, _ = bench.evaluation_set(name, model, gm.dim, a.n_eval, 0, a.ref_steps,
                                             a.ref_cache, a.ref_schedule)
        for nfe in a.nfes:
            cell(emit, name, gm, sde, (x_p, ref_p), (x_e, ref_e), nfe)


def markdown(rows):
    out = ["| problem | NFE | `auto` [90 %] | probe [90 %] | pick |", "|---|---:|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['nfe']} | "
                   f"{interval(r['auto'], r['auto_low'], r['auto_high'])} | "
                   f"{interval(r['ratio'], r['low'], r['high'])} | {r['pick']} |")
    return "\n".join(out)


def extra(ap):
    bench.add_evaluation_args(ap, nfes=[5, 6])
    ap.add_argument("--n-probe", type=int, default=1024, help="the probe's prior draws")
    ap.add_argument("--probe-seed", type=int, default=7,
                    help="their seed (the evaluation draws use 0, tune-steps 1000 and 1001)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

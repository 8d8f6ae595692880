"""How often does the tuned pipeline's final choice — the tuned configuration or the best named
solver × schedule (``tune_timesteps``' fall-back) — go the wrong way?

On one problem of ``benchmarks/solvers.py`` and one budget, tune once (``ipndm`` grid, 128
calibration draws), then decide between the tuned result and the best named configuration on
``--reps`` independent validation sets — plain prior draws, or drawn by
``sdeflow.tuning.stratified_draws`` from a pool of ``--pool`` — of ``--n-val`` draws each, and
compare every decision with the one on ``--n-truth`` fresh draws (the truth: the RMS error
against a 256-step RK4 reference there). Rows: the two configurations' errors on the truth
draws, and per validation kind the fraction of wrong decisions with its binomial standard
error; the markdown adds the expected excess error of the choice (P(wrong) × how much worse
the wrong one is on the truth draws). Usage: python benchmarks/tuning_stability.py [--problem gmm64-edm] [--nfe 10]
       [--n-val 128] [--pool 4096] [--reps 20] [--n-truth 8192] [--markdown] [--out FILE]
"""
from __future__ import annotations

import torch
from common import run_benchmark
from solvers import problems

import sdeflow
from sdeflow.tuning import _named_grid, _Objective, stratified_draws, tune_timesteps


def _args(p):
    p.add_argument("--problem", default="gmm64-edm")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--solver", default="ipndm")
    p.add_argument("--n-val", type=int, default=128)
    p.add_argument("--pool", type=int, default=4096)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--n-truth", type=int, default=8192)


def body(emit, a):
    (gm, sde), = [(gm, sde) for name, gm, sde in problems() if name == a.problem]
    model, steps = gm.denoiser(sde), a.nfe - 1
    draw = lambda n, seed: sde.prior_sample((n, gm.dim), dtype=torch.float64,  # noqa: E731
                                            generator=torch.Generator().manual_seed(seed))
    res = tune_timesteps(model, draw(128, 1000), x_heldout=draw(128, 1001), solver=a.solver,
                         steps=steps, max_evals=200)
    obj = _Objective(model, a.solver, steps, {}, {}, True, False, None, 0.0)
    name_sched = res.best_named.split("/")
    named_opts = dict(order=3) if name_sched[0] == "unipc(order=3)" else {}
    configs = {"tuned": (res.tensor(), res.solver, res.solver_opts),
               "named": (_named_grid(obj, name_sched[1]), name_sched[0].split("(")[0], named_opts)}

    def mse(x: torch.Tensor) -> dict:
        """Per-draw squared errors of both configurations."""
        ref = model.x0(sdeflow.sample(model, x, solver="rk4", steps=256, denoise=False), sde.t_min)
        return {k: (sdeflow.sample(model, x, solver=solver, timesteps=ts, **opts) - ref)
                .pow(2).mean(1) for k, (ts, solver, opts) in configs.items()}
    truth = {k: e.mean().sqrt().item() for k, e in mse(draw(a.n_truth, 0)).items()}
    emit(dict(problem=a.problem, nfe=a.nfe, tuned=truth["tuned"], named=truth["named"],
              best_named=res.best_named, fallback=res.fallback))
    right = min(truth, key=truth.get)
    for kind in ("plain", "stratified"):
        wrong = 0
        for r in range(a.reps):
            if kind == "plain":
                x, w = draw(a.n_val, 5000 + r), None
            else:
                pool = draw(a.pool, 7000 + r)
                idx, w = stratified_draws(model, pool, a.n_val, solver=a.solver, steps=steps,
                                          generator=torch.Generator().manual_seed(r))
                x = pool[idx]
            est = {k: (e.mean() if w is None else (w * e).sum()).item()
                   for k, e in mse(x).items()}
            wrong += min(est, key=est.get) != right
        p = wrong / a.reps
        emit(dict(problem=a.problem, nfe=a.nfe, validation=kind, n_val=a.n_val,
                  pool=a.pool if kind == "stratified" else None, reps=a.reps,
                  p_wrong=p, se=(p * (1 - p) / a.reps) ** 0.5, right=right))


def markdown(rows) -> str:
    out = ["| problem | NFE | tuned / named RMS (truth) | validation | P(wrong choice) | "
           "expected excess error |", "|---|---:|---|---|---|---:|"]
    head = {(r["problem"], r["nfe"]): r for r in rows if "tuned" in r}
    for r in rows:
        if "validation" in r:
            h = head[(r["problem"], r["nfe"])]
            kind = f"{r['validation']} {r['n_val']}" + (f" of {r['pool']}" if r["pool"] else "")
            lo, hi = sorted((h["tuned"], h["named"]))
            out.append(f"| {r['problem']} | {r['nfe']} | {h['tuned']:.3g} / {h['named']:.3g} "
                       f"({h['best_named']}) | {kind} | {r['p_wrong']:.2f} ± {r['se']:.2f} | "
                       f"{100 * r['p_wrong'] * (hi / lo - 1):.1f} % |")
    return "\n".join(out)


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra_args=_args)

"""The lookahead first step (``first_step="lookahead"``, samplers/first_step.py) against the plain
start and the analytic first step (AFS), on ``solver="auto"``'s iPNDM configuration at the same
NFE: on the mixture problems of benchmarks/solvers.py (error against the exact PF-ODE solution,
4096 draws, seed 0, as that script measures) and on trained digits U-Nets (``--run``: error
against the network's own PF-ODE from 512 draws, as ``digits_auto.py --metric rmse``).

    python benchmarks/first_step.py --problems gmm64-edm,gmm8-vp --out first_step.jsonl
    python benchmarks/first_step.py --run runs/digits_vp_long --out first_step_digits.jsonl

Rows: ``plain`` (iPNDM as ``auto`` configures it, nfe − 1 steps and the final x̂0 call),
``lookahead`` (the same solver, order and grid shape, nfe steps, the first two grid times from one
call) and, with ``--afs``, ``afs`` (nfe steps, the first step with x̂0 = 0 and no call: Zhou et
al. 2024's analytic first step, not in the library). Every row spends exactly ``nfe`` calls.
The anchors' errors on the same draws are in benchmarks/solvers.py's and digits_auto.py's rows.
"""
from __future__ import annotations

import torch
from common import run_benchmark
from solvers import problems

import sdeflow
from sdeflow.denoiser import Targets, prediction_from_x0
from sdeflow.samplers.auto import auto_config, predicts_noise

NFES = [5, 6, 8, 10, 12, 15, 20]


class AnalyticFirst(Targets):
    """``model`` whose first call (at the grid's first time) answers x̂0 = 0 without a call."""

    def __init__(self, model, t0):
        self.model, self.t0, self.used = model, t0, False

    def __getattr__(self, name):
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, x, t, **cond):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        if not self.used and bool((t == self.t0).all()):
            self.used = True
            return prediction_from_x0(self.model.sde, x, t, torch.zeros_like(x))
        return self.model.predict(x, t, **cond)


def variants(model, x_T, nfe: int, afs: bool):
    """(label, answer, calls) of each start of auto's iPNDM configuration at ``nfe`` calls."""
    from sdeflow.samplers.registry import Context, get_solver
    from sdeflow.schedules import ends_early, get_timesteps
    c = auto_config(model.sde, nfe, x_T[0].numel(), predicts_noise(model))
    opts = {k: v for k, v in c["opts"].items() if k != "first_step"}
    common = dict(solver=c["solver"], schedule=c["schedule"], return_stats=True, **opts)
    for label, steps, extra in (("plain", nfe - 1, {}),
                                ("lookahead", nfe, {"first_step": "lookahead"})):
        x, st = sdeflow.sample(model, x_T, steps=steps, **common, **extra)
        yield label, x, st["nfe"], f"{c['solver']}{opts or ''}/{c['schedule']}"
    if afs:
        ts = get_timesteps(model.sde, nfe, c["schedule"], dtype=x_T.dtype, allow_free_end=True)
        n0 = model.nfe
        out = get_solver(c["solver"]).fn(AnalyticFirst(model, ts[0]), x_T, ts,
                                         Context(final_denoise=ends_early(model.sde, ts)), **opts)
        yield "afs", model.x0(out, ts[-1]), model.nfe - n0, f"{c['solver']}{opts or ''}/{c['schedule']}"


def body(emit, a):
    nfes = a.nfes
    if a.run:
        from sdeflow.tuning import REFERENCE
        model, cfg = sdeflow.load(a.run)
        x_T = model.sde.prior_sample((512, *cfg.shape), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = sdeflow.sample(model, x_T, **REFERENCE)
            for nfe in nfes:
                for label, x, calls, config in variants(model, x_T, nfe, a.afs):
                    emit(dict(problem=a.run, start=label, config=config, nfe=calls,
                              rmse=(x - ref).pow(2).mean().sqrt().item()))
        return
    for name, gm, sde in problems():
        if a.problems and name not in a.problems.split(","):
            continue
        model = gm.denoiser(sde)
        x_T = sde.prior_sample((4096, gm.dim), generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
        ref = model.x0(sdeflow.sample(model, x_T, solver="rk4", steps=1024, denoise=False),
                       sde.t_min)
        mode = gm.responsibilities(ref).argmax(1)
        for nfe in nfes:
            for label, x, calls, config in variants(model, x_T, nfe, a.afs):
                emit(dict(problem=name, start=label, config=config, nfe=calls,
                          rmse=(x - ref).pow(2).mean().sqrt().item(),
                          other_mode=int((gm.responsibilities(x).argmax(1) != mode).sum())))


def markdown(rows):
    """lookahead / plain (and afs / plain) per problem and budget."""
    by = {(r["problem"], r["nfe"], r["start"]): r["rmse"] for r in rows}
    probs = sorted({r["problem"] for r in rows})
    nfes = sorted({r["nfe"] for r in rows})
    lines = ["| problem | start | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
             "|---|---|" + "---:|" * len(nfes)]
    for p in probs:
        for s in ("lookahead", "afs"):
            if any((p, n, s) in by for n in nfes):
                cells = [f"{by[(p, n, s)] / by[(p, n, 'plain')]:.2f}" if (p, n, s) in by else ""
                         for n in nfes]
                lines.append(f"| {p} | {s} / plain | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def extra(ap):
    ap.add_argument("--problems", help="comma-separated mixture problems of benchmarks/solvers.py")
    ap.add_argument("--run", help="a digits run directory instead of the mixtures")
    ap.add_argument("--nfes", type=int, nargs="+", default=NFES)
    ap.add_argument("--afs", action="store_true", help="also the analytic first step (x̂0 = 0)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

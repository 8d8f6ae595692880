"""solver="auto" on the digits U-Net beside diffusers' schedulers driven by the same network:
FDD (digits metric, noise floor ≈ 1.18) at 5/10/20 NFE from the same 1437 prior draws.

    python benchmarks/digits_auto.py --run runs/digits --markdown --out docs/digits_auto_results.jsonl

Ours: ``auto`` and the named solvers on the new schedules (iPNDM on gits/ays/karras and on the
trailing forms ays/karras/logsnr_trailing, UniPC(3) on vp_trailing, PNDM on gits). diffusers
(:func:`solvers.run_diffusers`): EDM-DPM-Solver++ (orders 2, 3) on Karras σ, DPM-Solver++
2M/3M, UniPC (orders 2, 3) and DEIS(3) on 1000 discrete VP levels log-uniform in σ̃ over the
model's range, each ending with σ = 0 (its last model output is the answer). Named-schedule rows
of the older solvers are in docs/digits_nfe_results.jsonl.
"""
from __future__ import annotations

import torch
from common import run_benchmark
from solvers import run_diffusers

import sdeflow
from sdeflow.metrics.digits import digits_metrics

BUDGETS = [5, 10, 20]
OURS = [("auto", "auto", {}, 0), ("ipndm/gits", "ipndm", dict(schedule="gits"), 1),
        ("ipndm/ays", "ipndm", dict(schedule="ays"), 1),
        ("ipndm/karras", "ipndm", dict(schedule="karras"), 1),
        ("ipndm/ays_trailing", "ipndm", dict(schedule="ays_trailing"), 1),
        ("ipndm/karras_trailing", "ipndm", dict(schedule="karras_trailing"), 1),
        ("ipndm/logsnr_trailing", "ipndm", dict(schedule="logsnr_trailing"), 1),
        ("unipc(3)/vp_trailing", "unipc", dict(schedule="vp_trailing", order=3), 1),
        ("pndm(plms)/gits", "pndm", dict(schedule="gits", warm_start="plms"), 2)]


def body(emit, a):
    model, cfg = sdeflow.load(a.run)
    sde = model.sde
    x_T = sde.prior_sample((1437, *cfg.shape), generator=torch.Generator().manual_seed(0))

    def fdd(x):
        m = digits_metrics(x.float().clamp(-1, 1))
        return dict(rmse=m["fdd"], fdd=round(m["fdd"], 4), floor=round(m["fdd_floor_train_vs_test"], 4))
    for nfe in a.budgets:
        for label, solver, opts, extra in OURS:
            steps = nfe if solver == "auto" else nfe - extra
            with torch.no_grad():
                x, st = sdeflow.sample(model, x_T, solver=solver, steps=steps, return_stats=True,
                                       **opts)
            emit(dict(impl="sdeflow", solver=label, config=f"{st['solver']}/{st['schedule']}",
                      budget=nfe, nfe=st["nfe"], **fdd(x)))
    import solvers
    solvers.NFES[:] = a.budgets
    run_diffusers(lambda r: emit({**r, "budget": r.get("nfe")}), "digits", None, sde, x_T, fdd,
                  model=model)


def markdown(rows):
    out = ["| impl | solver | " + " | ".join(f"{b} NFE" for b in BUDGETS) + " |",
           "|---|---|" + "---:|" * len(BUDGETS)]
    for key in dict.fromkeys((r["impl"], r["solver"]) for r in rows if "fdd" in r):
        cells = [f"{r['fdd']:.2f}" for b in BUDGETS for r in rows
                 if (r["impl"], r["solver"]) == key and r.get("budget") == b and "fdd" in r]
        out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--run", default="runs/digits", help="digits run directory (EDM)")
    ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

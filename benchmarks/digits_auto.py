"""solver="auto" on the digits U-Net beside diffusers' schedulers driven by the same network:
FDD (digits metric, noise floor ≈ 1.18) at 5/10/20 NFE from the same 1437 prior draws.

    python benchmarks/digits_auto.py --run runs/digits --markdown --out docs/digits_auto_results.jsonl
    python benchmarks/digits_auto.py --run runs/digits --metric rmse -n 512 --markdown --out …

``--metric rmse``: instead of FDD, the RMS error against the network's own PF-ODE solution
from the same noise (RK45 at 1e-6) — the solver's accuracy on a trained network, which FDD
near its noise floor cannot separate at 10–20 NFE. ``--sweep``: every one-call solver of ours
× every schedule (and ``auto``) instead of the rows below, e.g.

    python benchmarks/digits_auto.py --run runs/digits --metric rmse -n 512 --budgets 5 20 \
        --sweep --no-anchors --out docs/digits_sweep_results.jsonl

``--orders``: iPNDM of orders 2, 3 and 4 on the trailing shapes ``auto`` chooses between and
on ``logsnr_trailing``, and UniPC(2) (the order rule for noise-predicting networks,
docs/benchmarks.md). ``--tuned``: the fixed tuned pipeline of benchmarks/solvers.py instead
(DPM-Solver-v3's grid tuned and validated as ``tune-steps`` does; after ``sdeflow ems RUN``),
10–30 min per budget on one CPU core for the digits U-Net, e.g.

    python benchmarks/digits_auto.py --run runs/digits_vp_long --metric rmse -n 512 \
        --budgets 5 6 8 --tuned --out docs/digits_vplong_tuned_results.jsonl

``--tuned --bns unipc``: BNS instead (UniPC's per-step coefficients tuned as ``tune-steps
--solver unipc --coefficients --n-calib 512`` does, validated the same way; no statistics
needed).

Ours: ``auto`` and the named solvers on the new schedules (iPNDM on gits/ays/karras and on the
trailing forms ays/karras/logsnr_trailing, UniPC(3) on vp_trailing, PNDM on gits). diffusers
(:func:`solvers.run_diffusers`): EDM-DPM-Solver++ (orders 2, 3) on Karras σ, DPM-Solver++
2M/3M, UniPC (orders 2, 3) and DEIS(3) on 1000 discrete VP levels log-uniform in σ̃ over the
model's range, each ending with σ = 0 (its last model output is the answer); k-diffusion's
DPM-Solver++(2M), LMS, Heun (Karras σ) and DPM-fast/adaptive when its sampling module imports
(:func:`solvers.run_k_diffusion`). Named-schedule rows
of the older solvers are in docs/digits_nfe_results.jsonl. DPM-Solver-v3 rows (on ays,
ays_trailing, karras, logsnr_trailing), and ``auto(statistics)`` — ``auto`` given them, as
``sdeflow sample`` runs it — when `sdeflow ems RUN` has written the run's statistics.
``--sweep-solvers``/``--sweep-schedules`` narrow ``--sweep`` (e.g. ``dpm_solver_v3`` on
``gits_trailing,ays_trailing``); ``--tuned --tuned-base ipndm --tuned-opts '{"order": 3}'``
tunes another solver's grid.
"""
from __future__ import annotations

import json

import torch
from common import config_label, run_benchmark
from solvers import BNS_MAX_NFE as BNS_MAX
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
# DPM-Solver-v3 with the statistics `sdeflow ems RUN` wrote into the checkpoint folder (rows
# skipped when there are none)
V3 = [(f"dpm_solver_v3/{g}", "dpm_solver_v3", dict(schedule=g), 1)
      for g in ("ays", "ays_trailing", "karras", "logsnr_trailing")]
# --sweep: every one-call solver (PNDM: its PLMS start costs one more) × every schedule
SWEEP_SOLVERS = [("ddim", {}, 1), ("deis", {}, 1), ("dpmpp_2m", {}, 1), ("dpmpp_3m", {}, 1),
                 ("unipc", {}, 1), ("unipc(3)", dict(order=3), 1), ("ipndm", {}, 1),
                 ("pndm(plms)", dict(warm_start="plms"), 2), ("dpm_solver_v3", {}, 1)]
SWEEP_SCHEDULES = ["ays", "ays_trailing", "edm", "gits", "gits_trailing", "karras",
                   "karras_trailing", "logsnr", "logsnr_trailing", "uniform", "vp_trailing",
                   "vp_uniform"]
# --orders: iPNDM of each order on the trailing shapes `auto` chooses between (and
# logsnr_trailing), and UniPC(2)
ORDERS = [(f"ipndm({o})/{g}", "ipndm", dict(order=o, schedule=g), 1)
          for g in ("karras_trailing", "ays_trailing", "gits_trailing", "logsnr_trailing")
          for o in (2, 3, 4)] \
    + [("ipndm(3)/vp_trailing", "ipndm", dict(order=3, schedule="vp_trailing"), 1)] \
    + [(f"unipc(2)/{g}", "unipc", dict(order=2, schedule=g), 1)
       for g in ("vp_trailing", "ays_trailing", "karras_trailing")]


def _rows(a, v3: dict) -> list:
    """(label, solver, options, calls beyond one per step) of the rows of ours to run."""
    # `auto` as `sdeflow sample` runs it once `sdeflow ems` has written the statistics
    auto = [("auto", "auto", {}, 0)] + ([("auto(statistics)", "auto", dict(v3), 0)] if v3 else [])
    if a.orders:
        return auto + ORDERS
    if a.sweep:
        return auto + [
            (f"{label}/{g}", label.split("(")[0], {**o, "schedule": g,
                                                   **(v3 if label == "dpm_solver_v3" else {})}, e)
            for label, o, e in SWEEP_SOLVERS for g in a.sweep_schedules or SWEEP_SCHEDULES
            if (label != "dpm_solver_v3" or v3)
            and (not a.sweep_solvers or label in a.sweep_solvers)]
    return auto + OURS[1:] + [(lbl, s, {**o, **v3}, e) for lbl, s, o, e in V3] if v3 else OURS


def body(emit, a):
    if a.anchors_only and (a.no_anchors or a.sweep or a.orders):
        raise SystemExit("--anchors-only runs no rows of ours: not with --no-anchors, --sweep "
                         "or --orders")
    if a.bns and not a.tuned:
        raise SystemExit("--bns chooses the tuned pipeline's base: give it with --tuned")
    if a.tuned and (a.sweep or a.orders or a.anchors_only):
        raise SystemExit("--tuned runs the tuned pipeline's rows only: not with --sweep, "
                         "--orders or --anchors-only")
    if a.sweep and a.orders:
        raise SystemExit("--sweep and --orders are two different sets of rows: give one")
    if (a.sweep_solvers or a.sweep_schedules) and not a.sweep:
        raise SystemExit("--sweep-solvers/--sweep-schedules narrow --sweep: give it too")
    unknown = set(a.sweep_solvers or []) - {label for label, _, _ in SWEEP_SOLVERS}
    if unknown:
        raise SystemExit(f"--sweep-solvers: unknown {sorted(unknown)}; choices: "
                         f"{[label for label, _, _ in SWEEP_SOLVERS]}")
    model, cfg = sdeflow.load(a.run)
    sde = model.sde
    x_T = sde.prior_sample((a.n, *cfg.shape), generator=torch.Generator().manual_seed(0))

    def fdd(x):
        m = digits_metrics(x.float().clamp(-1, 1))
        return dict(rmse=m["fdd"], fdd=round(m["fdd"], 4), floor=round(m["fdd_floor_train_vs_test"], 4))
    score = fdd
    if a.metric == "rmse":  # the solver's error against the network's own PF-ODE solution
        from sdeflow.tuning import REFERENCE
        with torch.no_grad():
            ref, st = sdeflow.sample(model, x_T, return_stats=True, **REFERENCE)
        emit(dict(meta=True, reference=str(REFERENCE), reference_nfe=st["nfe"]))

        def score(x):
            return dict(rmse=(x.to(ref) - ref).pow(2).mean().sqrt().item())
    from sdeflow.samplers.ems import with_default_statistics
    v3 = with_default_statistics("dpm_solver_v3", {}, a.run)
    if a.tuned:
        return _tuned(emit, a, model, cfg, x_T, score, v3)
    rows = _rows(a, v3)
    for nfe in [] if a.anchors_only else a.budgets:
        for label, solver, opts, extra in rows:
            steps = nfe if solver == "auto" else nfe - extra
            with torch.no_grad():
                x, st = sdeflow.sample(model, x_T, solver=solver, steps=steps, return_stats=True,
                                       **opts)
            emit(dict(impl="sdeflow", solver=label, config=config_label(st),
                      budget=nfe, nfe=st["nfe"], **score(x)))
    import solvers
    from anchors import k_diffusion_sampling
    solvers.NFES[:] = a.budgets

    def anchor(row):
        emit({**row, "budget": row.get("nfe")})
    if a.no_anchors:
        return
    if a.anchors_only != "k-diffusion":
        run_diffusers(anchor, "digits", None, sde, x_T, score, model=model)
    kd = k_diffusion_sampling()
    if kd is None and a.anchors_only == "k-diffusion":
        raise SystemExit("--anchors-only k-diffusion: its sampling module is not importable "
                         "(pip install --no-deps k-diffusion)")
    if kd is not None and a.anchors_only != "diffusers":
        solvers.run_k_diffusion(anchor, kd, "digits", None, sde, x_T, score, model=model)


def _tuned(emit, a, model, cfg, x_T, score, v3: dict) -> None:
    """The fixed tuned pipeline of benchmarks/solvers.py (``run_tuned``: DPM-Solver-v3 with the
    run's statistics as its base, calibration and validation stratified from pools of
    ``--pool`` prior draws as ``tune-steps`` does) on the network, at each budget."""
    import solvers
    if a.metric != "rmse":
        raise SystemExit("--tuned measures the error against the network's own PF-ODE: "
                         "give --metric rmse")
    if a.tuned_base == "dpm_solver_v3" and not v3 and not a.bns:
        raise SystemExit(f"--tuned tunes DPM-Solver-v3's grid: run `sdeflow ems {a.run}` "
                         "first (it writes the statistics into the checkpoint folder)")
    solvers.NFES[:] = a.budgets
    opts = {**json.loads(a.tuned_opts), **(v3 if a.tuned_base == "dpm_solver_v3" else {})}
    bases = dict(bases=[], bns_bases=[a.bns]) if a.bns else dict(
        bases=[a.tuned_base], bns_bases=[], base_opts={a.tuned_base: opts})
    solvers.run_tuned(lambda row: emit({**row, "budget": row["nfe"]}), "digits", model,
                      model.sde, cfg.shape, x_T, score, pool=a.pool, dtype=x_T.dtype, **bases)


def markdown(rows):
    key_ = "fdd" if any("fdd" in r for r in rows) else "rmse"
    fmt = "{:.2f}" if key_ == "fdd" else "{:.4f}"
    budgets = sorted({r["budget"] for r in rows if key_ in r})
    out = ["| impl | solver | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
           "|---|---|" + "---:|" * len(budgets)]
    for key in dict.fromkeys((r["impl"], r["solver"]) for r in rows if key_ in r):
        cells = [next((fmt.format(r[key_]) for r in rows if (r["impl"], r["solver"]) == key
                       and r.get("budget") == b and key_ in r), "–") for b in budgets]
        out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--run", default="runs/digits", help="digits run directory (any SDE)")
    ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
    ap.add_argument("--metric", choices=["fdd", "rmse"], default="fdd",
                    help="FDD of the samples, or RMS error against the network's own PF-ODE "
                         "solution from the same noise (RK45 at 1e-6)")
    ap.add_argument("-n", type=int, default=1437, help="prior draws")
    ap.add_argument("--sweep", action="store_true",
                    help="every one-call solver of ours × every schedule instead of the rows above")
    ap.add_argument("--sweep-solvers", type=lambda v: v.split(","), default=None,
                    metavar="A,B", help="with --sweep: only these solvers' rows (labels as "
                                        "in SWEEP_SOLVERS, e.g. dpm_solver_v3,ipndm)")
    ap.add_argument("--sweep-schedules", type=lambda v: v.split(","), default=None,
                    metavar="A,B", help="with --sweep: only these schedules")
    ap.add_argument("--orders", action="store_true",
                    help="iPNDM of orders 2–4 on karras/ays/gits/logsnr_trailing, iPNDM(3) "
                         "on vp_trailing and UniPC(2) on vp/ays/karras_trailing (and auto) "
                         "instead of the rows above")
    ap.add_argument("--tuned", action="store_true",
                    help="only the tuned pipeline's rows (DPM-Solver-v3 base, as "
                         "benchmarks/solvers.py --tuned-only --tuned-bases dpm_solver_v3 runs "
                         "it; needs --metric rmse and `sdeflow ems RUN`)")
    ap.add_argument("--bns", default=None, metavar="SOLVER",
                    help="with --tuned: BNS on this solver's coefficients (e.g. unipc; "
                         f"up to {BNS_MAX} NFE) instead of DPM-Solver-v3's grid")
    ap.add_argument("--tuned-base", default="dpm_solver_v3", metavar="SOLVER",
                    help="with --tuned: the solver whose grid is tuned (e.g. ipndm)")
    ap.add_argument("--tuned-opts", default="{}", metavar="JSON",
                    help='with --tuned: that solver\'s options, e.g. \'{"order": 3}\'')
    ap.add_argument("--pool", type=int, default=4096,
                    help="with --tuned: the calibration pool (the validation pool grows to 4×)")
    ap.add_argument("--no-anchors", action="store_true", help="only our rows")
    ap.add_argument("--anchors-only", choices=["all", "diffusers", "k-diffusion"], default=None,
                    help="only the anchors' rows (all, or one library's)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

"""Error vs NFE of every PF-ODE solver on Gaussian-mixture problems with exact answers.

Each problem: a mixture, an SDE and a batch of prior draws x_T (float64). The reference is the
PF-ODE solution at t_min from RK4 with 4096 steps (agrees with RK45 at rtol = atol = 1e-11 to
~1e-11). Error = RMS over all coordinates of x(t_min) − reference (no final denoising step).
Anchors, run side by side on the same drift and x_T when installed: torchdiffeq's dopri5 and
scipy's RK45 (both integrate the whole batch as one system, as users call them).

Prints one JSON object per line; ``--markdown`` also prints a table for docs/benchmarks.md.
Usage: python benchmarks/oracle.py [--out results.jsonl] [--markdown] [--quick]
"""
from __future__ import annotations

import time

import torch
from common import run_benchmark

import sdeflow
from sdeflow.oracle import GaussianMixture
from sdeflow.reverse import pf_ode_drift

FIXED = {"euler": (1, [4, 8, 16, 32, 64, 128]), "ddim": (1, [4, 8, 16, 32, 64, 128]),
         "heun": (2, [3, 5, 10, 20, 40, 80]), "rk4": (4, [2, 3, 5, 10, 20, 40]),
         "dpmpp_2m": (2, [5, 10, 20, 40, 80, 160]), "dpmpp_3m": (3, [5, 10, 20, 40, 80, 160]),
         "unipc": (3, [5, 10, 20, 40, 80, 160]), "dpm_solver_2": (2, [3, 5, 10, 20, 40, 80]),
         "dpm_solver_3": (3, [2, 3, 7, 13, 27, 53])}
TOLS = [1e-3, 1e-4, 1e-5, 1e-6, 1e-8]


def problems(quick: bool):
    ring, hi = GaussianMixture.ring(), GaussianMixture.random(64, k=6, seed=0)
    out = [("ring2d-edm", ring, sdeflow.EDMSDE(), "karras"),
           ("ring2d-vp", ring, sdeflow.VPSDE(), "logsnr"),
           ("gmm64-edm", hi, sdeflow.EDMSDE(), "karras"),
           ("gmm64-vp", hi, sdeflow.VPSDE(), "logsnr")]
    return out[:2] if quick else out


def rmse(x, ref):
    return (x - ref).pow(2).mean().sqrt().item()


def run_problem(name, gm, sde, schedule, n, emit):
    model = gm.denoiser(sde)
    x_T = sde.prior_sample((n, gm.dim), generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    ref = sdeflow.sample(model, x_T, solver="rk4", steps=4096, schedule=schedule, denoise=False)
    for solver, (_, steps_list) in FIXED.items():
        for steps in steps_list:
            x, st = sdeflow.sample(model, x_T, solver=solver, steps=steps, schedule=schedule,
                                   denoise=False, return_stats=True)
            emit(dict(problem=name, impl="sdeflow", solver=solver, schedule=schedule, steps=steps,
                      nfe=st["nfe"], rmse=rmse(x, ref), seconds=st["seconds"]))
    for solver in ("rk45", "rk45_logsnr"):
        for tol in TOLS:
            x, st = sdeflow.sample(model, x_T, solver=solver, rtol=tol, atol=tol, denoise=False,
                                   return_stats=True)
            emit(dict(problem=name, impl="sdeflow", solver=solver, tol=tol, nfe=st["nfe"],
                      rmse=rmse(x, ref), seconds=st["seconds"],
                      rejected_mean=st["rejected_mean"]))
    t0, t1 = float(sde.T), float(sde.t_min)
    try:
        from torchdiffeq import odeint
    except ImportError:
        odeint = None
    if odeint is not None:
        for tol in TOLS:
            calls = [0]

            def f(t, x):
                calls[0] += 1
                # dopri5 in torchdiffeq steps past t1 and interpolates back: keep t in range
                return pf_ode_drift(model, x, t.clamp(min=t1).expand(x.shape[0]))
            start = time.perf_counter()
            x = odeint(f, x_T, torch.tensor([t0, t1], dtype=torch.float64), rtol=tol, atol=tol,
                       method="dopri5")[-1]
            emit(dict(problem=name, impl="torchdiffeq", solver="dopri5", tol=tol, nfe=calls[0],
                      rmse=rmse(x, ref), seconds=time.perf_counter() - start))
    try:
        from scipy.integrate import solve_ivp
    except ImportError:
        solve_ivp = None
    if solve_ivp is not None:
        shape = x_T.shape
        for tol in TOLS:
            def g(t, y):
                x = torch.from_numpy(y).reshape(shape)
                return pf_ode_drift(model, x, torch.full((shape[0],), t, dtype=torch.float64)).reshape(-1).numpy()
            start = time.perf_counter()
            sol = solve_ivp(g, (t0, t1), x_T.reshape(-1).numpy(), method="RK45", rtol=tol, atol=tol)
            x = torch.from_numpy(sol.y[:, -1]).reshape(shape)
            emit(dict(problem=name, impl="scipy", solver="RK45", tol=tol, nfe=int(sol.nfev),
                      rmse=rmse(x, ref), seconds=time.perf_counter() - start))


def markdown(rows):
    lines = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        lines += [f"\n**{problem}** (RMS error of x(t_min) vs reference; NFE in brackets)\n",
                  "| solver | runs (NFE → error) |", "|---|---|"]
        sub = [r for r in rows if r["problem"] == problem]
        for key in dict.fromkeys((r["impl"], r["solver"]) for r in sub):
            cells = [f"{r['nfe']} → {r['rmse']:.1e}" + (f" (tol {r['tol']:.0e})" if "tol" in r else "")
                     for r in sub if (r["impl"], r["solver"]) == key]
            lines.append(f"| {key[0]} {key[1]} | " + ", ".join(cells) + " |")
    lines += ["\n**Adaptive solvers at equal tolerance** (ratio = sdeflow / anchor; error < 1 "
              "and NFE < 1 favour sdeflow)\n",
              "| problem | sdeflow solver | tol | err/scipy | NFE/scipy | err/torchdiffeq | NFE/torchdiffeq |",
              "|---|---|---|---|---|---|---|"]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for tol in TOLS:
            g = {(r["impl"], r["solver"]): r for r in rows
                 if r["problem"] == problem and r.get("tol") == tol}
            for ours in ("rk45", "rk45_logsnr"):
                if ("sdeflow", ours) not in g:
                    continue
                cells = []
                for anchor in (("scipy", "RK45"), ("torchdiffeq", "dopri5")):
                    a, o = g.get(anchor), g[("sdeflow", ours)]
                    cells += (["–", "–"] if a is None else
                              [f"{o['rmse'] / a['rmse']:.2f}", f"{o['nfe'] / a['nfe']:.2f}"])
                lines.append(f"| {problem} | {ours} | {tol:.0e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    def add(ap):
        ap.add_argument("--n", type=int, default=256, help="batch size (samples per problem)")
        ap.add_argument("--quick", action="store_true", help="2-D problems only")

    def body(emit, a):
        for name, gm, sde, schedule in problems(a.quick):
            run_problem(name, gm, sde, schedule, a.n, emit)
    run_benchmark(__doc__, body, markdown, add)


if __name__ == "__main__":
    main()

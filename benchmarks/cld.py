"""Critically-damped Langevin diffusion: how many network evaluations SSCS needs to reach the
data, against Euler–Maruyama on CLD and our best SDE samplers on the VP and EDM SDEs, with the
exact scores of Gaussian mixtures; and on a trained digits model, FDD and the likelihood bound.

    python benchmarks/cld.py --markdown --out docs/cld_results.jsonl \\
        [--digits-cld runs/digits_cld --digits-edm runs/digits]

Problems: the 8-Gaussian ring (2-D, 20 000 samples) and the 6-component 64-D mixture with full
covariances (4000 samples) of benchmarks/sde_solvers.py, float64. CLD (β = 4, M = 0.25,
γ = 0.04, t_min = 10⁻³; SSCS with our exponential S step unless marked) runs on the exact (x, v) score of the mixture
(:func:`sdeflow.cld.mixture_model`); VP and EDM on the exact denoiser. Judged by
:func:`sdeflow.metrics.mixture_moments` on x (every component's weight, mean and width along each
eigenvector as z-scores; a run reaches the floor when the largest |z| is under the Bonferroni
threshold for a false-alarm rate of 10⁻⁴). Budgets double from 16 NFE; a sampler stops at the
first budget that reaches the floor.

``--digits-cld RUN`` adds FDD at 20/50/100 NFE of a CLD digits model (SSCS, Euler–Maruyama)
and its likelihood bound in bits/dim on the test split (17 grey levels, uniform
dequantisation, Hutchinson divergence, RK45); ``--digits-edm RUN`` the same for an EDM model
with its best SDE samplers (SA-Solver, SRA1, Euler–Maruyama) and its PF-ODE bits/dim.
"""
from __future__ import annotations

import time

import torch
from common import run_benchmark
from sde_solvers import judged  # the same floor statistic as the SDE-sampler benchmark

import sdeflow
from sdeflow.cld import CLD, mixture_model, sample_cld
from sdeflow.oracle import GaussianMixture

BUDGETS = [16, 32, 64, 128, 256, 512, 1024]
# (process, label, solver, schedule, options, NFE per step)
RUNS = [("cld", "sscs", "sscs", "quadratic", {}, 1),
        ("cld", "sscs", "sscs", "uniform", {}, 1),
        ("cld", "sscs (paper's Euler S step)", "sscs", "quadratic", dict(s_step="euler"), 1),
        ("cld", "euler_maruyama", "euler_maruyama", "quadratic", {}, 1),
        ("cld", "euler_maruyama", "euler_maruyama", "uniform", {}, 1),
        ("vp", "euler_maruyama", "euler_maruyama", "uniform", {}, 1),
        ("vp", "sa_solver", "sa_solver", "logsnr", {}, 1),
        ("vp", "dpmpp_2m_sde", "dpmpp_2m_sde", "logsnr", {}, 1),
        ("edm", "euler_maruyama", "euler_maruyama", "karras", {}, 1),
        ("edm", "sa_solver", "sa_solver", "karras", {}, 1)]
ADAPTIVE_TOLS = [0.2, 0.1, 0.05, 0.02, 0.01]


def problems(quick: bool):
    ring, hi = GaussianMixture.ring(), GaussianMixture.random(64, k=6, seed=0)
    out = [("ring2d", ring, 20000), ("gmm64", hi, 4000)]
    return out[:1] if quick else out


def _draw(process, gm, n, solver, steps, schedule, opts):
    if process == "cld":
        return sample_cld(mixture_model(gm, CLD()), shape=(n, gm.dim), dtype=torch.float64,
                          solver=solver, steps=steps, schedule=schedule, seed=1,
                          return_stats=True, **opts)
    sde = sdeflow.VPSDE() if process == "vp" else sdeflow.EDMSDE()
    return sdeflow.sample(gm.denoiser(sde), shape=(n, gm.dim), dtype=torch.float64,
                          solver=solver, steps=steps, schedule=schedule, seed=1,
                          return_stats=True, **opts)


def oracle(name, gm, n, budgets, emit, only=None):
    for process, label, solver, schedule, opts, per_step in RUNS:
        if only and f"{process}:{label}" not in only:
            continue
        for budget in budgets:
            t0 = time.perf_counter()
            x, st = _draw(process, gm, n, solver, max((budget - 1) // per_step, 1), schedule, opts)
            row = dict(problem=name, process=process, sampler=label, schedule=schedule,
                       nfe=st["nfe"], seconds=round(time.perf_counter() - t0, 2), **judged(gm, x))
            emit(row)
            if row["at_floor"]:
                break
    if only and "cld:sscs_adaptive" not in only:
        return
    for tol in ADAPTIVE_TOLS:
        t0 = time.perf_counter()
        x, st = sample_cld(mixture_model(gm, CLD()), shape=(n, gm.dim), dtype=torch.float64,
                           solver="sscs_adaptive", rtol=tol, atol=tol, seed=1, return_stats=True)
        row = dict(problem=name, process="cld", sampler="sscs_adaptive", tol=tol, nfe=st["nfe"],
                   seconds=round(time.perf_counter() - t0, 2), **judged(gm, x))
        emit(row)
        if row["at_floor"]:
            break


def _test_levels(n: int) -> torch.Tensor:
    from sdeflow.data import digits
    return ((digits("test").x[:n] + 1) * 8).round()  # grey levels 0 … 16


def digits_rows(run, process, emit, n=1437, n_lik=300):
    from sdeflow.likelihood import bits_per_dim
    from sdeflow.metrics.digits import digits_metrics
    model, cfg = sdeflow.load(run, kind=("denoiser", "cld"))
    samplers = ([("sscs", {}), ("euler_maruyama", {})] if process == "cld" else
                [("sa_solver", {}), ("sra1", {}), ("euler_maruyama", {})])
    for budget in (20, 50, 100):
        for solver, opts in samplers:
            steps = budget if process == "cld" else budget - 1  # EDM: + the final denoising
            steps = steps // 2 if solver == "sra1" else steps
            t0 = time.perf_counter()
            with torch.no_grad():
                x, st = sdeflow.sample(model, shape=(n, *cfg.shape), solver=solver, steps=steps,
                                       seed=1, return_stats=True, **opts)
            m = digits_metrics(x.clamp(-1, 1))
            emit(dict(problem="digits", process=process, sampler=solver, budget=budget,
                      nfe=st["nfe"], seconds=round(time.perf_counter() - t0, 2),
                      fdd=round(m["fdd"], 3), floor=round(m["fdd_floor_train_vs_test"], 3)))
    t0 = time.perf_counter()
    res = bits_per_dim(model, _test_levels(n_lik), num_bins=17, data_range=(-1.0625, 1.0625),
                       divergence="hutchinson", seed=0, rtol=1e-4, atol=1e-4)
    emit(dict(problem="digits-likelihood", process=process, n=n_lik, bpd=round(res.mean, 4),
              bpd_se=round((res.bpd.std() / res.bpd.numel() ** 0.5).item(), 4), nfe=res.nfe,
              seconds=round(time.perf_counter() - t0, 1),
              bound="CLD: E[−log p(x, v) + log q(v)]" if process == "cld" else "PF-ODE"))


def markdown(rows):
    out = []
    mix = [r for r in rows if not r["problem"].startswith("digits")]
    for problem in dict.fromkeys(r["problem"] for r in mix):
        sub = [r for r in mix if r["problem"] == problem]
        out += [f"\n**{problem}**: NFE at which x reaches the floor (max |z| < "
                f"{sub[0]['threshold']}); the pooled width error at the last budget tried\n",
                "| process | sampler | schedule | NFE to the floor | width error |",
                "|---|---|---|---:|---:|"]
        for key in dict.fromkeys((r["process"], r["sampler"], r.get("schedule", "adaptive"))
                                 for r in sub):
            runs = [r for r in sub if (r["process"], r["sampler"],
                                       r.get("schedule", "adaptive")) == key]
            hit = [r for r in runs if r["at_floor"]]
            nfe = (f"{hit[0]['nfe']}" + (f" (tol {hit[0]['tol']})" if "tol" in hit[0] else "")
                   if hit else f"> {runs[-1]['nfe']}")
            out.append(f"| {key[0]} | {key[1]} | {key[2]} | {nfe} | "
                       f"{runs[-1]['width_err_pct']:+.2f} % |")
    dig = [r for r in rows if r["problem"] == "digits"]
    if dig:
        out += ["\n**digits** (FDD; noise floor " + f"{dig[0]['floor']:.2f})\n",
                "| process | sampler | 20 NFE | 50 NFE | 100 NFE |", "|---|---|---:|---:|---:|"]
        for key in dict.fromkeys((r["process"], r["sampler"]) for r in dig):
            cells = [f"{r['fdd']:.2f}" for b in (20, 50, 100) for r in dig
                     if (r["process"], r["sampler"]) == key and r["budget"] == b]
            out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    lik = [r for r in rows if r["problem"] == "digits-likelihood"]
    if lik:
        out += ["\n| model | bits/dim (test split) | bound | NFE |", "|---|---:|---|---:|"]
        out += [f"| {r['process']} | {r['bpd']:.3f} ± {r['bpd_se']:.3f} | {r['bound']} | "
                f"{r['nfe']} |" for r in lik]
    return "\n".join(out)


def main():
    def add(ap):
        ap.add_argument("--quick", action="store_true", help="the 2-D problem only")
        ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
        ap.add_argument("--only", nargs="+", help="only these runs, as process:sampler "
                        "(e.g. cld:sscs vp:euler_maruyama cld:sscs_adaptive)")
        ap.add_argument("--problems", nargs="+", help="only these problems (ring2d, gmm64)")
        ap.add_argument("--digits-cld", help="a trained CLD digits run")
        ap.add_argument("--digits-edm", help="a trained EDM digits run")

    def body(emit, a):
        for name, gm, n in problems(a.quick):
            if a.problems and name not in a.problems:
                continue
            oracle(name, gm, n, [b for b in a.budgets if gm.dim < 64 or b <= 512], emit, a.only)
        if a.digits_cld:
            digits_rows(a.digits_cld, "cld", emit)
        if a.digits_edm:
            digits_rows(a.digits_edm, "edm", emit)
    run_benchmark(__doc__, body, markdown, add)


if __name__ == "__main__":
    main()

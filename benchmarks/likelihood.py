"""Likelihood error vs NFE: sdeflow's PF-ODE likelihood against k-diffusion's
``log_likelihood`` (dopri5 via torchdiffeq, one Rademacher Hutchinson probe) on the same
Gaussian mixtures, with the exact log p_{t_min}(x) as the answer.

Problems (EDM SDE, σ from 0.002 to 80 — k-diffusion's own parameterisation): the 8-Gaussian
ring in 2-D, and a 6-component anisotropic mixture in 64-D whose means are centred (so the
N(0, 80²) prior both methods use is accurate and the comparison measures the solvers, not
the prior). Error: mean |log p̂ − log p| over the samples, nats.

Prints JSON lines; ``--markdown`` adds a table. Usage:
    python benchmarks/likelihood.py [--markdown] [--out docs/likelihood_results.jsonl]
"""
from __future__ import annotations

import time

import torch

import sdeflow
from sdeflow.likelihood import log_likelihood
from sdeflow.oracle import GaussianMixture

from anchors import k_diffusion_sampling
from common import run_benchmark

TOLS = [1e-3, 1e-4, 1e-5]


def problems():
    hi = GaussianMixture.random(64, k=6, seed=0)
    centred = GaussianMixture(hi.weights, hi.means - (hi.weights[:, None] * hi.means).sum(0),
                              covs=hi.covs)
    return [("ring2d", GaussianMixture.ring(), 256), ("gmm64", centred, 64)]


def run(emit):
    kd = k_diffusion_sampling()
    emit(dict(meta=True, k_diffusion=kd is not None))
    sde = sdeflow.EDMSDE()
    for name, gm, n in problems():
        model = gm.denoiser(sde)
        x = gm.sample(n, generator=torch.Generator().manual_seed(0))
        tm = torch.tensor(sde.t_min, dtype=torch.float64)
        exact = gm.log_prob(x, sde.s(tm), sde.sigma(tm))

        def row(impl, method, tol, logp, nfe, seconds, **extra):
            err = (logp - exact).abs()
            emit(dict(problem=name, impl=impl, method=method, tol=tol, nfe=nfe,
                      mae=err.mean().item(), max_err=err.max().item(), seconds=seconds, **extra))
        for tol in TOLS:
            for div, probes in (("exact", 1), ("hutchinson", 1), ("hutchinson", 16)):
                start = time.perf_counter()
                lp, st = log_likelihood(model, x, divergence=div, n_probes=probes, rtol=tol,
                                        atol=tol, seed=1, return_stats=True)
                row("sdeflow", f"rk45 {div}" + (f" ×{probes}" if div != "exact" else ""), tol,
                    lp, st["nfe"], time.perf_counter() - start)
            if kd is not None:
                torch.manual_seed(1)
                start = time.perf_counter()
                lp, info = kd.log_likelihood(lambda x_, s_: gm.x0(x_, 1.0, s_), x, sde.t_min, sde.T,
                                             atol=tol, rtol=tol)
                row("k-diffusion", "dopri5 hutchinson ×1", tol, lp, info["fevals"],
                    time.perf_counter() - start)


def markdown(rows):
    out = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        out += [f"\n**{problem}** (mean |error| in nats; NFE)\n",
                "| impl | method | " + " | ".join(f"tol {t:.0e}" for t in TOLS) + " |",
                "|---|---|" + "---|" * len(TOLS)]
        sub = [r for r in rows if r["problem"] == problem]
        for key in dict.fromkeys((r["impl"], r["method"]) for r in sub):
            cells = {r["tol"]: f"{r['mae']:.1e} ({r['nfe']})" for r in sub if (r["impl"], r["method"]) == key}
            out.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells.get(t, "–") for t in TOLS) + " |")
        anchor = [r for r in sub if r["impl"] == "k-diffusion" and r["tol"] == 1e-4]
        if anchor:
            a = anchor[0]
            ours = [r for r in sub if r["impl"] == "sdeflow" and r["nfe"] <= a["nfe"]]
            if ours:
                best = min(ours, key=lambda r: r["mae"])
                out.append(f"\nAt ≤ the anchor's NFE ({a['nfe']}, tol 1e-4): best sdeflow = "
                           f"{best['method']} tol {best['tol']:.0e}, error {best['mae']:.1e} vs "
                           f"{a['mae']:.1e} — {a['mae'] / best['mae']:.0f}× smaller, NFE {best['nfe']}, "
                           f"wall time {best['seconds']:.2f} s vs {a['seconds']:.2f} s.")
    return "\n".join(out)


def main():
    run_benchmark(__doc__, lambda emit, args: run(emit), markdown)


if __name__ == "__main__":
    main()

r"""Local error of iPNDM's order-p step on a trained network, from the exact trajectory:
why ``auto`` lowers the order for noise-predicting networks (docs/benchmarks.md).

In x̃ = x/s, σ̃ = σ/s the PF-ODE is dx̃/dσ̃ = ε̂(x̃, σ̃), and an iPNDM step of order p is
x̃_{i+1} = x̃_i + (σ̃_{i+1} − σ̃_i) Σ_j c_j ε̂_{i−j} with the equal-step Adams–Bashforth weights
c. Along the network's own trajectory (fine Heun steps, geometric in σ̃, between the grid's
nodes) this prints, for each step of ``auto``'s grid at ``--nfe`` calls (or of
``--schedule``'s), the RMS of

.. math:: \Delta\tilde\sigma_i \sum_j c_j\,\hat\varepsilon(\tilde x(\tilde\sigma_{i-j}),
          \tilde\sigma_{i-j}) - \big(\tilde x(\tilde\sigma_{i+1}) - \tilde x(\tilde\sigma_i)\big)

for p = 1–4 — each step's error with an exact state and exact history. An exact ε̂ is nearly
constant along the trajectory at large σ̃ (ε ≈ x̃/σ̃), so there every p is nearly exact; a
network's error in ε̂ that changes from one node to the next is what the weights amplify.
Every order is measured at every step where it has the history; the sampler itself lowers
the order at the start and the end and takes x̂0 after the last step. Errors are in x̃'s
units, so only steps over the same σ̃ compare directly.

    python benchmarks/local_error.py --run runs/digits_vp runs/digits_vp_long runs/digits \
        --nfe 10 --schedule karras_trailing --out docs/local_error_results.jsonl
"""
from __future__ import annotations

import math

import torch
from common import run_benchmark

import sdeflow
from sdeflow.schedules import get_timesteps

# equal-step Adams–Bashforth weights, newest first (iPNDM's)
AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12),
      4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def trajectory(model, x_T, nus, substeps: int):
    """x̃ and ε̂ at each σ̃ of ``nus`` along the PF-ODE from ``x_T`` (Heun, ``substeps``
    geometric steps in σ̃ between nodes)."""
    sde = model.sde
    ones = torch.ones(x_T.shape[0], dtype=x_T.dtype)

    def eps(xt, nu):
        t = sde.t_from_noise_level(torch.tensor([float(nu)], dtype=torch.float64))
        with torch.no_grad():
            return model.eps(sde.s(t).to(xt) * xt, t.to(xt) * ones)
    s_T = sde.s(sde.t_from_noise_level(nus[:1].to(torch.float64))).to(x_T)
    xt = x_T / s_T
    xs, es = [xt], [eps(xt, nus[0])]
    for a, b in zip(nus[:-1], nus[1:]):
        sub = torch.exp(torch.linspace(math.log(a), math.log(b), substeps + 1, dtype=torch.float64))
        for u, v in zip(sub[:-1], sub[1:]):
            e1 = eps(xt, u)
            x1 = xt + float(v - u) * e1
            xt = xt + float(v - u) * 0.5 * (e1 + eps(x1, v))
        xs.append(xt)
        es.append(eps(xt, b))
    return xs, es


def body(emit, a):
    for run in a.run:
        measure(emit, a, run)


def measure(emit, a, run: str) -> None:
    """One row per step of the grid for the network of ``run``."""
    model, cfg = sdeflow.load(run)
    sde = model.sde
    x_T = sde.prior_sample((a.n, *cfg.shape), generator=torch.Generator().manual_seed(0))
    from sdeflow.samplers.auto import auto_config, predicts_noise
    auto = auto_config(sde, a.nfe, math.prod(cfg.shape), predicts_noise(model))
    schedule = a.schedule or auto["schedule"]
    ts = get_timesteps(sde, auto["steps"], schedule, allow_free_end=True)
    nus = sde.noise_level(ts.to(torch.float64))
    xs, es = trajectory(model, x_T, nus, a.substeps)
    for i in range(len(nus) - 1):
        exact = xs[i + 1] - xs[i]
        row = dict(run=run, prediction=getattr(model, "prediction", "x0"), nfe=a.nfe,
                   schedule=schedule, step=i, sigma_from=round(float(nus[i]), 4),
                   sigma_to=round(float(nus[i + 1]), 4))
        for p in range(1, min(4, i + 1) + 1):
            est = float(nus[i + 1] - nus[i]) * sum(c * es[i - j] for j, c in enumerate(AB[p]))
            row[f"order{p}"] = (est - exact).pow(2).mean().sqrt().item()
        emit(row)


def markdown(rows):
    out = ["| run | step | σ̃ from → to | order 1 | order 2 | order 3 | order 4 |",
           "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r[f'order{p}']:.4f}" if f"order{p}" in r else "–" for p in range(1, 5)]
        out.append(f"| {r['run']} | {r['step']} | {r['sigma_from']:.3g} → {r['sigma_to']:.3g} | "
                   + " | ".join(cells) + " |")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--run", nargs="+", default=["runs/digits"],
                    help="run directories (any SDE), measured in turn")
    ap.add_argument("--nfe", type=int, default=10, help="budget whose auto grid is measured")
    ap.add_argument("--schedule", help="the grid's shape (default: auto's at --nfe)")
    ap.add_argument("-n", type=int, default=128, help="prior draws")
    ap.add_argument("--substeps", type=int, default=200,
                    help="Heun steps of the reference trajectory between two grid nodes")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

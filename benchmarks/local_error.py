r"""Local error of iPNDM's order-p step on a trained network, from the exact trajectory:
why ``auto`` lowers the order for noise-predicting networks (docs/benchmarks.md).

In x̃ = x/s, σ̃ = σ/s the PF-ODE is dx̃/dσ̃ = ε̂(x̃, σ̃), and an iPNDM step of order p is
x̃_{i+1} = x̃_i + (σ̃_{i+1} − σ̃_i) Σ_j c_j ε̂_{i−j} with the equal-step Adams–Bashforth weights
c (``AB_WEIGHTS``). Along the network's own trajectory (fine Heun steps of ``sample``,
geometric in σ̃, between the grid's nodes) this prints, for each step of ``auto``'s grid at
``--nfe`` calls (or of ``--schedule``'s), the RMS of

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
from sdeflow.samplers.exponential import AB_WEIGHTS
from sdeflow.schedules import get_timesteps

def trajectory(model, x_T, ts, substeps: int):
    """x̃ = x/s and ε̂ at each time of ``ts`` along the PF-ODE from ``x_T`` (Heun,
    ``substeps`` steps geometric in σ̃ between two nodes)."""
    sde = model.sde
    ones = torch.ones(x_T.shape[0], dtype=x_T.dtype)
    nus = sde.noise_level(ts)
    x, xs, es = x_T, [], []
    for i in range(len(ts)):
        with torch.no_grad():
            es.append(model.eps(x, ts[i].to(x) * ones))
        xs.append(x / sde.s(ts[i]).to(x))
        if i + 1 < len(ts):
            sub = torch.exp(torch.linspace(math.log(nus[i]), math.log(nus[i + 1]), substeps + 1,
                                           dtype=torch.float64))
            with torch.no_grad():
                x = sdeflow.sample(model, x, solver="heun", timesteps=sde.t_from_noise_level(sub),
                                   denoise=False)
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
    ts = get_timesteps(sde, auto["steps"], schedule, allow_free_end=True).to(torch.float64)
    nus = sde.noise_level(ts)
    xs, es = trajectory(model, x_T, ts, a.substeps)
    for i in range(len(nus) - 1):
        exact = xs[i + 1] - xs[i]
        row = dict(run=run, prediction=getattr(model, "prediction", "x0"), nfe=a.nfe,
                   schedule=schedule, step=i, sigma_from=round(float(nus[i]), 4),
                   sigma_to=round(float(nus[i + 1]), 4))
        for p in range(1, min(4, i + 1) + 1):
            est = float(nus[i + 1] - nus[i]) * sum(c * es[i - j]
                                                    for j, c in enumerate(AB_WEIGHTS[p]))
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

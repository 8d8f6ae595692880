"""Few-step sampling (5–20 NFE): sdeflow's solvers against k-diffusion's samplers on the same
exact mixture denoiser, the same prior draws and the same answer.

Problems: the 8-Gaussian ring (2-D) and a 6-component anisotropic 64-D mixture, each under the
EDM SDE (σ 80 → 0.002) and the VP SDE (t 1 → 1e-3, i.e. σ̃ = σ/s from 157 → 0.01). k-diffusion
works in EDM's variables, so for VP it integrates x̃ = x/s in σ̃ with D(x̃; σ̃) = x̂0(s x̃, t(σ̃))
— the same ODE. Answer: x̂0 at t_min of the PF-ODE solution (RK4, 4096 steps, then the exact
denoiser). Every method ends with a denoised output and its NFE counts every network call.
Error: RMS over coordinates.

k-diffusion's samplers: sample_dpmpp_2m, sample_heun, sample_lms (Karras grids, σ → 0 last
step), sample_dpm_fast, sample_dpm_adaptive (rtol=atol from 0.2 to 0.01).
Usage: python benchmarks/solvers.py [--markdown] [--out docs/solvers_results.jsonl]
"""
from __future__ import annotations

import time

import torch
from anchors import k_diffusion_sampling
from common import run_benchmark

import sdeflow
from sdeflow.oracle import GaussianMixture

NFES = [5, 6, 8, 10, 12, 15, 20]
OURS = [("dpmpp_2m", 1), ("dpmpp_3m", 1), ("unipc", 1), ("deis", 1), ("dpm_solver_2", 2),
        ("dpm_solver_3", 3), ("heun", 2), ("ddim", 1)]


def problems():
    hi = GaussianMixture.random(64, k=6, seed=0)
    ring = GaussianMixture.ring()
    return [(f"{g}-{s}", gm, sde) for g, gm in (("ring2d", ring), ("gmm64", hi))
            for s, sde in (("edm", sdeflow.EDMSDE()), ("vp", sdeflow.VPSDE()))]


def run(emit, n: int = 256):
    kd = k_diffusion_sampling()
    emit(dict(meta=True, k_diffusion=kd is not None))
    for name, gm, sde in problems():
        model = gm.denoiser(sde)
        x_T = sde.prior_sample((n, gm.dim), generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
        x_end = sdeflow.sample(model, x_T, solver="rk4", steps=4096, denoise=False)
        ref = model.x0(x_end, sde.t_min)

        def err(x):
            return (x - ref).pow(2).mean().sqrt().item()
        for solver, per_step in OURS:
            for schedule in ("karras", "logsnr"):
                for nfe in NFES:
                    steps = (nfe - 1) // per_step
                    if steps < 1:
                        continue
                    x, st = sdeflow.sample(model, x_T, solver=solver, steps=steps,
                                           schedule=schedule, return_stats=True)
                    emit(dict(problem=name, impl="sdeflow", solver=f"{solver}/{schedule}",
                              nfe=st["nfe"], rmse=err(x)))
        if kd is None:
            continue
        s_T = sde.s(torch.tensor(sde.T, dtype=torch.float64))
        nu_min = float(sde.noise_level(torch.tensor(sde.t_min, dtype=torch.float64)))
        nu_max = float(sde.noise_level(torch.tensor(sde.T, dtype=torch.float64)))
        calls = [0]

        def denoiser(xt, nu):
            calls[0] += 1
            t = sde.t_from_noise_level(nu.clamp(nu_min, nu_max))
            return gm.x0(sde.s(t)[:, None] * xt, sde.s(t), sde.sigma(t))
        xt_T = x_T / s_T

        def anchor(label, fn, *args, **kw):
            calls[0] = 0
            start = time.perf_counter()
            x = fn(denoiser, xt_T, *args, disable=True, **kw)
            emit(dict(problem=name, impl="k-diffusion", solver=label, nfe=calls[0], rmse=err(x),
                      seconds=time.perf_counter() - start))
        for nfe in NFES:
            sig = kd.get_sigmas_karras(nfe, nu_min, nu_max, device="cpu").to(torch.float64)
            anchor("dpmpp_2m", kd.sample_dpmpp_2m, sig)
            anchor("lms", kd.sample_lms, sig)
            sig_h = kd.get_sigmas_karras((nfe + 1) // 2, nu_min, nu_max, device="cpu").to(torch.float64)
            anchor("heun", kd.sample_heun, sig_h)
            anchor("dpm_fast", kd.sample_dpm_fast, nu_min, nu_max, nfe)
        for tol in (0.2, 0.1, 0.05, 0.02, 0.01):
            anchor(f"dpm_adaptive(tol {tol})", kd.sample_dpm_adaptive, nu_min, nu_max, rtol=tol,
                   atol=tol)


def markdown(rows):
    out = ["| problem | NFE | best sdeflow (solver/schedule: error) | best k-diffusion | ratio |",
           "|---|---|---|---|---|"]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == problem]
        for nfe in NFES:
            ours = [r for r in sub if r["impl"] == "sdeflow" and r["nfe"] <= nfe]
            theirs = [r for r in sub if r["impl"] == "k-diffusion" and r["nfe"] <= nfe]
            if not ours or not theirs:
                continue
            o, t = min(ours, key=lambda r: r["rmse"]), min(theirs, key=lambda r: r["rmse"])
            out.append(f"| {problem} | ≤{nfe} | {o['solver']} ({o['nfe']}): {o['rmse']:.2e} | "
                       f"{t['solver']} ({t['nfe']}): {t['rmse']:.2e} | {o['rmse'] / t['rmse']:.2f} |")
    return "\n".join(out)


def main():
    run_benchmark(__doc__, lambda emit, a: run(emit), markdown)


if __name__ == "__main__":
    main()

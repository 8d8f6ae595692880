"""Few-step sampling of pretrained-layout diffusers models: diffusers' own schedulers against
sdeflow's solvers on the same network, the same initial noise and the same answer.

Problems (fixed seeds, random weights — the solvers see a real network's non-smoothness, not a
trained one's): ``sd-latent``, a tiny Stable-Diffusion-layout pipeline (UNet2DConditionModel
with cross-attention to a fixed random text embedding, scaled-linear schedule, loaded by
``from_stable_diffusion``; errors on the latents, before the VAE); ``score-sde-ve``, a tiny
score_sde VE model (NCSN++ skip blocks, Fourier embedding, σ 0.01 → 50; ``from_score_sde``).
Answer: the model's own PF-ODE solution, DPM-Solver++(2M) with 1000 steps (on the 1000 trained
timesteps for sd-latent, log-SNR-uniform for VE) from the first level to the last, then x̂0 there.
Error: ‖x − x_ref‖ / ‖x_ref‖ over the batch.

diffusers' schedulers (linspace timestep spacing, so every one starts at level 999 like the
answer): DPMSolverMultistep (DPM-Solver++ 2M), UniPCMultistep (bh2, order 2),
DEISMultistep (order 2), EulerDiscrete. DPM-Solver++/UniPC/Euler end at σ = 0 (their last model
output is the answer); DEIS ends at the last level (σ_0, no final denoising), so it is compared
with the answer's ODE state there. The score_sde model is driven through the discrete VP
parameterisation on 1000 log-uniform noise levels between its σ_min and σ_max (ᾱ = 1/(1+σ²),
x_vp = x/√(1+σ²), ε = −σ·score) — the same ODE. sdeflow: dpmpp_2m, unipc, ipndm (their
defaults: the SDE's default schedule, final x̂0) and ``auto`` (budget = NFE); NFE counts every
network call. Goal (issue 21): ours ≤ 0.5 × diffusers' best at each NFE.
Usage: python benchmarks/interop.py [--markdown] [--out docs/interop_results.jsonl]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import sdeflow
from common import run_benchmark
from sdeflow.interop import discrete_times, from_score_sde, from_stable_diffusion
from sdeflow.interop.hf_diffusers import discrete_schedule, scheduler_config
from sdeflow.latent import find_latent

NFES = (5, 10, 20)
OURS = ("dpmpp_2m", "unipc", "ipndm", "auto")
REF_STEPS = 1000


def _tiny_sd(folder: Path):
    import diffusers
    torch.manual_seed(1)
    diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
        attention_head_dim=2).save_pretrained(folder / "unet")
    torch.manual_seed(2)
    diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
        sample_size=16).save_pretrained(folder / "vae")
    diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                            skip_prk_steps=True).save_pretrained(folder / "scheduler")
    return from_stable_diffusion(folder)


def _tiny_ve():
    import diffusers
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, time_embedding_type="fourier",
        down_block_types=("SkipDownBlock2D",) * 2, up_block_types=("SkipUpBlock2D",) * 2)
    return from_score_sde(unet, diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0))


def problems(tmp: Path):
    """(name, model, x_T, cond, ᾱ of the discrete levels diffusers steps on, reference grid)."""
    g = torch.Generator().manual_seed(0)
    sd = _tiny_sd(tmp)
    x_sd = torch.randn(4, 4, 8, 8, generator=g)
    cond = {"encoder_hidden_states": torch.randn(4, 5, 8, generator=g)}
    a_sd = discrete_schedule(scheduler_config(tmp, None))[0]
    yield "sd-latent", sd, x_sd, cond, a_sd, discrete_times(sd, torch.arange(999, -1, -1))
    ve = _tiny_ve()
    sde = ve.sde
    x_ve = torch.randn(4, 3, 8, 8, generator=g) * sde.sigma(torch.tensor(sde.T))
    ends = sde.sigma(torch.tensor([sde.t_min, sde.T], dtype=torch.float64))
    nu = torch.logspace(ends[0].log10(), ends[1].log10(), 1000, dtype=torch.float64)
    yield "score-sde-ve", ve, x_ve, {}, 1 / (1 + nu**2), None


def _decode(model):
    return False if find_latent(model) is not None else None  # latents, not images


def reference(model, x_T, cond, ts):
    """(ODE state at the last level, x̂0 there) of the 1000-step solution."""
    with torch.no_grad():
        kw = dict(timesteps=ts) if ts is not None else dict(steps=REF_STEPS, schedule="logsnr")
        x = sdeflow.sample(model, x_T, solver="dpmpp_2m", denoise=False, cond=cond,
                           decode=_decode(model), **kw)
        t_end = ts[-1] if ts is not None else model.sde.t_min
        return x, model.x0(x, t_end, **cond)


def _schedulers():
    import diffusers
    common = dict(timestep_spacing="linspace")
    return [("DPMSolverMultistep(2M)", diffusers.DPMSolverMultistepScheduler,
             dict(solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="zero", **common)),
            ("UniPCMultistep(bh2)", diffusers.UniPCMultistepScheduler,
             dict(solver_order=2, final_sigmas_type="zero", **common)),
            ("DEISMultistep(2)", diffusers.DEISMultistepScheduler, dict(solver_order=2, **common)),
            ("EulerDiscrete", diffusers.EulerDiscreteScheduler, dict(final_sigmas_type="zero", **common))]


def run_diffusers(model, x_T, cond, abar, nfe, cls, kw):
    """diffusers' loop in its VP variables on the levels ᾱ (the model's own, or made for a VE
    model); returns the answer in the model's variables and whether it ended at σ = 0."""
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    sch = cls(trained_betas=betas.numpy(), **kw)
    sch.set_timesteps(nfe)
    sde = model.sde
    s_of = lambda n: abar[n].sqrt()  # noqa: E731 — VP scale of level n
    t_first = discrete_t(model, abar, int(sch.timesteps[0]))
    x = x_T / sde.s(t_first) * s_of(int(sch.timesteps[0]))  # the same point, VP variables
    if cls.__name__ == "EulerDiscreteScheduler":  # it steps x̃ = x_vp/√ᾱ in σ̃
        x = x / s_of(int(sch.timesteps[0]))
    with torch.no_grad():
        for n in sch.timesteps:
            n_i = int(n)
            t = discrete_t(model, abar, n_i).expand(x.shape[0]).to(x.dtype)
            x_in = sch.scale_model_input(x, n)
            eps = model.eps((x_in / s_of(n_i) * sde.s(t[0])).to(x.dtype), t, **cond)
            x = sch.step(eps, n, x).prev_sample
    ends_at_zero = float(sch.sigmas[-1]) == 0.0
    if not ends_at_zero:  # at level 0: back to the model's variables there
        x = x / s_of(0) * sde.s(discrete_t(model, abar, 0))
    return x, ends_at_zero


def discrete_t(model, abar, n: int):
    """The model's time of diffusers' level n of ᾱ (same log-SNR)."""
    lam = 0.5 * (abar[n].log() - torch.log1p(-abar[n]))
    return model.sde.t_from_log_snr(lam).to(torch.float64)


def body(emit, args):
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, x_T, cond, abar, ref_ts in problems(Path(tmp)):
            x_end, x0_ref = reference(model, x_T, cond, ref_ts)
            err = lambda x, ref: ((x - ref).norm() / ref.norm()).item()  # noqa: E731
            for label, cls, kw in _schedulers():
                for nfe in NFES:
                    x, zero = run_diffusers(model, x_T, cond, abar, nfe, cls, kw)
                    emit(dict(problem=name, impl="diffusers", solver=label, nfe=nfe,
                              rel_err=err(x, x0_ref if zero else x_end)))
            for solver in OURS:
                for nfe in NFES:
                    kw = dict(steps=nfe) if solver == "auto" else dict(steps=nfe - 1)
                    with torch.no_grad():
                        x, st = sdeflow.sample(model, x_T, solver=solver, cond=cond,
                                               return_stats=True, decode=_decode(model), **kw)
                    emit(dict(problem=name, impl="sdeflow", solver=solver, nfe=st["nfe"],
                              budget=nfe, rel_err=err(x, x0_ref)))


def markdown(rows) -> str:
    out = []
    for prob in dict.fromkeys(r["problem"] for r in rows):
        rs = [r for r in rows if r["problem"] == prob]
        out += [f"\n**{prob}** (relative error against the 1000-step solution)\n",
                "| implementation | solver | " + " | ".join(f"NFE {n}" for n in NFES) + " |",
                "|---|---|" + "---|" * len(NFES)]
        for impl, solver in dict.fromkeys((r["impl"], r["solver"]) for r in rs):
            cells = {r.get("budget", r["nfe"]): r["rel_err"] for r in rs
                     if (r["impl"], r["solver"]) == (impl, solver)}
            out.append(f"| {impl} | {solver} | " + " | ".join(
                f"{cells[n]:.2e}" if n in cells else "—" for n in NFES) + " |")
        for n in NFES:
            best_d = min(r["rel_err"] for r in rs if r["impl"] == "diffusers" and r["nfe"] == n)
            best_o = min(r["rel_err"] for r in rs if r["impl"] == "sdeflow" and r.get("budget") == n)
            out.append(f"\nNFE {n}: best sdeflow / best diffusers = {best_o / best_d:.2f}"
                       f" ({'met' if best_o <= 0.5 * best_d else 'not met'}: goal ≤ 0.5)")
    return "\n".join(out)


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown)

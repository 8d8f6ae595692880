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
network call. Tuned rows, as a user runs ``tune-steps`` on a loaded model: ``dpmpp_2m/tuned`` and
``unipc/tuned`` (``tune_timesteps``, grid and final time, ``--max-evals`` Adam iterations,
default 200 as ``tune-steps``) and ``unipc/bns`` (grid and coefficients,
``coefficients=True``), calibrated on ``--n-cal`` prior draws of their own (default 128 as
``tune-steps``; seed 1000) and validated on as many (seed 1001) — for sd-latent with as many
random text embeddings of their own, shared by the two — against the same kind of 1000-step
answer; the rows are then measured on the benchmark's draws and embeddings, which tuning never
sees. Evaluation: ``N_EVAL`` draws. Goal (issue 21): ours ≤ 0.5 × diffusers' best at each NFE.
Usage: python benchmarks/interop.py [--markdown] [--out docs/interop_results.jsonl] [--no-tune]
       [--problems sd-latent,score-sde-ve] [--tuned dpmpp_2m/tuned,unipc/tuned,unipc/bns]
       [--n-cal 128] [--max-evals 200]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import sdeflow
from common import run_benchmark
from sdeflow.interop import discrete_times, from_score_sde, from_stable_diffusion
from sdeflow.interop.hf_diffusers import discrete_schedule, scheduler_config
from sdeflow.latent import find_latent

NFES = (5, 10, 20)
OURS = ("dpmpp_2m", "unipc", "ipndm", "auto")
TUNED = (("dpmpp_2m/tuned", "dpmpp_2m", False), ("unipc/tuned", "unipc", False),
         ("unipc/bns", "unipc", True))
REF_STEPS = 1000
N_EVAL = 16


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
    """(name, model, draw, ᾱ of the discrete levels diffusers steps on, reference grid), with
    ``draw(n, seed)`` → (prior draws at T, their conditioning)."""
    sd = _tiny_sd(tmp)

    def draw_sd(n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, 8, 8, generator=g)
        return x, {"encoder_hidden_states": torch.randn(n, 5, 8, generator=g)}
    a_sd = discrete_schedule(scheduler_config(tmp, None))[0]
    yield "sd-latent", sd, draw_sd, a_sd, discrete_times(sd, torch.arange(999, -1, -1))
    ve = _tiny_ve()
    sde = ve.sde

    def draw_ve(n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 3, 8, 8, generator=g) * sde.sigma(torch.tensor(sde.T)), {}
    ends = sde.sigma(torch.tensor([sde.t_min, sde.T], dtype=torch.float64))
    nu = torch.logspace(ends[0].log10(), ends[1].log10(), 1000, dtype=torch.float64)
    yield "score-sde-ve", ve, draw_ve, 1 / (1 + nu**2), None


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


def run_tuned(emit, name, model, draw, ref_ts, x_T, cond, err, x0_ref, args):
    """The tuned rows (module docstring): calibrated and validated on draws of their own."""
    from sdeflow.tuning import tune_timesteps
    tuned_only = args.tuned_only and args.tuned_only.split(",")
    (x_cal, c_cal), (x_val, _) = draw(args.n_cal, 1000), draw(args.n_cal, 1001)
    ref_cal, ref_val = (reference(model, x, c_cal, ref_ts)[1] for x in (x_cal, x_val))
    for label, solver, coefficients in TUNED:
        if tuned_only and label not in tuned_only:
            continue
        for nfe in NFES:
            start = time.perf_counter()
            res = tune_timesteps(model, x_cal, reference=ref_cal, x_heldout=x_val,
                                 reference_heldout=ref_val, cond=c_cal, solver=solver,
                                 steps=nfe - 1, coefficients=coefficients,
                                 max_evals=args.max_evals, calibration_seed=1000)
            with torch.no_grad():
                x, st = sdeflow.sample(model, x_T, solver=res.solver, timesteps=res.tensor(),
                                       cond=cond, return_stats=True, decode=_decode(model),
                                       **res.solver_opts)
            emit(dict(problem=name, impl="sdeflow", solver=label, nfe=st["nfe"], budget=nfe,
                      rel_err=err(x, x0_ref), fallback=res.fallback, kept_start=res.kept_start,
                      start_schedule=res.start_schedule, heldout_loss=res.heldout_loss,
                      n_calibration=args.n_cal, max_evals=args.max_evals,
                      tuning_seconds=round(time.perf_counter() - start, 1)))


def body(emit, args):
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, draw, abar, ref_ts in problems(Path(tmp)):
            if args.problems and name not in args.problems.split(","):
                continue
            x_T, cond = draw(N_EVAL, 0)
            x_end, x0_ref = reference(model, x_T, cond, ref_ts)
            err = lambda x, ref: ((x - ref).norm() / ref.norm()).item()  # noqa: E731
            for label, cls, kw in _schedulers() if not args.tuned_only else ():
                for nfe in NFES:
                    x, zero = run_diffusers(model, x_T, cond, abar, nfe, cls, kw)
                    emit(dict(problem=name, impl="diffusers", solver=label, nfe=nfe,
                              rel_err=err(x, x0_ref if zero else x_end)))
            for solver in OURS if not args.tuned_only else ():
                for nfe in NFES:
                    kw = dict(steps=nfe) if solver == "auto" else dict(steps=nfe - 1)
                    with torch.no_grad():
                        x, st = sdeflow.sample(model, x_T, solver=solver, cond=cond,
                                               return_stats=True, decode=_decode(model), **kw)
                    emit(dict(problem=name, impl="sdeflow", solver=solver, nfe=st["nfe"],
                              budget=nfe, rel_err=err(x, x0_ref)))
            if args.tune:
                run_tuned(emit, name, model, draw, ref_ts, x_T, cond, err, x0_ref, args)


def _args(p):
    p.add_argument("--no-tune", dest="tune", action="store_false", help="skip the tuned rows")
    p.add_argument("--problems", default=None, help="comma-separated problem names (default all)")
    p.add_argument("--n-cal", type=int, default=128,
                   help="calibration (and as many validation) draws of the tuned rows")
    p.add_argument("--max-evals", type=int, default=200, help="Adam iterations of the tuned rows")
    p.add_argument("--tuned", dest="tuned_only", default=None,
                   help="only these tuned rows (comma-separated labels), nothing else")


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
            ours = [r for r in rs if r["impl"] == "sdeflow" and r.get("budget") == n]
            best_o = min(r["rel_err"] for r in ours)
            named = min((r["rel_err"] for r in ours if r["solver"] in OURS), default=float("nan"))
            out.append(f"\nNFE {n}: best sdeflow / best diffusers = {best_o / best_d:.2f}"
                       f" ({'met' if best_o <= 0.5 * best_d else 'not met'}: goal ≤ 0.5;"
                       f" named only: {named / best_d:.2f})")
    return "\n".join(out)


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra_args=_args)

"""``sdeflow demo`` / ``make demo``: two parts that run on a fresh 2-core machine, no network.

1. **toy**: train the MLP on the 8-Gaussian ring; sample with an SDE (Euler–Maruyama), a PC and
   an ODE (Heun) sampler; scatter plots, PF-ODE trajectories and MMD/SW against the truth.
2. **digits**: train the default U-Net on the embedded 8×8 digits (a few minutes: see
   docs/model_notes.md); sample with the same three kinds of samplers; image grids and the
   digits metric (FDD with its train-vs-test noise floor) as JSON and a Markdown table.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import default_model_kwargs
from .train import TrainConfig, load_denoiser, train

__all__ = ["toy_demo", "digits_demo", "digits_config", "cld_digits_config"]


def digits_config(**overrides) -> TrainConfig:
    """EDM SDE, loss and preconditioning with the default U-Net for 1×8×8 images
    (:func:`~sdeflow.models.default_model_kwargs`) on the digits train split."""
    kw = dict(data="digits", model="unet", model_kwargs=default_model_kwargs("unet", (1, 8, 8)),
              sigma_data=0.5, batch_size=64, lr=1e-3, ema_decay=0.999, steps=3000,
              ckpt_every=1000, sample_every=1000)
    kw.update(overrides)
    return TrainConfig(**kw).validate()


def cld_digits_config(**overrides):
    """:func:`digits_config`'s data, network, optimiser and schedule for a CLD model (hybrid
    score matching, mixed score with σ_d = 0.5, SSCS previews)."""
    from .training.cld import CLDConfig
    kw = dict(data="digits", model="unet", model_kwargs=default_model_kwargs("unet", (1, 8, 8)),
              sigma_data=0.5, batch_size=64, lr=1e-3, ema_decay=0.999, steps=3000,
              ckpt_every=1000, sample_every=1000)
    kw.update(overrides)
    return CLDConfig(**kw).validate()


def toy_demo(out: Path, run: Path, steps: int = 3000, num: int = 4000, seed: int = 0) -> dict:
    from .data import TOY_MIXTURE
    from .metrics import mmd2, sliced_wasserstein
    from .plotting import scatter_panels, trajectories
    from .samplers import sample
    out.mkdir(parents=True, exist_ok=True)
    train(TrainConfig(steps=steps, seed=seed, ckpt_every=steps), run)
    model, cfg = load_denoiser(run)
    data = TOY_MIXTURE.sample(num, generator=torch.Generator().manual_seed(seed + 1)).float()
    panels, metrics = {"data (8-Gaussian ring)": data}, {}
    runs = [("euler_maruyama", dict(steps=500)), ("pc", dict(steps=250, snr=0.05)),
            ("heun", dict(steps=25))]
    for solver, opts in runs:
        with torch.no_grad():
            x, st = sample(model, shape=(num, 2), solver=solver, seed=seed, progress=True,
                           return_stats=True, **opts)
        sw = sliced_wasserstein(x, data)
        metrics[solver] = dict(nfe=st["nfe"], seconds=round(st["seconds"], 3),
                               sliced_wasserstein=round(sw, 4), mmd2=float(f"{mmd2(x, data):.3g}"))
        panels[f"{solver} (NFE {st['nfe']}, SW {sw:.3f})"] = x
    true = TOY_MIXTURE.sample(num, generator=torch.Generator().manual_seed(seed + 2))
    metrics["noise_floor_true_vs_true"] = dict(
        sliced_wasserstein=round(sliced_wasserstein(true, data), 4),
        mmd2=float(f"{mmd2(true, data):.3g}"))
    scatter_panels(panels, out / "samples.png", title="trained toy model: data vs samplers")
    ts, xs = [], []
    with torch.no_grad():
        x_T = model.sde.prior_sample((300, 2), generator=torch.Generator().manual_seed(seed))
        ts.append(model.sde.T)
        xs.append(x_T.clone())
        sample(model, x_T, solver="heun", steps=40, denoise=False,
               callback=lambda t, x: (ts.append(float(t)), xs.append(x.clone())))
    tt = torch.tensor(ts, dtype=torch.float64)
    scale = (model.sde.s(tt) ** 2 + model.sde.sigma(tt) ** 2).sqrt()
    trajectories(ts, torch.stack(xs), out / "trajectories.png", scale=scale)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


#: the digits demo's samplers: (label, solver, options)
DIGITS_SAMPLERS = [("SDE: Euler–Maruyama", "euler_maruyama", dict(steps=100)),
                   ("PC: reverse diffusion + Langevin", "pc", dict(steps=50, snr=0.1)),
                   ("ODE: Heun", "heun", dict(steps=18)),
                   ("ODE: DPM-Solver++(2M)", "dpmpp_2m", dict(steps=10))]
#: the samplers of the CLD variant of the digits demo (``sde="cld"``)
CLD_DIGITS_SAMPLERS = [("SDE: SSCS", "sscs", dict(steps=50)),
                       ("SDE: Euler–Maruyama", "euler_maruyama", dict(steps=100)),
                       ("ODE: RK4 on (x, v)", "rk4", dict(steps=25))]


def digits_demo(out: Path, run: Path, steps: int = 3000, num: int = 1437, seed: int = 0,
                resume: bool = True, sde: str = "edm") -> dict:
    """Train the digits U-Net (``sde="edm"``, or ``"cld"``: critically-damped Langevin
    diffusion with hybrid score matching), sample it with each sampler of the demo, and write
    grids, the metrics JSON and a Markdown table to ``out`` (``digits_*``; ``digits_cld_*``)."""
    from .evaluate import draw_samples, evaluate_samples
    from .loading import load
    from .plotting import labelled_grids
    out.mkdir(parents=True, exist_ok=True)
    config = cld_digits_config if sde == "cld" else digits_config
    train(config(steps=steps, seed=seed), run, resume=resume)
    model, cfg = load(run, kind=("denoiser", "cld"))
    from .data import digits
    metrics, panels = {}, {"data (test split)": digits("test").x[:64]}
    stem = "digits_cld" if sde == "cld" else "digits"
    for label, solver, opts in (CLD_DIGITS_SAMPLERS if sde == "cld" else DIGITS_SAMPLERS):
        x, st = draw_samples(model, cfg, num, seed=seed, solver=solver, progress=True, **opts)
        metrics[label] = dict(solver=solver, **opts, **st, **evaluate_samples(x, cfg))
        panels[f"{solver}, NFE {st['nfe']}"] = x[:64]
    labelled_grids(panels, out / f"{stem}_samples.png",
                   title=f"{sde.upper()} U-Net trained {steps} steps on the 8×8 digits")
    (out / f"{stem}_metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / f"{stem}_metrics.md").write_text(digits_table(metrics))
    return metrics


def digits_table(metrics: dict) -> str:
    """A Markdown table of the digits demo's metrics."""
    rows = ["| sampler | NFE | FDD ↓ | noise floor | confidence (data) | class KL |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, m in metrics.items():
        rows.append(f"| {label} | {m['nfe']} | {m['fdd']:.2f} | {m['fdd_floor_train_vs_test']:.2f} "
                    f"| {m['confidence']:.3f} ({m['confidence_data']:.3f}) | {m['class_kl']:.4f} |")
    return "\n".join(rows) + "\n"

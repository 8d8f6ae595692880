"""The ``sdeflow`` command line: train, sample, demo, and list what exists."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import __version__


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"rtol\": 1e-4}'")
    return value


def _add_train(sub):
    from .train import PRECISIONS, TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a score model on toy data or images",
                       description="Train a score model by denoising score matching and save "
                                   "checkpoints (safetensors + JSON config) to --out. 2-D toy data "
                                   "train an MLP; image data (--data digits, the embedded 8×8 "
                                   "digits, or folder/torchvision/hf with --data-kwargs) train a "
                                   "U-Net or DiT. Multi-GPU: torchrun --nproc_per_node=N -m "
                                   "sdeflow.cli train ... (--batch-size is the global batch).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .data import list_data
    from .losses import list_losses
    from .models import list_models
    from .samplers import list_solvers
    from .sde import list_sdes
    from .tasks import list_tasks
    p.add_argument("--data", default=d.data, choices=list_data(), help="data set")
    p.add_argument("--data-kwargs", type=_json_dict, default={},
                   help="data arguments as JSON, e.g. '{\"root\": \"imgs\", \"resolution\": 32}'")
    p.add_argument("--model", default=None, choices=list_models(),
                   help="network (default: mlp for toy data, unet for images)")
    p.add_argument("--model-kwargs", type=_json_dict, default={},
                   help="network arguments as JSON, e.g. '{\"channels\": 32}'")
    p.add_argument("--hidden", type=int, default=None, help="MLP width (default 128)")
    p.add_argument("--depth", type=int, default=None, help="MLP residual blocks (default 3)")
    p.add_argument("--sde", default=d.sde, choices=list_sdes(), help="forward SDE")
    p.add_argument("--sde-kwargs", type=_json_dict, default={}, help="SDE arguments as JSON")
    p.add_argument("--prediction", default=d.prediction, choices=["x0", "eps", "v", "score"])
    p.add_argument("--precondition", default=d.precondition, choices=["edm", "none"],
                   help="EDM preconditioning of the network ('none' feeds t as is)")
    p.add_argument("--sigma-data", type=float, default=None,
                   help="σ_data of EDM preconditioning (default 1.0 for toy data, 0.5 for images)")
    p.add_argument("--loss", default=d.loss, choices=list_losses(), help="training objective")
    p.add_argument("--class-cond", action="store_true", help="condition on the data's labels")
    p.add_argument("--p-uncond", type=float, default=d.p_uncond,
                   help="label dropout for classifier-free guidance (needs --class-cond)")
    p.add_argument("--task", default=None, choices=list_tasks(),
                   help="image-to-image model (SR3/Palette): sr (super-resolution) or colorize; "
                        "the condition image is concatenated to x_t")
    p.add_argument("--sr-factor", type=int, default=2, help="super-resolution factor (--task sr)")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear learning-rate warm-up steps")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: off)")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--precision", default=d.precision, choices=list(PRECISIONS),
                   help="autocast precision (bf16/fp16 for GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--keep", type=int, default=d.keep, help="checkpoints kept")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every,
                   help="save an EMA sample grid every N steps (0: never)")
    p.add_argument("--sample-solver", default=d.sample_solver, choices=list_solvers())
    p.add_argument("--sample-steps", type=int, default=d.sample_steps)
    p.add_argument("--no-tensorboard", action="store_true", help="log to loss.csv only")
    p.add_argument("--out", default="runs/toy", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.set_defaults(func=cmd_train)


def _config_from_args(a):
    from .data import list_toy
    from .train import TrainConfig
    toy = a.data in list_toy()
    model = a.model or ("mlp" if toy else "unet")
    kw = dict(a.model_kwargs)
    for name in ("hidden", "depth"):
        if getattr(a, name) is not None:
            if model != "mlp":
                raise ValueError(f"--{name} is an MLP option; use --model-kwargs for {model}")
            kw[name] = getattr(a, name)
    sigma_data = a.sigma_data if a.sigma_data is not None else (1.0 if toy else 0.5)
    return TrainConfig(data=a.data, data_kwargs=a.data_kwargs, sde=a.sde, sde_kwargs=a.sde_kwargs,
                       prediction=a.prediction, sigma_data=sigma_data,
                       precondition=None if a.precondition == "none" else a.precondition,
                       loss=a.loss, model=model, model_kwargs=kw, class_cond=a.class_cond,
                       p_uncond=a.p_uncond, hflip=a.hflip, steps=a.steps, task=a.task,
                       task_kwargs={"factor": a.sr_factor} if a.task == "sr" else {},
                       batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                       warmup=a.warmup, grad_clip=a.grad_clip, ema_decay=a.ema_decay,
                       precision=a.precision, compile=a.compile, seed=a.seed,
                       ckpt_every=a.ckpt_every, keep=a.keep, log_every=a.log_every,
                       sample_every=a.sample_every, sample_solver=a.sample_solver,
                       sample_steps=a.sample_steps, tensorboard=not a.no_tensorboard).validate()


def cmd_train(a) -> int:
    from .train import train
    st = train(_config_from_args(a), a.out, resume=a.resume)
    if st.dist.is_main:
        print(f"trained {st.step} steps; checkpoint in "
              f"{Path(a.out) / (Path(a.out) / 'latest').read_text()}")
    return 0


def _add_sampling_args(p):
    from .samplers import list_solvers
    from .schedules import list_schedules
    p.add_argument("--solver", default="heun", choices=list_solvers(), help="sampler")
    p.add_argument("--steps", type=int, default=None, help="steps (default: the solver's)")
    p.add_argument("--schedule", default=None, choices=list_schedules(),
                   help="time-step schedule (default: the SDE's)")
    p.add_argument("--solver-opts", type=_json_dict, default={},
                   help="solver options as JSON, e.g. '{\"rtol\": 1e-4}' or '{\"snr\": 0.1}'")
    p.add_argument("--timesteps-file", default=None,
                   help="a tuned schedule (JSON from `sdeflow tune-steps`) instead of --steps/--schedule")
    p.add_argument("--no-denoise", action="store_true", help="skip the final denoising step")
    p.add_argument("--seed", type=int, default=0)


def _grid_args(a, model) -> dict:
    """solver/steps/schedule from the arguments, or the solver and grid of --timesteps-file."""
    if not getattr(a, "timesteps_file", None):
        return dict(solver=a.solver, steps=a.steps, schedule=a.schedule)
    from .tuning import TunedSchedule
    tuned = TunedSchedule.load(a.timesteps_file)
    if a.steps is not None or a.schedule is not None:
        raise ValueError("--timesteps-file replaces --steps and --schedule")
    return dict(solver=tuned.solver, timesteps=tuned.tensor(model.sde), **tuned.solver_opts)


def add_guidance_args(p):
    from .cli_conditional import add_guidance_args as add
    add(p)


def guided_model(a, model, cfg, n, device):
    from .cli_conditional import guided_model as guide
    return guide(a, model, cfg, n, device)


def _add_sample(sub):
    p = sub.add_parser("sample", help="sample a trained checkpoint",
                       description="Load a checkpoint (run directory or ckpt folder), draw samples "
                                   "with any registered solver, save them (.npy) and a scatter plot (2-D) or an image grid.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("-n", "--num", type=int, default=2000, help="number of samples")
    add_guidance_args(p)
    _add_sampling_args(p)
    p.add_argument("--out", default="outputs/samples", help="output prefix (.npy, .png, .json)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(a) -> int:
    import numpy as np

    from .data import get_data, list_toy
    from .metrics import sliced_wasserstein
    from .plotting import save_samples
    from .samplers import sample
    from .train import load_denoiser
    device = _device()
    model, cfg = load_denoiser(a.checkpoint, device=device)
    if cfg.task is not None:
        raise ValueError(f"this model was trained for --task {cfg.task}: use `sdeflow "
                         f"{'sr' if cfg.task == 'sr' else 'colorize'}`")
    model, cond = guided_model(a, model, cfg, a.num, device)
    with torch.no_grad():
        x, stats = sample(model, shape=(a.num, *cfg.shape), denoise=not a.no_denoise, seed=a.seed,
                          device=device, cond=cond, progress=True, return_stats=True,
                          **_grid_args(a, model), **a.solver_opts)
    x = x.cpu()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out.with_suffix(".npy"), x.numpy())
    reference = None
    if cfg.data in list_toy():
        data = get_data(cfg.data).draw(a.num, torch.Generator().manual_seed(a.seed + 1))[0]
        stats["sliced_wasserstein_to_data"] = sliced_wasserstein(x, data)
        reference = {f"data ({cfg.data})": data}
    save_samples(x, out.with_suffix(".png"), f"{stats['solver']}, NFE={stats['nfe']}", reference)
    (out.with_suffix(".json")).write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))
    print(f"wrote {out.with_suffix('.npy')}, {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="train toy and digits models, plot SDE, PC and ODE samples",
                       description="Part 1 (toy): train the MLP on the 8-Gaussian ring, sample it "
                                   "with an SDE (Euler–Maruyama), a predictor–corrector and an ODE "
                                   "(Heun) sampler; scatter plots, PF-ODE trajectories, metrics. "
                                   "Part 2 (digits): train the default U-Net on the embedded 8×8 "
                                   "digits for a few minutes on CPU, sample it with SDE, PC and ODE "
                                   "samplers; image grids and the digits metric (FDD vs its noise "
                                   "floor). Everything goes to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--part", default="all", choices=["all", "toy", "digits"])
    p.add_argument("--out", default="outputs", help="where pictures and metrics go")
    p.add_argument("--run", default="runs/demo", help="run directory of the toy checkpoint")
    p.add_argument("--digits-run", default="runs/digits", help="run directory of the U-Net")
    p.add_argument("--steps", type=int, default=3000, help="toy training steps")
    p.add_argument("--digits-steps", type=int, default=3000, help="U-Net training steps")
    p.add_argument("--num", type=int, default=4000, help="toy samples per sampler")
    p.add_argument("--digits-num", type=int, default=1437,
                   help="digit samples per sampler (1437 = the train split, the floor's size)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    from .demo import digits_demo, toy_demo
    out = Path(a.out)
    if a.part in ("all", "toy"):
        m = toy_demo(out, Path(a.run), a.steps, a.num, a.seed)
        print(json.dumps(m, indent=2))
        print(f"wrote {out / 'samples.png'}, {out / 'trajectories.png'}, {out / 'metrics.json'}")
    if a.part in ("all", "digits"):
        digits_demo(out, Path(a.digits_run), a.digits_steps, a.digits_num, a.seed)
        print((out / "digits_metrics.md").read_text())
        print(f"wrote {out / 'digits_samples.png'}, {out / 'digits_metrics.json'}, "
              f"{out / 'digits_metrics.md'}")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="sample a checkpoint and score it: metrics JSON + grid",
                       description="Draw --num samples from a checkpoint with any solver and score "
                                   "them against the model's data: MMD²/sliced Wasserstein for toy "
                                   "data; for the digits, the Fréchet distance in a digit "
                                   "classifier's feature space (FDD) beside its train-vs-test noise "
                                   "floor, classifier confidence and class balance; FID/KID for "
                                   "image data when --inception-weights is given. Writes "
                                   "OUT/metrics.json and OUT/samples.png.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("-n", "--num", type=int, default=1437, help="number of samples")
    _add_sampling_args(p)
    p.add_argument("--batch", type=int, default=500, help="samples per batch")
    p.add_argument("--inception-weights", default=None,
                   help="path to pt_inception-2015-12-05 weights, for FID/KID (offline)")
    p.add_argument("--out", default="outputs/eval", help="output folder")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(a) -> int:
    from .evaluate import draw_samples, evaluate_samples
    from .plotting import save_samples
    from .train import load_denoiser
    device = _device()
    model, cfg = load_denoiser(a.checkpoint, device=device)
    labels = None
    if cfg.class_cond:
        labels = torch.arange(a.num) % cfg.num_classes
    grid = _grid_args(a, model)
    x, st = draw_samples(model, cfg, a.num, batch=a.batch, seed=a.seed, labels=labels,
                         progress=True, denoise=not a.no_denoise, **grid, **a.solver_opts)
    steps = len(grid["timesteps"]) - 1 if "timesteps" in grid else a.steps
    report = dict(checkpoint=str(a.checkpoint), data=cfg.data, solver=grid["solver"], steps=steps,
                  timesteps_file=a.timesteps_file,
                  **st, **evaluate_samples(x, cfg, labels=labels,
                                           inception_weights=a.inception_weights, seed=a.seed))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_samples(x, out / "samples.png", f"{grid['solver']}, NFE {st['nfe']}")
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'metrics.json'} and {out / 'samples.png'}")
    return 0


def _add_likelihood(sub):
    p = sub.add_parser("likelihood", help="exact log-likelihood / bits per dim of data",
                       description="Integrate the probability-flow ODE with the divergence of its "
                                   "drift (instantaneous change of variables) to get log p(x) in "
                                   "nats per sample and bits per dimension. Data: fresh draws of the "
                                   "checkpoint's toy distribution, or --data-file (a .npy array). "
                                   "With --num-bins the data are integers in [0, num_bins) that are "
                                   "uniformly dequantised and scaled to --data-range, and the "
                                   "change-of-variables offset is added to bits/dim.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("-n", "--num", type=int, default=500, help="toy samples to score")
    p.add_argument("--data-file", help=".npy array of data to score instead of toy draws")
    p.add_argument("--num-bins", type=int, default=None,
                   help="data are discrete in [0, num_bins): dequantise and report offset bits/dim")
    p.add_argument("--data-range", type=float, nargs=2, default=(-1.0, 1.0),
                   help="the model's data range that [0, num_bins) maps to")
    p.add_argument("--n-dequant", type=int, default=1, help="dequantisation draws to average")
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"])
    p.add_argument("--n-probes", type=int, default=1, help="Hutchinson probes")
    p.add_argument("--solver", default="rk45", choices=["rk45", "rk4", "heun", "euler"])
    p.add_argument("--steps", type=int, default=None, help="steps of a fixed-step solver")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/likelihood.json", help="JSON report")
    p.set_defaults(func=cmd_likelihood)


def cmd_likelihood(a) -> int:
    import math

    import numpy as np

    from .data import TOY_MIXTURE, list_toy, toy_sample
    from .likelihood import bits_per_dim, log_likelihood
    from .train import load_denoiser
    model, cfg = load_denoiser(a.checkpoint)
    if a.data_file:
        x = torch.from_numpy(np.load(a.data_file)).to(torch.float32)
    elif cfg.data in list_toy():
        x = toy_sample(cfg.data, a.num, torch.Generator().manual_seed(a.seed)).to(torch.float32)
    else:
        raise ValueError(f"the model was trained on {cfg.data!r}: give the images to score as "
                         f"--data-file (a .npy array (N, C, H, W))")
    opts = dict(divergence=a.divergence, n_probes=a.n_probes, solver=a.solver, steps=a.steps)
    if a.solver == "rk45":
        opts.update(rtol=a.rtol, atol=a.atol)
    D = x[0].numel()
    report = dict(checkpoint=str(a.checkpoint), n=x.shape[0], dims=D, **opts)
    if a.num_bins:
        res = bits_per_dim(model, x, num_bins=a.num_bins, data_range=tuple(a.data_range),
                           n_dequant=a.n_dequant, seed=a.seed, progress=True, **opts)
        report.update(bits_per_dim=res.mean, nats=res.nats.mean().item(),
                      offset_bits=res.offset_bits, n_dequant=res.n_dequant, nfe=res.nfe,
                      summary=res.report())
    else:
        logp, st = log_likelihood(model, x, seed=a.seed, progress=True, return_stats=True, **opts)
        report.update(nats=logp.mean().item(), nats_se=(logp.std() / math.sqrt(len(logp))).item(),
                      bits_per_dim=(-logp.mean() / (D * math.log(2))).item(), offset_bits=0.0,
                      nfe=st["nfe"], seconds=round(st["seconds"], 3))
        if not a.data_file and cfg.data == "gmm":
            report["true_log_density_nats"] = TOY_MIXTURE.log_prob(x.double()).mean().item()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def _add_interpolate(sub):
    p = sub.add_parser("interpolate", help="interpolate between two data points through latents",
                       description="Encode two data points with the PF-ODE, interpolate their "
                                   "latents spherically (slerp), decode every point and plot the "
                                   "path over the data beside the straight line between them.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("--n", type=int, default=15, help="points on the path")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0, help="picks the two endpoints")
    p.add_argument("--out", default="outputs/interpolation.png")
    p.set_defaults(func=cmd_interpolate)


def cmd_interpolate(a) -> int:
    from .data import toy_sample
    from .likelihood import interpolate
    from .plotting import interpolation_path
    from .train import load_denoiser
    model, cfg = load_denoiser(a.checkpoint)
    data = toy_sample(cfg.data, 3000, torch.Generator().manual_seed(a.seed)).float()
    ends = data[:2]
    for cand in data[2:]:  # the second endpoint: the first point far from the first one
        if (cand - ends[0]).norm() > 2.0:
            ends = torch.stack([ends[0], cand])
            break
    with torch.no_grad():
        path = interpolate(model, ends[:1], ends[1:], n=a.n, rtol=a.rtol, atol=a.atol)
    w = torch.linspace(0, 1, a.n)[:, None]
    out = interpolation_path(data, path, (1 - w) * ends[0] + w * ends[1], a.out)
    print(f"wrote {out}")
    return 0


def _add_tune_steps(sub):
    from .samplers import get_solver, list_solvers
    p = sub.add_parser("tune-steps", help="optimise a solver's time steps for a trained model",
                       description="Tune the time grid of a fixed-step ODE solver for a checkpoint "
                                   "and a step budget: the grid is moved (in log-SNR) to minimise "
                                   "the RMS distance of the solver's samples to an adaptive RK45 "
                                   "reference on --n-calib calibration noise draws (by gradient "
                                   "descent through the solver, or a derivative-free pattern "
                                   "search), validated on "
                                   "as many separate draws; with --coefficients the solver's "
                                   "multistep coefficients are tuned too (a bespoke "
                                   "non-stationary 'bns' solver). Evaluation noise (sample/evaluate "
                                   "--seed) is a third, separate set. Writes a JSON schedule for "
                                   "`sdeflow sample/evaluate --timesteps-file`.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("--solver", default="dpmpp_2m",
                   choices=[s for s in list_solvers("ode")
                            if not get_solver(s).adaptive and s != "bns"],
                   help="the solver whose grid is tuned (with --coefficients: the starting "
                        "solver, one network call per step)")
    p.add_argument("--steps", type=int, default=9, help="grid intervals (NFE ≈ steps × NFE/step + 1)")
    p.add_argument("--n-calib", type=int, default=128, help="calibration (and validation) draws")
    p.add_argument("--calib-seed", type=int, default=1000,
                   help="seed of the calibration draws (validation uses calib-seed + 1)")
    p.add_argument("--method", choices=["gradient", "pattern"], default="gradient",
                   help="Adam on the grid through solver and network, or pattern search "
                        "(no gradients; for models that cannot be differentiated)")
    p.add_argument("--fixed-end", action="store_true",
                   help="keep the last time at t_min (default: tune where the final denoising "
                        "happens too)")
    p.add_argument("--coefficients", action="store_true",
                   help="tune the solver's linear-multistep coefficients with the grid (gradient "
                        "method; Shaul et al. 2024); for few steps (≤ 8–10 NFE); give it more "
                        "calibration draws (--n-calib 512 or more) than a grid")
    p.add_argument("--max-evals", type=int, default=200,
                   help="iterations (gradient: one forward + backward pass each) or solver runs "
                        "(pattern) the search may spend")
    p.add_argument("--out", default="outputs/tuned_schedule.json")
    p.set_defaults(func=cmd_tune_steps)


def cmd_tune_steps(a) -> int:
    from .tuning import tune_timesteps
    from .train import load_denoiser
    device = _device()
    model, cfg = load_denoiser(a.checkpoint, device=device)
    shape = (a.n_calib, *cfg.shape)
    draws = [model.sde.prior_sample(shape, generator=torch.Generator().manual_seed(a.calib_seed + k))
             .to(device) for k in (0, 1)]
    res = tune_timesteps(model, draws[0], x_heldout=draws[1], solver=a.solver, steps=a.steps,
                         max_evals=a.max_evals, calibration_seed=a.calib_seed, progress=True,
                         method=a.method, free_end=not a.fixed_end, coefficients=a.coefficients)
    res.save(a.out)
    print(json.dumps({k: v for k, v in res.__dict__.items() if k not in ("timesteps", "solver_opts")},
                     indent=2))
    print(f"wrote {a.out}")
    return 0


def _add_list(sub):
    p = sub.add_parser("list", help="list solvers, schedules, SDEs, losses, data sets",
                       description="Print the names every registry accepts: solvers (by kind, "
                                   "with what they are), time-step schedules, SDEs, training "
                                   "losses, data sets and networks. Use them with --solver, --schedule, "
                                   "--sde, --loss and --data, or in Python as sdeflow.sample("
                                   "model, solver=..., schedule=...).")
    p.set_defaults(func=cmd_list)


def cmd_list(a) -> int:
    from .data import list_data
    from .losses import list_losses
    from .models import list_models
    from .samplers import get_solver, list_solvers
    from .schedules import list_schedules
    from .sde import list_sdes
    for kind in ("ode", "sde"):
        print(f"{kind} solvers:")
        for name in list_solvers(kind):
            info = get_solver(name)
            print(f"  {name:18s} {info.description}")
    print("schedules:", ", ".join(list_schedules()))
    print("SDEs:", ", ".join(list_sdes()))
    print("losses:", ", ".join(list_losses()))
    print("data:", ", ".join(list_data()))
    print("models:", ", ".join(list_models()))
    from .inpainting import MASKS
    from .models.classifier import list_classifiers
    from .tasks import list_tasks
    print("classifiers:", ", ".join(list_classifiers()))
    print("image-to-image tasks:", ", ".join(list_tasks()))
    print("inpainting masks:", ", ".join(MASKS))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdeflow", description="Continuous-time score-based diffusion models: train, "
        "sample with any SDE/ODE/PC solver, evaluate, score exact likelihoods, interpolate, "
        "and plot. Run 'sdeflow COMMAND --help' for details.")
    p.add_argument("--version", action="version", version=f"sdeflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from . import cli_conditional as cc
    for add in (_add_train, _add_sample, _add_evaluate, _add_tune_steps, cc.add_train_classifier,
                cc.add_inpaint, cc.add_colorize, cc.add_sr, _add_demo, _add_likelihood,
                _add_interpolate, _add_list):
        add(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"sdeflow {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

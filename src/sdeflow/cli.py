"""The ``sdeflow`` command line: train, sample, demo, and list what exists."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import __version__


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"rtol\": 1e-4}'")
    return value


def _add_train(sub):
    from .train import TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a score model on 2-D toy data",
                       description="Train a score model by denoising score matching and save "
                                   "checkpoints (safetensors + JSON config) to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .data import list_toy
    from .losses import list_losses
    from .sde import list_sdes
    p.add_argument("--data", default=d.data, choices=list_toy(), help="toy distribution")
    p.add_argument("--sde", default=d.sde, choices=list_sdes(), help="forward SDE")
    p.add_argument("--sde-kwargs", type=_json_dict, default={}, help="SDE arguments as JSON")
    p.add_argument("--prediction", default=d.prediction, choices=["x0", "eps", "v", "score"])
    p.add_argument("--precondition", default=d.precondition, choices=["edm", "none"],
                   help="EDM preconditioning of the network ('none' feeds t as is)")
    p.add_argument("--loss", default=d.loss, choices=list_losses(), help="training objective")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--hidden", type=int, default=d.model_kwargs["hidden"], help="MLP width")
    p.add_argument("--depth", type=int, default=d.model_kwargs["depth"], help="MLP residual blocks")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--out", default="runs/toy", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.set_defaults(func=cmd_train)


def _config_from_args(a):
    from .train import TrainConfig
    return TrainConfig(data=a.data, sde=a.sde, sde_kwargs=a.sde_kwargs, prediction=a.prediction,
                       precondition=None if a.precondition == "none" else a.precondition,
                       loss=a.loss, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                       ema_decay=a.ema_decay, seed=a.seed, ckpt_every=a.ckpt_every,
                       model_kwargs=dict(hidden=a.hidden, depth=a.depth)).validate()


def cmd_train(a) -> int:
    from .train import train
    st = train(_config_from_args(a), a.out, resume=a.resume)
    print(f"trained {st.step} steps; checkpoint in {Path(a.out) / (Path(a.out) / 'latest').read_text()}")
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
    p.add_argument("--no-denoise", action="store_true", help="skip the final denoising step")
    p.add_argument("--seed", type=int, default=0)


def _add_sample(sub):
    p = sub.add_parser("sample", help="sample a trained checkpoint",
                       description="Load a checkpoint (run directory or ckpt folder), draw samples "
                                   "with any registered solver, save them (.npy) and a scatter plot.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("-n", "--num", type=int, default=2000, help="number of samples")
    _add_sampling_args(p)
    p.add_argument("--out", default="outputs/samples", help="output prefix (.npy, .png, .json)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(a) -> int:
    import numpy as np

    from .data import toy_sample
    from .metrics import sliced_wasserstein
    from .plotting import scatter_panels
    from .samplers import sample
    from .train import load_denoiser
    model, cfg = load_denoiser(a.checkpoint)
    with torch.no_grad():
        x, stats = sample(model, shape=(a.num, 2), solver=a.solver, steps=a.steps,
                          schedule=a.schedule, denoise=not a.no_denoise, seed=a.seed,
                          progress=True, return_stats=True, **a.solver_opts)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out.with_suffix(".npy"), x.numpy())
    data = toy_sample(cfg.data, a.num, torch.Generator().manual_seed(a.seed + 1))
    stats["sliced_wasserstein_to_data"] = sliced_wasserstein(x, data)
    scatter_panels({f"data ({cfg.data})": data, f"{a.solver}, NFE={stats['nfe']}": x},
                   out.with_suffix(".png"))
    (out.with_suffix(".json")).write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))
    print(f"wrote {out.with_suffix('.npy')}, {out.with_suffix('.png')}, {out.with_suffix('.json')}")
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="train the toy model and plot SDE, PC and ODE samples",
                       description="Train the default toy model, then sample it with an SDE "
                                   "(Euler–Maruyama), a predictor–corrector and an ODE (Heun) "
                                   "sampler; write scatter plots, PF-ODE trajectories and a "
                                   "metrics JSON to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs", help="where pictures and metrics go")
    p.add_argument("--run", default="runs/demo", help="run directory for the checkpoint")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--num", type=int, default=4000, help="samples per sampler")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def cmd_demo(a) -> int:
    from .data import TOY_MIXTURE
    from .metrics import mmd2, sliced_wasserstein
    from .plotting import scatter_panels, trajectories
    from .samplers import sample
    from .train import TrainConfig, load_denoiser, train
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train(TrainConfig(steps=a.steps, seed=a.seed, ckpt_every=a.steps), a.run)
    model, cfg = load_denoiser(a.run)
    data = TOY_MIXTURE.sample(a.num, generator=torch.Generator().manual_seed(a.seed + 1)).float()
    panels, metrics = {"data (8-Gaussian ring)": data}, {}
    runs = [("euler_maruyama", dict(steps=500)), ("pc", dict(steps=250, snr=0.05)),
            ("heun", dict(steps=25))]
    for solver, opts in runs:
        with torch.no_grad():
            x, st = sample(model, shape=(a.num, 2), solver=solver, seed=a.seed, progress=True,
                           return_stats=True, **opts)
        sw = sliced_wasserstein(x, data)
        metrics[solver] = dict(nfe=st["nfe"], seconds=round(st["seconds"], 3),
                               sliced_wasserstein=round(sw, 4), mmd2=float(f"{mmd2(x, data):.3g}"))
        panels[f"{solver} (NFE {st['nfe']}, SW {sw:.3f})"] = x
    true = TOY_MIXTURE.sample(a.num, generator=torch.Generator().manual_seed(a.seed + 2))
    metrics["noise_floor_true_vs_true"] = dict(sliced_wasserstein=round(sliced_wasserstein(true, data), 4),
                                               mmd2=float(f"{mmd2(true, data):.3g}"))
    p1 = scatter_panels(panels, out / "samples.png", title="trained toy model: data vs samplers")
    ts, xs = [], []
    with torch.no_grad():
        x_T = model.sde.prior_sample((300, 2), generator=torch.Generator().manual_seed(a.seed))
        ts.append(model.sde.T)
        xs.append(x_T.clone())
        sample(model, x_T, solver="heun", steps=40, denoise=False,
               callback=lambda t, x: (ts.append(float(t)), xs.append(x.clone())))
    tt = torch.tensor(ts, dtype=torch.float64)
    scale = (model.sde.s(tt) ** 2 + model.sde.sigma(tt) ** 2).sqrt()
    p2 = trajectories(ts, torch.stack(xs), out / "trajectories.png", scale=scale)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"wrote {p1}, {p2} and {out / 'metrics.json'}")
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

    from .data import TOY_MIXTURE, toy_sample
    from .likelihood import bits_per_dim, log_likelihood
    from .train import load_denoiser
    model, cfg = load_denoiser(a.checkpoint)
    if a.data_file:
        x = torch.from_numpy(np.load(a.data_file)).to(torch.float32)
    else:
        x = toy_sample(cfg.data, a.num, torch.Generator().manual_seed(a.seed)).to(torch.float32)
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


def _add_list(sub):
    p = sub.add_parser("list", help="list solvers, schedules, SDEs, losses, data sets",
                       description="Print the names every registry accepts: solvers (by kind, "
                                   "with what they are), time-step schedules, SDEs, training "
                                   "losses and toy data sets. Use them with --solver, --schedule, "
                                   "--sde, --loss and --data, or in Python as sdeflow.sample("
                                   "model, solver=..., schedule=...).")
    p.set_defaults(func=cmd_list)


def cmd_list(a) -> int:
    from .data import list_toy
    from .losses import list_losses
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
    print("toy data:", ", ".join(list_toy()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdeflow", description="Continuous-time score-based diffusion models: train, "
        "sample with any SDE/ODE/PC solver, score exact likelihoods, interpolate, and plot. Run 'sdeflow COMMAND --help' for details.")
    p.add_argument("--version", action="version", version=f"sdeflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_sample, _add_demo, _add_likelihood, _add_interpolate, _add_list):
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

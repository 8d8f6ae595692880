"""``sdeflow likelihood`` and ``sdeflow interpolate``: the probability-flow ODE as an
invertible map — exact log-likelihoods, and interpolation between data points through latents."""
from __future__ import annotations

import torch

from .common import add_command, load_run, write_report

__all__ = ["add_likelihood", "cmd_likelihood", "add_interpolate", "cmd_interpolate"]


def add_likelihood(sub) -> None:
    from ..likelihood import likelihood_solvers
    p = add_command(sub, "likelihood", cmd_likelihood, checkpoint=True)
    p.add_argument("-n", "--num", type=int, default=500, help="toy samples to score")
    p.add_argument("--data-file", help=".npy array of data to score instead of toy draws")
    p.add_argument("--num-bins", type=int, default=None,
                   help="data are discrete in [0, num_bins): dequantise and report offset bits/dim")
    p.add_argument("--data-range", type=float, nargs=2, default=(-1.0, 1.0),
                   help="the model's data range that [0, num_bins) maps to")
    p.add_argument("--n-dequant", type=int, default=1, help="dequantisation draws to average")
    p.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"])
    p.add_argument("--n-probes", type=int, default=1, help="Hutchinson probes")
    p.add_argument("--solver", default="rk45", choices=likelihood_solvers(),
                   help="Runge–Kutta solver of the likelihood ODE (adaptive ones take "
                        "--rtol/--atol, fixed-step ones --steps)")
    p.add_argument("--steps", type=int, default=None, help="steps of a fixed-step solver")
    _add_tolerances(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/likelihood.json", help="JSON report")


def _add_tolerances(p) -> None:
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)


def _data_to_score(a, cfg) -> torch.Tensor:
    """--data-file, else fresh draws of the model's toy distribution."""
    import numpy as np

    from ..data import get_data, list_vector_data
    if a.data_file:
        try:
            return torch.from_numpy(np.load(a.data_file)).to(torch.float32)
        except (ValueError, EOFError) as e:  # numpy's messages do not name the file
            raise ValueError(f"{a.data_file}: not a .npy array ({e})") from None
    if cfg.data in list_vector_data():
        data = get_data(cfg.data, **cfg.data_kwargs)
        return data.draw(a.num, torch.Generator().manual_seed(a.seed))[0].to(torch.float32)
    raise ValueError(f"the model was trained on {cfg.data!r}: give the images to score as "
                     f"--data-file (a .npy array (N, C, H, W))")


def _nats_report(a, cfg, model, x, opts: dict) -> dict:
    """log p(x) in nats (mean and standard error) and bits/dim of continuous data; for draws of
    data with a closed form ('gmm', 'mixture') also the true log-density."""
    import math

    from ..data import get_data, list_vector_data
    from ..likelihood import log_likelihood
    logp, st = log_likelihood(model, x, seed=a.seed, progress=True, return_stats=True, **opts)
    rep = dict(nats=logp.mean().item(), nats_se=(logp.std() / math.sqrt(len(logp))).item(),
               bits_per_dim=(-logp.mean() / (x[0].numel() * math.log(2))).item(), offset_bits=0.0,
               nfe=st["nfe"], seconds=round(st["seconds"], 3))
    mixture = getattr(get_data(cfg.data, **cfg.data_kwargs), "mixture", None) \
        if cfg.data in list_vector_data() else None
    if not a.data_file and mixture is not None:
        rep["true_log_density_nats"] = mixture.log_prob(x.double()).mean().item()
    return rep


def cmd_likelihood(a) -> int:
    """exact log-likelihood / bits per dim of data

    Integrate the probability-flow ODE with the divergence of its drift (instantaneous change
    of variables) to get log p(x) in nats per sample and bits per dimension. Data: fresh draws
    of the checkpoint's toy distribution, or --data-file (a .npy array). With --num-bins the
    data are integers in [0, num_bins) that are uniformly dequantised and scaled to
    --data-range, and the change-of-variables offset is added to bits/dim.
    """
    from ..likelihood import bits_per_dim
    from ..samplers import get_solver
    model, cfg = load_run(a.checkpoint, "denoiser")
    x = _data_to_score(a, cfg)
    opts = dict(divergence=a.divergence, n_probes=a.n_probes, solver=a.solver, steps=a.steps)
    if get_solver(a.solver).adaptive:
        opts.update(rtol=a.rtol, atol=a.atol)
    report = dict(checkpoint=str(a.checkpoint), n=x.shape[0], dims=x[0].numel(), **opts)
    if a.num_bins:
        res = bits_per_dim(model, x, num_bins=a.num_bins, data_range=tuple(a.data_range),
                           n_dequant=a.n_dequant, seed=a.seed, progress=True, **opts)
        report.update(bits_per_dim=res.mean, nats=res.nats.mean().item(),
                      offset_bits=res.offset_bits, n_dequant=res.n_dequant, nfe=res.nfe,
                      summary=res.report())
    else:
        report.update(_nats_report(a, cfg, model, x, opts))
    write_report(a.out, report)
    return 0


def add_interpolate(sub) -> None:
    p = add_command(sub, "interpolate", cmd_interpolate, checkpoint=True)
    p.add_argument("--n", type=int, default=15, help="points on the path")
    _add_tolerances(p)
    p.add_argument("--seed", type=int, default=0, help="picks the two endpoints")
    p.add_argument("--out", default="outputs/interpolation.png")


def cmd_interpolate(a) -> int:
    """interpolate between two data points through latents

    Encode two data points with the PF-ODE, interpolate their latents spherically (slerp),
    decode every point and plot the path over the data beside the straight line between them.
    """
    from ..data import get_data
    from ..likelihood import interpolate
    from ..plotting import interpolation_path
    model, cfg = load_run(a.checkpoint, "denoiser")
    g = torch.Generator().manual_seed(a.seed)
    data = get_data(cfg.data, **cfg.data_kwargs).draw(3000, g)[0]
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

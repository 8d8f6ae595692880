"""``sdeflow likelihood`` and ``sdeflow interpolate``: the probability-flow ODE as an
invertible map — exact log-likelihoods, and interpolation between data points through latents —
and, with ``--bound vlb``, DDPM's variational bound (:mod:`sdeflow.vlb`)."""
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
    p.add_argument("--n-dequant", type=int, default=None,
                   help="ode: dequantisation draws to average (default 1)")
    p.add_argument("--divergence", default=None, choices=["exact", "hutchinson"],
                   help="ode: divergence of the drift (default exact)")
    p.add_argument("--n-probes", type=int, default=None, help="ode: Hutchinson probes (default 1)")
    p.add_argument("--solver", default=None, choices=likelihood_solvers(),
                   help="ode: Runge–Kutta solver of the likelihood ODE (default rk45; adaptive "
                        "ones take --rtol/--atol, fixed-step ones --steps)")
    p.add_argument("--steps", type=int, default=None, help="ode: steps of a fixed-step solver")
    _add_tolerances(p, None, "ode: ")
    _add_vlb_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/likelihood.json", help="JSON report")


def _add_vlb_flags(p) -> None:
    from ..vlb import VARIANCES
    p.add_argument("--bound", default="ode", choices=["ode", "vlb"],
                   help="ode: exact log-likelihood by the PF-ODE; vlb: DDPM's variational bound "
                        "on −log p of the T-step ancestral chain, another model than the "
                        "PF-ODE's (VP models; a discretised decoder with --num-bins, else a "
                        "Gaussian one)")
    p.add_argument("--ddpm-steps", type=int, default=None,
                   help="vlb: DDPM's T (default: the run's ddpm_steps, else 1000)")
    p.add_argument("--variance", default=None, choices=list(VARIANCES),
                   help="vlb: reverse variance (default: learned if the model learns it, "
                        "else beta)")
    p.add_argument("--full", action="store_true", default=None,
                   help="vlb: sum every step exactly (T NFEs)")
    p.add_argument("--t-draws", type=int, default=None,
                   help="vlb without --full: steps drawn per sample for the unbiased estimate "
                        "(default 16)")


def _add_tolerances(p, default: float | None = 1e-5, only: str = "") -> None:
    """--rtol/--atol; a ``default`` of None leaves 1e-5 to :func:`_bound_flags`."""
    for name in ("rtol", "atol"):
        p.add_argument(f"--{name}", type=float, default=default,
                       help=f"{only}{name} of the adaptive solver (default 1e-5)")


# Each bound's own flags with their defaults: a flag of the other bound is refused, not ignored
BOUND_FLAGS = {"ode": dict(solver="rk45", steps=None, divergence="exact", n_probes=1,
                           rtol=1e-5, atol=1e-5, n_dequant=1),
               "vlb": dict(ddpm_steps=None, variance=None, full=False, t_draws=16)}


def _bound_flags(a) -> None:
    """Refuse (one line naming them) the flags of the bound not asked for, and fill in (in
    place) the defaults of the one asked for."""
    other = "vlb" if a.bound == "ode" else "ode"
    given = [f"--{k.replace('_', '-')}" for k in BOUND_FLAGS[other] if getattr(a, k) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: option{'s' * (len(given) > 1)} of --bound "
                         f"{other}, not of --bound {a.bound}")
    for k, v in BOUND_FLAGS[a.bound].items():
        if getattr(a, k) is None:
            setattr(a, k, v)


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


def _true_log_density(a, cfg, x) -> dict:
    """For fresh draws of data with a closed form ('gmm', 'mixture'): their mean log-density."""
    from ..data import get_data, list_vector_data
    mixture = getattr(get_data(cfg.data, **cfg.data_kwargs), "mixture", None) \
        if cfg.data in list_vector_data() else None
    if a.data_file or mixture is None:
        return {}
    return dict(true_log_density_nats=mixture.log_prob(x.double()).mean().item())


def _nats_report(a, cfg, model, x, opts: dict) -> dict:
    """log p(x) in nats (mean and standard error) and bits/dim of continuous data; for draws of
    data with a closed form ('gmm', 'mixture') also the true log-density."""
    import math

    from ..likelihood import log_likelihood
    logp, st = log_likelihood(model, x, seed=a.seed, progress=True, return_stats=True, **opts)
    rep = dict(nats=logp.mean().item(), nats_se=(logp.std() / math.sqrt(len(logp))).item(),
               bits_per_dim=(-logp.mean() / (x[0].numel() * math.log(2))).item(), offset_bits=0.0,
               nfe=st["nfe"], seconds=round(st["seconds"], 3))
    return {**rep, **_true_log_density(a, cfg, x)}


def _vlb_report(a, cfg, model, x) -> dict:
    """DDPM's bound: −ELBO in bits/dim with its terms, an upper bound on −log p(x) of the
    T-step ancestral chain — a different model than the PF-ODE's, so not a bound on the ODE's
    bits/dim; ``elbo_nats`` ≤ log p_chain(x)."""
    import math

    from ..vlb import check_vp, ddpm_bound
    check_vp(model.sde, "--bound vlb")
    if a.t_draws < 1:
        raise ValueError(f"--t-draws must be positive, got {a.t_draws}")
    steps = a.ddpm_steps if a.ddpm_steps is not None else getattr(cfg, "ddpm_steps", 1000)
    opts = dict(decoder="gaussian")
    if a.num_bins:  # integers in [0, num_bins) onto the levels lo … hi
        if (x != x.round()).any() or x.min() < 0 or x.max() > a.num_bins - 1:
            raise ValueError(f"with --num-bins the data must be integers in [0, {a.num_bins - 1}]")
        lo, hi = a.data_range
        x = lo + (hi - lo) * x / (a.num_bins - 1)
        opts = dict(decoder="discrete", num_bins=a.num_bins, data_range=(lo, hi))
    res = ddpm_bound(model, x, steps, variance=a.variance, full=a.full, t_draws=a.t_draws,
                     seed=a.seed, progress=True, **opts)
    elbo = -res.nats
    return dict(bound="vlb", ddpm_steps=steps, variance=res.options.variance,
                decoder=res.options.decoder, exact=res.exact, bits_per_dim=res.mean,
                bits_per_dim_se=(res.bpd.std() / math.sqrt(len(elbo))).item(),
                elbo_nats=elbo.mean().item(), terms_bits_per_dim=res.breakdown(), nfe=res.nfe,
                seconds=round(res.seconds, 3), summary=res.report(),
                **({} if a.num_bins else _true_log_density(a, cfg, x)))


def _latents_if_latent(a, model, x):
    """(what to score, "data" or "latent"): a latent model scores the rescaled latents
    z̃ = c·E(x) of the images it is given (its PF-ODE is over z̃, not over pixels)."""
    from ..latent import find_latent
    latent = find_latent(model)
    if latent is None or tuple(x.shape[1:]) != latent.image_shape:
        return x, "data"
    if a.num_bins:
        raise ValueError("--num-bins dequantises pixels; a latent model's likelihood is of its "
                         "continuous latents: drop --num-bins")
    with torch.no_grad():
        return latent.encode(x.to(next(latent.parameters()).device)).cpu(), "latent"


def cmd_likelihood(a) -> int:
    """exact log-likelihood / bits per dim of data

    Integrate the probability-flow ODE with the divergence of its drift (instantaneous change
    of variables) to get log p(x) in nats per sample and bits per dimension. Data: fresh draws
    of the checkpoint's toy distribution, or --data-file (a .npy array). With --num-bins the
    data are integers in [0, num_bins) that are uniformly dequantised and scaled to
    --data-range, and the change-of-variables offset is added to bits/dim.

    With --bound vlb (models on the VP SDE): DDPM's variational bound on the T-step chain of the
    SDE instead — L_T + Σ L_{t−1} + L_0 in bits/dim with its terms, exact with --full or
    estimated from --t-draws sampled steps; with --num-bins the data's integers map onto
    num_bins levels spanning --data-range and L_0 is DDPM's discretised decoder. It bounds
    −log p of that chain (ancestral sampling), another model than the PF-ODE's. The options
    of one bound are refused with the other.

    A latent model (trained with --latent) scores the rescaled latents z̃ = c·E(x) of the given
    images; the report says space "latent" and bits/dim are per latent dimension.
    """
    from ..likelihood import bits_per_dim
    from ..samplers import get_solver
    _bound_flags(a)
    model, cfg = load_run(a.checkpoint, ("denoiser", "cld"))
    x, space = _latents_if_latent(a, model, _data_to_score(a, cfg))
    if a.bound == "vlb":
        with torch.no_grad():
            rep = _vlb_report(a, cfg, model, x)
        write_report(a.out, dict(checkpoint=str(a.checkpoint), n=x.shape[0], dims=x[0].numel(),
                                 space=space, **rep))
        return 0
    opts = dict(divergence=a.divergence, n_probes=a.n_probes, solver=a.solver, steps=a.steps)
    if get_solver(a.solver).adaptive:
        opts.update(rtol=a.rtol, atol=a.atol)
    report = dict(checkpoint=str(a.checkpoint), n=x.shape[0], dims=x[0].numel(), space=space,
                  **opts)
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

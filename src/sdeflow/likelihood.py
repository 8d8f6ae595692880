r"""Exact likelihood, encoding and decoding through the probability-flow ODE
(Song et al. 2021, §4.3 and App. D.2; Chen et al. 2018 and Grathwohl et al. 2019 for the
instantaneous change of variables; Skilling 1989 and Hutchinson 1990 for the trace estimator).

Along the PF-ODE :math:`dx/dt = v(x, t) = f(t)x - \tfrac12 g(t)^2\nabla\log p_t(x)`,

.. math:: \frac{d}{dt}\log p_t(x(t)) = -\nabla\cdot v(x(t), t)
   \quad\Rightarrow\quad
   \log p_{t_{\min}}(x) = \log p_T(x(T)) + \int_{t_{\min}}^{T} \nabla\cdot v(x(t), t)\,dt,

integrated forward from x(t_min) = x together with x(t). The divergence is either exact
(one batched vector–Jacobian product per dimension — for low-dimensional data) or
Skilling–Hutchinson's :math:`\nabla\cdot v \approx \frac1K\sum_k \epsilon_k^\top (\partial v/\partial x)\,\epsilon_k`
with the probes ε_k drawn once and held over the whole ODE (so the integrand is a smooth
function of t and adaptive solvers behave).

``encode`` maps x to its latent x(T) along the same ODE and ``decode`` maps back; they are
deterministic and, with the per-sample adaptive solver, independent of the batch a sample is in.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser, check_batch
from .progress import progress_bar
from .reverse import pf_ode_drift
from .rng import make_generator
from .samplers.adaptive import select_rows
from .samplers.registry import Context, get_solver, list_solvers
from .samplers.rk import RK_SOLVERS, rk_adaptive, rk_fixed, rk_tableau
from .schedules import get_timesteps

__all__ = ["log_likelihood", "bits_per_dim", "BitsPerDim", "encode", "decode", "slerp",
           "interpolate", "DIVERGENCES", "PROBES"]

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def _batched_vjp(out: Tensor, x: Tensor, vectors: Tensor) -> Tensor:
    """vᵀ ∂out/∂x for a stack of vectors (K, *out.shape), in one batched backward pass."""
    (g,) = torch.autograd.grad(out, x, grad_outputs=vectors, is_grads_batched=True)
    return g


def _drift_and_divergence(model: Denoiser, x: Tensor, t: Tensor, cond: dict,
                          probes: Tensor | None) -> tuple[Tensor, Tensor]:
    """(v(x, t), ∇·v(x, t)): exact when ``probes`` is None, else Hutchinson with them."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = model.pf_ode_drift(x, t, **cond) if _is_cld(model) else pf_ode_drift(model, x, t, **cond)
        B, D = x.shape[0], x[0].numel()
        if probes is None:
            basis = torch.eye(D, dtype=x.dtype, device=x.device).reshape(D, 1, *x.shape[1:])
            jac_rows = _batched_vjp(v, x, basis.expand(D, *x.shape).contiguous())
            div = torch.einsum("dbd->b", jac_rows.reshape(D, B, D))
        else:
            vjp = _batched_vjp(v, x, probes)
            div = (vjp * probes).reshape(probes.shape[0], B, -1).sum(-1).mean(0)
    return v.detach(), div.detach()


def _draw_probes(x: Tensor, n: int, kind: str, generator) -> Tensor:
    z = torch.randn((n, *x.shape), generator=generator, dtype=x.dtype, device=x.device) \
        if kind == "gaussian" else \
        torch.randint(0, 2, (n, *x.shape), generator=generator, device=x.device).to(x.dtype) * 2 - 1
    return z


def _is_cld(model) -> bool:
    from .cld.model import is_cld
    return is_cld(model)


def _check_data(model: Denoiser, x: Tensor, allow_cld: bool = False) -> None:
    """``model`` is a Denoiser (or, with ``allow_cld``, a CLD model: only the likelihood bound
    is defined for one) and ``x`` a batch."""
    if _is_cld(model) and not allow_cld:
        raise TypeError("encode/decode/interpolate work on sdeflow.Denoiser models, not on a "
                        "CLD model (only log_likelihood and bits_per_dim accept one)")
    if not isinstance(model, Denoiser) and not _is_cld(model):
        raise TypeError("model must be an sdeflow.Denoiser" +
                        (" or an sdeflow.cld.CLDModel" if allow_cld else ""))
    check_batch(x)
    from .latent import find_latent
    latent = find_latent(model)
    if latent is not None and tuple(x.shape[1:]) == latent.image_shape != latent.latent_shape:
        raise ValueError("this is a latent model: its PF-ODE likelihood is that of the rescaled "
                         "latents z̃ = c·E(x), not of images; pass model.encode(x) (and report "
                         "the result as the latents' log-likelihood)")


def _with_velocity(model, x: Tensor, generator) -> tuple[Tensor, Tensor | None]:
    """(the state the ODE starts from, v₀): for a CLD model x joined with v₀ ~ N(0, γM I)."""
    if not _is_cld(model):
        return x, None
    from .cld import join_state
    var = model.sde.gamma * model.sde.M
    if not var > 0:
        raise ValueError("the CLD likelihood bound needs gamma > 0 (a velocity distribution)")
    v0 = var**0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return join_state(x, v0), v0


def likelihood_solvers() -> list[str]:
    """The solvers the likelihood ODE can be integrated with: the registered Runge–Kutta ones."""
    return sorted(RK_SOLVERS)


def _integrate(F: Callable, y: Tensor, model: Denoiser, t0: float, t1: float, solver: str,
               steps: int | None, schedule: str | None, rtol: float, atol: float,
               ctx: Context) -> Tensor:
    """Integrate dy/dt = F(t, y) from t0 to t1 with a registered Runge–Kutta solver by name."""
    try:
        tab = rk_tableau(solver)
    except ValueError as e:
        raise ValueError(f"unknown solver {solver!r} for the likelihood ODE: {e}") from None
    info = get_solver(solver)
    if info.adaptive:
        if steps is not None:
            raise ValueError(f"{solver} is adaptive: set rtol/atol, not steps")
        return rk_adaptive(F, y, t0, t1, tab, rtol=rtol, atol=atol, ctx=ctx)
    steps = info.default_steps if steps is None else steps
    lo, hi = min(t0, t1), max(t0, t1)
    ts = get_timesteps(model.sde, steps, schedule, t_start=hi, t_end=lo, dtype=y.dtype,
                       device=y.device)
    return rk_fixed(F, y, ts if t0 > t1 else ts.flip(0), tab, ctx)


def log_likelihood(model: Denoiser, x: Tensor, *, divergence: str = "exact", n_probes: int = 1,
                   probe: str = "rademacher", solver: str = "rk45", rtol: float = 1e-5,
                   atol: float = 1e-5, steps: int | None = None, schedule: str | None = None,
                   t_start: float | None = None, t_end: float | None = None,
                   prior_log_prob: Callable[[Tensor], Tensor] | None = None,
                   generator: torch.Generator | None = None, seed: int | None = None,
                   cond: dict | None = None, progress: bool = False, return_stats: bool = False):
    r"""log p_{t_start}(x) in nats per sample, by the PF-ODE from t_start (default t_min) to
    t_end (default T) plus the prior's log-density at x(t_end).

    For a CLD model (:class:`~sdeflow.cld.CLDModel`) it is the lower bound of Dockhorn et al.
    (2022, eq. 12), one draw per sample: with v₀ ~ q = N(0, γM I), integrated from t_start = 0,

    .. math:: \log p(x_0) \ge E_{v_0\sim q}\big[\log p_0(x_0, v_0) - \log q(v_0)\big],

    equal to log p(x₀) where the model's joint at t = 0 is p(x₀)q(v₀) (an exact score).

    Args:
        divergence: ``"exact"`` (D vector–Jacobian products per evaluation, batched) or
            ``"hutchinson"`` (``n_probes`` ``probe`` vectors, drawn once per call).
        solver: ``"rk45"`` (adaptive, per-sample step control, ``rtol``/``atol``) or a fixed-step
            Runge–Kutta solver (``"euler"``, ``"heun"``, ``"rk4"``; any name of
            :data:`~sdeflow.samplers.rk.RK_SOLVERS`) with ``steps`` on ``schedule``.
        prior_log_prob: log-density at t_end (default: the SDE's Gaussian prior).
        return_stats: also return ``nfe`` (network evaluations; each is followed by one batched
            backward pass), ``seconds``, ``prior`` (log p_T(x(T))) and ``delta`` (∫∇·v dt).
    """
    _check_data(model, x, allow_cld=True)
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choices: {list(DIVERGENCES)}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choices: {list(PROBES)}")
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    sde = model.sde
    t0 = (0.0 if _is_cld(model) else sde.t_min) if t_start is None else float(t_start)
    t1 = sde.T if t_end is None else float(t_end)
    sde.check_t(torch.tensor([t0, t1]), "t_start/t_end")
    if not t1 > t0:
        raise ValueError(f"need t_end > t_start, got {t1} and {t0}")
    generator = make_generator(seed, generator, x.device)
    cond = cond or {}
    x, v0 = _with_velocity(model, x, generator)
    shape, B = x.shape, x.shape[0]
    probes = None if divergence == "exact" else _draw_probes(x, n_probes, probe, generator)

    def F(t: Tensor, y: Tensor, rows: Tensor | None) -> Tensor:
        xs = y[:, :-1].reshape(y.shape[0], *shape[1:])
        pr = None if probes is None else (probes if rows is None else probes[:, rows])
        v, div = _drift_and_divergence(model, xs, t, select_rows(cond, rows), pr)
        return torch.cat([v.reshape(y.shape[0], -1), div[:, None]], dim=1)

    y0 = torch.cat([x.reshape(B, -1), x.new_zeros(B, 1)], dim=1)
    bar = progress_bar(desc="likelihood ODE", leave=False, unit="step") if progress else None
    ctx = Context(progress=bar)
    nfe0, start = model.nfe, time.perf_counter()
    try:
        y1 = _integrate(F, y0, model, t0, t1, solver, steps, schedule, rtol, atol, ctx)
    finally:
        if bar is not None:
            bar.close()
    z = y1[:, :-1].reshape(shape)
    prior = (prior_log_prob or sde.prior_log_prob)(z)
    logp = prior + y1[:, -1]
    extra = {}
    if v0 is not None:  # the velocity's entropy term of the CLD bound
        extra["velocity"] = -sde.velocity_log_prob(v0)
        logp = logp + extra["velocity"]
    if not return_stats:
        return logp
    return logp, dict(nfe=model.nfe - nfe0, seconds=time.perf_counter() - start, prior=prior,
                      delta=y1[:, -1], latent=z, **extra, **ctx.stats)


@dataclass
class BitsPerDim:
    """Result of :func:`bits_per_dim`. ``bpd`` is per sample (mean over dequantisation draws);
    ``offset_bits`` is the change-of-variables term that was added, log2(num_bins / width)."""

    bpd: Tensor
    nats: Tensor
    offset_bits: float
    n_dequant: int
    nfe: int

    @property
    def mean(self) -> float:
        return self.bpd.mean().item()

    def report(self) -> str:
        return (f"{self.mean:.4f} bits/dim over {self.bpd.numel()} samples × {self.n_dequant} "
                f"uniform dequantisation draws (offset {self.offset_bits:+.4f} bits/dim for the "
                f"[0, num_bins) → model-range scaling applied; NFE {self.nfe})")


def bits_per_dim(model: Denoiser, x: Tensor, *, num_bins: int = 256,
                 data_range: tuple[float, float] = (-1.0, 1.0), n_dequant: int = 1,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 **likelihood_kwargs) -> BitsPerDim:
    r"""Bits per dimension of discrete data ``x`` ∈ {0, …, num_bins − 1} (e.g. 8-bit pixels).

    Each draw dequantises :math:`\tilde x = x + u,\ u \sim U[0,1)^D` and maps it to the model's
    range :math:`y = a + (b - a)\tilde x / n` (n = ``num_bins``, [a, b] = ``data_range``), so

    .. math:: \text{bpd} = -\frac{\log p_Y(y) + D\log\frac{b-a}{n}}{D\ln 2}
                          = -\frac{\log p_Y(y)}{D\ln 2} + \log_2\frac{n}{b-a},

    an upper bound on the discrete model's −log₂P(x)/D (uniform dequantisation, Theis et al.
    2016). For 8-bit data scaled to [−1, 1] the offset is log₂128 = 7 bits. Several draws are
    averaged; other keyword arguments go to :func:`log_likelihood`.
    """
    if not torch.is_tensor(x):
        raise TypeError("x must be a tensor of integer-valued data")
    xf = x.to(torch.get_default_dtype() if not x.is_floating_point() else x.dtype)
    if (xf != xf.round()).any() or xf.min() < 0 or xf.max() > num_bins - 1:
        raise ValueError(f"x must hold integers in [0, {num_bins - 1}] (undo any scaling first)")
    if not isinstance(n_dequant, int) or n_dequant < 1:
        raise ValueError(f"n_dequant must be a positive integer, got {n_dequant!r}")
    a, b = map(float, data_range)
    if not b > a:
        raise ValueError(f"data_range must be (low, high) with high > low, got {data_range}")
    generator = make_generator(seed, generator, x.device)
    D = xf[0].numel()
    offset_bits = math.log2(num_bins / (b - a))
    nats, nfe = [], 0
    for _ in range(n_dequant):
        u = torch.rand(xf.shape, generator=generator, dtype=xf.dtype, device=xf.device)
        y = a + (b - a) * (xf + u) / num_bins
        logp, st = log_likelihood(model, y, generator=generator, return_stats=True,
                                  **likelihood_kwargs)
        nats.append(logp)
        nfe += st["nfe"]
    nats_t = torch.stack(nats).mean(0)
    bpd = -torch.stack(nats) / (D * math.log(2)) + offset_bits
    return BitsPerDim(bpd=bpd.mean(0), nats=nats_t, offset_bits=offset_bits,
                      n_dequant=n_dequant, nfe=nfe)


def _ode_grid(model: Denoiser, solver: str, steps, schedule, x: Tensor):
    info = get_solver(solver)
    if info.kind != "ode":
        raise ValueError(f"encoding needs a deterministic ODE solver, not {solver!r}; choices: "
                         f"{list_solvers('ode')}")
    if info.adaptive and steps is not None:
        raise ValueError(f"solver {solver!r} is adaptive: set rtol/atol, not steps")
    n = 1 if info.adaptive else (info.default_steps if steps is None else steps)
    return info, get_timesteps(model.sde, n, schedule, dtype=x.dtype, device=x.device)


def encode(model: Denoiser, x: Tensor, *, solver: str = "rk45", steps: int | None = None,
           schedule: str | None = None, cond: dict | None = None, return_stats: bool = False,
           **solver_opts):
    """Latent code x(T) of data x(t_min) = x along the PF-ODE (the inverse of :func:`decode`
    with the same solver). ``rk45`` takes ``rtol``/``atol`` (default 1e-5)."""
    _check_data(model, x)
    info, ts = _ode_grid(model, solver, steps, schedule, x)
    ctx = Context(cond=cond or {})
    nfe0 = model.nfe
    z = info.fn(model, x, ts.flip(0), ctx, **solver_opts)
    return (z, dict(nfe=model.nfe - nfe0, **ctx.stats)) if return_stats else z


def decode(model: Denoiser, z: Tensor, *, solver: str = "rk45", steps: int | None = None,
           schedule: str | None = None, cond: dict | None = None, return_stats: bool = False,
           **solver_opts):
    """Data x(t_min) from a latent z = x(T) along the PF-ODE (no final denoising step)."""
    _check_data(model, z)
    info, ts = _ode_grid(model, solver, steps, schedule, z)
    ctx = Context(cond=cond or {})
    nfe0 = model.nfe
    x = info.fn(model, z, ts, ctx, **solver_opts)
    return (x, dict(nfe=model.nfe - nfe0, **ctx.stats)) if return_stats else x


def slerp(z0: Tensor, z1: Tensor, alpha: Tensor | float) -> Tensor:
    r"""Spherical interpolation per sample: :math:`\frac{\sin((1-\alpha)\theta)}{\sin\theta}z_0 +
    \frac{\sin(\alpha\theta)}{\sin\theta}z_1`, θ the angle between z0 and z1 (linear when
    they are parallel)."""
    a = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device).reshape(-1, *[1] * (z0.ndim - 1))
    f0, f1 = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
    cos = (f0 * f1).sum(1) / (f0.norm(dim=1) * f1.norm(dim=1)).clamp_min(1e-30)
    theta = torch.arccos(cos.clamp(-1, 1)).reshape(-1, *[1] * (z0.ndim - 1))
    small = theta.abs() < 1e-6
    st = torch.where(small, torch.ones_like(theta), torch.sin(theta))
    w0 = torch.where(small, 1 - a, torch.sin((1 - a) * theta) / st)
    w1 = torch.where(small, a, torch.sin(a * theta) / st)
    return w0 * z0 + w1 * z1


def interpolate(model: Denoiser, x0: Tensor, x1: Tensor, n: int = 9, **ode_kwargs) -> Tensor:
    """Decode ``n`` points of the slerp between the latent codes of x0 and x1 (each of shape
    (1, ...) or (...)); returns (n, ...) data, the endpoints reproducing x0 and x1."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    x0 = x0 if x0.ndim >= 2 else x0[None]
    x1 = x1 if x1.ndim >= 2 else x1[None]
    if x0.shape[0] != 1 or x1.shape != x0.shape:
        raise ValueError("x0 and x1 must be single samples of the same shape")
    z = encode(model, torch.cat([x0, x1]), **ode_kwargs)
    alphas = torch.linspace(0, 1, n, dtype=z.dtype, device=z.device)
    path = slerp(z[:1].expand(n, *z.shape[1:]), z[1:].expand(n, *z.shape[1:]), alphas)
    return decode(model, path, **ode_kwargs)

r"""DPM-Solver-v3 (Zheng, Lu, Bao & Zhu 2023, "DPM-Solver-v3: Improved Diffusion ODE Solver with
Empirical Model Statistics"): a multistep predictor–corrector in log-SNR that integrates the
part of the model its statistics (:mod:`sdeflow.samplers.ems`: l_λ, s_λ, b_λ) predict exactly.

With λ = log(α/σ) (α = s(t), the scale of x_t = α x0 + σ ε) the PF-ODE in data prediction is
dx/dλ = (σ'_λ/σ_λ) x + α_λ x̂0. Writing x̂0 = l_λ x + f (every product per dimension),

.. math:: x_t = \Phi\,x_s + \int_{\lambda_s}^{\lambda_t} w(\lambda)\,
    \big(g(\lambda) + B(\lambda)\big)\,d\lambda,\qquad
    \Phi = \frac{\sigma_t}{\sigma_s}e^{L(\lambda_t)},\quad
    w(\lambda) = \sigma_t\,e^{\lambda + L(\lambda_t) - L(\lambda) + S(\lambda)},

with :math:`L(\lambda) = \int_{\lambda_s}^{\lambda}\alpha\,l`, :math:`S(\lambda) =
\int_{\lambda_s}^{\lambda}s`, :math:`B(\lambda) = \int_{\lambda_s}^{\lambda}e^{-S}b` and
:math:`g = e^{-S}f - B` — which, by the choice of s and b, varies slowly in λ. g is expanded in
a polynomial in λ − λ_s through its values at the last p evaluations (multistep, one NFE per
step), so that

.. math:: x_t = \Phi x_s + \sum_k c_k I_k + I_B,\quad I_k = \int w\,(\lambda-\lambda_s)^k,\
    I_B = \int w B .

The corrector (as UniPC's) refits g through the model's value at the new point, which the next
step needs anyway, and recomputes x_t: no extra NFE, one order more. The integrals depend on the
grid and the statistics only; they are computed once per grid (:func:`v3_coefficients`, in
float64 on ≥ 8 sub-intervals per step no wider than 0.005 in λ, by the trapezoid rule —
with e^λ integrated exactly against the linear interpolant of the rest in the I's).

With l = s = b = 0 this is the exponential-integrator Taylor multistep (order 1: DDIM).
For data of a Gaussian (any diagonal covariance) the estimated statistics make g constant:
one step is exact up to the quadrature (tests/samplers/test_dpm_solver_v3.py).
"""
from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .ems import ModelStatistics, same_weights, tensor_versions, weights_fingerprint
from .exponential import step_order
from .registry import Context, register_solver

__all__ = ["dpm_solver_v3", "v3_coefficients", "V3Step", "clear_cache"]

_DELTA = 0.005  # widest quadrature sub-interval in λ
_CHUNK = 1 << 22  # float64 numbers per quadrature tensor (32 MiB): dimensions per chunk


@dataclass
class V3Step:
    """One step's update, linear in the state and the history (per-dimension tensors):
    x' = phi·x + Σ_j w[j]·f_j + const (predictor; f_j newest first), and the corrector's
    x' = phi·x + Σ_j wc[j]·f_j + constc with f_{new} first."""

    phi: Tensor
    w: list
    const: Tensor
    wc: list | None
    constc: Tensor | None


def _trapz_exp(y: Tensor, u: Tensor) -> Tensor:
    """∫ e^u y(u) du over the equally spaced u (M+1,), y linear on each sub-interval: exact for
    the exponential (DDIM's integral to round-off with l = s = b = 0)."""
    d = u[1] - u[0]
    ea = torch.exp(u[:-1])
    hi = ea * (d * torch.exp(d) - torch.expm1(d)) / d  # ∫ e^u (u − a)/d over [a, a + d]
    lo = ea * torch.expm1(d) - hi
    shape = (-1,) + (1,) * (y.dim() - 1)
    return (lo.view(shape) * y[:-1] + hi.view(shape) * y[1:]).sum(0)


def _cumtrapz(y: Tensor, dx: Tensor) -> Tensor:
    """Cumulative trapezoid of y (M+1, ...) with spacing dx, starting at 0."""
    inc = 0.5 * dx * (y[1:] + y[:-1])
    return torch.cat([torch.zeros_like(y[:1]), inc.cumsum(0)])


def _segment(sde, stats: ModelStatistics, lam_a: Tensor, lam_b: Tensor, t_b: Tensor, kmax: int):
    """Integrals over one step [λ_a, λ_b]: ΔL, ΔS, Q = ∫e^{−S}b, I_0…I_kmax and I_B."""
    h = lam_b - lam_a
    m = max(8, math.ceil(float(h.detach()) / _DELTA))
    u = lam_a + h * torch.linspace(0, 1, m + 1, dtype=h.dtype, device=h.device)
    dx = h / m
    l, s, b = stats.at(u)
    alpha = sde.s(sde.t_from_log_snr(u)).to(u)
    shape = (-1,) + (1,) * (l.dim() - 1)
    cL = _cumtrapz(alpha.view(shape) * l, dx)
    cS = _cumtrapz(s, dx)
    B = _cumtrapz(torch.exp(-cS) * b, dx)
    w = sde.sigma(t_b).to(u) * torch.exp(cL[-1] - cL + cS)  # w(λ) without its e^λ
    du = (u - lam_a).view(shape)
    I = torch.stack([_trapz_exp(w * du ** k, u) for k in range(kmax + 1)])
    return cL[-1], cS[-1], B[-1], I, _trapz_exp(w * B, u)


def _weights(I: Tensor, deltas: list[Tensor]) -> list[Tensor]:
    """Per-node weights W_j = Σ_k I_k (V⁻¹)_kj of the polynomial through (δ_j, g_j)."""
    p = len(deltas)
    V = torch.stack([torch.stack([d ** k for k in range(p)]) for d in deltas])  # V[j, k]
    A = torch.linalg.inv(V)  # c = A g
    return [torch.einsum("k...,k->...", I[:p], A[:, j]) for j in range(p)]


def _to_g(Sg: Tensor, Q: list, i: int, j: int) -> tuple[Tensor, Tensor]:
    """(a, c) with g_j = a·f_j − c: node j's g relative to step i's start λ_i, i.e.
    a = e^{−S(λ_j)} and c = B(λ_j) (module docstring), from the nodes' S (``Sg``, from λ_0)
    and each step's own Q_n = ∫ e^{−(S − S(λ_n))} b over it."""
    a = torch.exp(Sg[i] - Sg[j])
    if j == i + 1:
        return a, Q[i]
    c = torch.zeros_like(Sg[i])
    for n in range(j, i):  # B(λ_j) = −∫_{λ_j}^{λ_i} e^{−(S − S(λ_i))} b
        c = c - torch.exp(Sg[i] - Sg[n]) * Q[n]
    return a, c


def _update(I: Tensor, IB: Tensor, lam: Tensor, Sg: Tensor, Q: list, i: int,
            nodes: list[int]) -> tuple[list[Tensor], Tensor]:
    """Weights on f at ``nodes`` and the constant of step i's update through them."""
    W = _weights(I, [lam[j] - lam[i] for j in nodes])
    ac = [_to_g(Sg, Q, i, j) for j in nodes]
    return [w * a for w, (a, _) in zip(W, ac)], IB - sum(w * c for w, (_, c) in zip(W, ac))


def v3_coefficients(sde, stats: ModelStatistics, ts: Tensor, order: int = 3,
                    corrector: bool = True, lower_order_final: bool | None = None,
                    device=None) -> list[V3Step]:
    """The per-step updates of :func:`dpm_solver_v3` on the grid ``ts`` (module docstring),
    in float64 on ``device`` (default: the CPU; differentiable in ``ts``). Every dimension's
    update is its own, so they are computed over chunks of the dimensions: the quadrature's
    working memory stays near ``_CHUNK`` float64 numbers per tensor whatever the sample
    size."""
    t64 = ts.to(device=device or "cpu", dtype=torch.float64)
    lam = sde.log_snr(t64)
    subs = max(max(8, math.ceil(float(h) / _DELTA)) for h in (lam[1:] - lam[:-1]).detach()) + 1
    dims = math.prod(stats.shape)
    size = max(1, _CHUNK // subs)
    if dims <= size:
        return _coefficients(sde, stats.to(t64.device), t64, order, corrector, lower_order_final)
    src = stats.to(t64.device)  # one transfer (the statistics are small beside the model)
    parts = [_coefficients(sde, src.dims(k, k + size), t64, order, corrector, lower_order_final)
             for k in range(0, dims, size)]

    def join(vs):
        return None if vs[0] is None else torch.cat(vs).view(stats.shape)
    return [V3Step(join([p[i].phi for p in parts]),
                   [join([p[i].w[j] for p in parts]) for j in range(len(parts[0][i].w))],
                   join([p[i].const for p in parts]),
                   None if parts[0][i].wc is None else
                   [join([p[i].wc[j] for p in parts]) for j in range(len(parts[0][i].wc))],
                   join([p[i].constc for p in parts]))
            for i in range(len(parts[0]))]


def _coefficients(sde, stats: ModelStatistics, t64: Tensor, order: int, corrector: bool,
                  lower_order_final: bool | None) -> list[V3Step]:
    """:func:`v3_coefficients` on all of ``stats``' dimensions at once."""
    lam = sde.log_snr(t64)
    steps = len(t64) - 1
    seg = [_segment(sde, stats, lam[i], lam[i + 1], t64[i + 1], order) for i in range(steps)]
    dS = torch.stack([q[1] for q in seg])
    Sg = torch.cat([torch.zeros_like(dS[:1]), dS.cumsum(0)])  # S from λ_0 at every node
    Q = [q[2] for q in seg]
    out: list[V3Step] = []
    for i in range(steps):
        dL, _, _, I, IB = seg[i]
        phi = sde.sigma(t64[i + 1]) / sde.sigma(t64[i]) * torch.exp(dL)
        p = step_order(order, min(i + 1, order), i, steps, lower_order_final)
        nodes = [i - j for j in range(p)]
        w, const = _update(I, IB, lam, Sg, Q, i, nodes)
        wc = constc = None
        if corrector and i + 1 < steps:  # the model is evaluated at x_{i+1}: refit through it
            wc, constc = _update(I, IB, lam, Sg, Q, i, [i + 1, *nodes])
        out.append(V3Step(phi, w, const, wc, constc))
    return out


_CACHE: OrderedDict = OrderedDict()  # the last few statistics files read and updates computed
_CACHE_LOCK = threading.Lock()  # sdeflow serve samples from several threads


def _cached(key, make):
    """``make()``, remembered under ``key`` for the next calls (the last 4 keys are kept):
    sampling in batches reads the same file and builds the same updates again and again."""
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key][1]
    value = make()
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return value[1]


def clear_cache() -> None:
    """Forget the statistics files read and the updates built (they hold memory, on the GPU
    too, until four newer ones replace them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _statistics(statistics) -> ModelStatistics:
    if isinstance(statistics, ModelStatistics):
        return statistics
    if isinstance(statistics, (str, Path)):
        path = Path(statistics).resolve()
        try:
            st = path.stat()
        except OSError:
            return ModelStatistics.load(path)  # its error names the file
        return _cached(("file", str(path), st.st_ino, st.st_mtime_ns, st.st_size),
                       lambda: (None, ModelStatistics.load(path)))
    raise ValueError("dpm_solver_v3 needs statistics=: a ModelStatistics or the path of a file "
                     "written by `sdeflow ems` (sdeflow.samplers.ems.estimate_statistics); the "
                     "CLI and `sdeflow serve` take the checkpoint folder's own ems.safetensors, "
                     "which `sdeflow ems CHECKPOINT` writes")


def dpm_solver_v3(model, x: Tensor, ts: Tensor, ctx: Context, statistics=None, order: int = 3,
                  corrector: bool = True, lower_order_final: bool | None = None) -> Tensor:
    """DPM-Solver-v3 of ``order`` (1–3; the corrector adds one) with the model statistics
    ``statistics`` (module docstring). One NFE per step."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    stats = _statistics(statistics)
    if stats.sde is not None and stats.sde != model.sde.config():
        raise ValueError(f"the model statistics were estimated under SDE {stats.sde}, not the "
                         f"model's {model.sde.config()}: run `sdeflow ems` for this model")
    if not same_weights(stats.model, weights_fingerprint(model)):
        warnings.warn("the model statistics were estimated from other weights than this "
                      "model's (another checkpoint?): DPM-Solver-v3 stays consistent but loses "
                      "accuracy; run `sdeflow ems` on this checkpoint", stacklevel=3)
    if stats.shape != tuple(x.shape[1:]):
        raise ValueError(f"the model statistics are for samples of shape {stats.shape}, "
                         f"got {tuple(x.shape[1:])}")
    coef = [V3Step(*(_to(v, x) for v in (c.phi, c.w, c.const, c.wc, c.constc)))
            for c in _updates(model.sde, stats, ts, order, corrector, lower_order_final,
                              x.device)]
    l_nodes, _, _ = stats.at(model.sde.log_snr(ts.to(torch.float64).cpu()))
    l_nodes = l_nodes.to(x)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    fs: list[Tensor] = []  # f at the evaluated points, newest first
    x_prev = None
    for i, c in enumerate(coef):
        m = model.x0(x, ts[i] * ones, **ctx.cond)
        f = m - l_nodes[i] * x
        if x_prev is not None and coef[i - 1].wc is not None:
            prev = coef[i - 1]
            x = prev.phi * x_prev + sum(w * fj for w, fj in zip(prev.wc, [f, *fs])) + prev.constc
            x = ctx.constrain(ts[i], x)
        fs = [f, *fs][:order]
        x_prev = x
        x = c.phi * x + sum(w * fj for w, fj in zip(c.w, fs)) + c.const
        x = ctx.step_done(ts[i + 1], x)
    return x


def _updates(sde, stats: ModelStatistics, ts: Tensor, order: int, corrector: bool,
             lower_order_final: bool | None, device: torch.device) -> list[V3Step]:
    """:func:`v3_coefficients` on a CUDA sampling device (float64 there is fast) or the CPU,
    remembered for the next call with the same statistics and grid (not while ``ts`` needs
    gradients: tuning)."""
    dev = device if device.type == "cuda" else torch.device("cpu")
    held = (stats, stats.lam, stats.l, stats.s, stats.b)
    # the tensors' addresses and versions: statistics changed in place or reassigned are new
    versions = tensor_versions(held[1:])
    if ts.requires_grad or versions is None:
        return v3_coefficients(sde, stats, ts, order, corrector, lower_order_final, dev)
    key = ("updates", id(stats), versions, tuple(ts.detach().cpu().double().tolist()), order,
           corrector, lower_order_final, str(dev), repr(sde.config()))
    # the entry holds ``stats`` and its tensors, so neither id nor addresses can be reused
    # while it is remembered
    return _cached(key, lambda: (held, v3_coefficients(sde, stats, ts, order, corrector,
                                                       lower_order_final, dev)))


def _to(v, x: Tensor):
    if v is None:
        return None
    if isinstance(v, list):
        return [t.to(x) for t in v]
    return v.to(x)


@register_solver("dpm_solver_v3", kind="ode", order=3, default_steps=10,
                 description="DPM-Solver-v3: multistep predictor-corrector with the model's "
                             "empirical statistics (statistics=<file of `sdeflow ems`>), "
                             "1 NFE/step")
def sample_dpm_solver_v3(model, x, ts, ctx: Context, **opts):
    return dpm_solver_v3(model, x, ts, ctx, **opts)

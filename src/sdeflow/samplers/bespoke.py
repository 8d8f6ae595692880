r"""Bespoke non-stationary (BNS) linear solvers (Shaul et al. 2024, "Bespoke Non-Stationary
Solvers for Fast Sampling of Diffusion and Flow Models").

On a fixed grid t_0 > … > t_N, every PF-ODE solver that calls the network once per step and
combines its history linearly — DDIM, DPM-Solver++ (2M/3M), UniPC (with its corrector), DEIS,
iPNDM, Euler — is a linear map of the start x_0 and the denoised values m_k = x̂0(x_k, t_k):

.. math:: x_j = a_j\,x_0 + \sum_{k<j} c_{jk}\,m_k,\qquad j = 1,\dots,N .

The coefficients depend on the grid only. :func:`linear_coefficients` reads them off any such
solver (it runs the solver once on basis vectors: start 1 and all m = 0, then each m_k = 1 in
turn), differentiably in the grid. :func:`bns` samples with arbitrary (a, c) — e.g. those of a
solver after tuning them on calibration noise (:func:`sdeflow.tuning.tune_timesteps` with
``coefficients=True``), which is the BNS idea: a solver fitted to one model and one NFE budget,
starting from (and containing) the classical ones. :func:`step_form` and :func:`unrolled_form`
convert between this form and the step form x_{j+1} = ρ_j x_j + Σ_k w_jk m_k.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..schedules import ends_early
from .registry import Context, get_solver, register_solver

__all__ = ["linear_coefficients", "step_form", "unrolled_form", "bns"]


def linear_coefficients(sde, solver: str, ts: Tensor, **solver_opts) -> tuple[Tensor, Tensor]:
    """(a, c) of ``solver`` on the grid ``ts`` (module docstring): ``a`` has shape (N,) and
    ``c`` (N, N), lower triangular — row j − 1 holds the weights of x_j. Differentiable in ts.
    Raises ValueError for solvers that are not one-call-per-step linear multistep methods."""
    info = get_solver(solver)
    if info.kind != "ode" or info.adaptive:
        raise ValueError(f"{solver!r} is not a fixed-step ODE solver")
    n = len(ts) - 1
    basis = torch.eye(n + 1, dtype=ts.dtype, device=ts.device)  # row 0: x_0; row k+1: m_k
    inputs: list[Tensor] = []

    def net(x, t):
        k = len(inputs)
        if k >= n or not torch.equal(t, ts[k].expand_as(t)):
            raise ValueError(f"{solver!r} does not call the network once per step at the grid "
                             "times; only such multistep solvers have BNS coefficients")
        inputs.append(x[:, 0])
        return basis[:, k + 1:k + 2].clone()

    ctx = Context(final_denoise=ends_early(sde, ts))  # as sample() runs the solver on ts
    out = info.fn(Denoiser(net, sde, check_finite=False), basis[:, :1].clone(), ts, ctx,
                  **solver_opts)
    if len(inputs) != n:
        raise ValueError(f"{solver!r} called the network {len(inputs)} times on {n} steps")
    states = torch.stack([*inputs[1:], out[:, 0]])  # (N, N + 1): x_1 … x_N in the basis
    return states[:, 0], states[:, 1:].tril()


def step_form(a: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    r"""BNS coefficients in unrolled form (x_j = a_j x_0 + Σ_k c_jk m_k) → step form
    x_{j+1} = ρ_j x_j + Σ_k w_jk m_k: ρ_j = a_{j+1}/a_j, w_j = c_{j+1} − ρ_j c_j."""
    if not (a > 0).all():
        raise ValueError("the step form needs positive start coefficients a_j")
    a_full = torch.cat([a.new_ones(1), a])
    c_full = torch.cat([c.new_zeros(1, c.shape[1]), c])
    rho = a_full[1:] / a_full[:-1]
    return rho, c_full[1:] - rho[:, None] * c_full[:-1]


def unrolled_form(rho: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`step_form`."""
    a, c_row, rows = [], w.new_zeros(w.shape[1]), []
    a_j = rho.new_ones(())
    for j in range(len(rho)):
        a_j, c_row = rho[j] * a_j, rho[j] * c_row + w[j]
        a.append(a_j)
        rows.append(c_row)
    return torch.stack(a), torch.stack(rows)


def bns(model, x: Tensor, ts: Tensor, ctx: Context, a, c) -> Tensor:
    r"""Sample with the BNS coefficients (a, c): x_j = a_j x_0 + Σ_{k<j} c_{jk} x̂0(x_k, t_k),
    one network call per step (the history of x̂0 is kept: N tensors like x)."""
    n = len(ts) - 1
    a, c = (torch.as_tensor(v).to(dtype=x.dtype, device=x.device) for v in (a, c))
    if a.shape != (n,) or c.shape != (n, n):
        raise ValueError(f"BNS coefficients for {n} steps need a of shape ({n},) and c of shape "
                         f"({n}, {n}); got {tuple(a.shape)} and {tuple(c.shape)}")
    if torch.count_nonzero(c.triu(1)) or not (torch.isfinite(a).all() and torch.isfinite(c).all()):
        raise ValueError("BNS coefficients must be finite and c lower triangular (x_j uses "
                         "x̂0 at t_0 … t_{j-1} only)")
    if ctx.constraint is not None:
        raise ValueError("the BNS solver rebuilds each state from the start and the history, so "
                         "a constraint (inpainting) cannot act on it; use another solver")
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    x_start, ms = x, []
    for j in range(n):
        ms.append(model.x0(x, ts[j] * ones, **ctx.cond))
        x = a[j] * x_start + sum(c[j, k] * ms[k] for k in range(j + 1))
        x = ctx.step_done(ts[j + 1], x)
    return x


@register_solver("bns", kind="ode", order=None, default_steps=5,
                 description="bespoke non-stationary linear multistep x_j = a_j x_0 + Σ c_jk x̂0_k "
                             "with given coefficients a=, c= (from tune-steps --coefficients), "
                             "1 NFE/step")
def sample_bns(model, x, ts, ctx: Context, a=None, c=None):
    if a is None or c is None:
        raise ValueError("the 'bns' solver needs its coefficients a= and c= (a tuned schedule "
                         "from `sdeflow tune-steps --coefficients` carries them)")
    return bns(model, x, ts, ctx, a, c)

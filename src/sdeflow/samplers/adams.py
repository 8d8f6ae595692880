r"""Adaptive exponential Adams–Bashforth–Moulton in log-SNR: one network call per step, with a
free error estimate (the predictor–corrector pair of UniPC, Zhao et al. 2023, with variable
steps and Milne's device; exponential multistep methods: Hochbruck & Ostermann 2010, §2.4).

With x̃ = x/s, λ = log(s/σ) and the data prediction D = x̂0, the PF-ODE is dx̃/dλ = D − x̃, so
over a step of size h from λ

.. math:: \tilde x(\lambda + h) = e^{-h}\tilde x(\lambda) + h\int_0^1 e^{-h(1-v)} D(\lambda + hv)\,dv .

Replacing D by the polynomial P through earlier evaluations at v_j = (λ_j − λ)/h gives the
weights :math:`w_j = h\int_0^1 e^{-h(1-v)}\ell_j(v)\,dv` (ℓ_j the Lagrange basis), computed from
the moments :math:`M_k(h) = \int_0^1 e^{-h(1-v)}v^k dv` as :math:`w = h\,V^{-\top}M` (V the
Vandermonde matrix of the nodes). One step:

* **P**redict with the p newest evaluations (order p, exponential Adams–Bashforth);
* **E**valuate D at the prediction (the step's only network call);
* **C**orrect with those p evaluations and the new one (order p + 1, exponential Adams–Moulton).

The difference corrector − predictor estimates the predictor's local error (Milne's device); with
:math:`err = \mathrm{RMS}\big((\tilde x^C - \tilde x^P)/(atol + rtol\max(|\tilde x|, |\tilde x^C|))\big)`
the step is accepted where err ≤ 1, keeping the corrector (local extrapolation) and its
evaluation at the predictor as the newest history point — as UniPC does, so corrections cost
nothing extra. The next step is chosen by a PI controller (Gustafsson 1991; Hairer & Wanner,
*Solving ODEs II*, §IV.2) with k = p + 1:

.. math:: h' = h\cdot\mathrm{clip}\big(\text{safety}\cdot err_n^{-(1-\beta)/k}\,err_{n-1}^{\beta/k},\ 0.2,\ \text{max\_factor}\big),

never growing on or right after a rejection (the loop of :mod:`.adaptive`). A multistep method
pays for big step-ratio changes (its history is extrapolated further), hence a growth cap of 2
and a safety of 0.7 by default (how they were chosen: docs/solver_notes.md). Orders rise from
1 as history builds up (at high noise D hardly changes, so the low-order start costs little).

``control="sample"`` (default) gives every sample its own λ, step size and history, so results
never depend on the batch, and the batch's NFE is that of its slowest sample;
``control="batch"`` takes one step for the whole batch from the RMS error over it (as scipy,
torchdiffeq and k-diffusion do), which needs fewer network calls for a batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..sde import bcast
from .adaptive import StepController, Trial, adaptive_loop, rms
from .exponential import logsnr_denoiser, logsnr_observe, logsnr_state
from .registry import Context, register_solver

__all__ = ["exp_moments", "exp_adams_weights", "abm_adaptive"]


def exp_moments(h: Tensor, n: int) -> Tensor:
    r""":math:`M_k(h) = \int_0^1 e^{-h(1-v)}v^k dv` for k < n, shape (*h.shape, n).

    For h ≥ 1 by the recursion M_0 = (1 − e^{−h})/h, M_k = (1 − k M_{k−1})/h (error growth ≤ k/h
    per step); below 1 by the series :math:`M_k = \sum_m (-h)^m k!/(m+k+1)!`, which has no
    cancellation there."""
    big = h.clamp_min(1.0)
    rec = [-torch.expm1(-big) / big]
    for k in range(1, n):
        rec.append((1 - k * rec[-1]) / big)
    ser = []
    for k in range(n):
        term = torch.full_like(h, 1.0 / (k + 1))  # m = 0: k!/(k+1)!
        total = term.clone()
        for m in range(1, 30):  # |h| < 1: the terms fall faster than 1/m!
            term = term * (-h) / (m + k + 1)
            total = total + term
        ser.append(total)
    small = h < 1
    return torch.stack([torch.where(small, s, r) for s, r in zip(ser, rec)], -1)


def exp_adams_weights(nodes: Tensor, h: Tensor) -> Tensor:
    r"""Weights w_j (shape (B, n)) with :math:`\sum_j w_j D_j = h\int_0^1 e^{-h(1-v)}P(v)dv`, P
    the polynomial through (v_j, D_j); ``nodes`` (B, n) are the v_j in units of h."""
    n = nodes.shape[1]
    V = nodes.unsqueeze(-1) ** torch.arange(n, dtype=nodes.dtype, device=nodes.device)
    M = exp_moments(h, n)
    return h.unsqueeze(-1) * torch.linalg.solve(V.transpose(1, 2), M)


def _combine(w: Tensor, hist: list[Tensor]) -> Tensor:
    return sum(bcast(w[:, j], d) * d for j, d in enumerate(hist))


class _History:
    """Per-sample history, newest first: evaluations D_j (B, ...) at λ_j (B,), and how many
    points each sample holds (≤ ``order``)."""

    def __init__(self, d0: Tensor, lam0: Tensor, order: int):
        self.d, self.lam, self.order = [d0], [lam0.clone()], order
        self.n = torch.ones(d0.shape[0], dtype=torch.long, device=d0.device)

    def groups(self, rows: Tensor) -> tuple[Tensor, list[tuple[int, Tensor]]]:
        """Predictor order p per row (rows still building their history use fewer points),
        and the rows of each p."""
        p_rows = self.n[rows].clamp(max=self.order)
        return p_rows, [(p, torch.nonzero(p_rows == p).squeeze(1)) for p in p_rows.unique().tolist()]

    def adams(self, groups, rows: Tensor, lr: Tensor, hr: Tensor, xr: Tensor,
              d_at_end: Tensor | None) -> Tensor:
        """Exponential Adams step of every row from its p history points, plus D at the step's
        end (v = 1) when given: predictor (None) or corrector."""
        out = torch.empty_like(xr)
        for p, sel in groups:
            hs, ls, src = hr[sel], lr[sel], rows[sel]
            nodes = [(self.lam[j][src] - ls) / hs for j in range(p)]
            ds = [self.d[j][src] for j in range(p)]
            if d_at_end is not None:
                nodes, ds = [torch.ones_like(hs)] + nodes, [d_at_end[sel]] + ds
            w = exp_adams_weights(torch.stack(nodes, 1), hs).to(xr.dtype)
            out[sel] = bcast(torch.exp(-hs), xr).to(xr.dtype) * xr[sel] + _combine(w, ds)
        return out

    def push(self, acc: Tensor, d_new: Tensor, lam_new: Tensor) -> None:
        """Shift the accepted rows' histories by one and put the new evaluation first."""
        if not acc.numel():
            return
        depth = min(len(self.d) + 1, self.order)
        if len(self.d) < depth:
            self.d.append(torch.zeros_like(self.d[0]))
            self.lam.append(torch.zeros_like(self.lam[0]))
        for j in range(depth - 1, 0, -1):
            self.d[j][acc] = self.d[j - 1][acc]
            self.lam[j][acc] = self.lam[j - 1][acc]
        self.d[0][acc] = d_new
        self.lam[0][acc] = lam_new
        self.n[acc] = (self.n[acc] + 1).clamp(max=self.order)


@register_solver("abm_adaptive", kind="ode", order=4, default_steps=None,
                 description="adaptive exponential Adams–Bashforth–Moulton in log-SNR (UniPC-style "
                             "predictor–corrector pair as error estimate), 1 NFE/step, rtol/atol; "
                             "control='sample'|'batch'")
def abm_adaptive(model, x: Tensor, ts: Tensor, ctx: Context, rtol: float = 1e-3,
                 atol: float = 1e-3, order: int = 3, h_init: float = 0.5, safety: float = 0.7,
                 max_factor: float = 2.0, beta: float = 0.2, control: str = "sample",
                 max_steps: int = 100_000) -> Tensor:
    """Integrate the PF-ODE from ts[0] to ts[-1] with the adaptive exponential ABM method (module
    docstring); rtol/atol apply to x̃ = x/s. ``order`` is the predictor's highest order (1–4;
    the corrector and the accepted solution are one order higher). NFE = 1 + accepted +
    rejected steps of the slowest sample."""
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1, 2, 3 or 4, got {order}")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    controller = StepController(order=order + 1, safety=safety, beta=beta,
                                max_factor=max_factor, control=control)
    sde = model.sde
    denoise = logsnr_denoiser(model, ts, ctx, x.dtype)
    state = logsnr_state(sde, x, ts, h_init)
    hist = _History(denoise(state.x, state.t, None), state.t, order)

    def step(lr: Tensor, xr: Tensor, hr: Tensor, rows: Tensor) -> Trial:
        p_rows, groups = hist.groups(rows)
        x_pred = hist.adams(groups, rows, lr, hr, xr, None)
        d_new = denoise(x_pred, lr + hr, rows)
        x_corr = hist.adams(groups, rows, lr, hr, xr, d_new)
        scale = atol + rtol * torch.maximum(xr.abs(), x_corr.abs())
        err = rms((x_corr - x_pred) / scale).to(torch.float64)

        def accept(ok: Tensor, acc: Tensor, lam_acc: Tensor) -> None:
            hist.push(acc, d_new[ok], lam_acc)
        return Trial(x_corr, err, order=p_rows.to(torch.float64) + 1, accept=accept)

    xt = adaptive_loop(step, state, controller, ctx, name="abm_adaptive", max_steps=max_steps,
                       observe=logsnr_observe(sde, ts))
    return sde.s(ts[-1]) * xt

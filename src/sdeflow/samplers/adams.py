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

never growing on or right after a rejection. A multistep method pays for big step-ratio changes
(its history is extrapolated further), hence the growth cap of 2 and the safety 0.7, which keep
rejections rare: tuned on the mixture benchmarks of ``benchmarks/adaptive.py``. Orders rise from
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
from .registry import Context, register_solver
from .exponential import logsnr_accept, logsnr_denoiser, logsnr_rows
from .rk import check_error_finite, report_step_counts, rms

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
    if control not in ("sample", "batch"):
        raise ValueError(f"control must be 'sample' or 'batch', got {control!r}")
    sde = model.sde
    B, dt = x.shape[0], x.dtype
    f64 = torch.float64
    lam_end = float(sde.log_snr(ts[-1].to(f64)))
    lam = sde.log_snr(ts[0].to(f64)).expand(B).clone()
    h = torch.full((B,), float(h_init), dtype=f64, device=x.device)
    xt = x / sde.s(ts[0])

    denoise = logsnr_denoiser(model, ts, ctx, dt)

    # per-sample history, newest first: evaluations D_j (B, ...) and their λ_j (B,)
    hist_d = [denoise(xt, lam, None)]
    hist_l = [lam.clone()]
    n_hist = torch.ones(B, dtype=torch.long, device=x.device)
    accepted = torch.zeros(B, dtype=torch.long, device=x.device)
    rejected = torch.zeros_like(accepted)
    just_rejected = torch.zeros(B, dtype=torch.bool, device=x.device)
    err_prev = torch.ones(B, dtype=f64, device=x.device)
    for _ in range(max_steps):
        trial = logsnr_rows(lam, lam_end, h, xt)
        if trial is None:
            break
        rows, lr, xr, hr = trial
        # predictor order p per row (rows still building their history use fewer points)
        p_rows = n_hist[rows].clamp(max=order)
        groups = [(p, torch.nonzero(p_rows == p).squeeze(1)) for p in p_rows.unique().tolist()]

        def adams(d_at_end: Tensor | None) -> Tensor:
            """Exponential Adams step of every row from its p history points, plus D at the
            step's end (v = 1) when given: predictor (None) or corrector."""
            out = torch.empty_like(xr)
            for p, sel in groups:
                hs, ls, src = hr[sel], lr[sel], rows[sel]
                nodes = [(hist_l[j][src] - ls) / hs for j in range(p)]
                ds = [hist_d[j][src] for j in range(p)]
                if d_at_end is not None:
                    nodes, ds = [torch.ones_like(hs)] + nodes, [d_at_end[sel]] + ds
                w = exp_adams_weights(torch.stack(nodes, 1), hs).to(dt)
                out[sel] = bcast(torch.exp(-hs), xr).to(dt) * xr[sel] + _combine(w, ds)
            return out
        x_pred = adams(None)
        d_new = denoise(x_pred, lr + hr, rows)
        x_corr = adams(d_new)
        scale = atol + rtol * torch.maximum(xr.abs(), x_corr.abs())
        err = rms((x_corr - x_pred) / scale).to(f64)
        if control == "batch":  # one error (RMS over the batch) and one step for all samples
            err = err.pow(2).mean().sqrt().expand_as(err)
        check_error_finite(err, "abm_adaptive")
        ok = err <= 1
        acc = logsnr_accept(ok, rows, lr, hr, x_corr, lam, lam_end, xt, accepted, rejected)
        if acc.numel():
            # shift the accepted rows' histories by one and put the new evaluation first
            depth = min(len(hist_d) + 1, order)
            if len(hist_d) < depth:
                hist_d.append(torch.zeros_like(hist_d[0]))
                hist_l.append(torch.zeros_like(hist_l[0]))
            for j in range(depth - 1, 0, -1):
                hist_d[j][acc] = hist_d[j - 1][acc]
                hist_l[j][acc] = hist_l[j - 1][acc]
            hist_d[0][acc] = d_new[ok]
            hist_l[0][acc] = lam[acc]
            n_hist[acc] = (n_hist[acc] + 1).clamp(max=order)
        k = p_rows.to(f64) + 1
        e = err.clamp_min(1e-10)
        factor = safety * e ** (-(1 - beta) / k) * err_prev[rows] ** (beta / k)
        factor = factor.clamp(0.2, max_factor)
        err_prev[acc] = e[ok]
        # no growth on a rejection nor right after one
        factor = torch.where(ok & ~just_rejected[rows], factor, factor.clamp(max=1.0))
        just_rejected[rows] = ~ok
        h[rows] = hr * factor
        if ctx.progress is not None:
            ctx.progress.update(1)
    else:
        raise RuntimeError(f"abm_adaptive did not reach the end in {max_steps} steps "
                           f"(rtol={rtol}, atol={atol}); loosen the tolerances")
    report_step_counts(ctx, accepted, rejected)
    return sde.s(ts[-1]) * xt

r"""Exponential integrators in log-SNR time: DPM-Solver++ multistep (Lu et al. 2022,
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models").

With λ = log(s/σ) and the data prediction x̂0, the PF-ODE of x_t = s x0 + σ ε has the exact
solution over [λ, λ'] (h = λ' − λ > 0)

.. math:: x_{t'} = \frac{\sigma'}{\sigma}x_t + \sigma'\int_\lambda^{\lambda'} e^{\ell}\,\hat x_0(\ell)\,d\ell .

Expanding x̂0 in λ around the current step with backward differences of earlier evaluations
(multistep: one NFE per step) gives, with φ₁ = e^{−h} − 1, φ₂ = φ₁/h + 1, φ₃ = φ₂/h − ½,
m₀ the newest x̂0 and r_k = h_k/h the ratios of previous step sizes,

* order 1:  x' = (σ'/σ)x − s'φ₁m₀                                    (= DDIM)
* order 2:  x' = (σ'/σ)x − s'φ₁m₀ − ½s'φ₁D₁,            D₁ = (m₀ − m₁)/r₀
* order 3:  x' = (σ'/σ)x − s'φ₁m₀ + s'φ₂D₁ − s'φ₃D₂,   D₁ = D₁₀ + r₀/(r₀+r₁)(D₁₀ − D₁₁),
  D₂ = 2(D₁₀ − D₁₁)/(r₀ + r₁), D₁₀ = (m₀ − m₁)/r₀, D₁₁ = (m₁ − m₂)/r₁ (D₁ ≈ h x̂0′ and
  D₂ ≈ h² x̂0″ in λ; the Taylor factor ½ sits in φ₃ — the oracle tests pin this down).

The first steps use lower orders (no history yet), and with ``lower_order_final`` (default for
fewer than 15 steps) so do the last ones (:func:`step_order`, shared by every multistep method
here), which keeps 5–10-step sampling stable. (The low-order start costs little: at high noise
x̂0 barely changes with λ.)

The stochastic variant (SDE-DPM-Solver++(2M), ``eta`` > 0) is
:math:`x' = \frac{\sigma'}{\sigma}e^{-\eta h}x + s'(1 - e^{-(1+\eta)h})\,(m_0 + \tfrac{1}{2r_0}(m_0 - m_1))
+ \sigma'\sqrt{1 - e^{-2\eta h}}\,z`, which samples the reverse SDE for η = 1.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..sde import bcast
from .adaptive import AdaptiveState, StepController, Trial, adaptive_loop, rms, select_rows
from .registry import Context, register_solver

__all__ = ["AB_WEIGHTS", "dpmpp_multistep", "dpm_solver_singlestep", "unipc", "deis",
           "dpm_adaptive", "step_order", "logsnr_denoiser", "logsnr_state", "logsnr_observe"]


def step_order(order: int, available: int, i: int, steps: int,
               lower_order_final: bool | None) -> int:
    """Order of step i (of ``steps``) of a multistep method: ``order``, less while only
    ``available`` earlier evaluations exist and, with ``lower_order_final`` (None: for fewer than
    15 steps), at most steps − i on the last steps."""
    p = min(order, available)
    if (steps < 15) if lower_order_final is None else lower_order_final:
        p = min(p, steps - i)
    return p


def dpmpp_multistep(model, x: Tensor, ts: Tensor, ctx: Context, order: int = 2,
                    eta: float = 0.0, lower_order_final: bool | None = None) -> Tensor:
    """DPM-Solver++ multistep of the given order (1–3) over the grid ``ts``; ``eta`` > 0 makes
    it the SDE variant (order ≤ 2). One NFE per step."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta > 0 and order > 2:
        raise ValueError("the stochastic DPM-Solver++ is implemented for order <= 2")
    sde = model.sde
    steps = len(ts) - 1
    lam = sde.log_snr(ts)
    s_all, sig_all = sde.s(ts), sde.sigma(ts)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    hist: list[Tensor] = []  # newest first: m0, m1, m2
    hs: list[Tensor] = []  # step sizes in λ of the previous steps, newest first
    for i in range(steps):
        m0 = model.x0(x, ts[i] * ones, **ctx.cond)
        hist = [m0, *hist][:3]
        h = lam[i + 1] - lam[i]
        p = step_order(order, len(hist), i, steps, lower_order_final)
        phi1 = torch.expm1(-h)
        s1, ratio = s_all[i + 1], sig_all[i + 1] / sig_all[i]
        if p == 1:
            d = hist[0]
        else:
            r0 = hs[0] / h
            d10 = (hist[0] - hist[1]) / r0
        if eta > 0:
            if p >= 2:
                d = hist[0] + 0.5 * d10
            x = ratio * torch.exp(-eta * h) * x - s1 * torch.expm1(-(1 + eta) * h) * d \
                + sig_all[i + 1] * torch.sqrt(-torch.expm1(-2 * eta * h)) * ctx.randn_like(x)
        elif p == 1:
            x = ratio * x - s1 * phi1 * d
        elif p == 2:
            x = ratio * x - s1 * phi1 * hist[0] - 0.5 * s1 * phi1 * d10
        else:
            r1 = hs[1] / h
            d11 = (hist[1] - hist[2]) / r1
            d1 = d10 + r0 / (r0 + r1) * (d10 - d11)
            d2 = 2 * (d10 - d11) / (r0 + r1)  # ≈ h² x̂0'' (the ½ of the Taylor term is in φ₃)
            phi2 = phi1 / h + 1
            phi3 = phi2 / h - 0.5
            x = ratio * x - s1 * phi1 * hist[0] + s1 * phi2 * d1 - s1 * phi3 * d2
        hs = [h, *hs][:2]
        x = ctx.step_done(ts[i + 1], x)
    return x


def _register(name: str, order: int, kind: str, description: str, **fixed):
    @register_solver(name, kind=kind, order=order, default_steps=20 if kind == "ode" else 50,
                     description=description, first_step=kind == "ode")
    def solve(model, x, ts, ctx: Context, **opts):
        return dpmpp_multistep(model, x, ts, ctx, order=order, **fixed, **opts)
    solve.__doc__ = f"{description} (see :func:`dpmpp_multistep`)."
    return solve


sample_dpmpp_2m = _register("dpmpp_2m", 2, "ode", "DPM-Solver++(2M): 2nd-order multistep "
                            "exponential integrator in log-SNR, 1 NFE/step")
sample_dpmpp_3m = _register("dpmpp_3m", 3, "ode", "DPM-Solver++(3M): 3rd-order multistep "
                            "exponential integrator in log-SNR, 1 NFE/step")


@register_solver("dpmpp_2m_sde", kind="sde", order=1, default_steps=50,
                 description="SDE-DPM-Solver++(2M): stochastic multistep in log-SNR, eta=1")
def sample_dpmpp_2m_sde(model, x, ts, ctx: Context, eta: float = 1.0, **opts):
    return dpmpp_multistep(model, x, ts, ctx, order=2, eta=eta, **opts)


def dpm_solver_singlestep(model, x: Tensor, ts: Tensor, ctx: Context, order: int = 2) -> Tensor:
    r"""DPM-Solver (Lu et al. 2022, NeurIPS; Algorithms 1–2) with noise prediction ε̂, one step
    of ``order`` NFE per interval. With h = λ_t − λ_s and intermediate log-SNRs λ_s + r_k h:

    * order 1: x_t = (s_t/s_s)x − σ_t(e^h − 1)ε̂_s (= DDIM);
    * order 2 (r₁ = ½): u = (s_{1}/s_s)x − σ_{1}(e^{r₁h} − 1)ε̂_s,
      x_t = (s_t/s_s)x − σ_t(e^h − 1)ε̂_s − σ_t/(2r₁)(e^h − 1)(ε̂(u) − ε̂_s);
    * order 3 (r₁ = ⅓, r₂ = ⅔): u₁ as above, D₁ = ε̂(u₁) − ε̂_s,
      u₂ = (s_{2}/s_s)x − σ_{2}(e^{r₂h} − 1)ε̂_s − σ_{2}(r₂/r₁)((e^{r₂h} − 1)/(r₂h) − 1)D₁,
      D₂ = ε̂(u₂) − ε̂_s, x_t = (s_t/s_s)x − σ_t(e^h − 1)ε̂_s − (σ_t/r₂)((e^h − 1)/h − 1)D₂.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    sde = model.sde
    lam = sde.log_snr(ts)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)

    for i in range(len(ts) - 1):
        h = lam[i + 1] - lam[i]
        e0 = model.eps(x, ts[i] * ones, **ctx.cond)
        s0, s_t, sig_t = sde.s(ts[i]), sde.s(ts[i + 1]), sde.sigma(ts[i + 1])
        base = s_t / s0 * x - sig_t * torch.expm1(h) * e0
        if order == 1:
            x = base
        elif order == 2:
            r1 = 0.5
            t1 = sde.t_from_log_snr(lam[i] + r1 * h)
            u = sde.s(t1) / s0 * x - sde.sigma(t1) * torch.expm1(r1 * h) * e0
            e1 = model.eps(u, t1 * ones, **ctx.cond)
            x = base - sig_t / (2 * r1) * torch.expm1(h) * (e1 - e0)
        else:
            r1, r2 = 1 / 3, 2 / 3
            t1, t2 = sde.t_from_log_snr(lam[i] + r1 * h), sde.t_from_log_snr(lam[i] + r2 * h)
            u1 = sde.s(t1) / s0 * x - sde.sigma(t1) * torch.expm1(r1 * h) * e0
            d1 = model.eps(u1, t1 * ones, **ctx.cond) - e0
            u2 = (sde.s(t2) / s0 * x - sde.sigma(t2) * torch.expm1(r2 * h) * e0
                  - sde.sigma(t2) * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1) * d1)
            d2 = model.eps(u2, t2 * ones, **ctx.cond) - e0
            x = base - sig_t / r2 * (torch.expm1(h) / h - 1) * d2
        x = ctx.step_done(ts[i + 1], x)
    return x


def _register_singlestep(order: int):
    @register_solver(f"dpm_solver_{order}", kind="ode", order=order, default_steps=20 // order,
                     description=f"DPM-Solver-{order}: single-step exponential integrator in "
                                 f"log-SNR with noise prediction, {order} NFE/step")
    def solve(model, x, ts, ctx: Context):
        return dpm_solver_singlestep(model, x, ts, ctx, order=order)
    return solve


sample_dpm_solver_2 = _register_singlestep(2)
sample_dpm_solver_3 = _register_singlestep(3)


def _unipc_coefficients(lams: list[Tensor], lam_t: Tensor, p: int, variant: str):
    """R, b, B(h) and the ratios r_k of UniPC (Zhao et al. 2023, Algorithms 2–3) for the p most
    recent evaluations (lams newest first), in the data-prediction form."""
    h = lam_t - lams[0]
    rks = [(lams[k] - lams[0]) / h for k in range(1, p)] + [torch.ones_like(h)]
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    B_h = hh if variant == "bh1" else torch.expm1(hh)
    rk = torch.stack(rks)
    R, b, fact = [], [], 1.0
    for i in range(1, p + 1):
        R.append(rk ** (i - 1))
        b.append(h_phi_k * fact / B_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    return torch.stack(R), torch.stack(b), B_h, h_phi_1, rks


def unipc(model, x: Tensor, ts: Tensor, ctx: Context, order: int = 2, variant: str = "bh2",
          corrector: bool = True, lower_order_final: bool | None = None) -> Tensor:
    r"""UniPC (Zhao et al. 2023): the multistep predictor UniP-p and the corrector UniC-p in
    log-SNR with data prediction. With h = λ_t − λ_{s0}, ratios r_k = (λ_{s_k} − λ_{s0})/h,
    D_k = (m_k − m_0)/r_k and B(h) = e^{−h} − 1 (``bh2``) or −h (``bh1``):

    .. math:: x_t = \frac{\sigma_t}{\sigma_{s0}}x - s_t(e^{-h} - 1)m_0 - s_t B(h)\sum_k \rho_k D_k,

    where ρ solves R ρ = b, :math:`R_{ik} = r_k^{\,i-1}`, :math:`b_i = h\varphi_{i+1}(h)\,i!/B(h)`.
    The corrector re-solves the same system including the new point (r = 1, D = m_t − m_0) once
    the model has been evaluated at x_t — an evaluation the next predictor step reuses, so the
    corrector costs no extra NFE and raises the order by one.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unknown UniPC variant {variant!r}; choices: ['bh1', 'bh2']")
    sde = model.sde
    steps = len(ts) - 1
    lam, s_all, sig_all = sde.log_snr(ts), sde.s(ts), sde.sigma(ts)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    ms: list[Tensor] = []  # newest first
    lams: list[Tensor] = []
    x_prev, p_prev = None, 0

    def combine(D, rho):
        return sum(r * d for r, d in zip(rho, D))

    for i in range(steps):
        m = model.x0(x, ts[i] * ones, **ctx.cond)
        if corrector and x_prev is not None:
            R, b, B_h, h_phi_1, rks = _unipc_coefficients(lams, lam[i], p_prev, variant)
            rho = torch.tensor([0.5], dtype=x.dtype) if p_prev == 1 else torch.linalg.solve(R, b)
            D = [(ms[k] - ms[0]) / rks[k - 1] for k in range(1, p_prev)]
            x = (sig_all[i] / sig_all[i - 1] * x_prev - s_all[i] * h_phi_1 * ms[0]
                 - s_all[i] * B_h * (combine(D, rho[:-1]) + rho[-1] * (m - ms[0])))
            x = ctx.constrain(ts[i], x)
        ms, lams = [m, *ms][:order], [lam[i], *lams][:order]
        p = step_order(order, len(ms), i, steps, lower_order_final)
        R, b, B_h, h_phi_1, rks = _unipc_coefficients(lams, lam[i + 1], p, variant)
        D = [(ms[k] - ms[0]) / rks[k - 1] for k in range(1, p)]
        x_prev, p_prev = x, p
        x = sig_all[i + 1] / sig_all[i] * x - s_all[i + 1] * h_phi_1 * ms[0]
        if p > 1:
            rho = torch.tensor([0.5], dtype=x.dtype) if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            x = x - s_all[i + 1] * B_h * combine(D, rho)
        x = ctx.step_done(ts[i + 1], x)
    return x


@register_solver("unipc", kind="ode", order=3, default_steps=20,
                 description="UniPC (bh2): multistep predictor order 2 + corrector, 1 NFE/step; "
                             "order=, variant='bh1'|'bh2', corrector=", first_step=True)
def sample_unipc(model, x, ts, ctx: Context, **opts):
    return unipc(model, x, ts, ctx, **opts)


def _lagrange_integrals(nodes: list[Tensor], a: Tensor, b: Tensor) -> list[Tensor]:
    """∫_a^b ℓ_j(v) dv for the Lagrange basis on ``nodes`` (≤ 4 nodes: 3-point Gauss–Legendre
    is exact to degree 5)."""
    gx = torch.tensor([-0.7745966692414834, 0.0, 0.7745966692414834], dtype=a.dtype, device=a.device)
    gw = torch.tensor([5 / 9, 8 / 9, 5 / 9], dtype=a.dtype, device=a.device)
    v = 0.5 * (b - a) * gx + 0.5 * (a + b)
    out = []
    for j, nj in enumerate(nodes):
        ell = torch.ones_like(v)
        for k, nk in enumerate(nodes):
            if k != j:
                ell = ell * (v - nk) / (nj - nk)
        out.append(0.5 * (b - a) * (gw * ell).sum())
    return out


# Adams–Bashforth weights for equal steps (newest value first), used by iPNDM and PNDM
AB_WEIGHTS = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12),
              4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def deis(model, x: Tensor, ts: Tensor, ctx: Context, order: int = 3,
         lower_order_final: bool | None = None, variant: str = "rhoab") -> Tensor:
    r"""DEIS (Zhang & Chen 2023): in EDM's variables x̃ = x/s, σ̃ = σ/s the PF-ODE is
    dx̃/dσ̃ = ε̂, and each step combines the last ``order`` values of ε̂ (1 NFE per step):

    .. math:: \tilde x_{i+1} = \tilde x_i + \sum_j w_{ij}\,\hat\varepsilon_{i-j}.

    ``variant="rhoab"`` (ρAB): w_ij = ∫ ℓ_j over [σ̃_i, σ̃_{i+1}], the exact integral of the
    Lagrange polynomial through the past ε̂ — a variable-step Adams–Bashforth method of order
    ``order`` (1–4). ``variant="ipndm"`` (iPNDM, the "improved PNDM" of the same paper):
    w_ij = (σ̃_{i+1} − σ̃_i)·c_j with the fixed equal-step Adams–Bashforth weights c, and
    lower orders while the history fills up instead of PNDM's Runge–Kutta warm start. Fixed
    weights are exact only for steps equal in σ̃ (measured orders on other grids:
    docs/solver_notes.md). Order 1 of either is DDIM.

    On a grid that ends above t_min (``Context.final_denoise``: a trailing schedule, a tuned
    free-end grid — named or as explicit ``timesteps``) iPNDM counts the final x̂0 call as its
    first-order last step when lowering its order at the end (1, 2, 3, 2 | x̂0 on 4 steps rather
    than 1, 2, 2, 1), as diffusers' schedulers count their step to σ = 0: 0.68–1.00× the error
    (median per problem and trailing shape) on our benchmark problems. DPM-Solver++ and UniPC
    measured 1.0–1.3× with the same convention and keep theirs (docs/solver_notes.md)."""
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1, 2, 3 or 4, got {order}")
    if variant not in ("rhoab", "ipndm"):
        raise ValueError(f"unknown DEIS variant {variant!r}; choices: ['ipndm', 'rhoab']")
    sde = model.sde
    steps = len(ts) - 1
    nu, s_all = sde.noise_level(ts), sde.s(ts)
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    xt = x / s_all[0]
    eps_hist: list[Tensor] = []
    for i in range(steps):
        eps_hist = [model.eps(s_all[i] * xt, ts[i] * ones, **ctx.cond), *eps_hist][:order]
        p = step_order(order, len(eps_hist), i, steps + (ctx.final_denoise and variant == "ipndm"),
                       lower_order_final)
        if variant == "ipndm":
            weights = [(nu[i + 1] - nu[i]) * c for c in AB_WEIGHTS[p]]
        else:
            weights = _lagrange_integrals([nu[i - j] for j in range(p)], nu[i], nu[i + 1])
        xt = xt + sum(w * e for w, e in zip(weights, eps_hist[:p]))
        xt = ctx.step_done(ts[i + 1], s_all[i + 1] * xt) / s_all[i + 1]
    return s_all[-1] * xt


@register_solver("deis", kind="ode", order=3, default_steps=20,
                 description="DEIS ρAB: variable-step Adams–Bashforth on dx̃/dσ̃ = ε̂ (order=3), "
                             "1 NFE/step", first_step=True)
def sample_deis(model, x, ts, ctx: Context, **opts):
    return deis(model, x, ts, ctx, **opts)


@register_solver("ipndm", kind="ode", order=4, default_steps=20,
                 description="iPNDM: fixed-coefficient Adams–Bashforth (order=4) on dx̃/dσ̃ = ε̂, "
                             "1 NFE/step", first_step=True)
def sample_ipndm(model, x, ts, ctx: Context, order: int = 4, **opts):
    return deis(model, x, ts, ctx, order=order, variant="ipndm", **opts)


def _t_of_log_snr(sde, ts: Tensor, lam: Tensor, dtype) -> Tensor:
    """t(λ) kept inside the grid's range (the inverse is found by bisection)."""
    lo, hi = min(ts[0], ts[-1]), max(ts[0], ts[-1])
    return sde.t_from_log_snr(lam).clamp(lo, hi).to(dtype)


def logsnr_denoiser(model, ts: Tensor, ctx: Context, dtype):
    """D(x̃, λ, rows) = x̂0(s x̃, t(λ)) on the batch rows ``rows``: the denoiser in the variables
    of the adaptive log-SNR solvers, with t kept inside the grid's range (per-sample λ)."""
    sde = model.sde

    def denoise(xr: Tensor, lam: Tensor, rows: Tensor | None) -> Tensor:
        t = _t_of_log_snr(sde, ts, lam, dtype)
        return model.x0(bcast(sde.s(t), xr) * xr, t, **select_rows(ctx.cond, rows))
    return denoise


def logsnr_state(sde, x: Tensor, ts: Tensor, h_init: float) -> AdaptiveState:
    """Start of an adaptive log-SNR solver: λ = λ(ts[0]) and step ``h_init`` (float64, per
    sample), x̃ = x/s, integrating to λ(ts[-1])."""
    f64 = torch.float64
    lam = sde.log_snr(ts[0].to(f64)).expand(x.shape[0]).clone()
    h = torch.full_like(lam, float(h_init))
    return AdaptiveState(lam, x / sde.s(ts[0]), h, float(sde.log_snr(ts[-1].to(f64))))


def logsnr_observe(sde, ts: Tensor):
    """(λ, x̃) → (t, x): what a callback of an adaptive log-SNR solver sees."""
    def observe(lam: Tensor, xt: Tensor):
        t = _t_of_log_snr(sde, ts, lam, xt.dtype)
        return t, bcast(sde.s(t), xt) * xt
    return observe


def dpm_adaptive(model, x: Tensor, ts: Tensor, ctx: Context, rtol: float = 0.05,
                 atol: float = 0.0078, h_init: float = 0.05, safety: float = 0.9,
                 max_steps: int = 100_000) -> Tensor:
    r"""Adaptive DPM-Solver-12 in log-SNR (Lu et al. 2022, §4.2, in data-prediction form):
    with x̃ = x/s, λ = −log σ̃ and D = x̂0, one trial step of size h from λ uses

    .. math:: \tilde x^{(1)} = e^{-h}\tilde x + (1-e^{-h})D(\tilde x,\lambda),\qquad
              \tilde x^{(2)} = e^{-h}\tilde x + (1-e^{-h})D(u,\lambda+\tfrac h2),

    u the first-order step to λ + h/2 (2 NFE). x̃⁽¹⁾ (DDIM, order 1) and x̃⁽²⁾ (DPM-Solver-2,
    order 2) form an embedded pair: the step is accepted where
    RMS((x̃⁽²⁾ − x̃⁽¹⁾) / (atol + rtol·max(|x̃⁽¹⁾|, |x̃⁽²⁾|))) ≤ 1, keeping x̃⁽²⁾, and
    h ← h·clip(safety·err^{−1/2}, 0.2, 5). Step control is per sample (samples do not depend on
    their batch); only ts[0] and ts[-1] are used. rtol/atol apply to x̃ = x/s."""
    sde, dt = model.sde, x.dtype
    denoise = logsnr_denoiser(model, ts, ctx, dt)

    def step(lr: Tensor, xr: Tensor, hr: Tensor, rows: Tensor) -> Trial:
        e1, e2 = bcast(torch.exp(-hr), xr).to(dt), bcast(torch.exp(-hr / 2), xr).to(dt)
        d_s = denoise(xr, lr, rows)
        x1 = e1 * xr + (1 - e1) * d_s
        u = e2 * xr + (1 - e2) * d_s
        x2 = e1 * xr + (1 - e1) * denoise(u, lr + hr / 2, rows)
        err = rms((x2 - x1) / (atol + rtol * torch.maximum(x1.abs(), x2.abs())))
        return Trial(x2, err.to(torch.float64))

    control = StepController(order=2, safety=safety, max_factor=5.0, hold_after_reject=False)
    xt = adaptive_loop(step, logsnr_state(sde, x, ts, h_init), control, ctx,
                       name="dpm_adaptive", max_steps=max_steps, observe=logsnr_observe(sde, ts))
    return sde.s(ts[-1]) * xt


@register_solver("dpm_adaptive", kind="ode", order=2, default_steps=None,
                 description="adaptive DPM-Solver-12 in log-SNR (embedded 1st/2nd-order pair, "
                             "rtol/atol)")
def sample_dpm_adaptive(model, x, ts, ctx: Context, **opts):
    return dpm_adaptive(model, x, ts, ctx, **opts)

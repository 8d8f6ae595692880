r"""Critically-damped Langevin diffusion (CLD; Dockhorn, Vahdat & Kreis, ICLR 2022).

The data x are coupled to a velocity v of the same shape; noise enters v only:

.. math::
    \begin{pmatrix}dx\\ dv\end{pmatrix} = \beta(t)\begin{pmatrix}M^{-1}v\\ -x - \Gamma M^{-1} v
    \end{pmatrix}dt + \begin{pmatrix}0\\ \sqrt{2\Gamma\beta(t)}\end{pmatrix}dW,
    \qquad \Gamma^2 = 4M \ \text{(critical damping)},

i.e. :math:`du = \beta A u\,dt + G\,dW` per dimension with :math:`A = \begin{pmatrix}0 & M^{-1}\\
-1 & -\Gamma M^{-1}\end{pmatrix}`. Its equilibrium (the prior) is N(0, I) × N(0, M I); v starts
at v₀ ~ N(0, γM I).

**Closed-form kernel.** With :math:`\mathcal B(t) = \int_0^t\beta` and :math:`r = \Gamma/(2M) =
M^{-1/2}`, critical damping makes :math:`N = A + rI` nilpotent (N² = 0), so

.. math:: e^{\mathcal B A} = e^{-r\mathcal B}\begin{pmatrix}1 + r\mathcal B & r^2\mathcal B\\
          -\mathcal B & 1 - r\mathcal B\end{pmatrix},

and the covariance :math:`\Sigma(\mathcal B) = e^{\mathcal BA}\Sigma_0e^{\mathcal BA^\top} + 2\Gamma
\int_0^{\mathcal B} e^{-2rs}c(s)c(s)^\top ds`, :math:`c(s) = (r^2 s,\ 1 - rs)`, with the integrals
:math:`I_k = \int_0^{\mathcal B}s^k e^{-2rs}ds = k!\,P(k+1, 2r\mathcal B)/(2r)^{k+1}` (P the
regularised lower incomplete gamma function, accurate for small arguments). Given x₀ (v₀
marginalised, Σ₀ = diag(0, γM)) the kernel is :math:`u_t \sim \mathcal N\big((a x_0, b x_0),\
\Sigma_t \otimes I\big)`, :math:`(a, b) = e^{-r\mathcal B}(1 + r\mathcal B,\ -\mathcal B)`.

**Hybrid score matching** uses its Cholesky factor :math:`L_t` (u_t = mean + L_t ε):
:math:`\nabla_v\log p(u_t\mid x_0) = -\ell_t\,\varepsilon_v` with :math:`\ell_t = 1/L_{t,22}`.
For t > 0, ℓ_t still grows like (3/(2Γ𝓑))^{1/2} as t → 0 (x_t − a x₀ ≈ r²𝓑 v₀ reveals v₀), only
t = 0 itself gives 1/√(γM); plain DSM's ℓ'_t from (x₀, v₀) grows like (2/(Γ𝓑))^{1/2}, so
ℓ'_t/ℓ_t → 2/√3 and the variance HSM saves at small t is bounded (by 16/9, measured in tests).

All coefficients are computed in float64 and returned in the dtype of ``t``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..sde import bcast, check_times

__all__ = ["CLD", "split_state", "join_state"]


def split_state(u: Tensor) -> tuple[Tensor, Tensor]:
    """(x, v) of a CLD state u: the first and second half of dimension 1 (channels/features)."""
    if u.ndim < 2 or u.shape[1] % 2:
        raise ValueError(f"a CLD state has an even size along dim 1 (x then v), got shape "
                         f"{tuple(u.shape)}")
    return u.chunk(2, dim=1)


def join_state(x: Tensor, v: Tensor) -> Tensor:
    """The CLD state u = (x, v), concatenated along dim 1."""
    return torch.cat([x, v], dim=1)


def as_float64(t) -> Tensor:
    """``t`` as a float64 tensor on its device (the CLD coefficients are computed in float64)."""
    return torch.as_tensor(t).to(torch.float64)


class CLD:
    r"""The CLD forward process (module docstring) on [t_min, T].

    Args:
        beta: β(0); with ``beta_max`` β(t) = beta + (beta_max − beta)·t/T, else constant
            (the paper's β = 4).
        M: the mass; Γ = 2√M (critical damping). The paper's M = 0.25 (Γ = 1).
        gamma: the initial velocity variance is γM (paper: 0.04).
        T: the end of the forward process; t_min: where sampling stops.
    """

    name = "cld"
    default_schedule = "quadratic"
    schedules = ("uniform", "quadratic")

    def __init__(self, beta: float = 4.0, beta_max: float | None = None, M: float = 0.25,
                 gamma: float = 0.04, T: float = 1.0, t_min: float = 1e-3):
        if not (beta > 0 and (beta_max is None or beta_max > 0)):
            raise ValueError(f"beta (and beta_max) must be positive, got {beta}, {beta_max}")
        if not M > 0 or not gamma >= 0:
            raise ValueError(f"need M > 0 and gamma ≥ 0, got M={M}, gamma={gamma}")
        if not 0.0 <= t_min < T:
            raise ValueError(f"need 0 <= t_min < T, got t_min={t_min}, T={T}")
        self.beta0 = float(beta)
        self.beta1 = float(beta if beta_max is None else beta_max)
        self.M, self.gamma, self.T, self.t_min = float(M), float(gamma), float(T), float(t_min)
        self.Gamma = 2.0 * math.sqrt(self.M)
        self.r = 1.0 / math.sqrt(self.M)

    # --- time change ---------------------------------------------------------------------------
    def beta(self, t) -> Tensor:
        """β(t)."""
        t = torch.as_tensor(t)
        return self.beta0 + (self.beta1 - self.beta0) * t / self.T

    def B(self, t) -> Tensor:
        """𝓑(t) = ∫₀ᵗ β(s) ds."""
        t = torch.as_tensor(t)
        return self.beta0 * t + 0.5 * (self.beta1 - self.beta0) * t**2 / self.T

    # --- the kernel --------------------------------------------------------------------------
    def propagator(self, dB) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Entries (e11, e12, e21, e22) of exp(𝓑A) for a time-change increment 𝓑."""
        b = as_float64(dB)
        e = torch.exp(-self.r * b)
        out = (e * (1 + self.r * b), e * self.r**2 * b, -e * b, e * (1 - self.r * b))
        return tuple(o.to(torch.as_tensor(dB).dtype) for o in out)

    def noise_cov(self, dB) -> tuple[Tensor, Tensor, Tensor]:
        """(Σxx, Σxv, Σvv) that the noise adds over a time-change increment 𝓑 from Σ₀ = 0."""
        b, r = as_float64(dB), self.r
        x = 2 * r * b

        def I(k):
            return math.factorial(k) * torch.special.gammainc(torch.full_like(x, k + 1.0), x) \
                / (2 * r) ** (k + 1)
        i0, i1, i2 = I(0), I(1), I(2)
        c = 2 * self.Gamma
        out = (c * r**4 * i2, c * r**2 * (i1 - r * i2), c * (i0 - 2 * r * i1 + r**2 * i2))
        return tuple(o.to(torch.as_tensor(dB).dtype) for o in out)

    def cov(self, t) -> tuple[Tensor, Tensor, Tensor]:
        """(Σxx, Σxv, Σvv) of u_t given x₀ (v₀ ~ N(0, γM) marginalised), per dimension."""
        b = self.B(as_float64(t))
        _, e12, _, e22 = self.propagator(b)
        nxx, nxv, nvv = self.noise_cov(b)
        v0 = self.gamma * self.M
        out = (nxx + v0 * e12**2, nxv + v0 * e12 * e22, nvv + v0 * e22**2)
        return tuple(o.to(torch.as_tensor(t).dtype) for o in out)

    def data_cov(self, t, var) -> tuple[Tensor, Tensor, Tensor]:
        """(Pxx, Pxv, Pvv) of u_t for data of variance ``var`` per dimension (zero mean):
        P_t = Σ_t + var·(a, b)(a, b)ᵀ; ``var`` broadcasts against ``t`` (a scalar σ_d², or the
        eigenvalues of a mixture component's covariance)."""
        a, b = self.mean_coeffs(t)
        sxx, sxv, svv = self.cov(t)
        return a * a * var + sxx, a * b * var + sxv, b * b * var + svv

    def mean_coeffs(self, t) -> tuple[Tensor, Tensor]:
        """(a, b): E[x_t | x₀] = a x₀, E[v_t | x₀] = b x₀."""
        e11, _, e21, _ = self.propagator(self.B(as_float64(t)))
        return e11.to(torch.as_tensor(t).dtype), e21.to(torch.as_tensor(t).dtype)

    @staticmethod
    def cholesky(sxx: Tensor, sxv: Tensor, svv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(L11, L21, L22) of the 2×2 covariance [[Σxx, Σxv], [Σxv, Σvv]] (L21 = 0 where
        Σxx = 0)."""
        l11 = sxx.clamp_min(0).sqrt()
        l21 = torch.where(l11 > 0, sxv / torch.where(l11 > 0, l11, torch.ones_like(l11)),
                          torch.zeros_like(sxv))
        return l11, l21, (svv - l21**2).clamp_min(0).sqrt()

    def chol(self, t) -> tuple[Tensor, Tensor, Tensor]:
        """Cholesky factor (L11, L21, L22) of Σ_t (computed in float64)."""
        out = self.cholesky(*self.cov(as_float64(t)))
        return tuple(o.to(torch.as_tensor(t).dtype) for o in out)

    def ell(self, t) -> Tensor:
        """ℓ_t = 1/L22: ∇_v log p(u_t | x₀) = −ℓ_t ε_v (hybrid score matching)."""
        return (1.0 / self.chol(as_float64(t))[2]).to(torch.as_tensor(t).dtype)

    def perturb(self, x0: Tensor, t: Tensor, eps_x: Tensor, eps_v: Tensor) -> Tensor:
        """u_t = (a x₀ + L11 ε_x, b x₀ + L21 ε_x + L22 ε_v) for per-sample times t (B,)."""
        a, b = (bcast(c, x0) for c in self.mean_coeffs(t))
        l11, l21, l22 = (bcast(c, x0) for c in self.chol(t))
        return join_state(a * x0 + l11 * eps_x, b * x0 + l21 * eps_x + l22 * eps_v)

    # --- dynamics ----------------------------------------------------------------------------
    def drift(self, u: Tensor, t: Tensor) -> Tensor:
        """Forward drift β(t) A u."""
        x, v = split_state(u)
        beta = bcast(self.beta(t), x)
        return join_state(beta * v / self.M, beta * (-x - self.Gamma * v / self.M))

    def pf_ode_drift(self, u: Tensor, t: Tensor, score_v: Tensor) -> Tensor:
        """PF-ODE du/dt = βAu − ½GGᵀ∇log p_t = βAu − (0, Γβ ∇_v log p_t)."""
        f = self.drift(u, t)
        fx, fv = split_state(f)
        return join_state(fx, fv - bcast(self.Gamma * self.beta(t), fv) * score_v)

    def g2(self, t) -> Tensor:
        """The velocity's squared diffusion 2Γβ(t)."""
        return 2 * self.Gamma * self.beta(torch.as_tensor(t))

    # --- prior and times ---------------------------------------------------------------------
    def prior_sample(self, shape, *, generator: torch.Generator | None = None,
                     dtype=torch.float32, device=None) -> Tensor:
        """u_T ~ N(0, I) × N(0, M I); ``shape`` is the data's (B, C, …): u has 2C channels."""
        z = torch.randn((2, *shape), generator=generator, dtype=dtype, device=device)
        return join_state(z[0], math.sqrt(self.M) * z[1])

    def prior_log_prob(self, u: Tensor) -> Tensor:
        """log N(x; 0, I) + log N(v; 0, M I), summed over all but the batch dimension."""
        x, v = split_state(u)
        d = x[0].numel()
        sq = x.reshape(len(x), -1).pow(2).sum(1) + v.reshape(len(v), -1).pow(2).sum(1) / self.M
        return -0.5 * sq - d * (math.log(2 * math.pi) + 0.5 * math.log(self.M))

    def velocity_log_prob(self, v0: Tensor) -> Tensor:
        """log N(v₀; 0, γM I) of the initial velocity, summed per sample."""
        var = self.gamma * self.M
        d = v0[0].numel()
        return -0.5 * v0.reshape(len(v0), -1).pow(2).sum(1) / var \
            - 0.5 * d * math.log(2 * math.pi * var)

    def check_t(self, t: Tensor, what: str = "t") -> None:
        """Raise ValueError for times outside [0, T]: the kernel is defined down to t = 0 (the
        likelihood starts there); sampling stops at t_min."""
        check_times(t, 0.0, self.T, what)

    def config(self) -> dict:
        return dict(name=self.name, beta=self.beta0, beta_max=None if self.beta1 == self.beta0
                    else self.beta1, M=self.M, gamma=self.gamma, T=self.T, t_min=self.t_min)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"CLD({args})"

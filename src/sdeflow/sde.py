r"""Forward SDEs of score-based diffusion (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations"; Karras et al. 2022, "Elucidating the Design Space").

Every SDE here has an affine drift, so it is fully described by two scalar functions of time:

.. math::
    dx = f(t)\,x\,dt + g(t)\,dw, \qquad
    p_{0t}(x_t \mid x_0) = \mathcal N\big(s(t)\,x_0,\ \sigma(t)^2 I\big),

with :math:`f(t) = \tfrac{d}{dt}\log s(t)` and :math:`g(t)^2 = \tfrac{d}{dt}\sigma(t)^2 - 2f(t)\sigma(t)^2`.
Here :math:`s(t)` is the *marginal scale* and :math:`\sigma(t)` the *marginal std*. We also use the
log-SNR :math:`\lambda(t) = \log(s/\sigma)` and the EDM noise level :math:`\tilde\sigma = \sigma/s =
e^{-\lambda}`. Each class gives ``T`` (where sampling starts) and ``t_min`` (where it stops).

All functions take ``t`` as a tensor and return tensors of its dtype and device, so float64 in
gives float64 out.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["check_times", "SDE", "VESDE", "VPSDE", "SubVPSDE", "EDMSDE", "list_sdes", "get_sde", "bcast"]


def bcast(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient of shape () or (B,) so it broadcasts against ``x`` (B, ...)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    if c.ndim == 0:
        return c
    return c.reshape(c.shape[0], *([1] * (x.ndim - 1)))


def check_times(t: Tensor, t_min: float, T: float, what: str = "t") -> None:
    """Raise ValueError if any time is non-finite or outside [t_min, T] (float tolerance 1e-6·T)."""
    t = torch.as_tensor(t)
    tol = 1e-6 * max(1.0, T)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains non-finite values")
    if (t < t_min - tol).any() or (t > T + tol).any():
        raise ValueError(f"{what} must lie in [t_min, T] = [{t_min:g}, {T:g}]; "
                         f"got range [{t.min().item():g}, {t.max().item():g}]")


class SDE:
    r"""Base class: a linear forward SDE :math:`dx = f(t)x\,dt + g(t)\,dw` on :math:`[t_{\min}, T]`.

    Subclasses define :meth:`s`, :meth:`sigma`, :meth:`f` and :meth:`g2`; everything else
    (log-SNR, its inverse, transitions, priors) is derived here.
    """

    name: str = "sde"
    default_schedule: str = "uniform"

    def __init__(self, T: float, t_min: float):
        if not (0.0 <= t_min < T):
            raise ValueError(f"need 0 <= t_min < T, got t_min={t_min}, T={T}")
        self.T = float(T)
        self.t_min = float(t_min)

    # --- the four defining coefficients -------------------------------------------------------
    def s(self, t: Tensor) -> Tensor:
        """Marginal scale s(t): E[x_t | x_0] = s(t) x_0."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Marginal std σ(t): Cov[x_t | x_0] = σ(t)² I."""
        raise NotImplementedError

    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient f(t) = d log s / dt, so that the drift is f(x, t) = f(t) x."""
        raise NotImplementedError

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion g(t)² = dσ²/dt − 2 f(t) σ(t)²."""
        raise NotImplementedError

    # --- derived quantities ---------------------------------------------------------------------
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift f(x, t) = f(t) x."""
        return bcast(self.f(t), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t)."""
        return self.g2(t).sqrt()

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t) = log(s(t) / σ(t)), strictly decreasing in t."""
        return self.s(t).log() - self.sigma(t).log()

    def noise_level(self, t: Tensor) -> Tensor:
        """EDM noise level σ̃(t) = σ(t)/s(t) = exp(−λ(t))."""
        return self.sigma(t) / self.s(t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of λ(t). Generic version: bisection on the monotone λ (subclasses override
        with a closed form where one exists)."""
        lam = torch.as_tensor(lam)
        return self._bisect(lambda t: -self.log_snr(t), -lam)

    def t_from_noise_level(self, nu: Tensor) -> Tensor:
        """Inverse of the noise level σ̃(t) = σ/s."""
        return self.t_from_log_snr(-torch.as_tensor(nu).log())

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of the marginal std σ(t) (generic: bisection)."""
        return self._bisect(self.sigma, torch.as_tensor(sigma))

    def _bisect(self, fn: Callable[[Tensor], Tensor], target: Tensor) -> Tensor:
        """Solve fn(t) = target on [t_min, T] for an increasing fn, elementwise."""
        dtype = target.dtype if target.is_floating_point() else torch.get_default_dtype()
        lo = torch.full_like(target, self.t_min, dtype=dtype)
        hi = torch.full_like(target, self.T, dtype=dtype)
        for _ in range(200 if dtype == torch.float64 else 100):
            mid = 0.5 * (lo + hi)
            below = fn(mid) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def marginal(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample of p_0t(x_t | x_0): x_t = s(t) x_0 + σ(t) ε."""
        return bcast(self.s(t), x0) * x0 + bcast(self.sigma(t), x0) * noise

    def transition(self, t_from: Tensor, t_to: Tensor) -> tuple[Tensor, Tensor]:
        r"""Exact forward transition between two times t_from < t_to of the marginal family:

        .. math:: x_{t'} = a\,x_t + \sqrt{v}\,z,\quad a = s(t')/s(t),\quad v = \sigma(t')^2 - a^2\sigma(t)^2.

        This is the discretisation that the ancestral and reverse-diffusion predictors invert
        (DDPM's β_i = 1 − a² for VP; σ_i² − σ_{i−1}² for VE).
        """
        a = self.s(t_to) / self.s(t_from)
        v = self.sigma(t_to) ** 2 - (a * self.sigma(t_from)) ** 2
        return a, v.clamp_min(0.0)

    def prior_std(self, dtype=torch.float64, device=None) -> Tensor:
        """Std of the prior N(0, σ(T)² I) that approximates p_T (exact as s(T)²·Var[x_0] → 0)."""
        return self.sigma(torch.tensor(self.T, dtype=dtype, device=device))

    def prior_sample(self, shape, *, generator: torch.Generator | None = None,
                     dtype=torch.float32, device=None) -> Tensor:
        """Draw x_T ~ N(0, σ(T)² I)."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_std(dtype, device) * z

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, σ(T)² I), summed over all but the batch dimension."""
        std = self.prior_std(z.dtype, z.device)
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
        return -0.5 * sq / std**2 - d * (std.log() + 0.5 * math.log(2 * math.pi))

    def check_t(self, t: Tensor, what: str = "t") -> None:
        """Raise ValueError if any time lies outside [t_min, T] (with a small float tolerance)."""
        check_times(t, self.t_min, self.T, what)

    def config(self) -> dict:
        """JSON-serialisable constructor arguments, with the registry name under 'name'."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class VESDE(SDE):
    r"""Variance-exploding SDE (SMLD / NCSN):

    .. math:: \sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t,\quad s(t) = 1,\quad
              f = 0,\quad g(t)^2 = 2\sigma(t)^2\log(\sigma_{\max}/\sigma_{\min}).

    As in score_sde, σ(0) = σ_min: the data at t = 0 already carry σ_min of noise.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0,
                 t_min: float = 1e-5):
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        super().__init__(T, t_min)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._logr = math.log(self.sigma_max / self.sigma_min)

    def s(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return self.sigma_min * torch.exp(t * self._logr)

    def f(self, t):
        return torch.zeros_like(t)

    def g2(self, t):
        return 2 * self._logr * self.sigma(t) ** 2

    def t_from_sigma(self, sigma):
        return torch.log(torch.as_tensor(sigma) / self.sigma_min) / self._logr

    def t_from_log_snr(self, lam):
        return self.t_from_sigma(torch.exp(-torch.as_tensor(lam)))

    def config(self):
        return dict(name=self.name, sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                    T=self.T, t_min=self.t_min)


class VPSDE(SDE):
    r"""Variance-preserving SDE (DDPM in continuous time):

    .. math:: dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw,\quad
              s(t) = e^{-B(t)/2},\quad \sigma(t) = \sqrt{1-e^{-B(t)}},\quad B(t) = \int_0^t\beta.

    ``schedule="linear"``: β(t) = β_min + t(β_max − β_min) (Ho et al. 2020 with N → ∞).
    ``schedule="cosine"``: s(t)² = ᾱ(t) = cos²(φ(t))/cos²(φ(0)), φ(t) = (t + c)/(1 + c)·π/2,
    c = ``cosine_s`` (Nichol & Dhariwal 2021); T defaults to 0.9946 there (as DPM-Solver) since
    ᾱ(1) = 0.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float | None = None,
                 t_min: float = 1e-3, schedule: str = "linear", cosine_s: float = 0.008):
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"unknown VP schedule {schedule!r}; choices: ['cosine', 'linear']")
        if schedule == "linear" and not (0 < beta_min <= beta_max):
            raise ValueError(f"need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        if T is None:
            T = 1.0 if schedule == "linear" else 0.9946
        if schedule == "cosine" and T >= 1.0:
            raise ValueError("cosine VP needs T < 1 (ᾱ(1) = 0)")
        super().__init__(T, t_min)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.schedule, self.cosine_s = schedule, float(cosine_s)
        self._phi0 = self.cosine_s / (1 + self.cosine_s) * math.pi / 2

    # B(t) = ∫_0^t β, β(t) and the inverse of B
    def B(self, t: Tensor) -> Tensor:
        if self.schedule == "linear":
            return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        phi = (t + self.cosine_s) / (1 + self.cosine_s) * math.pi / 2
        return -2 * torch.log(torch.cos(phi)) + 2 * math.log(math.cos(self._phi0))

    def beta(self, t: Tensor) -> Tensor:
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        phi = (t + self.cosine_s) / (1 + self.cosine_s) * math.pi / 2
        return math.pi / (1 + self.cosine_s) * torch.tan(phi)

    def B_inv(self, B: Tensor) -> Tensor:
        if self.schedule == "linear":
            d = self.beta_max - self.beta_min
            if d == 0:
                return B / self.beta_min
            # numerically stable root of ½ d t² + β_min t − B = 0
            return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * B))
        cos_phi = torch.exp(-(B - 2 * math.log(math.cos(self._phi0))) / 2)
        return torch.arccos(cos_phi) * 2 * (1 + self.cosine_s) / math.pi - self.cosine_s

    def s(self, t):
        return torch.exp(-0.5 * self.B(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.B(t)))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def t_from_log_snr(self, lam):
        # e^{-2λ} = σ²/s² = e^{B} − 1  ⇒  B = log(1 + e^{−2λ})
        return self.B_inv(torch.nn.functional.softplus(-2 * torch.as_tensor(lam)))

    def t_from_sigma(self, sigma):
        return self.B_inv(-torch.log1p(-torch.as_tensor(sigma) ** 2))

    def config(self):
        return dict(name=self.name, beta_min=self.beta_min, beta_max=self.beta_max, T=self.T,
                    t_min=self.t_min, schedule=self.schedule, cosine_s=self.cosine_s)


class SubVPSDE(VPSDE):
    r"""Sub-VP SDE (Song et al. 2021, eq. 29): the VP drift with a smaller diffusion,

    .. math:: g(t)^2 = \beta(t)\,(1 - e^{-2B(t)}),\quad s(t) = e^{-B/2},\quad \sigma(t) = 1 - e^{-B(t)},

    whose marginal variance is bounded by the VP one.
    """

    name = "subvp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0,
                 t_min: float = 1e-3):
        super().__init__(beta_min, beta_max, T=T, t_min=t_min, schedule="linear")

    def sigma(self, t):
        return -torch.expm1(-self.B(t))

    def g2(self, t):
        return self.beta(t) * -torch.expm1(-2 * self.B(t))

    def t_from_sigma(self, sigma):
        return self.B_inv(-torch.log1p(-torch.as_tensor(sigma)))

    def t_from_log_snr(self, lam):
        # s/σ = v/(1 − v²) = e^λ with v = e^{−B/2}  ⇒  v = 2/(e^{−λ} + √(e^{−2λ} + 4)), the root
        # in (0, 1); B = −2 log v. Closed form, so grids tuned in λ stay differentiable.
        lam = torch.as_tensor(lam)
        e = torch.exp(-lam)
        return self.B_inv(2 * torch.log((e + torch.sqrt(e * e + 4)) / 2))

    def config(self):
        return dict(name=self.name, beta_min=self.beta_min, beta_max=self.beta_max, T=self.T,
                    t_min=self.t_min)


class EDMSDE(SDE):
    r"""The EDM SDE (Karras et al. 2022): x_t = x_0 + t·z, i.e. s(t) = 1, σ(t) = t,

    .. math:: dx = \sqrt{2t}\,dw,\qquad t \in [\sigma_{\min}, \sigma_{\max}].

    The PF-ODE is dx/dt = (x − D(x; t))/t, the ODE of EDM's Heun sampler.
    """

    name = "edm"
    default_schedule = "karras"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        super().__init__(T=sigma_max, t_min=sigma_min)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def s(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return t.clone()

    def f(self, t):
        return torch.zeros_like(t)

    def g2(self, t):
        return 2 * t

    def t_from_sigma(self, sigma):
        return torch.as_tensor(sigma).clone()

    def t_from_log_snr(self, lam):
        return torch.exp(-torch.as_tensor(lam))

    def config(self):
        return dict(name=self.name, sigma_min=self.sigma_min, sigma_max=self.sigma_max)


_SDES: dict[str, type[SDE]] = {c.name: c for c in (VESDE, VPSDE, SubVPSDE, EDMSDE)}


def list_sdes() -> list[str]:
    """Names accepted by :func:`get_sde`."""
    return sorted(_SDES)


def get_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by registry name ('ve', 'vp', 'subvp', 'edm') and constructor arguments."""
    if name not in _SDES:
        raise ValueError(f"unknown SDE {name!r}; choices: {list_sdes()}")
    return _SDES[name](**kwargs)


def sde_from_config(cfg: dict) -> SDE:
    """Inverse of :meth:`SDE.config`."""
    cfg = dict(cfg)
    return get_sde(cfg.pop("name"), **cfg)

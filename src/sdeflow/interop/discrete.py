r"""Discrete-time VP models (DDPM and its descendants) as :class:`~sdeflow.Denoiser`\ s on the
continuous VP SDE — for any callable ``fn(x, timestep, **cond)``, no diffusers needed.

A discrete model was trained at N noise levels ᾱ_n, n = 0 … N−1, i.e. log-SNRs
λ_n = ½ log(ᾱ_n / (1 − ᾱ_n)) (Ho et al. 2020). For a continuous time t we call the network at
the *fractional* timestep n(t) with λ_{n(t)} = λ(t): piecewise-linear interpolation of n against
λ between the trained levels (sinusoidal timestep embeddings accept non-integer n). At every
trained level this is exactly the original model. The VP SDE is fitted to the schedule:
β(t) linear from Nβ_0 to Nβ_{N−1} (or the cosine VP for a cosine schedule), with [t_min, T]
chosen so that λ(T) = λ_{N−1} and λ(t_min) = λ_0 — no time asks for a level outside the
trained range. Since s² + σ² = 1 as ᾱ + (1 − ᾱ) = 1, inputs need no rescaling.

The shape of β(t) only decides where uniform-in-t grids put their points; the model itself is
the same under any fitted SDE, because times are matched by log-SNR.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..denoiser import Denoiser
from ..sde import VPSDE

__all__ = ["DiscreteVPNet", "log_snr_levels", "fit_vp_sde", "from_discrete", "from_discrete_eps",
           "from_discrete_v", "from_discrete_x0", "discrete_times"]


def log_snr_levels(alphas_cumprod) -> Tensor:
    """λ_n = ½ log(ᾱ_n/(1 − ᾱ_n)) (float64), checked strictly decreasing and finite."""
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().reshape(-1)
    if len(a) < 2 or not ((a > 0) & (a < 1)).all():
        bad = "0 (zero terminal SNR: λ = −∞ has no time on the VP SDE; drop that level)" \
            if len(a) and a[-1] == 0 else "outside (0, 1)"
        raise ValueError(f"alphas_cumprod must hold ≥ 2 values in (0, 1); got a value {bad}")
    lam = 0.5 * (a.log() - torch.log1p(-a))
    if not (lam[1:] < lam[:-1]).all():
        raise ValueError("alphas_cumprod must be strictly decreasing")
    return lam


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """np.interp for increasing ``xp`` (clamped at the ends)."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)


def fit_vp_sde(alphas_cumprod, schedule: str = "linear") -> VPSDE:
    """The VP SDE for a discrete schedule: β(t) from Nβ_0 to Nβ_{N−1} (``"linear"``, also used
    for scaled-linear betas) or the cosine VP (``"cosine"``), on [t_min, T] with λ(t_min) = λ_0
    and λ(T) = λ_{N−1}."""
    lam = log_snr_levels(alphas_cumprod)
    a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
    if schedule == "cosine":
        kw = dict(schedule="cosine")
    elif schedule == "linear":
        betas = 1 - a / torch.cat([a.new_ones(1), a[:-1]])
        b0, b1 = float(betas[0]) * len(a), float(betas[-1]) * len(a)
        kw = dict(beta_min=b0, beta_max=max(b0, b1))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choices: ['cosine', 'linear']")
    base = VPSDE(**kw)
    T, t_min = float(base.t_from_log_snr(lam[-1])), float(base.t_from_log_snr(lam[0]))
    return VPSDE(T=T, t_min=t_min, **kw)


class DiscreteVPNet(nn.Module):
    """``net(x, t, **cond) = fn(x, n(t), **cond)``: a discrete-timestep model called at the
    fractional timestep n(t) with λ_n = λ(t) (module docstring). ``fn`` receives n in x's dtype."""

    def __init__(self, fn: Callable[..., Tensor], alphas_cumprod, sde: VPSDE):
        super().__init__()
        self.fn, self.sde = fn, sde
        lam = log_snr_levels(alphas_cumprod)
        # increasing λ for the interpolation; plain float64 tensors, not buffers, so that
        # .half()/.double() of the model never round the levels
        self.lam = lam.flip(0)
        self.steps = torch.arange(len(lam) - 1, -1, -1, dtype=torch.float64)

    def timestep(self, t: Tensor) -> Tensor:
        """Fractional discrete timestep n(t) with λ_n = λ(t) (float64)."""
        lam = self.sde.log_snr(torch.as_tensor(t).to(torch.float64))
        return _interp(lam, self.lam.to(lam.device), self.steps.to(lam.device))

    def time(self, n) -> Tensor:
        """The continuous time t(n) of (fractional) discrete timesteps n: the inverse of
        :meth:`timestep` (float64)."""
        n = torch.as_tensor(n, dtype=torch.float64).cpu()
        return self.sde.t_from_log_snr(_interp(n, self.steps.flip(0), self.lam.flip(0)))

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        return self.fn(x, self.timestep(t).to(x.dtype), **cond)


def from_discrete(fn: Callable[..., Tensor], alphas_cumprod, prediction: str = "eps", *,
                  schedule: str = "linear") -> Denoiser:
    """A discrete-time model ``fn(x, timestep, **cond)`` predicting ``prediction`` (``"eps"``,
    ``"v"`` or ``"x0"``) at the levels ``alphas_cumprod`` (ᾱ_n, length N) as a Denoiser on the
    VP SDE fitted by :func:`fit_vp_sde`. Conditioning keywords of ``sample(cond=...)`` reach
    ``fn`` unchanged."""
    if prediction not in ("eps", "v", "x0"):
        raise ValueError(f"a discrete VP model predicts 'eps', 'v' or 'x0', got {prediction!r}")
    sde = fit_vp_sde(alphas_cumprod, schedule)
    return Denoiser(DiscreteVPNet(fn, alphas_cumprod, sde), sde, prediction=prediction)


def from_discrete_eps(fn: Callable[..., Tensor], alphas_cumprod, **kw) -> Denoiser:
    """:func:`from_discrete` for an ε-prediction model (DDPM, Stable Diffusion 1.x)."""
    return from_discrete(fn, alphas_cumprod, "eps", **kw)


def from_discrete_v(fn: Callable[..., Tensor], alphas_cumprod, **kw) -> Denoiser:
    """:func:`from_discrete` for a v-prediction model (Salimans & Ho 2022; SD 2.x 768)."""
    return from_discrete(fn, alphas_cumprod, "v", **kw)


def from_discrete_x0(fn: Callable[..., Tensor], alphas_cumprod, **kw) -> Denoiser:
    """:func:`from_discrete` for a model predicting the clean sample x̂0."""
    return from_discrete(fn, alphas_cumprod, "x0", **kw)


def discrete_times(model, timesteps) -> Tensor:
    """Continuous times (float64) of a discrete model's timesteps, e.g. a diffusers scheduler's
    ``timesteps``, for ``sdeflow.sample(model, timesteps=...)``. ``model`` is a Denoiser made
    here (also inside a latent model or a guidance wrapper)."""
    net = model.net
    if not isinstance(net, DiscreteVPNet):
        raise TypeError("discrete_times needs a model made by from_discrete*/from_diffusers/"
                        "from_stable_diffusion/from_dit")
    return net.time(timesteps)

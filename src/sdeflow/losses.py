r"""Training objectives in continuous time (Song et al. 2021 eq. 7; Ho et al. 2020; Karras et al.
2022; Song et al. 2019 for sliced score matching).

Denoising score matching with weighting λ(t),

.. math:: \mathcal L = E_{t, x_0, \varepsilon}\big[\lambda(t)\,
          \|s_\theta(x_t, t) - \nabla\log p_{0t}(x_t\mid x_0)\|^2\big],\quad
          \nabla\log p_{0t} = -\varepsilon/\sigma,

is written here in x₀-space. With :math:`s_\theta = (s\hat x_0 - x_t)/\sigma^2` every classic
objective is :math:`E[w(t)\,\|\hat x_0 - x_0\|^2]` for some w:

========== ============================== ===============================================
name       objective                       w(t)
========== ============================== ===============================================
dsm        λ = σ² (score_sde default)      s²/σ²  (= SNR)
eps        ‖ε̂ − ε‖² (DDPM "simple")        s²/σ²  (same minimiser and scale as ``dsm``)
v          ‖v̂ − v‖²                        (s² + σ²)/σ²
likelihood λ = g² (Song et al. 2021b)      g² s²/σ⁴
edm        EDM, σ̃ ~ logN(P_mean, P_std)    (σ̃² + σ_d²)/(σ̃ σ_d)²,  σ̃ = σ/s
========== ============================== ===============================================

Times are uniform on [t_min, T] except for ``edm``. Errors are averaged over dimensions, so the
scale of a loss does not depend on the data size. ``ssm`` is sliced score matching (variance
reduced) on perturbed data, weighted by σ² — it needs no p_{0t} and suits low-dimensional data.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser
from .sde import SDE

__all__ = ["dsm_loss", "ssm_loss", "loss_fn", "list_losses", "sample_t", "draw_noise", "WEIGHTINGS",
           "weighted_x0_error"]


def _snr(sde: SDE, t: Tensor) -> Tensor:
    return (sde.s(t) / sde.sigma(t)) ** 2


WEIGHTINGS: dict[str, Callable[..., Tensor]] = {
    "dsm": lambda sde, t, **_: _snr(sde, t),
    "eps": lambda sde, t, **_: _snr(sde, t),
    "v": lambda sde, t, **_: _snr(sde, t) + 1,
    "likelihood": lambda sde, t, **_: sde.g2(t) * _snr(sde, t) / sde.sigma(t) ** 2,
    "edm": lambda sde, t, sigma_data=0.5, **_: (
        (sde.noise_level(t) ** 2 + sigma_data**2) / (sde.noise_level(t) * sigma_data) ** 2),
}


def sample_t(sde: SDE, n: int, *, lognormal: bool = False, p_mean: float = -1.2,
             p_std: float = 1.2, generator=None, dtype=torch.float32, device=None) -> Tensor:
    """Training times: uniform on [t_min, T], or EDM's log-normal noise level mapped to t."""
    if lognormal:
        nu = torch.exp(p_mean + p_std * torch.randn(n, generator=generator, dtype=torch.float64))
        lo, hi = (sde.noise_level(torch.tensor(v, dtype=torch.float64)) for v in (sde.t_min, sde.T))
        return sde.t_from_noise_level(nu.clamp(lo, hi)).to(dtype=dtype, device=device)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (sde.t_min + (sde.T - sde.t_min) * u).to(dtype=dtype, device=device)


def draw_noise(sde: SDE, x0: Tensor, loss: str = "dsm", generator=None) -> tuple[Tensor, Tensor]:
    """(t, ε) for a batch like ``x0``: the randomness of one training step of ``loss``, drawn on
    the CPU generator so that runs are reproducible on any device (and a distributed run can
    draw the global batch's noise on every rank and keep its own slice)."""
    t = sample_t(sde, x0.shape[0], lognormal=loss == "edm", generator=generator, dtype=x0.dtype)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return t.to(x0.device), eps.to(x0.device)


def _perturb(model: Denoiser, x0: Tensor, generator, loss: str, noise):
    t, eps = draw_noise(model.sde, x0, loss, generator) if noise is None else noise
    if t.shape != (x0.shape[0],) or eps.shape != x0.shape:
        raise ValueError("noise must be (t of shape (B,), eps shaped like x0)")
    return t, model.sde.marginal(x0, t, eps)


def dsm_loss(model: Denoiser, x0: Tensor, weighting: str = "dsm", *, generator=None,
             cond: dict | None = None, noise: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Denoising score matching with a named weighting (see the module table); scalar mean.
    ``noise`` = (t, ε) fixes the randomness (default: drawn by :func:`draw_noise`)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choices: {sorted(WEIGHTINGS)}")
    t, xt = _perturb(model, x0, generator, weighting, noise)
    return weighted_x0_error(model, weighting, t, model.x0(xt, t, **(cond or {})), x0)


def weighted_x0_error(model: Denoiser, weighting: str, t: Tensor, x0_hat: Tensor,
                      x0: Tensor) -> Tensor:
    """E[w(t)‖x̂0 − x0‖²] (errors averaged over dimensions) for a named weighting: the loss of
    :func:`dsm_loss` given the model's x̂0, for objectives that need more of the same pass."""
    w = WEIGHTINGS[weighting](model.sde, t, sigma_data=model.sigma_data)
    per_sample = (x0_hat - x0).pow(2).reshape(x0.shape[0], -1).mean(1)
    return (w * per_sample).mean()


def ssm_loss(model: Denoiser, x0: Tensor, *, n_projections: int = 1, generator=None,
             cond: dict | None = None, noise: tuple[Tensor, Tensor] | None = None) -> Tensor:
    r"""Sliced score matching (SSM-VR) on x_t ~ p_t, weighted by σ(t)²:

    .. math:: \sigma^2\,E_v\big[\tfrac12\|s_\theta(x_t)\|^2 + v^\top\nabla_x(v^\top s_\theta(x_t))\big],
              \quad v \sim \mathcal N(0, I).
    """
    t, xt = _perturb(model, x0, generator, "ssm", noise)
    xt = xt.detach().requires_grad_(True)
    score = model.score(xt, t, **(cond or {}))
    total = 0.5 * score.pow(2).reshape(x0.shape[0], -1).sum(1)
    for _ in range(n_projections):
        v = torch.randn(xt.shape, generator=generator, dtype=xt.dtype).to(xt.device)
        (jv,) = torch.autograd.grad((score * v).sum(), xt, create_graph=True)
        total = total + (jv * v).reshape(x0.shape[0], -1).sum(1) / n_projections
    d = x0[0].numel()
    return (model.sde.sigma(t) ** 2 * total / d).mean()


def list_losses() -> list[str]:
    """Names accepted by :func:`loss_fn`."""
    return sorted([*WEIGHTINGS, "ssm"])


def loss_fn(name: str) -> Callable[..., Tensor]:
    """``fn(model, x0, generator=None, cond=None, noise=None) -> scalar`` for a named objective."""
    if name == "ssm":
        return ssm_loss
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown loss {name!r}; choices: {list_losses()}")
    return lambda model, x0, **kw: dsm_loss(model, x0, name, **kw)



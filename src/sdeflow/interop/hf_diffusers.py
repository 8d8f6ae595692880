r"""A diffusers ``UNet2DModel`` (DDPM/DDIM-style, trained on N discrete VP steps) as a
:class:`~sdeflow.Denoiser` on the continuous VP SDE.

The discrete model was trained at noise levels ᾱ_n, n = 0 … N−1, i.e. log-SNRs
λ_n = ½ log(ᾱ_n / (1 − ᾱ_n)). For a continuous time t we evaluate the network at the
*fractional* timestep n(t) with λ_{n(t)} = λ(t) (piecewise-linear interpolation of n against λ
between the trained levels; the sinusoidal timestep embedding accepts non-integer n). At every
trained level this is exactly the original model; the SDE's [t_min, T] is chosen so that
λ(T) = λ_{N−1} and λ(t_min) = λ_0, so no time asks for a level outside the trained range.
The VP SDE has s² + σ² = 1 like ᾱ + (1 − ᾱ), so inputs need no rescaling.

``prediction_type`` ``"epsilon"``, ``"v_prediction"`` and ``"sample"`` map to sdeflow's
``"eps"``, ``"v"`` and ``"x0"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..denoiser import Denoiser
from ..sde import VPSDE

__all__ = ["DiscreteVPNet", "from_diffusers"]

_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """np.interp for increasing ``xp`` (clamped at the ends)."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)


class DiscreteVPNet(nn.Module):
    """``net(x, t, class_labels=None)`` calling a discrete-timestep model at n(λ(t))."""

    def __init__(self, unet: nn.Module, alphas_cumprod: Tensor, sde: VPSDE):
        super().__init__()
        self.unet, self.sde = unet, sde
        a = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        lam = 0.5 * (a.log() - torch.log1p(-a))
        if not (lam[1:] < lam[:-1]).all():
            raise ValueError("alphas_cumprod must be strictly decreasing")
        # increasing λ for interpolation: reverse the order
        self.register_buffer("lam", lam.flip(0), persistent=False)
        self.register_buffer("steps", torch.arange(len(a) - 1, -1, -1, dtype=torch.float64),
                             persistent=False)

    def timestep(self, t: Tensor) -> Tensor:
        """Fractional discrete timestep n(t) with λ_n = λ(t)."""
        lam = self.sde.log_snr(t.to(torch.float64))
        return _interp(lam, self.lam.to(lam.device), self.steps.to(lam.device))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        n = self.timestep(t).to(x.dtype)
        kw = {} if class_labels is None else dict(class_labels=class_labels)
        p = next(self.unet.parameters())
        return self.unet(x.to(p.dtype), n.to(p.dtype), **kw).sample.to(x.dtype)


def _scheduler_config(path: Path | None, scheduler) -> dict:
    if scheduler is not None:
        if isinstance(scheduler, (str, Path)):
            p = Path(scheduler)
            return json.loads((p / "scheduler_config.json" if p.is_dir() else p).read_text())
        return dict(getattr(scheduler, "config", scheduler))
    if path is not None:
        for cand in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
            if cand.is_file():
                return json.loads(cand.read_text())
    return {}  # DDPM defaults: linear betas 1e-4 … 0.02, N = 1000, epsilon


def from_diffusers(model, scheduler=None, *, subfolder: str | None = None,
                   device=None, dtype=None) -> Denoiser:
    """A diffusers ``UNet2DModel`` as a Denoiser on the VP SDE (see module docstring).

    Args:
        model: a ``UNet2DModel`` instance, a local directory (a saved UNet, or a pipeline
            folder with ``unet/`` and ``scheduler/``) or a Hub id (needs network).
        scheduler: a diffusers scheduler, its config dict, or a path to its config; by default
            the pipeline's ``scheduler/`` or the DDPM defaults.
    """
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError as e:
        raise ImportError("from_diffusers needs the diffusers package (pip install diffusers)") from e
    path = None
    if not isinstance(model, nn.Module):
        path = Path(model)
        if subfolder is None and (path / "unet").is_dir():
            subfolder = "unet"
        model = UNet2DModel.from_pretrained(str(model), subfolder=subfolder)
    cfg = _scheduler_config(path, scheduler)
    ddpm = DDPMScheduler.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    pred = ddpm.config.prediction_type
    if pred not in _PREDICTIONS:
        raise ValueError(f"unsupported prediction_type {pred!r}; choices: {list(_PREDICTIONS)}")
    a = ddpm.alphas_cumprod.to(torch.float64)
    n_steps = len(a)
    if ddpm.config.beta_schedule == "squaredcos_cap_v2":
        base = VPSDE(schedule="cosine")
    else:
        base = VPSDE(beta_min=float(ddpm.betas[0]) * n_steps, beta_max=float(ddpm.betas[-1]) * n_steps)
    lam = 0.5 * (a.log() - torch.log1p(-a))
    T = float(base.t_from_log_snr(lam[-1]))
    t_min = float(base.t_from_log_snr(lam[0]))
    kw = dict(schedule="cosine") if base.schedule == "cosine" else dict(
        beta_min=base.beta_min, beta_max=base.beta_max)
    sde = VPSDE(T=T, t_min=t_min, **kw)
    model = model.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return Denoiser(DiscreteVPNet(model, a, sde), sde, prediction=_PREDICTIONS[pred])

r"""score_sde models (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations") as converted for diffusers: a ``UNet2DModel`` (NCSN++ blocks, Fourier
time embedding) with a ``ScoreSdeVeScheduler`` (or ``ScoreSdeVpScheduler``) config.

* **VE** (``ScoreSdeVeScheduler``: σ_min, σ_max, sampling_eps): σ(t) = σ_min(σ_max/σ_min)^t,
  exactly our :class:`~sdeflow.sde.VESDE`. ``ScoreSdeVePipeline`` calls the network with σ(t)
  as its timestep and uses the output as the score ∇ log p_t(x) (the converted network divides
  by σ itself), so the Denoiser is ``net(x, t) = unet(x, σ(t))`` with ``prediction="score"``,
  on [sampling_eps, 1].
* **VP** (``ScoreSdeVpScheduler``: β_min, β_max, N, sampling_eps): our linear
  :class:`~sdeflow.sde.VPSDE`; score_sde's continuous VP networks take the label 999·t
  (``labels = t * 999`` in score_sde, whatever N) and predict ε (the scheduler's score is
  −output/σ(t)).
* **sub-VP**: diffusers has no scheduler for it; a config (dict or saved ``scheduler/``) of the
  VP kind with ``"sde": "subvp"`` (score_sde's ``config.training.sde = "subvpsde"``) gives our
  :class:`~sdeflow.sde.SubVPSDE`: score_sde's sub-VP networks take the same label 999·t and
  predict ε for the sub-VP marginal's σ(t) (its score is −output/σ(t)).
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ..denoiser import Denoiser
from ..sde import VESDE, VPSDE, SubVPSDE
from .hf_diffusers import DiffusersCall, load_component, sample_shape, scheduler_config

__all__ = ["from_score_sde", "ScoreSdeNet"]

_VE_DEFAULTS = dict(sigma_min=0.01, sigma_max=1348.0, sampling_eps=1e-5)
_VP_DEFAULTS = dict(beta_min=0.1, beta_max=20.0, sampling_eps=1e-3)


class ScoreSdeNet(nn.Module):
    """``net(x, t) = fn(x, label(t))`` with label σ(t) (VE) or 999·t (VP)."""

    def __init__(self, fn, sde, label_scale: float | None = None):
        super().__init__()
        self.fn, self.sde, self.label_scale = fn, sde, label_scale

    def label(self, t: Tensor) -> Tensor:
        """The network's conditioning input at time t."""
        return self.sde.sigma(t) if self.label_scale is None else self.label_scale * t

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        return self.fn(x, self.label(t), **cond)


def _sde_of(cfg: dict):
    """(SDE, label scale, prediction) of a score_sde scheduler config."""
    kind = cfg.get("_class_name", "ScoreSdeVeScheduler")
    if kind == "ScoreSdeVeScheduler":
        c = {**_VE_DEFAULTS, **{k: cfg[k] for k in _VE_DEFAULTS if k in cfg}}
        return VESDE(c["sigma_min"], c["sigma_max"], T=1.0, t_min=c["sampling_eps"]), None, "score"
    if kind == "ScoreSdeVpScheduler":
        c = {**_VP_DEFAULTS, **{k: cfg[k] for k in _VP_DEFAULTS if k in cfg}}
        kind = str(cfg.get("sde", "vp")).lower()
        if kind not in ("vp", "vpsde", "subvp", "subvpsde"):
            raise ValueError(f"score_sde config names sde={cfg['sde']!r}; VP-kind models are "
                             "'vp' or 'subvp' (a VE model has a ScoreSdeVeScheduler config)")
        make = SubVPSDE if kind.startswith("subvp") else VPSDE
        return make(c["beta_min"], c["beta_max"], T=1.0, t_min=c["sampling_eps"]), 999.0, "eps"
    raise ValueError(f"from_score_sde needs a ScoreSdeVeScheduler or ScoreSdeVpScheduler config, "
                     f"got {kind!r} (a DDPM-family scheduler: use from_diffusers)")


def from_score_sde(model, scheduler=None, *, sample_size=None, device=None,
                   dtype=None) -> Denoiser:
    """A score_sde ``UNet2DModel`` as a Denoiser on our VE (or VP) SDE (module docstring).

    Args:
        model: a ``UNet2DModel``, or a local folder: a saved ``ScoreSdeVePipeline`` (``unet/``,
            ``scheduler/``, e.g. a downloaded ``google/ncsnpp-celebahq-256``) or a saved UNet.
        scheduler: the ``ScoreSdeVeScheduler``/``ScoreSdeVpScheduler`` (instance, config dict or
            path); by default the folder's ``scheduler/``, else score_sde's VE defaults.
        sample_size: run the network at this spatial size (default: its config's).
    """
    path = None
    if not isinstance(model, nn.Module):
        path = Path(model)
        model = load_component(path, "unet" if (path / "unet").is_dir() else None,
                               ("UNet2DModel",))
    cfg = scheduler_config(path, scheduler)
    if "_class_name" not in cfg:  # a bare dict: VP-kind if it names β's or an SDE
        vp = "beta_min" in cfg or "sde" in cfg
        cfg = {"_class_name": "ScoreSdeVpScheduler" if vp else "ScoreSdeVeScheduler", **cfg}
    sde, label_scale, prediction = _sde_of(cfg)
    module = model.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        module = module.to(device=device, dtype=dtype)
    call = DiffusersCall(module, sample_shape(module, sample_size))
    return Denoiser(ScoreSdeNet(call, sde, label_scale), sde, prediction=prediction)

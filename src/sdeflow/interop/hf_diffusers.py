r"""diffusers models trained on N discrete VP steps — ``UNet2DModel`` (DDPM/DDIM-style) here,
and the pieces the other diffusers loaders share: reading a saved folder, the scheduler's
discrete schedule, and :class:`DiffusersCall`, which calls a diffusers network like a plain
function. Times are mapped by :mod:`.discrete` (equal log-SNR, exact at every trained level).

``prediction_type`` ``"epsilon"``, ``"v_prediction"`` and ``"sample"`` map to sdeflow's
``"eps"``, ``"v"`` and ``"x0"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..denoiser import Denoiser
from .discrete import DiscreteVPNet, from_discrete

__all__ = ["DiscreteVPNet", "DiffusersCall", "from_diffusers", "discrete_schedule",
           "scheduler_config", "folder_class", "require_diffusers", "sample_shape", "wrap_discrete",
           "load_component"]

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def require_diffusers():
    """The diffusers module, or an ImportError saying how to get it."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("loading diffusers models needs the diffusers package "
                          "(pip install diffusers)") from e
    return diffusers


def folder_class(folder: Path, sub: str | None = None) -> str | None:
    """The ``_class_name`` of a saved model (``folder/sub/config.json``), or None (also for a
    config that is not diffusers' — unreadable files are left to the loader that owns them)."""
    p = Path(folder) / sub if sub else Path(folder)
    for name in ("config.json", "scheduler_config.json"):
        if (p / name).is_file():
            try:
                cfg = json.loads((p / name).read_text())
            except (ValueError, UnicodeDecodeError):
                return None
            return cfg.get("_class_name") if isinstance(cfg, dict) else None
    return None


def scheduler_config(path: Path | None, scheduler) -> dict:
    """A scheduler's config: from ``scheduler`` (an instance, a dict or a path), else from the
    pipeline folder ``path`` (``scheduler/`` or a ``scheduler_config.json`` beside the model),
    else {} (DDPM's defaults: linear betas 1e-4 … 0.02, N = 1000, epsilon)."""
    if scheduler is not None:
        if isinstance(scheduler, (str, Path)):
            p = Path(scheduler)
            return json.loads((p / "scheduler_config.json" if p.is_dir() else p).read_text())
        if isinstance(scheduler, dict):
            return dict(scheduler)
        return {"_class_name": type(scheduler).__name__, **scheduler.config}
    if path is not None:
        for cand in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
            if cand.is_file():
                return json.loads(cand.read_text())
    return {}


def discrete_schedule(cfg: dict) -> tuple[Tensor, str, str]:
    """(ᾱ_n as float64, sdeflow prediction, VP schedule name) of a discrete scheduler config
    (any of diffusers' DDPM-family schedulers: its betas, N and ``prediction_type``)."""
    diffusers = require_diffusers()
    if str(cfg.get("_class_name", "")).startswith("ScoreSde"):
        raise ValueError(f"a {cfg['_class_name']} config is a continuous-time score_sde model: "
                         "load it with sdeflow.interop.from_score_sde")
    ddpm = diffusers.DDPMScheduler.from_config({k: v for k, v in cfg.items()
                                                if not k.startswith("_")})
    pred = ddpm.config.prediction_type
    if pred not in PREDICTIONS:
        raise ValueError(f"unsupported prediction_type {pred!r} in the scheduler config; "
                         f"choices: {list(PREDICTIONS)}")
    schedule = "cosine" if ddpm.config.beta_schedule == "squaredcos_cap_v2" else "linear"
    return ddpm.alphas_cumprod.to(torch.float64), PREDICTIONS[pred], schedule


def sample_shape(module: nn.Module, sample_size=None) -> tuple:
    """(C, H, W) a diffusers network takes: its config's ``in_channels`` and ``sample_size``
    (or the given ``sample_size``, an int or (H, W))."""
    size = module.config.sample_size if sample_size is None else sample_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    return (int(module.config.in_channels), *size)


class DiffusersCall(nn.Module):
    """``fn(x, timestep, **cond)``: a diffusers network's ``.sample`` output, computed in the
    network's dtype and returned in x's, cut to its first ``channels`` channels (the mean of a
    learned-variance output). Inputs not of shape (B, *sample_shape) are refused by name.
    ``defaults``: conditions used when a call gives none under that key (a tensor of batch 1 is
    expanded to the call's batch), e.g. the empty prompt's embedding or DiT's null label."""

    def __init__(self, module: nn.Module, sample_shape, channels: int | None = None):
        super().__init__()
        self.module, self.channels = module, channels
        self.sample_shape = tuple(int(n) for n in sample_shape)
        self.defaults: dict = {}

    def forward(self, x: Tensor, timestep: Tensor, **cond) -> Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"this {type(self.module).__name__} was built for samples of shape (B, "
                f"{', '.join(map(str, self.sample_shape))}) (its config's in_channels and "
                f"sample_size), got {tuple(x.shape)}: sample with that shape, or load it with "
                "sample_size=... to run a fully convolutional network at another size")
        p = next(self.module.parameters())
        for k, v in self.defaults.items():
            cond.setdefault(k, v.to(x.device).expand(x.shape[0], *v.shape[1:]))
        cond = {k: v.to(p.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                for k, v in cond.items()}
        out = self.module(x.to(p.dtype), timestep.to(p.dtype), **cond).sample
        return (out if self.channels is None else out[:, :self.channels]).to(x.dtype)


def wrap_discrete(module: nn.Module, cfg: dict, sample_size=None, *, device=None,
                  dtype=None) -> Denoiser:
    """A loaded diffusers network (``in_channels``, ``out_channels``, ``sample_size`` in its
    config) on the discrete schedule of the scheduler config ``cfg``, as a Denoiser on the VP
    SDE. An output of twice the input channels is a learned variance: its first half is kept."""
    c = module.config
    cin, cout = int(c.in_channels), int(c.out_channels or c.in_channels)
    if cout not in (cin, 2 * cin):
        raise ValueError(f"{type(module).__name__} has out_channels={cout} for in_channels={cin}:"
                         " expected the same (a prediction) or twice (learned variance)")
    a, prediction, schedule = discrete_schedule(cfg)
    module = module.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        module = module.to(device=device, dtype=dtype)
    call = DiffusersCall(module, sample_shape(module, sample_size),
                         channels=cin if cout == 2 * cin else None)
    return from_discrete(call, a, prediction, schedule=schedule)


def load_component(folder, sub: str | None, expected: tuple[str, ...]):
    """``diffusers.<class>.from_pretrained(folder, subfolder=sub)`` after checking the saved
    class is one of ``expected`` (a ValueError naming the loader to use otherwise)."""
    diffusers = require_diffusers()
    found = folder_class(folder, sub)
    where = Path(folder) / sub if sub else Path(folder)
    if found is not None and found not in expected:
        raise ValueError(f"{where}: a {found}, not a {' or '.join(expected)}; "
                         "sdeflow.interop.load_diffusers picks the loader for a folder")
    cls = getattr(diffusers, found or expected[0])
    return cls.from_pretrained(str(folder), subfolder=sub)


def from_diffusers(model, scheduler=None, *, subfolder: str | None = None, sample_size=None,
                   device=None, dtype=None) -> Denoiser:
    """A diffusers ``UNet2DModel`` on a discrete VP schedule as a Denoiser on the VP SDE.

    Args:
        model: a ``UNet2DModel`` instance, or a local directory: a saved UNet, or a pipeline
            folder with ``unet/`` and ``scheduler/`` (e.g. a downloaded ``google/ddpm-cifar10-32``).
        scheduler: a diffusers scheduler, its config dict, or a path to its config; by default
            the pipeline's ``scheduler/`` or the DDPM defaults.
        sample_size: run the network at this spatial size (default: its config's).
    Class labels, if the UNet takes them, are ``cond={"class_labels": y}``.
    """
    path = None
    if not isinstance(model, nn.Module):
        path = Path(model)
        if subfolder is None and (path / "unet").is_dir():
            subfolder = "unet"
        model = load_component(path, subfolder, ("UNet2DModel",))
    return wrap_discrete(model, scheduler_config(path, scheduler), sample_size, device=device,
                         dtype=dtype)

r"""Training an autoencoder (:mod:`sdeflow.autoencoders`) as a program of the engine: the
latent space of latent diffusion (Rombach et al. 2022, §3). Each step draws images and the
reparameterisation noise ε of the global batch; the loss is the autoencoder's own
(``ae.loss``: −ELBO·β variants for a VAE, reconstruction + 10⁻⁶·KL for LDM's ``kl``, L1/L2 for a
plain ``ae``), logged with its reconstruction term, KL (nats per data dimension) and PSNR.

With ``sample_every`` the preview is a grid of held-out images (top rows) above their
reconstructions (bottom rows), and the held-out PSNR and SSIM are appended to
``<run>/heldout.csv``. A latent-diffusion run copies this run's config and rebuilds the network
with :func:`build_from_config`.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..autoencoders import build_autoencoder, list_autoencoders
from ..autoencoders.models import FACTORS, perceptual_available
from ..data import SPLIT_DATA, list_vector_data
from ..metrics.image import psnr, ssim
from .config import EngineConfig
from .engine import Trainer, train
from .objective import Objective, register_objective

__all__ = ["AutoencoderConfig", "AutoencoderTraining", "build_from_config", "network_kwargs",
           "reconstruction_metrics", "train_autoencoder", "load_autoencoder"]

# network arguments set by the config's own fields or by the data, not by autoencoder_kwargs
_RESERVED = ("in_channels", "shape", "downsample", "latent_channels", "latent_dim")
# embedded data sets with a held-out ``test`` split


@dataclass
class AutoencoderConfig(EngineConfig):
    """An autoencoder run: ``autoencoder`` (``"ae"``, ``"vae"``, ``"kl"``, ``"linear"``) built
    with ``autoencoder_kwargs`` (widths, likelihood, β / kl_weight, recon, …), the down-sampling
    factor f (None: 4, or 1 for ``linear``) and the latent channels c (``linear``: its latent
    dimension). ``model``/``model_kwargs`` are not used (the network is ``autoencoder``)."""

    KIND = "autoencoder"

    data: str = "digits"
    model: str = "autoencoder"
    autoencoder: str = "kl"
    autoencoder_kwargs: dict = field(default_factory=dict)
    downsample: int | None = None
    latent_channels: int = 4
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    ema_decay: float = 0.999
    sample_num: int = 32

    def checks(self) -> list[tuple[bool, str]]:
        kw, name = self.autoencoder_kwargs, self.autoencoder
        given = [k for k in _RESERVED if isinstance(kw, dict) and k in kw]
        return super().checks() + [
            (name in list_autoencoders(), f"autoencoder {name!r} not in {list_autoencoders()}"),
            (isinstance(kw, dict), "autoencoder_kwargs must be a JSON object"),
            (not given, f"autoencoder_kwargs: set {given} with the config's fields / flags "
                        "(--downsample, --latent-channels) or let the data set them"),
            (self.model == "autoencoder" and not self.model_kwargs,
             "model/model_kwargs are not used here: set the network with autoencoder and "
             "autoencoder_kwargs"),
            (self.downsample is None or self.downsample in FACTORS and
             (name != "linear" or self.downsample == 1),
             f"downsample must be one of {list(FACTORS)} (1 for 'linear'), got {self.downsample}"),
            (self.latent_channels > 0, "latent_channels must be positive"),
            (self.sample_num > 0, "sample_num must be positive"),
            (name == "linear" or self.data not in list_vector_data(),
             f"data {self.data!r} is vector data: the convolutional autoencoders take images; "
             "use autoencoder 'linear' for vectors"),
            (not isinstance(kw, dict) or not kw.get("perceptual_weight") or perceptual_available(),
             "perceptual_weight > 0 needs the lpips package (pip install lpips) and its weights")]

    def resolved(self, data):
        cfg = super().resolved(data)
        cfg.model_kwargs = {}  # the engine's defaults for `model` do not describe this network
        if cfg.autoencoder != "linear" and len(cfg.shape) != 3:
            raise ValueError(f"autoencoder {cfg.autoencoder!r} takes images (C, H, W); data "
                             f"{cfg.data!r} has shape {cfg.shape}: use autoencoder 'linear'")
        return cfg


def network_kwargs(cfg: AutoencoderConfig) -> dict:
    """The arguments of ``build_autoencoder(cfg.autoencoder, …)`` of a started run's config."""
    kw = dict(cfg.autoencoder_kwargs)
    if cfg.autoencoder == "linear":
        return {**kw, "shape": list(cfg.shape), "latent_dim": cfg.latent_channels}
    kw.update(in_channels=cfg.shape[0], latent_channels=cfg.latent_channels)
    if cfg.downsample is not None:
        kw["downsample"] = cfg.downsample
    return kw


def build_from_config(config: dict) -> nn.Module:
    """The (untrained) autoencoder a saved config (a checkpoint's ``config.json``, as a dict)
    describes; its weights come from that checkpoint."""
    cfg = AutoencoderConfig.from_dict(config)
    if cfg.shape is None:
        raise ValueError("the autoencoder config has no data shape (not the config of a "
                         "started run)")
    return build_autoencoder(cfg.autoencoder, **network_kwargs(cfg))


class _LossView(nn.Module):
    """``forward(x, noise) = ae.loss(x, noise=noise)``: what DDP and compile wrap."""

    def __init__(self, ae: nn.Module):
        super().__init__()
        self.ae = ae

    def forward(self, x: Tensor, noise: Tensor | None = None):
        return self.ae.loss(x, noise=noise)


@torch.no_grad()
def reconstruction_metrics(ae: nn.Module, x: Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of D(E(x)) against images ``x`` in [−1, 1], and the mean L1."""
    xr = ae.decode(ae.encode(x)).clamp(-1, 1)
    return dict(psnr=float(psnr(xr, x).mean()), ssim=float(ssim(xr, x).mean()),
                l1=float((xr - x).abs().mean()))


@register_objective
class AutoencoderTraining(Objective):
    """The autoencoder's own loss on a batch of images (see the module docstring)."""

    Config = AutoencoderConfig
    how_to_train = "train one with `sdeflow train-autoencoder`"
    exports = "autoencoder"
    metrics = ("recon", "kl", "psnr")

    @classmethod
    def build(cls, cfg: AutoencoderConfig) -> dict[str, nn.Module]:
        return {"model": build_autoencoder(cfg.autoencoder, **network_kwargs(cfg))}

    def __init__(self, cfg: AutoencoderConfig, data):
        super().__init__(cfg, data)
        ae = self.build(cfg)["model"]
        self.noise_shape = ae.latent_shape(tuple(cfg.shape)) if ae.variational else None

    def view(self, name, net, wrap):
        return wrap(_LossView(net))

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        x, _ = self.data.draw(n, generator)
        out = dict(x=x)
        if self.noise_shape is not None:
            out["eps"] = torch.randn((n, *self.noise_shape), generator=generator)
        return out

    def loss(self, nets, batch, generator):
        return nets["model"](batch["x"], batch.get("eps"))

    def held_out(self) -> Tensor:
        """The first ``sample_num`` images of the data's ``test`` split when it has one (the
        embedded sets), else ``sample_num`` fixed draws of the training data."""
        from ..data import get_data
        n, cfg = self.cfg.sample_num, self.cfg
        if cfg.data in SPLIT_DATA:
            return get_data(cfg.data, **{**cfg.data_kwargs, "split": "test"}).x[:n]
        return self.data.draw(n, torch.Generator().manual_seed(cfg.seed))[0]

    def preview(self, model, path: Path, step: int, device) -> Path | None:
        """Held-out inputs (top rows) over their reconstructions (bottom rows); the held-out
        PSNR/SSIM go to ``<run>/heldout.csv``."""
        if len(self.cfg.shape) != 3:
            return None
        from ..plotting import save_image_grid
        x = self.held_out().to(device)
        xr = model.decode(model.encode(x)).clamp(-1, 1)
        _append_metrics(path.parent.parent / "heldout.csv", step, reconstruction_metrics(model, x))
        nrow = max(1, math.ceil(math.sqrt(2 * len(x))))
        pad = (-len(x)) % nrow  # inputs fill whole rows, so reconstructions start a new row
        blank = torch.ones((pad, *x.shape[1:]), device=device)
        return save_image_grid(torch.cat([x, blank, xr, blank]), path, nrow=nrow)


def _append_metrics(path: Path, step: int, values: dict[str, float]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["step", *values])
        w.writerow([step, *(f"{v:.6g}" for v in values.values())])


def train_autoencoder(cfg: AutoencoderConfig, run_dir, *, resume: bool = False,
                      progress: bool = True, device=None) -> nn.Module:
    """Train (or, with ``resume``, continue) an autoencoder run; returns the EMA autoencoder."""
    st: Trainer = train(cfg, run_dir, resume=resume, progress=progress, device=device)
    return st.ema_model.eval()


def load_autoencoder(path, device=None) -> nn.Module:
    """The EMA autoencoder of a run directory or checkpoint folder."""
    from ..loading import load
    return load(path, kind="autoencoder", device=device)[0]

"""Score matching as a training program: every loss of :mod:`sdeflow.losses` (DSM with its
weightings, EDM, ε, v, likelihood weighting, sliced score matching) on toy data or images,
optionally class-conditional (with label dropout for classifier-free guidance), conditioned on
the captions of captioned data (``text_cond``: a text encoder and cross-attention, captions
dropped to the empty prompt with probability ``p_uncond``) or conditioned on an image
(SR3/Palette tasks, :mod:`sdeflow.tasks`).

With ``learn_sigma`` (VP SDE) the network has twice the outputs and also learns the reverse
variance (Nichol & Dhariwal 2021): training draws DDPM's discrete steps t_i of the
``ddpm_steps``-step chain and minimises L_simple + ``vlb_weight``·L_vlb
(:func:`sdeflow.vlb.hybrid_loss`), with a Gaussian decoder for toy data and DDPM's discrete one
on ``vlb_bins`` levels for images (256 for 8-bit images, 17 for the embedded digits)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data import list_vector_data
from ..denoiser import PREDICTIONS, Denoiser
from ..losses import draw_noise, list_losses, loss_fn
from ..models import IMAGE_MODELS, build_model, list_models
from ..samplers.registry import list_solvers
from ..sde import get_sde, list_sdes
from ..tasks import get_task, list_tasks
from ..vlb import ddpm_chain, hybrid_loss
from .config import EngineConfig
from .latent import LatentFields, as_latent_model, build_autoencoder_of
from .objective import Objective, register_objective

__all__ = ["TrainConfig", "ScoreMatching", "build_denoiser"]


@dataclass
class TrainConfig(LatentFields, EngineConfig):
    """A score model's run: data, SDE, parameterisation, loss, network and conditioning."""

    KIND = "score"

    sde: str = "edm"
    sde_kwargs: dict = field(default_factory=dict)
    prediction: str = "x0"
    precondition: str | None = "edm"
    sigma_data: float = 1.0
    loss: str = "edm"
    learn_sigma: bool = False
    vlb_weight: float = 0.001
    ddpm_steps: int = 1000
    vlb_bins: int = 256
    class_cond: bool = False
    p_uncond: float = 0.0
    text_cond: bool = False
    task: str | None = None
    task_kwargs: dict = field(default_factory=dict)
    hflip: bool = False
    sample_solver: str = "heun"
    sample_steps: int = 18
    sample_num: int = 64

    def checks(self) -> list[tuple[bool, str]]:
        image_data = self.data not in list_vector_data()
        return super().checks() + [
            (self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
            (self.prediction in PREDICTIONS, f"prediction {self.prediction!r} not in {list(PREDICTIONS)}"),
            (self.loss in list_losses(), f"loss {self.loss!r} not in {list_losses()}"),
            (self.model in list_models(), f"model {self.model!r} not in {list_models()}"),
            (not (image_data and self.model not in IMAGE_MODELS),
             f"image data {self.data!r} needs an image model ({', '.join(IMAGE_MODELS)})"),
            (not (not image_data and self.model in IMAGE_MODELS),
             f"toy data {self.data!r} needs model 'mlp'"),
            (self.precondition in (None, "edm"), "precondition must be None or 'edm'"),
            (not (self.precondition == "edm" and self.prediction != "x0"),
             "precondition='edm' needs prediction='x0'"),
            (self.sigma_data > 0, "sigma_data must be positive"),
            (0 <= self.p_uncond < 1, "p_uncond must lie in [0, 1)"),
            (not (self.p_uncond > 0 and not (self.class_cond or self.text_cond)),
             "p_uncond needs class_cond or text_cond"),
            (self.task is None or self.task in list_tasks(),
             f"task {self.task!r} not in {list_tasks()}"),
            (self.task is None or image_data, "image-to-image tasks need image data"),
            (not self.hflip or image_data, "hflip needs image data"),
            (self.sample_steps > 0 and self.sample_num > 0,
             "sample_steps and sample_num must be positive"),
            (self.sample_solver in list_solvers(),
             f"sample_solver {self.sample_solver!r} not in {list_solvers()}"),
            *self.variance_checks(), *self.latent_checks()]

    def complete(self) -> None:
        self.complete_latent()

    def load_data(self):
        """The data set, or with ``latent`` its rescaled latents."""
        data = super().load_data()
        return self.load_latent_data(data) if self.latent else data

    def variance_checks(self) -> list[tuple[bool, str]]:
        """A learned variance interpolates DDPM's β_t and β̃_t: VP only, on discrete steps."""
        out_keys = sorted({"out_dim", "out_channels"} & set(self.model_kwargs))
        return [(self.vlb_weight >= 0, "vlb_weight must be ≥ 0"),
                (self.ddpm_steps >= 2, "ddpm_steps must be at least 2"),
                (self.vlb_bins >= 2, "vlb_bins (the image data's levels) must be at least 2"),
                (not self.learn_sigma or self.sde == "vp",
                 f"learn_sigma needs sde 'vp' (DDPM's β_t and β̃_t), not {self.sde!r}"),
                (not self.learn_sigma or self.loss not in ("ssm", "edm"),
                 f"learn_sigma trains on DDPM's discrete steps: use loss 'eps' (L_simple), "
                 f"'dsm', 'v' or 'likelihood', not {self.loss!r}"),
                (not (self.learn_sigma and out_keys),
                 f"learn_sigma sets the network's output size (twice the data's channels): "
                 f"remove {out_keys} from model_kwargs")]

    def resolve_model(self, data, fresh: bool) -> None:
        """The default network of the data's shape (:func:`~sdeflow.models.default_model_kwargs`)
        under the user's arguments for a new run, plus the conditioning inputs the config asks
        for."""
        if self.class_cond and (self.num_classes == 0 or getattr(data, "y", None) is None):
            raise ValueError(f"class_cond needs labelled data; {self.data!r} has none")
        if self.text_cond:  # the network reads the data's captions (sdeflow.data.captions)
            if not hasattr(data, "draw_captioned"):
                raise ValueError(f"text_cond needs captioned data (captioned_digits, "
                                 f"captioned_gmm); {self.data!r} has no captions")
            self.model_kwargs.setdefault("text_vocab", int(data.vocab_size))
            self.model_kwargs.setdefault("text_length", int(data.text_length))
        if self.latent:
            self.latent_scale = float(data.scale)
        self.default_network(fresh)
        if self.model != "mlp":
            if self.class_cond:
                self.model_kwargs.setdefault("num_classes", self.num_classes)
            if self.task is not None:
                self.model_kwargs.setdefault("cond_channels",
                                             self.get_task().cond_channels(self.shape[0]))

    def get_task(self):
        """The image-to-image task (:mod:`sdeflow.tasks`) or None."""
        return None if self.task is None else get_task(self.task, **self.task_kwargs)


def build_denoiser(cfg: TrainConfig) -> Denoiser:
    """The network of a resolved ``cfg`` wrapped as a Denoiser under its SDE (with
    ``learn_sigma``: twice the outputs, the second half the variance interpolation)."""
    sde = get_sde(cfg.sde, **cfg.sde_kwargs)
    kw, learn_sigma = dict(cfg.model_kwargs), getattr(cfg, "learn_sigma", False)  # PD students too
    if learn_sigma:
        key, size = ("out_dim", "dim") if cfg.model == "mlp" else ("out_channels", "in_channels")
        kw[key] = 2 * kw[size]
    net = build_model(cfg.model, **kw)
    return Denoiser(net, sde, prediction=cfg.prediction, precondition=cfg.precondition,
                    sigma_data=cfg.sigma_data, learn_sigma=learn_sigma)


@register_objective
class ScoreMatching(Objective):
    """The loss ``cfg.loss`` of a :class:`~sdeflow.Denoiser` on x_t = s x0 + σ ε."""

    Config = TrainConfig
    how_to_train = "train one with `sdeflow train`"

    def __init__(self, cfg: TrainConfig, data):
        super().__init__(cfg, data)
        self.loss_fn = loss_fn(cfg.loss)
        self.task = cfg.get_task()
        self.sde = get_sde(cfg.sde, **cfg.sde_kwargs)
        self.chain = ddpm_chain(self.sde, cfg.ddpm_steps) if cfg.learn_sigma else None  # float64
        self._chains: dict = {}  # (dtype, device) → the chain there
        self.metrics = ("vlb",) if cfg.learn_sigma else ()

    @classmethod
    def build(cls, cfg: TrainConfig) -> dict[str, nn.Module]:
        nets = {"model": build_denoiser(cfg)}
        if cfg.latent_config is not None:  # held and saved, not trained
            nets["autoencoder"] = build_autoencoder_of(cfg)
        return nets

    def initialize(self, nets) -> None:
        if "autoencoder" in nets:  # the trained autoencoder the data were encoded with
            nets["autoencoder"].load_state_dict(self.data.autoencoder.state_dict())

    @classmethod
    def export(cls, nets, cfg: TrainConfig) -> Denoiser:
        """The Denoiser; a latent run's decodes its samples (a LatentDenoiser)."""
        if "autoencoder" in nets:
            return as_latent_model(nets["model"], nets["autoencoder"], cfg)
        return nets["model"]

    def view(self, name, net: Denoiser, wrap):
        return net.with_net(wrap(net.net), check_finite=False)

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        cfg, g = self.cfg, generator
        if cfg.text_cond:
            x0, y, tokens = self.data.draw_captioned(n, g)
        else:
            x0, y = self.data.draw(n, g)
        if cfg.hflip:
            flip = torch.rand(n, generator=g) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        out = dict(x0=x0)
        if cfg.class_cond:
            if cfg.p_uncond > 0:
                drop = torch.rand(n, generator=g) < cfg.p_uncond
                y = torch.where(drop, torch.full_like(y, cfg.num_classes), y)
            out["class_labels"] = y
        if cfg.text_cond:  # a dropped caption is all padding: the empty prompt
            if cfg.p_uncond > 0:
                tokens = tokens.masked_fill((torch.rand(n, generator=g) < cfg.p_uncond)[:, None], 0)
            out["tokens"] = tokens
        if self.task is not None:
            out["x_cond"] = self.task.condition(x0)
        if cfg.learn_sigma:  # DDPM's discrete steps i ~ U{1, …, N}
            out["step"] = torch.randint(1, cfg.ddpm_steps + 1, (n,), generator=g)
            out["eps"] = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        else:
            out["t"], out["eps"] = draw_noise(self.sde, x0, cfg.loss, g)
        return out

    def loss(self, nets, batch, generator):
        cond = {k: batch[k] for k in ("class_labels", "x_cond", "tokens") if k in batch}
        if self.cfg.learn_sigma:
            return self._hybrid_loss(nets["model"], batch, cond)
        loss = self.loss_fn(nets["model"], batch["x0"], generator=generator, cond=cond,
                            noise=(batch["t"], batch["eps"]))
        return loss, {}

    def _chain_like(self, x: Tensor):
        """The float64 DDPM chain in ``x``'s dtype and on its device (cached)."""
        key = (x.dtype, x.device)
        if key not in self._chains:
            self._chains[key] = self.chain.to(dtype=x.dtype, device=x.device)
        return self._chains[key]

    def _hybrid_loss(self, model: Denoiser, batch, cond):
        x0 = batch["x0"]
        decoder = "gaussian" if self.cfg.data in list_vector_data() else "discrete"
        loss, vlb = hybrid_loss(model, x0, (batch["step"], batch["eps"]), self._chain_like(x0),
                                weighting=self.cfg.loss, vlb_weight=self.cfg.vlb_weight,
                                decoder=decoder, num_bins=self.cfg.vlb_bins, cond=cond)
        return loss, {"vlb": vlb}

    def preview(self, model: Denoiser, path: Path, step: int, device) -> Path:
        """EMA samples with the config's sampler and a fixed seed: a grid (images) or a
        scatter plot (2-D)."""
        from ..plotting import save_samples
        from ..samplers import sample
        cfg, cond, n = self.cfg, {}, self.cfg.sample_num
        if cfg.latent:  # decoded images, not latents
            model = as_latent_model(model, self.data.autoencoder.to(device), cfg)
        if cfg.class_cond:
            cond["class_labels"] = torch.arange(n, device=device) % cfg.num_classes
        if cfg.text_cond:  # fixed captions: the same seed every preview
            fixed = torch.Generator().manual_seed(cfg.seed)
            cond["tokens"] = self.data.draw_captioned(n, fixed)[2].to(device)
        if self.task is not None:  # condition on the first images of the data set
            x0 = self.data.x[:n] if hasattr(self.data, "x") else \
                self.data.draw(n, torch.Generator().manual_seed(cfg.seed))[0]
            cond["x_cond"] = self.task.condition(x0).to(device)
            n = len(x0)
        x = sample(model, shape=(n, *cfg.shape), solver=cfg.sample_solver,
                   steps=cfg.sample_steps, seed=cfg.seed, device=device, cond=cond)
        return save_samples(x, path, f"step {step}")

"""Critically-damped Langevin diffusion as a training program (``sdeflow train --sde cld``):
hybrid (or plain) score matching of a :class:`~sdeflow.cld.CLDModel` on toy data or images.

The network sees the state u = (x, v), twice the data's channels, and returns α (the data's
shape): its config keeps the data-sized arguments, and :func:`build_cld_model` doubles the
input (``dim`` of the MLP, ``in_channels`` of the U-Net/DiT) and sets the output to the data's
size."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..cld import CLD, CLDModel
from ..cld.losses import CLD_LOSSES, CLD_WEIGHTINGS, cld_loss, draw_cld_noise
from ..cld.model import PRECONDITIONS
from ..cld.sampling import CLD_SOLVERS, list_cld_solvers
from ..data import list_vector_data
from ..models import IMAGE_MODELS, build_model, list_models
from .config import EngineConfig
from .objective import Objective, register_objective

__all__ = ["CLDConfig", "CLDScoreMatching", "build_cld_model"]


@dataclass
class CLDConfig(EngineConfig):
    """A CLD score model's run: the process, the loss and its weighting, the network."""

    KIND = "cld"

    cld_kwargs: dict = field(default_factory=dict)
    loss: str = "hsm"
    weighting: str = "eps"
    precondition: str | None = "mixed"
    sigma_data: float = 1.0
    t_eps: float = 1e-5
    class_cond: bool = False
    p_uncond: float = 0.0
    sample_solver: str = "sscs"
    sample_steps: int = 100
    sample_num: int = 64

    def checks(self) -> list[tuple[bool, str]]:
        image_data = self.data not in list_vector_data()
        try:
            cld = self.get_cld()
            bad_cld = ""
        except (TypeError, ValueError) as e:
            cld, bad_cld = None, f"cld_kwargs: {e}"
        out_keys = sorted({"out_dim", "out_channels"} & set(self.model_kwargs))
        return super().checks() + [
            (cld is not None, bad_cld),
            (self.loss in CLD_LOSSES, f"loss {self.loss!r} not in {list(CLD_LOSSES)} for CLD"),
            (self.weighting in CLD_WEIGHTINGS,
             f"weighting {self.weighting!r} not in {list(CLD_WEIGHTINGS)}"),
            (self.precondition in PRECONDITIONS,
             f"precondition must be one of {list(PRECONDITIONS)} for CLD"),
            (self.model in list_models(), f"model {self.model!r} not in {list_models()}"),
            (not (image_data and self.model not in IMAGE_MODELS),
             f"image data {self.data!r} needs an image model ({', '.join(IMAGE_MODELS)})"),
            (not (not image_data and self.model in IMAGE_MODELS),
             f"toy data {self.data!r} needs model 'mlp'"),
            (self.sigma_data > 0, "sigma_data must be positive"),
            (cld is None or 0 < self.t_eps < cld.T, "t_eps must lie in (0, T)"),
            (cld is None or cld.gamma > 0 or self.loss == "dsm",
             "hybrid score matching needs gamma > 0 (a velocity distribution at t = 0)"),
            (self.p_uncond == 0, "guidance of CLD models is not implemented: p_uncond must "
                                 "be 0"),
            (not out_keys, f"the CLD network's output size is the data's: remove "
                           f"{', '.join(out_keys)} from model_kwargs"),
            (not (self.class_cond and self.model == "mlp"),
             "class_cond needs an image model (unet or dit)"),
            (self.sample_solver in CLD_SOLVERS,
             f"sample_solver {self.sample_solver!r} not in {list_cld_solvers()}"),
            (self.sample_steps > 0 and self.sample_num > 0,
             "sample_steps and sample_num must be positive")]

    def get_cld(self) -> CLD:
        return CLD(**self.cld_kwargs)

    def resolve_model(self, data, fresh: bool) -> None:
        if self.class_cond and (self.num_classes == 0 or getattr(data, "y", None) is None):
            raise ValueError(f"class_cond needs labelled data; {self.data!r} has none")
        self.default_network(fresh)
        if self.class_cond:
            self.model_kwargs.setdefault("num_classes", self.num_classes)


def build_cld_model(cfg: CLDConfig) -> CLDModel:
    """The network of a resolved ``cfg`` on the doubled state, wrapped as a CLDModel."""
    kw = dict(cfg.model_kwargs)
    if cfg.model == "mlp":
        kw["out_dim"], kw["dim"] = kw["dim"], 2 * kw["dim"]
    else:
        kw["out_channels"], kw["in_channels"] = kw["in_channels"], 2 * kw["in_channels"]
    return CLDModel(build_model(cfg.model, **kw), cfg.get_cld(), precondition=cfg.precondition,
                    sigma_data=cfg.sigma_data)


@register_objective
class CLDScoreMatching(Objective):
    """HSM/DSM (:mod:`sdeflow.cld.losses`) of a :class:`~sdeflow.cld.CLDModel`."""

    Config = CLDConfig
    how_to_train = "train one with `sdeflow train --sde cld`"
    exports = "cld"

    @classmethod
    def build(cls, cfg: CLDConfig) -> dict[str, nn.Module]:
        return {"model": build_cld_model(cfg)}

    def view(self, name, net: CLDModel, wrap):
        return net.with_net(wrap(net.net), check_finite=False)

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        cfg = self.cfg
        x0, y = self.data.draw(n, generator)
        out = dict(x0=x0, **draw_cld_noise(x0, cfg.t_eps, cfg.get_cld().T, generator))
        if cfg.class_cond:  # no label dropout: p_uncond > 0 is refused (no CLD guidance)
            out["class_labels"] = y
        return out

    def loss(self, nets, batch, generator):
        cond = {"class_labels": batch["class_labels"]} if "class_labels" in batch else {}
        noise = {k: batch[k] for k in ("t", "eps_x", "eps_v", "z0")}
        return cld_loss(nets["model"], batch["x0"], noise, loss=self.cfg.loss,
                        weighting=self.cfg.weighting, cond=cond), {}

    def preview(self, model: CLDModel, path: Path, step: int, device) -> Path:
        """EMA samples with the config's sampler and a fixed seed (grid or scatter plot)."""
        from ..cld import sample_cld
        from ..plotting import save_samples
        cfg, cond = self.cfg, {}
        if cfg.class_cond:
            cond["class_labels"] = torch.arange(cfg.sample_num, device=device) % cfg.num_classes
        x = sample_cld(model, shape=(cfg.sample_num, *cfg.shape), solver=cfg.sample_solver,
                       steps=None if CLD_SOLVERS[cfg.sample_solver].default_steps is None
                       else cfg.sample_steps, seed=cfg.seed, device=device, cond=cond)
        return save_samples(x, path, f"step {step}")

"""``sdeflow sample FOLDER`` on a saved diffusers folder: the model of
:func:`.folders.load_diffusers` and the few config fields the command reads."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..latent import find_latent
from .folders import load_diffusers
from .stable_diffusion import encode_prompts

__all__ = ["DiffusersRun", "load_folder"]


@dataclass
class DiffusersRun:
    """What ``sdeflow sample`` reads of a run's config, for a diffusers folder."""

    shape: list
    class_cond: bool = False
    num_classes: int = 0
    p_uncond: float = 0.0
    data: str = "diffusers"
    data_kwargs: dict = field(default_factory=dict)
    task: str | None = None
    text_cond: bool = False
    KIND: str = "diffusers"


def load_folder(path, kind, device=None):
    """(model, DiffusersRun) of a diffusers folder, for the CLI's ``load_run``. Sampled without
    a condition, a DiT uses its null label (unconditional) and a Stable-Diffusion model the empty
    prompt (which needs ``transformers``: the text encoder's embedding of "")."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if "denoiser" not in kinds:
        raise ValueError(f"{path}: a diffusers folder holds a denoiser, not a {' or '.join(kinds)}")
    model = load_diffusers(path, device=device)
    call = model.net.fn
    run = DiffusersRun(shape=list(call.sample_shape))
    latent = find_latent(model)
    if latent is not None:
        run.shape = list(latent.image_shape)
    classes = getattr(call.module.config, "num_embeds_ada_norm", None)
    if classes is not None:  # DiT: trained with 10 % label dropout (Peebles & Xie 2023)
        run.class_cond, run.num_classes, run.p_uncond = True, int(classes), 0.1
        call.defaults["class_labels"] = torch.tensor([int(classes)])
    elif getattr(call.module.config, "cross_attention_dim", None) is not None:
        try:
            call.defaults["encoder_hidden_states"] = encode_prompts(path, [""], device).float()
        except ImportError as e:
            raise ValueError(f"{path}: sampling a Stable-Diffusion folder from the command line "
                             "encodes the empty prompt with its text encoder, which needs the "
                             "transformers package; from Python, pass cond={'encoder_hidden_"
                             "states': tensor (B, L, D)} to sdeflow.sample") from e
    return model, run

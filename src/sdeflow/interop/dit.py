r"""DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers") as converted for
diffusers: a class-conditional ``DiTTransformer2DModel`` (or the older ``Transformer2DModel``
layout) on a discrete VP schedule, as a :class:`~sdeflow.Denoiser` on the VP SDE.

DiT learns the reverse variance too: its output has twice the input channels, the first half
ε̂ (what every sampler here uses), the second the variance interpolation, which is dropped.
Class labels are ``cond={"class_labels": y}``; the null label of classifier-free guidance is
``num_embeds_ada_norm`` (1000 for ImageNet), so ``ClassifierFreeGuidance.for_labels(model,
g - 1, num_classes)`` is diffusers' ``guidance_scale`` g. A pipeline folder with ``vae/`` loads
as a latent model (:func:`.stable_diffusion.with_vae`).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..denoiser import Denoiser
from .hf_diffusers import load_component, scheduler_config, wrap_discrete
from .stable_diffusion import with_vae

__all__ = ["from_dit", "DIT_CLASSES"]

DIT_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")


def from_dit(model, scheduler=None, *, sample_size=None, device=None, dtype=None) -> Denoiser:
    """A DiT as a Denoiser on the VP SDE (a LatentDenoiser when ``model`` is a pipeline folder
    with ``vae/``, e.g. a downloaded ``facebook/DiT-XL-2-256``).

    Args:
        model: a ``DiTTransformer2DModel`` instance, or a folder: a pipeline (``transformer/``,
            ``scheduler/``, optionally ``vae/``) or a saved transformer.
        scheduler: a diffusers scheduler, its config or a path; default: the folder's
            ``scheduler/``, else DDPM's (linear betas, N = 1000, ε).
        sample_size: the (latent) spatial size to run at (default: the config's).
    """
    path, vae = None, None
    if not isinstance(model, nn.Module):
        path = Path(model)
        sub = "transformer" if (path / "transformer").is_dir() else None
        model = load_component(path, sub, DIT_CLASSES)
        if (path / "vae").is_dir():
            vae = load_component(path, "vae", ("AutoencoderKL",))
    if getattr(model.config, "num_embeds_ada_norm", None) is None:
        raise ValueError(f"this {type(model).__name__} is not class-conditional "
                         "(num_embeds_ada_norm is None): not a DiT")
    den = wrap_discrete(model, scheduler_config(path, scheduler), sample_size, device=device,
                        dtype=dtype)
    if vae is None:
        return den
    if device is not None or dtype is not None:
        vae = vae.to(device=device, dtype=dtype)
    return with_vae(den, vae)

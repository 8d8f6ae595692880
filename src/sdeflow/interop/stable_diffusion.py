r"""Stable-Diffusion-layout latent models (Rombach et al. 2022): a ``UNet2DConditionModel`` on
the latents of an ``AutoencoderKL``, trained on a discrete VP schedule (scaled-linear betas),
as a :class:`~sdeflow.latent.LatentDenoiser`.

The autoencoder's latents z = E(x) (the posterior mean, minus the VAE's ``shift_factor`` if it
has one) are rescaled by its ``scaling_factor`` c: the U-Net works on z̃ = c z, like
diffusers' pipelines. Times are mapped by :mod:`.discrete` (equal log-SNR). The text condition
is ``cond={"encoder_hidden_states": e}`` with e of shape (B, L, D) — the text encoder's last
hidden states, which :func:`encode_prompts` computes when ``transformers`` is installed; without
it, give the embeddings as a tensor. Classifier-free guidance with diffusers' scale g is
``ClassifierFreeGuidance(model, g - 1, uncond={"encoder_hidden_states": e_null})`` with
e_null (1, L, D) the empty prompt's embedding (it is expanded to the batch).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..latent import LatentDenoiser
from .hf_diffusers import load_component, scheduler_config, wrap_discrete

__all__ = ["DiffusersVAE", "from_stable_diffusion", "with_vae", "encode_prompts"]


class DiffusersVAE(nn.Module):
    """A diffusers ``AutoencoderKL`` as the autoencoder of a latent model: ``encode(x)`` the
    posterior mean (minus ``shift_factor``), ``decode(z)``, ``latent_shape(image_shape)``."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def _dtype(self):
        return next(self.vae.parameters()).dtype

    def encode(self, x: Tensor) -> Tensor:
        z = self.vae.encode(x.to(self._dtype())).latent_dist.mean
        return (z - self.shift).to(x.dtype)

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z.to(self._dtype()) + self.shift).sample.to(z.dtype)

    def latent_shape(self, image_shape) -> tuple:
        c, h, w = image_shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"this VAE downsamples by {self.factor}: image sizes must be "
                             f"multiples of it, got {h}×{w}")
        return (int(self.vae.config.latent_channels), h // self.factor, w // self.factor)


def with_vae(model, vae: nn.Module) -> LatentDenoiser:
    """A Denoiser on rescaled latents (its net a :class:`~.hf_diffusers.DiffusersCall`) with
    the diffusers VAE that defines them, as a LatentDenoiser of the matching image shape."""
    ae = DiffusersVAE(vae)
    c, h, w = model.net.fn.sample_shape
    if c != int(vae.config.latent_channels):
        raise ValueError(f"the denoising network takes {c} channels but the VAE makes "
                         f"{vae.config.latent_channels}-channel latents")
    image = (int(vae.config.in_channels), h * ae.factor, w * ae.factor)
    return LatentDenoiser(model, ae, float(vae.config.scaling_factor), image)


def from_stable_diffusion(folder, *, sample_size=None, device=None,
                          dtype=None) -> LatentDenoiser:
    """A saved Stable-Diffusion pipeline folder (``unet/``, ``vae/``, ``scheduler/``; e.g. a
    downloaded ``stable-diffusion-v1-5/stable-diffusion-v1-5``) as a latent Denoiser.

    ``sample_size``: the latents' spatial size (default: the U-Net config's; images are
    ``vae_factor`` times larger). Sample with ``cond={"encoder_hidden_states": e}``.
    """
    folder = Path(folder)
    unet = load_component(folder, "unet", ("UNet2DConditionModel",))
    if getattr(unet.config, "addition_embed_type", None) is not None:
        raise ValueError(f"{folder / 'unet'}: addition_embed_type="
                         f"{unet.config.addition_embed_type!r} (SDXL-style added conditions) is "
                         "not supported; only encoder_hidden_states conditioning is")
    vae = load_component(folder, "vae", ("AutoencoderKL",))
    if device is not None or dtype is not None:
        vae = vae.to(device=device, dtype=dtype)
    model = wrap_discrete(unet, scheduler_config(folder, None), sample_size, device=device,
                          dtype=dtype)
    return with_vae(model, vae)


def encode_prompts(folder, prompts, device=None) -> Tensor:
    """The text encoder's last hidden states (B, L, D) of ``prompts``, as SD's pipeline makes
    them (CLIP tokenizer padded to its max length) — needs ``transformers`` and the folder's
    ``tokenizer/`` and ``text_encoder/``."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError("encoding prompts needs the transformers package; without it, pass "
                          "the text embeddings as cond={'encoder_hidden_states': tensor (B, L, D)}"
                          ) from e
    tok = transformers.CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
    enc = transformers.CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder")
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc.to(device)(ids.to(device))[0]

"""Latent diffusion: a score model on an autoencoder's rescaled latents, whose samples are
decoded images (:class:`LatentDenoiser`), its training data (:class:`LatentData`) and
inpainting through the latent space (:func:`latent_inpaint`)."""
from .data import LatentData, encode_images
from .inpaint import downsample_mask, latent_inpaint, through_latent
from .model import LatentDenoiser, find_latent

__all__ = ["LatentDenoiser", "find_latent", "LatentData", "encode_images", "downsample_mask",
           "latent_inpaint", "through_latent"]

r"""A diffusion model on an autoencoder's latents (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", §3–4; lecture notes §5.2.2).

An autoencoder (E, D) compresses an image x to z = E(x) (for a VAE or LDM's KL-regularised
autoencoder, the posterior mean μ(x)); the diffusion model is trained on the *rescaled* latents

.. math:: \tilde z = c\,z,\qquad c = 1/\operatorname{std}(z)\ \text{over the training set},

so that the SDE's noise scale fits them as it fits unit-variance data. Sampling runs every solver
on z̃ and returns x = D(z̃ / c). :class:`LatentDenoiser` is a :class:`~sdeflow.Denoiser` on z̃
(every sampler, schedule, guidance wrapper and the PF-ODE likelihood of z̃ work on it unchanged)
that also carries (E, D, c): :func:`sdeflow.sample` decodes its samples, and inpainting encodes
the known image and pastes the decoded completion back (:mod:`.inpaint`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..denoiser import Denoiser

__all__ = ["LatentDenoiser", "find_latent"]


class LatentDenoiser(Denoiser):
    """``model`` (a Denoiser on rescaled latents) with the ``autoencoder`` that defines them.

    Args:
        model: the Denoiser trained on z̃ = scale · autoencoder.encode(x).
        autoencoder: a module with ``encode(x) -> z`` and ``decode(z) -> x`` (an
            :mod:`sdeflow.autoencoders` model, or any module with those two methods).
        scale: c (the latents' scale factor, 1/std of the training latents).
        image_shape: the decoded images' shape (C, H, W) (or (D,) for vectors).
    """

    def __init__(self, model: Denoiser, autoencoder: nn.Module, scale: float, image_shape):
        if not isinstance(model, Denoiser):
            raise TypeError("LatentDenoiser wraps an sdeflow.Denoiser trained on latents")
        for name in ("encode", "decode"):
            if not callable(getattr(autoencoder, name, None)):
                raise TypeError(f"the autoencoder needs a {name}() method")
        if not (math.isfinite(float(scale)) and float(scale) > 0):
            raise ValueError(f"the latent scale factor must be positive and finite, got {scale}")
        super().__init__(model.net, model.sde, prediction=model.prediction,
                         precondition=model.precondition, sigma_data=model.sigma_data,
                         check_finite=model.check_finite, learn_sigma=model.learn_sigma)
        self.autoencoder = autoencoder
        self.scale = float(scale)
        self.image_shape = tuple(int(n) for n in image_shape)

    def with_net(self, net, check_finite: bool | None = None) -> "LatentDenoiser":
        return LatentDenoiser(super().with_net(net, check_finite), self.autoencoder, self.scale,
                              self.image_shape)

    def encode(self, x: Tensor) -> Tensor:
        """z̃ = c · E(x) for images x (B, *image_shape)."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"this latent model encodes images of shape (B, "
                             f"{', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        return self.autoencoder.encode(x) * self.scale

    def decode(self, z: Tensor) -> Tensor:
        """x = D(z̃ / c)."""
        return self.autoencoder.decode(z / self.scale)

    @property
    def factor(self) -> int:
        """The spatial down-sampling factor f = H / h of images to latents (1 for vectors)."""
        lat = self.latent_shape
        if len(self.image_shape) < 3 or len(lat) < 3:
            return 1
        return self.image_shape[-1] // lat[-1]

    @property
    def latent_shape(self) -> tuple:
        fn = getattr(self.autoencoder, "latent_shape", None)
        if fn is None:
            raise TypeError("the autoencoder has no latent_shape(image_shape)")
        return tuple(fn(self.image_shape))

    def sample_shape(self, shape) -> tuple:
        """The latent batch shape for a requested ``shape``: an image batch shape (B,
        *image_shape) maps to (B, *latent_shape); a latent batch shape is kept."""
        shape = tuple(shape)
        if shape[1:] == self.image_shape:
            return (shape[0], *self.latent_shape)
        if shape[1:] == self.latent_shape:
            return shape
        raise ValueError(f"shape {shape}: this latent model makes images (B, "
                         f"{', '.join(map(str, self.image_shape))}) from latents (B, "
                         f"{', '.join(map(str, self.latent_shape))})")


def find_latent(model) -> LatentDenoiser | None:
    """The :class:`LatentDenoiser` ``model`` is or wraps (through guidance wrappers' ``base``),
    or None."""
    seen = 0
    while model is not None and seen < 32:
        if isinstance(model, LatentDenoiser):
            return model
        model, seen = getattr(model, "base", None), seen + 1
    return None

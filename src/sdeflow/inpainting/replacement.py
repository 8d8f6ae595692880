"""Inpainting by replacement with any fixed-grid sampler (score_sde's PC inpainting when the
sampler is ``pc``; see :mod:`.observation` for the update)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..latent.inpaint import through_latent
from ..samplers import sample
from .observation import Observation

__all__ = ["inpaint"]


@through_latent
def inpaint(model: Denoiser, y: Tensor, mask: Tensor, *, solver: str = "pc", steps: int | None = None,
            basis: Tensor | None = None, x_T: Tensor | None = None, seed: int | None = None,
            generator: torch.Generator | None = None, return_stats: bool = False, **opts):
    """Complete ``y`` where ``mask`` is 0, keeping it exactly where ``mask`` is 1.

    Every non-adaptive sampler of :func:`sdeflow.sample` works (``pc`` with its Langevin
    corrector is score_sde's method; ODE solvers such as ``ddim``/``heun``/``dpmpp_2m`` give
    deterministic completions given x_T). ``opts`` go to :func:`sdeflow.sample` (``schedule``,
    ``cond``, ``snr``, ``progress`` …). Returns the completed samples (and stats).

    A latent model (:class:`~sdeflow.latent.LatentDenoiser`) completes its latents and pastes
    the decoded completion into ``y`` (:func:`sdeflow.latent.latent_inpaint`)."""
    obs = Observation(y, mask, basis)
    x, stats = sample(model, x_T, shape=None if x_T is not None else y.shape, solver=solver,
                      steps=steps, seed=seed, generator=generator, dtype=y.dtype, device=y.device,
                      constraint=obs.constraint(model.sde), return_stats=True, decode=False,
                      **opts)
    x = obs.fill(x)
    return (x, stats) if return_stats else x

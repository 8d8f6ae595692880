"""A :class:`~sdeflow.Denoiser` whose predictions are built from another Denoiser's.

Guidance changes the score, :math:`\\tilde\\nabla\\log p_t = \\nabla\\log p_t + \\delta`, so every
sampler, likelihood and solver that talks to a Denoiser works on a guided model unchanged.
A change δ of the score is the change σ²/s·δ of x̂₀, −σ·δ of ε̂ and −σr/s·δ of v̂ (r² = s² + σ²).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..denoiser import Denoiser, Prediction
from ..sde import bcast

__all__ = ["GuidedDenoiser", "shift_score"]


class GuidedDenoiser(Denoiser):
    """Base class: holds ``base`` (the Denoiser being guided) and counts its own NFE.

    Subclasses implement :meth:`predict`; ``nfe`` counts network passes per sample (a
    classifier-free step costs two, even when both run as one batched call)."""

    def __init__(self, base: Denoiser):
        if not isinstance(base, Denoiser):
            raise TypeError("guidance wraps an sdeflow.Denoiser")
        nn.Module.__init__(self)
        self.base = base
        self.sde, self.prediction = base.sde, base.prediction
        self.precondition, self.sigma_data = base.precondition, base.sigma_data
        self.check_finite = base.check_finite
        self.nfe = 0

    @property
    def net(self):
        return self.base.net

    def raw(self, x: Tensor, t, **cond) -> Tensor:
        raise TypeError("a guided model has predictions (x0/eps/v/score), not one raw output")

    def predict(self, x: Tensor, t, **cond) -> Prediction:
        raise NotImplementedError


def shift_score(p: Prediction, x: Tensor, t: Tensor, sde, delta: Tensor) -> Prediction:
    """The Prediction whose score is ``p.score + delta`` at (x, t)."""
    s, sig = bcast(sde.s(t), x), bcast(sde.sigma(t), x)
    r = (s**2 + sig**2).sqrt()
    return Prediction(p.x0 + sig**2 / s * delta, p.eps - sig * delta,
                      p.v - sig * r / s * delta, p.score + delta)

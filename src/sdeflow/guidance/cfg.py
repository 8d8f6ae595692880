r"""Classifier-free guidance (Ho & Salimans 2022).

One network trained with its condition dropped (replaced by a null condition) with probability
p_uncond gives both D(x, t, y) and D(x, t, ∅); the guided prediction is

.. math:: \hat x_0^w = (1 + w)\,\hat x_0(x, t, y) - w\,\hat x_0(x, t, \varnothing),

i.e. the score :math:`(1+w)\nabla\log p_t(x\mid y) - w\nabla\log p_t(x)
= \nabla\log p_t(x\mid y) + w\,\nabla\log p_t(y\mid x)`. At fixed (x, t) every parameterisation
(x̂₀, ε̂, v̂, score) is affine in the network output with the same coefficients, so combining any
of them gives the same guided model: w = 0 is the conditional model, w = −1 the unconditional.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser, Prediction
from ..sde import bcast
from .base import GuidedDenoiser

__all__ = ["ClassifierFreeGuidance"]


class ClassifierFreeGuidance(GuidedDenoiser):
    """Guide ``model`` with scale ``scale`` (w ≥ 0, a float or a per-sample tensor (B,)).

    Args:
        model: a conditional Denoiser trained with condition dropout.
        scale: w.
        uncond: the null condition, as ``{key: value}`` replacing those keys of the call's
            ``cond`` (e.g. ``{"class_labels": num_classes}`` for sdeflow's networks, whose
            label index ``num_classes`` is the null label); both halves then run as one batched
            network call. Keys of ``cond`` not named here (e.g. an SR3 ``x_cond``) are passed
            to both halves. ``None``: the unconditional half is called with no condition at all.
    """

    def __init__(self, model: Denoiser, scale, uncond: dict | None = None):
        super().__init__(model)
        if not torch.is_tensor(scale) and float(scale) < -1:
            raise ValueError(f"guidance scale must be ≥ -1, got {scale}")
        self.scale, self.uncond = scale, uncond

    @classmethod
    def for_labels(cls, model: Denoiser, scale, num_classes: int) -> "ClassifierFreeGuidance":
        """CFG for sdeflow's class-conditional networks (null label = ``num_classes``)."""
        return cls(model, scale, uncond={"class_labels": num_classes})

    @classmethod
    def for_text(cls, model: Denoiser, scale) -> "ClassifierFreeGuidance":
        """CFG for sdeflow's text-conditional networks: the null condition is the empty prompt
        (``tokens`` all padding, id 0), which training with ``p_uncond`` teaches."""
        return cls(model, scale, uncond={"tokens": 0})

    def _null(self, cond: dict) -> dict:
        out = dict(cond)
        for k, v in self.uncond.items():
            if k not in cond:
                raise ValueError(f"classifier-free guidance needs cond[{k!r}] (the condition to "
                                 f"guide towards)")
            ref = torch.as_tensor(cond[k])
            v = torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
            out[k] = v.expand(ref.shape)
        return out

    def predict(self, x: Tensor, t, **cond) -> Prediction:
        t = self._time(x, t)
        w = bcast(self.scale, x) if torch.is_tensor(self.scale) else float(self.scale)
        if not torch.is_tensor(w) and w == 0:
            self.nfe += 1
            return self.base.predict(x, t, **cond)
        self.nfe += 2
        if self.uncond is None:
            c, u = self.base.predict(x, t, **cond), self.base.predict(x, t)
        else:
            null = self._null(cond)  # same keys and shapes as cond
            both = {k: torch.cat([torch.as_tensor(cond[k]), null[k]]) for k in cond}
            p = self.base.predict(torch.cat([x, x]), torch.cat([t, t]), **both)
            c, u = zip(*(f.chunk(2) for f in p))
        return Prediction(*((1 + w) * a - w * b for a, b in zip(c, u)))

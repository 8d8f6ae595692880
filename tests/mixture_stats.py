"""The sampler tests' check that samples come from a known Gaussian mixture: the statistic is
:mod:`sdeflow.metrics.mixture` (per-component weights, means and widths with standard errors;
Bonferroni threshold at false-alarm rate ``alpha``)."""
from __future__ import annotations

import torch
from torch import Tensor

from sdeflow.metrics.mixture import ALPHA, MixtureMoments, mixture_moments

__all__ = ["ALPHA", "MixtureMoments", "mixture_moments", "assert_samples_mixture", "rejects"]


def assert_samples_mixture(gm, x: Tensor, alpha: float = ALPHA, what: str = "") -> MixtureMoments:
    """Fail unless every weight, mean and variance of ``x`` (and the pooled width) agrees with
    ``gm``'s within the Bonferroni threshold at false-alarm rate ``alpha``; returns them."""
    assert torch.isfinite(x).all(), f"{what}: non-finite samples"
    m = mixture_moments(gm, x)
    assert m.max_z() < m.threshold(alpha), f"{what}: {m.summary()}"
    return m


def rejects(gm, x: Tensor, alpha: float = ALPHA) -> bool:
    """Whether :func:`assert_samples_mixture` fails on ``x`` (to show a check's power); a NaN
    z-score is a rejection."""
    if not torch.isfinite(x).all():
        return True
    m = mixture_moments(gm, x)
    return not m.max_z() < m.threshold(alpha)

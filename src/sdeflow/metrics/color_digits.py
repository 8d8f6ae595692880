r"""Scores for coloured digits (``color_digits``, ``captioned_digits``): the digit is read by the
offline digits classifier (:mod:`.digits`) from the image's *ink*, the colours are measured on
the pixels.

For an image x (3, H, W) in [−1, 1] the background colour b is the per-channel median of the
border pixels (the digits never touch the border), and the ink is the distance to it,

.. math:: a(p) = \frac{\lVert x(p) - b\rVert_2}{\max_q \lVert x(q) - b\rVert_2}\in[0, 1],

mapped to [−1, 1] as the grey digits are (for x = b + a·(f − b) this recovers a exactly). The
foreground colour f is the mean of the pixels with a > 0.6. Reported:

* **fdd**: Fréchet distance of the classifier's features of the inks of samples and of
  reference images (the test split), beside the same distance between two reference sets;
* **colour_fd**: Fréchet distance of 4×4 area-pooled RGB images (48 numbers: where the
  colours are), the colour analogue of FDD;
* ``accuracy`` (digit class against requested labels) and ``colour_accuracy`` (both the
  nearest palette colours of the measured f and b equal the requested ones).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .digits import digits_features
from .frechet import frechet_distance

__all__ = ["border_colour", "ink", "measured_colours", "nearest_colours", "colour_features",
           "color_digits_metrics"]


def _check(x: Tensor) -> Tensor:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W), got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float32).clamp(-1, 1)


def border_colour(x: Tensor) -> Tensor:
    """b: the per-channel median of each image's border pixels, (B, 3) in [−1, 1]."""
    x = _check(x)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    return border.median(dim=-1).values


def ink(x: Tensor) -> Tensor:
    """The ink a in [−1, 1], (B, 1, H, W) (see the module docstring)."""
    x = _check(x)
    d = (x - border_colour(x)[:, :, None, None]).norm(dim=1, keepdim=True)
    a = d / d.flatten(1).amax(1).clamp_min(1e-6)[:, None, None, None]
    return a * 2 - 1


def measured_colours(x: Tensor, threshold: float = 0.6) -> tuple[Tensor, Tensor]:
    """(f, b), each (B, 3) in [0, 1]: the mean colour of the pixels with ink above
    ``threshold`` and the border median."""
    x = _check(x)
    a = (ink(x) + 1) / 2
    w = (a > threshold).to(x.dtype)
    fg = (x * w).flatten(2).sum(2) / w.flatten(2).sum(2).clamp_min(1)
    return (fg + 1) / 2, (border_colour(x) + 1) / 2


def nearest_colours(rgb: Tensor, palette: Tensor) -> Tensor:
    """Index of the nearest palette colour (palette (K, 3) in [0, 1]) for each row of rgb."""
    return torch.cdist(rgb.to(torch.float32), palette.to(torch.float32)).argmin(1)


def colour_features(x: Tensor) -> Tensor:
    """4×4 area-pooled RGB, (B, 48)."""
    return F.adaptive_avg_pool2d(_check(x), 4).flatten(1)


def color_digits_metrics(x: Tensor, reference: Tensor, reference2: Tensor | None = None,
                         labels: Tensor | None = None, colours: tuple[Tensor, Tensor] | None = None,
                         palette: Tensor | None = None) -> dict:
    """FDD and colour FD of samples ``x`` against ``reference`` images (and the floor against a
    second reference set ``reference2``); digit ``accuracy`` against ``labels``; with
    ``colours`` = (fg index, bg index) into ``palette`` (K, 3): ``colour_accuracy``."""
    fx, px = digits_features(ink(x))
    fr, _ = digits_features(ink(reference))
    out = dict(n=len(x), fdd=frechet_distance(fx, fr),
               colour_fd=frechet_distance(colour_features(x), colour_features(reference)))
    if reference2 is not None:
        out["fdd_floor"] = frechet_distance(digits_features(ink(reference2))[0], fr)
        out["colour_fd_floor"] = frechet_distance(colour_features(reference2),
                                                  colour_features(reference))
    if labels is not None:
        out["accuracy"] = (px.argmax(1) == labels.cpu()).double().mean().item()
    if colours is not None:
        if palette is None:
            raise ValueError("colours need the palette they index")
        f, b = measured_colours(x)
        ok = (nearest_colours(f, palette) == colours[0].cpu()) & \
             (nearest_colours(b, palette) == colours[1].cpu())
        out["colour_accuracy"] = ok.double().mean().item()
    return out

"""Two-dimensional toy distributions, by name. Each is ``fn(n, generator) -> (n, 2)`` float64,
scaled to roughly unit standard deviation per coordinate. ``gmm`` is an exact
:class:`~sdeflow.oracle.GaussianMixture`, so models trained on it are checked against truth."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..oracle import GaussianMixture

__all__ = ["toy_sample", "list_toy", "TOY_MIXTURE"]

TOY_MIXTURE = GaussianMixture.ring(k=8, radius=2.0, std=0.25)
_F64 = torch.float64


def _rand(n, g):
    return torch.rand(n, generator=g, dtype=_F64)


def _randn(n, g):
    return torch.randn(n, generator=g, dtype=_F64)


def gmm(n: int, g=None) -> Tensor:
    return TOY_MIXTURE.sample(n, generator=g)


def moons(n: int, g=None) -> Tensor:
    upper = _rand(n, g) < 0.5
    a = math.pi * _rand(n, g)
    x = torch.where(upper, a.cos(), 1 - a.cos())
    y = torch.where(upper, a.sin(), 0.5 - a.sin())
    pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.05 * torch.stack([_randn(n, g), _randn(n, g)], 1)
    return pts * 1.6


def swiss_roll(n: int, g=None) -> Tensor:
    u = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    pts = torch.stack([u * u.cos(), u * u.sin()], 1) / 5.0
    return pts + 0.05 * torch.stack([_randn(n, g), _randn(n, g)], 1)


def checkerboard(n: int, g=None) -> Tensor:
    """Uniform on the 8 black squares of a 4×4 board over [−2, 2]²."""
    x1 = 4 * _rand(n, g) - 2
    col = torch.floor(x1 + 2).clamp(0, 3)
    row = 2 * torch.randint(0, 2, (n,), generator=g).to(_F64) + col % 2
    return torch.stack([x1, row - 2 + _rand(n, g)], 1)


def rings(n: int, g=None) -> Tensor:
    r = torch.tensor([0.5, 1.25, 2.0], dtype=_F64)[torch.randint(0, 3, (n,), generator=g)]
    a = 2 * math.pi * _rand(n, g)
    return torch.stack([r * a.cos(), r * a.sin()], 1) + 0.06 * torch.stack([_randn(n, g), _randn(n, g)], 1)


_TOY: dict[str, Callable[..., Tensor]] = {
    "gmm": gmm, "moons": moons, "swiss_roll": swiss_roll, "checkerboard": checkerboard, "rings": rings}


def list_toy() -> list[str]:
    return sorted(_TOY)


def toy_sample(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n points of the named toy distribution (float64)."""
    if name not in _TOY:
        raise ValueError(f"unknown toy data set {name!r}; choices: {list_toy()}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return _TOY[name](n, generator)

"""Pick training data by name: ``get_data("digits")``, ``get_data("moons")``,
``get_data("folder", root=...)``, ``get_data("mixture", dim=16, k=4, seed=0)``. Every source has
``shape``, ``num_classes`` and ``draw(n, generator) -> (x, labels or None)``, so the trainer
never looks inside it; the captioned sets (``captioned_digits``, ``captioned_gmm``,
:mod:`.captions`) also have ``draw_captioned`` (x, labels, tokens), ``text_length`` and
``vocab_size``; sources with a closed form (``gmm``, ``mixture``) also expose it as
``mixture`` (a :class:`~sdeflow.oracle.GaussianMixture`: exact scores and teachers)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..oracle import GaussianMixture
from . import captions, images, rgb
from .toy import TOY_MIXTURE, list_toy, toy_sample

__all__ = ["get_data", "list_data", "list_vector_data", "ToyData", "MixtureData", "SPLIT_DATA"]


@dataclass
class ToyData:
    """A 2-D toy distribution (fresh draws every batch, no labels)."""

    name: str
    num_classes: int = 0
    shape: tuple = (2,)

    def draw(self, n: int, generator: torch.Generator | None = None):
        return toy_sample(self.name, n, generator).to(torch.float32), None

    @property
    def mixture(self) -> GaussianMixture | None:
        return TOY_MIXTURE if self.name == "gmm" else None


class MixtureData:
    """A random anisotropic Gaussian mixture in ``dim`` dimensions
    (:meth:`GaussianMixture.random`): high-dimensional data whose score is known exactly."""

    num_classes = 0

    def __init__(self, dim: int = 16, k: int = 4, seed: int = 0, scale: float = 1.0):
        if not (isinstance(dim, int) and dim > 0 and isinstance(k, int) and k > 0):
            raise ValueError(f"mixture: dim and k must be positive integers, got {dim}, {k}")
        self.mixture = GaussianMixture.random(dim, k=k, seed=seed, scale=scale)
        self.shape = (dim,)

    def draw(self, n: int, generator: torch.Generator | None = None):
        return self.mixture.sample(n, generator=generator, dtype=torch.float32), None


_IMAGES = {"digits": images.digits, "color_digits": rgb.color_digits, "photos": rgb.photos,
           "captioned_digits": captions.captioned_digits, "folder": images.image_folder,
           "torchvision": images.torchvision_data, "hf": images.hf_data}


#: vector data sets that take arguments (the toy ones take none)
_VECTORS = {"mixture": MixtureData, "captioned_gmm": captions.captioned_gmm}


#: data sets with a held-out ``split="test"`` (the others are scored on training data)
SPLIT_DATA = ("digits", "color_digits", "photos", "captioned_digits")


def list_vector_data() -> list[str]:
    """Data sets of vectors (B, D), trained with an MLP; the others are images."""
    return sorted([*list_toy(), *_VECTORS])


def list_data() -> list[str]:
    return sorted([*list_toy(), *_IMAGES, *_VECTORS])


def get_data(name: str, /, **kwargs):
    """A data source by name; ``kwargs`` go to the image loaders (see :mod:`.images`)."""
    if name in _IMAGES:
        return _IMAGES[name](**kwargs)
    if name in _VECTORS:
        return _VECTORS[name](**kwargs)
    if name in list_toy():
        if kwargs:
            raise ValueError(f"toy data {name!r} takes no arguments, got {sorted(kwargs)}")
        return ToyData(name)
    raise ValueError(f"unknown data set {name!r}; choices: {list_data()}")

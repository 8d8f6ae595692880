"""Pick training data by name: ``get_data("digits")``, ``get_data("moons")``,
``get_data("folder", root=...)``. Every source has ``shape``, ``num_classes`` and
``draw(n, generator) -> (x, labels or None)``, so the trainer never looks inside it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import images, rgb
from .toy import list_toy, toy_sample

__all__ = ["get_data", "list_data", "ToyData"]


@dataclass
class ToyData:
    """A 2-D toy distribution (fresh draws every batch, no labels)."""

    name: str
    num_classes: int = 0
    shape: tuple = (2,)

    def draw(self, n: int, generator: torch.Generator | None = None):
        return toy_sample(self.name, n, generator).to(torch.float32), None


_IMAGES = {"digits": images.digits, "color_digits": rgb.color_digits, "photos": rgb.photos,
           "folder": images.image_folder,
           "torchvision": images.torchvision_data, "hf": images.hf_data}


def list_data() -> list[str]:
    return sorted([*list_toy(), *_IMAGES])


def get_data(name: str, /, **kwargs):
    """A data source by name; ``kwargs`` go to the image loaders (see :mod:`.images`)."""
    if name in _IMAGES:
        return _IMAGES[name](**kwargs)
    if name in list_toy():
        if kwargs:
            raise ValueError(f"toy data {name!r} takes no arguments, got {sorted(kwargs)}")
        return ToyData(name)
    raise ValueError(f"unknown data set {name!r}; choices: {list_data()}")

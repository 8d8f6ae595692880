"""Inpainting masks (1 = known pixel): named shapes, random pixels, or an image file."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["MASKS", "make_mask", "load_mask"]

MASKS = ("center", "left", "right", "top", "bottom", "random", "checkerboard")


def make_mask(kind: str, size: int, *, fraction: float = 0.5, seed: int = 0, dtype=torch.float32) -> Tensor:
    """A (1, 1, size, size) mask: ``center`` hides the central square of side size/2, ``left``
    /``right``/``top``/``bottom`` hide that half, ``random`` hides ``fraction`` of the pixels,
    ``checkerboard`` hides alternate 2×2 blocks."""
    m = torch.ones(size, size, dtype=dtype)
    h = size // 2
    if kind == "center":
        q = size // 4
        m[q:q + h, q:q + h] = 0
    elif kind == "left":
        m[:, :h] = 0
    elif kind == "right":
        m[:, h:] = 0
    elif kind == "top":
        m[:h] = 0
    elif kind == "bottom":
        m[h:] = 0
    elif kind == "random":
        if not 0 < fraction < 1:
            raise ValueError("fraction must lie in (0, 1)")
        g = torch.Generator().manual_seed(seed)
        m = (torch.rand(size, size, generator=g) >= fraction).to(dtype)
    elif kind == "checkerboard":
        i = torch.arange(size) // 2
        m = ((i[:, None] + i[None]) % 2 == 0).to(dtype)
    else:
        raise ValueError(f"unknown mask {kind!r}; choices: {list(MASKS)}")
    return m[None, None]


def load_mask(path, size: int | None = None) -> Tensor:
    """A mask from an image file: pixels brighter than mid-grey are known. Resized (nearest) to
    ``size`` × ``size`` if given. Returns (1, 1, H, W) of 0/1."""
    from PIL import Image
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {path} not found")
    img = Image.open(path).convert("L")
    if size is not None:
        img = img.resize((size, size), Image.NEAREST)
    a = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.height, img.width)
    return (a > 127).to(torch.float32)[None, None]

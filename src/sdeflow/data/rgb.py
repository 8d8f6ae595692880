"""RGB image data for colour tasks, with no download.

* ``color_digits``: the embedded digits painted with random foreground and background colours
  (one pair per image and copy), so a grey level has many colourings — colorization is genuinely
  many-to-one. Pixel = bg + a·(fg − bg) with a ∈ [0, 1] the digit's ink; the two colours' grey
  levels differ by at least ``min_contrast`` so the digit stays visible in grey.
* ``photos``: random square patches of scikit-learn's two bundled sample photographs
  (``sklearn.datasets.load_sample_images``: a Chinese temple and a flower, 427×640), downscaled
  by ``downscale`` first; training patches come from the left 80 % of each photo, test patches
  from the right 20 %, so the splits never overlap.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .images import ImageData, digits

__all__ = ["color_digits", "photos", "paint"]


def paint(ink: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [−1, 1] from ink (N, 1, H, W) in [0, 1] and colours (N, 3) in [0, 1]."""
    rgb = bg[:, :, None, None] + ink * (fg - bg)[:, :, None, None]
    return rgb * 2 - 1


def _colours(n: int, g: torch.Generator, min_contrast: float):
    fg = torch.empty(n, 3)
    bg = torch.empty(n, 3)
    todo = torch.ones(n, dtype=torch.bool)
    while todo.any():  # rejection: keep pairs whose grey levels differ enough
        k = int(todo.sum())
        f, b = torch.rand(k, 3, generator=g), torch.rand(k, 3, generator=g)
        fg[todo], bg[todo] = f, b
        todo[todo.clone()] = (f.mean(1) - b.mean(1)).abs() < min_contrast
    return fg, bg


def color_digits(split: str = "train", copies: int = 1, seed: int = 0, min_contrast: float = 0.3,
                 resolution: int | None = None) -> ImageData:
    """The digits of ``split`` painted ``copies`` times each (labels kept); see module docstring."""
    if copies < 1 or not 0 <= min_contrast < 1:
        raise ValueError("copies must be ≥ 1 and min_contrast in [0, 1)")
    base = digits(split, resolution)
    # the test split gets other colours than the train split for the same seed
    g = torch.Generator().manual_seed(seed * 3 + {"train": 0, "test": 1, "all": 2}[split])
    ink = ((base.x + 1) / 2).repeat(copies, 1, 1, 1)
    fg, bg = _colours(len(ink), g, min_contrast)
    return ImageData(paint(ink, fg, bg).clamp(-1, 1), base.y.repeat(copies), base.num_classes,
                     base.class_names)


def photos(split: str = "train", size: int = 16, n: int = 4000, downscale: int = 4,
           seed: int = 0) -> ImageData:
    """n random size×size RGB patches of scikit-learn's sample photographs (see module docstring)."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choices: ['test', 'train']")
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise ImportError("data='photos' reads scikit-learn's bundled sample photographs: "
                          "pip install scikit-learn") from e
    imgs = [torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
            for a in load_sample_images().images]
    imgs = [F.interpolate(a, scale_factor=1 / downscale, mode="area") if downscale > 1 else a
            for a in imgs]
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 7919))
    out = []
    for i in range(n):
        a = imgs[i % len(imgs)][0]
        h, w = a.shape[1:]
        cut = int(0.8 * w)
        lo, hi = (0, cut - size) if split == "train" else (cut, w - size)
        if hi < lo or h < size:
            raise ValueError(f"patch size {size} does not fit the downscaled photos ({h}×{w})")
        top = int(torch.randint(0, h - size + 1, (1,), generator=g))
        left = int(torch.randint(lo, hi + 1, (1,), generator=g))
        out.append(a[:, top:top + size, left:left + size])
    return ImageData(torch.stack(out).clamp(-1, 1))

"""Image data sets, by name, as tensors in [−1, 1] of shape (N, C, H, W) with integer labels.

* ``digits``: scikit-learn's 8×8 handwritten digits (UCI optdigits test set, 1797 images, 10
  classes, 17 grey levels), embedded in this package — no network. ``split`` is ``"train"``
  (1437 images), ``"test"`` (360: every fifth image) or ``"all"``; ``resolution`` resamples.
* ``folder``: an image folder (``root/<class>/*.png`` gives labels by sorted sub-folder name;
  images directly under ``root`` are unlabelled), resized and centre-cropped to ``resolution``.
* ``torchvision``: any ``torchvision.datasets`` class by name (``name="CIFAR10"``), when
  torchvision is installed and the files are present or downloadable.
* ``hf``: a Hugging Face ``datasets`` data set (``name``, ``split``, ``image_key``,
  ``label_key``), when ``datasets`` is installed and the data are cached or online.

Every loader returns an :class:`ImageData`: the whole data set held in memory (the scale this
package trains at on a CPU; larger sets go through the same class from a memory map).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["ImageData", "digits", "image_folder", "torchvision_data", "hf_data", "to_unit_range",
           "IMAGE_SUFFIXES", "pil_to_tensor", "resize"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DIGITS = Path(__file__).with_name("digits.csv.gz")


@dataclass
class ImageData:
    """Images ``x`` (N, C, H, W) float32 in [−1, 1], labels ``y`` (N,) int64 or None."""

    x: Tensor
    y: Tensor | None = None
    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.x.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(self.x.shape)}")
        if len(self.x) == 0:
            raise ValueError("the data set is empty")
        if self.y is not None and self.y.shape != (len(self.x),):
            raise ValueError(f"labels must have shape ({len(self.x)},), got {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def draw(self, n: int, generator: torch.Generator | None = None):
        """n images drawn uniformly with replacement (and their labels or None)."""
        idx = torch.randint(len(self.x), (n,), generator=generator)
        return self.x[idx], (None if self.y is None else self.y[idx])


def to_unit_range(x: Tensor, max_value: float) -> Tensor:
    """Map pixel values in [0, max_value] to [−1, 1] (float32)."""
    return (x.to(torch.float32) / max_value) * 2 - 1


def resize(x: Tensor, resolution: int | None) -> Tensor:
    if resolution is None or x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    h, w = x.shape[-2:]
    scale = resolution / min(h, w)
    size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
    x = F.interpolate(x, size=size, mode="area" if scale < 1 else "bilinear",
                      align_corners=None if scale < 1 else False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return x[..., top:top + resolution, left:left + resolution].clamp(-1, 1)


def digits(split: str = "train", resolution: int | None = None) -> ImageData:
    """The embedded 8×8 digits (see module docstring), grey levels 0…16 mapped to [−1, 1]."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; choices: ['all', 'test', 'train']")
    with gzip.open(_DIGITS, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x = to_unit_range(torch.from_numpy(table[:, :64]).reshape(-1, 1, 8, 8), 16.0)
    y = torch.from_numpy(table[:, 64]).long()
    test = torch.arange(len(x)) % 5 == 0
    keep = {"train": ~test, "test": test, "all": torch.ones_like(test)}[split]
    return ImageData(resize(x[keep], resolution), y[keep], 10, tuple(str(i) for i in range(10)))


def pil_to_tensor(img, channels: int) -> Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    a = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
    return to_unit_range(a, 255.0)


def image_folder(root, resolution: int = 32, channels: int = 3) -> ImageData:
    """All images under ``root`` (labels from sub-folder names when there are sub-folders)."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    classes = sorted({p.parent.relative_to(root).parts[0] for p in files if p.parent != root})
    if classes and any(p.parent == root for p in files):
        raise ValueError(f"{root} mixes images in sub-folders (classes) with images at the top")
    xs = []
    for p in files:
        with Image.open(p) as img:
            xs.append(resize(pil_to_tensor(img, channels)[None], resolution)[0])
    x = torch.stack(xs)
    if not classes:
        return ImageData(x)
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[p.parent.relative_to(root).parts[0]] for p in files])
    return ImageData(x, y, len(classes), tuple(classes))


def torchvision_data(name: str, root: str = "data", train: bool = True, resolution: int = 32,
                     channels: int = 3, download: bool = False) -> ImageData:
    """``torchvision.datasets.<name>`` loaded into memory (needs torchvision)."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise ImportError("data='torchvision' needs torchvision (pip install torchvision matching "
                          "your torch)") from e
    if not hasattr(tvd, name):
        raise ValueError(f"torchvision.datasets has no data set {name!r}")
    ds = getattr(tvd, name)(root=root, train=train, download=download)
    xs, ys = zip(*((resize(pil_to_tensor(img, channels)[None], resolution)[0], int(lab))
                   for img, lab in ds))
    classes = tuple(getattr(ds, "classes", ()))
    return ImageData(torch.stack(xs), torch.tensor(ys), len(classes) or int(max(ys)) + 1, classes)


def hf_data(name: str, split: str = "train", image_key: str = "image", label_key: str | None = "label",
            resolution: int = 32, channels: int = 3, limit: int | None = None) -> ImageData:
    """A Hugging Face ``datasets`` image data set loaded into memory (needs ``datasets``)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("data='hf' needs the `datasets` package (pip install datasets)") from e
    ds = datasets.load_dataset(name, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    x = torch.stack([resize(pil_to_tensor(r[image_key], channels)[None], resolution)[0] for r in ds])
    if label_key is None or label_key not in ds.column_names:
        return ImageData(x)
    y = torch.tensor(ds[label_key])
    names = getattr(ds.features[label_key], "names", None) or ()
    return ImageData(x, y, len(names) or int(y.max()) + 1, tuple(names))

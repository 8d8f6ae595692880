"""Training data in an autoencoder's latent space: the images are encoded once (and the codes
cached next to the autoencoder's run), then drawn like any data source.

The scale factor c = 1/std(z) (over every latent coordinate of the training set; Rombach et al.
2022, §4.3.2 "rescale the latent space to unit standard deviation") is computed here when the
run starts and stored in the run's config, so a resumed run and the exported model use the
same c.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["LatentData", "encode_images"]


@torch.no_grad()
def encode_images(autoencoder: nn.Module, x: Tensor, batch: int = 256) -> Tensor:
    """E(x) of a whole image tensor, in batches (float32, CPU)."""
    was = autoencoder.training
    dev = next(autoencoder.parameters(), x).device
    autoencoder.eval()
    try:
        return torch.cat([autoencoder.encode(x[i:i + batch].to(dev)).float().cpu()
                          for i in range(0, len(x), batch)])
    finally:
        autoencoder.train(was)


def _cache_file(folder: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return folder / f"latents-{digest}.safetensors"


def _cached_encode(autoencoder, x: Tensor, cache: Path | None) -> Tensor:
    """E(x), read from ``cache`` when it holds the codes of these images, else computed and
    written there atomically (a failed write only costs the next run the encoding)."""
    from safetensors.torch import load_file, save_file
    if cache is not None and cache.is_file():
        try:
            z = load_file(str(cache))["z"]
            if len(z) == len(x):
                return z
        except Exception:  # a damaged cache is recomputed, never trusted
            pass
    z = encode_images(autoencoder, x)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # ranks may write at once
            save_file({"z": z.contiguous()}, str(tmp))
            os.replace(tmp, cache)
        except OSError:
            pass
    return z


class LatentData:
    """The images of ``source`` (a data source holding them as ``x``, e.g.
    :class:`~sdeflow.data.images.ImageData`) as rescaled latents z̃ = c · E(x).

    Args:
        source: the image data (labels ``y`` and captions are kept per image).
        autoencoder: the trained autoencoder (``encode``/``decode``).
        scale: c; None computes 1/std(z) from these latents.
        cache_dir: folder for the encoded latents (keyed by ``cache_key`` and the data size).
        cache_key: what identifies the codes (autoencoder checkpoint, data name and arguments).
    """

    def __init__(self, source, autoencoder: nn.Module, scale: float | None = None,
                 cache_dir: Path | None = None, cache_key: dict | None = None):
        x = getattr(source, "x", None)
        if not torch.is_tensor(x):
            raise ValueError("latent diffusion encodes a data set held in memory (image data "
                             "such as 'digits', 'color_digits', 'photos', 'folder'); this data "
                             "source draws fresh samples instead")
        cache = None if cache_dir is None else _cache_file(Path(cache_dir), {
            **(cache_key or {}), "n": len(x), "shape": list(x.shape)})
        self.source, self.autoencoder = source, autoencoder
        self.z = _cached_encode(autoencoder, x, cache)
        if not torch.isfinite(self.z).all():
            raise ValueError("the autoencoder gives non-finite latents for this data")
        std = float(self.z.std())
        self.scale = float(scale) if scale is not None else 1.0 / max(std, 1e-12)
        self.y = getattr(source, "y", None)
        self.num_classes = int(getattr(source, "num_classes", 0))
        self.shape = tuple(self.z.shape[1:])
        self.image_shape = tuple(x.shape[1:])

    @property
    def x(self) -> Tensor:
        """The rescaled latents of every image (what the diffusion model is trained on)."""
        return self.z * self.scale

    def __len__(self) -> int:
        return len(self.z)

    def _index(self, n: int, generator) -> Tensor:
        return torch.randint(len(self.z), (n,), generator=generator)

    def draw(self, n: int, generator: torch.Generator | None = None):
        """n rescaled latents drawn uniformly with replacement, and their labels or None."""
        idx = self._index(n, generator)
        return self.z[idx] * self.scale, (None if self.y is None else self.y[idx])

    def __getattr__(self, name: str):
        """Captioned sources: ``draw_captioned``, ``text_length`` and ``vocab_size`` of the
        latents (the captions of the images they encode)."""
        source = self.__dict__.get("source")
        if name == "draw_captioned" and hasattr(source, "tokens_for"):
            return self._draw_captioned
        if name in ("text_length", "vocab_size") and source is not None and hasattr(source, name):
            return getattr(source, name)
        raise AttributeError(name)

    def _draw_captioned(self, n: int, generator: torch.Generator | None = None):
        idx = self._index(n, generator)
        return self.z[idx] * self.scale, self.y[idx], self.source.tokens_for(idx, generator)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Images D(z̃ / c) of rescaled latents."""
        return self.autoencoder.decode(z / self.scale)

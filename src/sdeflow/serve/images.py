"""Pictures in and out of the server: tensors in [−1, 1] as PNG bytes, uploaded files checked
and turned into the model's image shape, and the masks the page draws."""
from __future__ import annotations

import io

import numpy as np
import torch

from .runs import ApiError

__all__ = ["png_bytes", "grid_png", "read_upload", "parse_mask", "MAX_UPLOAD_BYTES",
           "MAX_UPLOAD_PIXELS"]

#: the largest upload accepted (bytes) and the most pixels an uploaded image may have
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 array (H, W) or (H, W, C) as PNG bytes."""
    from PIL import Image
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def grid_png(x: torch.Tensor, nrow: int | None = None, min_size: int = 64) -> bytes:
    """Images (N, C, H, W) in [−1, 1] tiled into one PNG, each enlarged to ≥ ``min_size`` px
    (one image: no border, so the page can draw it pixel for pixel)."""
    from ..plotting import image_grid
    pad = 0 if len(x) == 1 else 1
    return png_bytes(image_grid(x.detach().float().cpu().clamp(-1, 1), nrow, pad=pad,
                                min_size=min_size))


def read_upload(data: bytes, shape) -> torch.Tensor:
    """An uploaded image file as one image of ``shape`` (C, H, W) in [−1, 1], resized and
    centre-cropped; 413 if too large, 415 if it is not an image PIL can read."""
    from PIL import Image, UnidentifiedImageError

    from ..data.images import pil_to_tensor, resize
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"the upload has {len(data)} bytes; at most {MAX_UPLOAD_BYTES} "
                            "are accepted")
    if not data:
        raise ApiError(400, "the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_UPLOAD_PIXELS:
                raise ApiError(413, f"the image has {img.width}×{img.height} pixels; at most "
                                    f"{MAX_UPLOAD_PIXELS} pixels are accepted")
            img.load()
            x = pil_to_tensor(img, shape[0])
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ApiError(415, f"the upload is not an image that can be read (PNG, JPEG, …): "
                            f"{type(e).__name__}") from None
    return resize(x[None], shape[-1])[0]


def parse_mask(rows, shape) -> torch.Tensor:
    """The page's mask — ``H`` rows of ``W`` numbers in [0, 1], 1 = known pixel — as a
    (1, 1, H, W) tensor; 400 if it has another size or other values."""
    h, w = shape[-2:]
    if not isinstance(rows, list) or len(rows) != h or \
            any(not isinstance(r, list) or len(r) != w for r in rows):
        got = f"{len(rows)} rows" if isinstance(rows, list) else type(rows).__name__
        raise ApiError(400, f"the mask must be {h} rows of {w} values (the model's image "
                            f"size {h}×{w}); got {got}")
    try:
        m = torch.tensor(rows, dtype=torch.float32)
    except (TypeError, ValueError):
        raise ApiError(400, "the mask's values must be numbers in [0, 1]") from None
    if not torch.isfinite(m).all() or (m < 0).any() or (m > 1).any():
        raise ApiError(400, "the mask's values must be numbers in [0, 1]")
    return m[None, None]

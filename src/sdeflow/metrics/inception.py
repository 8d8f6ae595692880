"""FID/KID with Inception-v3 features and LPIPS — when their pretrained weights are available.

Both use torchmetrics' maintained implementations of the feature networks: FID/KID the
``pt_inception-2015-12-05`` weights of torch-fidelity (the TF-FID-compatible Inception), LPIPS
its AlexNet/VGG heads. On a machine without network access, download the Inception file once
elsewhere (torch-fidelity's GitHub release ``weights-inception-2015-12-05-6726825d.pth``) and
pass its path as ``weights_path`` / ``sdeflow evaluate --inception-weights PATH``. Needs
``pip install torchmetrics torch-fidelity`` (and torchvision matching your torch).
The Fréchet/KID maths is :mod:`sdeflow.metrics.frechet`, the same for every feature space.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .frechet import frechet_distance, kernel_distance

__all__ = ["inception_features", "fid_kid", "lpips"]


def _extractor(weights_path):
    import importlib.util
    if not all(importlib.util.find_spec(m) for m in ("torchmetrics", "torch_fidelity")):
        raise ImportError("FID/KID need torchmetrics and torch-fidelity "
                          "(pip install torchmetrics torch-fidelity)")
    from torchmetrics.image.fid import NoTrainInceptionV3
    if weights_path is None:
        raise ValueError("FID/KID need the Inception weights file: pass weights_path (see "
                         "sdeflow.metrics.inception for where to get it offline)")
    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                              feature_extractor_weights_path=str(weights_path))


@torch.no_grad()
def inception_features(x: Tensor, weights_path=None, batch: int = 100, net=None) -> Tensor:
    """2048-d pool features of images in [−1, 1] (grey images are repeated to RGB)."""
    net = net or _extractor(weights_path)
    x = x.detach().clamp(-1, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    return torch.cat([net(u8[i:i + batch]).reshape(-1, 2048).double() for i in range(0, len(x), batch)])


def fid_kid(real: Tensor, fake: Tensor, weights_path=None) -> dict:
    """FID and KID (mean, std) between two image sets in [−1, 1]."""
    net = _extractor(weights_path)
    fr, ff = inception_features(real, net=net), inception_features(fake, net=net)
    kid, kid_std = kernel_distance(fr, ff)
    return dict(fid=frechet_distance(fr, ff), kid=kid, kid_std=kid_std)


def lpips(x: Tensor, y: Tensor, net_type: str = "alex") -> Tensor:
    """Per-pair LPIPS of images in [−1, 1] (needs torchmetrics, torchvision and the weights)."""
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError as e:
        raise ImportError("LPIPS needs torchmetrics with torchvision installed") from e
    m = LearnedPerceptualImagePatchSimilarity(net_type=net_type, reduction="none")
    if x.shape[1] == 1:
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
    return m(x.clamp(-1, 1).float(), y.clamp(-1, 1).float())

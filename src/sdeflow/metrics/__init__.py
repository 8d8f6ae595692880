"""Distances and scores for samples.

* :mod:`.distances`: sliced Wasserstein, MMD² and their noise floors (low-dimensional data).
* :mod:`.frechet`: Fréchet distance and KID between feature sets (the maths of FID/KID).
* :mod:`.digits`: the offline digits metric — a small classifier trained on the embedded 8×8
  digits, the Fréchet distance in its feature space (FDD) with its train-vs-test noise floor.
* :mod:`.image`: PSNR, SSIM, L1/L2 between image pairs.
* :mod:`.inception`: FID/KID with Inception-v3 features and LPIPS, when their weights exist.
"""
from .distances import mmd2, noise_floor, sliced_wasserstein
from .frechet import frechet_distance, gaussian_stats, kernel_distance
from .image import l1, mse, psnr, ssim

__all__ = ["sliced_wasserstein", "mmd2", "noise_floor", "frechet_distance", "gaussian_stats",
           "kernel_distance", "psnr", "ssim", "l1", "mse"]

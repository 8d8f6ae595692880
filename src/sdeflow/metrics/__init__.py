"""Distances and scores for samples.

* :mod:`.distances`: sliced Wasserstein, MMD² and their noise floors (low-dimensional data).
* :mod:`.frechet`: Fréchet distance and KID between feature sets (the maths of FID/KID).
* :mod:`.digits`: the offline digits metric — a small classifier trained on the embedded 8×8
  digits, the Fréchet distance in its feature space (FDD) with its train-vs-test noise floor.
* :mod:`.mixture`: do samples come from a known Gaussian mixture? Per-component weights, means
  and widths with standard errors, and a Bonferroni threshold (the sharp test of SDE samplers).
* :mod:`.paired`: the ratio of one solver's RMS error to the best competitor's on shared draws,
  with a paired bootstrap interval (is "0.7× the best anchor" resolved by the draws?).
* :mod:`.image`: PSNR, SSIM, L1/L2 between image pairs.
* :mod:`.inception`: FID/KID with Inception-v3 features and LPIPS, when their weights exist.
"""
from .distances import mmd2, noise_floor, sliced_wasserstein
from .frechet import frechet_distance, gaussian_stats, kernel_distance
from .image import l1, mse, psnr, ssim
from .mixture import mixture_moments
from .paired import RatioInterval, rmse_ratio

__all__ = ["sliced_wasserstein", "mmd2", "noise_floor", "frechet_distance", "gaussian_stats",
           "kernel_distance", "psnr", "ssim", "l1", "mse", "mixture_moments", "rmse_ratio",
           "RatioInterval"]

r"""Image-to-image tasks for conditional models (SR3, Saharia et al. 2021; Palette, Saharia et
al. 2022): the network sees x_t concatenated with a condition image c(x_0) and learns
p(x_0 | c). A task is the degradation c — one function of the clean batch, applied by the
trainer to every batch and by ``sdeflow sr`` / ``sdeflow colorize`` to the inputs.

* ``sr``: super-resolution by ``factor``; the low-resolution image is the ``factor``×``factor``
  box average (area downsampling) and the condition is its bicubic upsampling to the full size
  (SR3's input).
* ``colorize``: the grey level (r + g + b)/3 of RGB images.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

__all__ = ["SuperResolution", "Colorization", "get_task", "list_tasks"]


@dataclass(frozen=True)
class SuperResolution:
    factor: int = 2

    def __post_init__(self):
        if self.factor < 2:
            raise ValueError("super-resolution factor must be ≥ 2")

    def cond_channels(self, channels: int) -> int:
        return channels

    def low_res(self, x0: Tensor) -> Tensor:
        """The low-resolution observation: factor×factor box averages."""
        if x0.shape[-1] % self.factor or x0.shape[-2] % self.factor:
            raise ValueError(f"image size {tuple(x0.shape[-2:])} is not divisible by {self.factor}")
        return F.avg_pool2d(x0, self.factor)

    def upsample(self, low: Tensor) -> Tensor:
        """Bicubic upsampling of a low-resolution image (the baseline, and SR3's condition)."""
        return F.interpolate(low, scale_factor=self.factor, mode="bicubic",
                             align_corners=False).clamp(-1, 1)

    def condition(self, x0: Tensor) -> Tensor:
        return self.upsample(self.low_res(x0))


@dataclass(frozen=True)
class Colorization:
    def cond_channels(self, channels: int) -> int:
        if channels != 3:
            raise ValueError(f"colorization needs RGB data, got {channels} channels")
        return 1

    def condition(self, x0: Tensor) -> Tensor:
        return x0.mean(dim=1, keepdim=True)


_TASKS = {"sr": SuperResolution, "colorize": Colorization}


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, **kwargs):
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; choices: {list_tasks()}")
    return _TASKS[name](**kwargs)

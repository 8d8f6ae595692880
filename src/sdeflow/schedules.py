r"""Time-step schedules: ``n`` steps from ``t_start`` (default T) down to ``t_end`` (default t_min).

Each schedule returns n + 1 strictly decreasing times, computed in float64 and with exact
endpoints. Pick one by name through :func:`get_timesteps`; :func:`list_schedules` lists them.

* ``uniform``:   uniform in t (score_sde).
* ``karras``:    uniform in :math:`\tilde\sigma^{1/\rho}`, ρ = 7 (Karras et al. 2022, eq. 5), with
  :math:`\tilde\sigma = \sigma/s` the noise level; alias ``edm``.
* ``logsnr``:    uniform in λ = log(s/σ) (Lu et al. 2022, DPM-Solver).
* ``quadratic``: :math:`t_i = t_{end} + (t_{start}-t_{end})(1-i/n)^2`, dense near the data
  (Song et al. 2021, DDIM).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .sde import SDE

__all__ = ["get_timesteps", "list_schedules", "register_schedule", "check_timesteps"]

_SCHEDULES: dict[str, Callable[..., Tensor]] = {}


def register_schedule(*names: str):
    """Decorator: make ``fn(sde, n, t_start, t_end, **opts) -> Tensor`` available by name."""
    def wrap(fn):
        for name in names:
            _SCHEDULES[name] = fn
        return fn
    return wrap


def list_schedules() -> list[str]:
    """Names usable as ``schedule=``."""
    return sorted(_SCHEDULES)


def _u(n: int) -> Tensor:
    return torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)


@register_schedule("uniform")
def uniform(sde: SDE, n: int, t_start: float, t_end: float) -> Tensor:
    return t_start + (t_end - t_start) * _u(n)


@register_schedule("quadratic")
def quadratic(sde: SDE, n: int, t_start: float, t_end: float) -> Tensor:
    return t_end + (t_start - t_end) * (1 - _u(n)) ** 2


@register_schedule("logsnr")
def logsnr(sde: SDE, n: int, t_start: float, t_end: float) -> Tensor:
    lam = sde.log_snr(torch.tensor([t_start, t_end], dtype=torch.float64))
    return sde.t_from_log_snr(lam[0] + (lam[1] - lam[0]) * _u(n))


@register_schedule("karras", "edm")
def karras(sde: SDE, n: int, t_start: float, t_end: float, rho: float = 7.0) -> Tensor:
    nu = sde.noise_level(torch.tensor([t_start, t_end], dtype=torch.float64))
    a, b = nu[0] ** (1 / rho), nu[1] ** (1 / rho)
    return sde.t_from_noise_level((a + (b - a) * _u(n)) ** rho)


def get_timesteps(sde: SDE, steps: int, schedule: str | None = None, *,
                  t_start: float | None = None, t_end: float | None = None,
                  dtype=torch.float64, device=None, **opts) -> Tensor:
    """``steps + 1`` decreasing times from ``t_start`` to ``t_end`` under the named schedule.

    ``schedule=None`` takes the SDE's default (``karras`` for EDM, ``uniform`` otherwise).
    Extra ``opts`` go to the schedule (e.g. ``rho`` for ``karras``).
    """
    schedule = schedule or sde.default_schedule
    if schedule not in _SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choices: {list_schedules()}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    t_start = sde.T if t_start is None else float(t_start)
    t_end = sde.t_min if t_end is None else float(t_end)
    sde.check_t(torch.tensor([t_start, t_end]), "t_start/t_end")
    if not t_start > t_end:
        raise ValueError(f"need t_start > t_end, got {t_start} and {t_end}")
    ts = _SCHEDULES[schedule](sde, steps, t_start, t_end, **opts).to(torch.float64)
    ts[0], ts[-1] = t_start, t_end
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError(f"schedule {schedule!r} produced non-decreasing times for {steps} steps")
    return ts.to(dtype=dtype, device=device)


def check_timesteps(sde: SDE, ts) -> Tensor:
    """Validate explicit times: 1-D, ≥ 2 entries, finite, strictly decreasing, inside [0, T]."""
    ts = torch.as_tensor(ts, dtype=torch.float64).detach().cpu()
    if ts.ndim != 1 or len(ts) < 2:
        raise ValueError(f"timesteps must be a 1-D sequence of at least 2 times, got shape {tuple(ts.shape)}")
    if not torch.isfinite(ts).all() or not (ts[1:] < ts[:-1]).all():
        raise ValueError("timesteps must be finite and strictly decreasing")
    if ts[-1] < 0 or ts[0] > sde.T * (1 + 1e-12):
        raise ValueError(f"timesteps must lie in [0, T={sde.T}], got [{ts[-1].item():g}, {ts[0].item():g}]")
    return ts

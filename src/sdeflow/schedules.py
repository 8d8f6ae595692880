r"""Time-step schedules: ``n`` steps from ``t_start`` (default T) down to ``t_end`` (default t_min).

Each schedule returns n + 1 strictly decreasing times, computed in float64 and with exact
endpoints. Pick one by name through :func:`get_timesteps`; :func:`list_schedules` lists them.

* ``uniform``:   uniform in t (score_sde).
* ``karras``:    uniform in :math:`\tilde\sigma^{1/\rho}`, ρ = 7 (Karras et al. 2022, eq. 5), with
  :math:`\tilde\sigma = \sigma/s` the noise level; alias ``edm``.
* ``logsnr``:    uniform in λ = log(s/σ) (Lu et al. 2022, DPM-Solver).
* ``quadratic``: :math:`t_i = t_{end} + (t_{start}-t_{end})(1-i/n)^2`, dense near the data
  (Song et al. 2021, DDIM).
* ``vp_uniform``: uniform in the time of the VP SDE whose noise levels span the same range —
  DPM-Solver's ``time_uniform`` and diffusers' DDPM grids, for any SDE: with
  :math:`\tilde\sigma(\tau)^2 = \exp(\tfrac12\beta_d\tau^2 + \beta_0\tau) - 1` fitted so that
  τ = 1 gives σ̃(t_start) and τ = ε = 10⁻³ gives σ̃(t_end), τ uniform on [ε, 1]. Many steps at
  large σ̃, where a mixture's component is decided (the VP SDE's own ``uniform``).
* ``vp_trailing``: diffusers' ``timestep_spacing="trailing"`` for any SDE — the ``vp_uniform``
  times τ_k = 1 − k/(n+1), k = 0 … n, so the grid *ends early*, at τ = 1/(n+1) (σ̃ ≈ 0.3–0.7 at
  5–10 NFE on DDPM's VP), where the final denoising call x̂0 gives the answer: the n + 1 network
  calls all sit where the sample's component and shape are decided. A *free-end* schedule:
  ``t_end`` is where it would stop with infinitely many steps, not its last time.
* ``logsnr_trailing``, ``karras_trailing``, ``ays_trailing``, ``gits_trailing``: the *trailing*
  form of a schedule, as ``vp_trailing`` is of ``vp_uniform`` — its grid for n + 1 steps with
  the last time (t_end) dropped, so n steps and the final x̂0 call spend n + 1 network calls on
  n + 1 noise levels of the schedule, the last one the x̂0 call's (diffusers' final step to
  σ = 0), instead of one call at σ̃(t_end) ≈ 0 where x̂0 barely moves the sample. Free-end
  schedules.
* ``ays``: Align Your Steps (Sabour et al. 2024), the published 10-step Stable Diffusion 1.5
  schedule as a shape — log σ̃ at the fractions u = (1, .869, .786, .728, .671, .622, .563,
  .500, .420, .265, 0) of the way from log σ̃_end to log σ̃_start, log-linearly interpolated to
  n steps (as its authors do) and stretched to the SDE's range.
* ``gits``: the geometry-informed schedule of Chen et al. 2024 (GITS) for SD 1.5 (γ = 1.2, 10
  steps) as a shape: u = (1, .853, .737, .651, .582, .522, .458, .386, .309, .195, 0).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .sde import SDE

__all__ = ["get_timesteps", "list_schedules", "register_schedule", "check_timesteps"]

_SCHEDULES: dict[str, Callable[..., Tensor]] = {}
FREE_END: set[str] = set()  # schedules whose last time is their own (≥ t_end), not t_end


def register_schedule(*names: str, free_end: bool = False):
    """Decorator: make ``fn(sde, n, t_start, t_end, **opts) -> Tensor`` available by name
    (``free_end``: the schedule chooses its last time, at or after t_end)."""
    def wrap(fn):
        for name in names:
            _SCHEDULES[name] = fn
            if free_end:
                FREE_END.add(name)
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


def _vp_times(sde: SDE, tau: Tensor, t_start: float, t_end: float, eps: float) -> Tensor:
    """Times at VP-time τ ∈ [ε, 1] of the VP SDE fitted to σ̃(t_start) (τ = 1), σ̃(t_end) (τ = ε)."""
    nu = sde.noise_level(torch.tensor([t_start, t_end], dtype=torch.float64))
    L1, L0 = torch.log1p(nu[0] ** 2), torch.log1p(nu[1] ** 2)
    beta_d = 2 * (L1 * eps - L0) / (eps - eps**2)
    beta_0 = L1 - beta_d / 2
    t = sde.t_from_noise_level(torch.expm1(beta_d * tau**2 / 2 + beta_0 * tau).sqrt())
    return t.clamp(min(t_start, t_end), max(t_start, t_end))  # the inverse's bisection slack


@register_schedule("vp_uniform")
def vp_uniform(sde: SDE, n: int, t_start: float, t_end: float, eps: float = 1e-3) -> Tensor:
    return _vp_times(sde, 1 + (eps - 1) * _u(n), t_start, t_end, eps)


@register_schedule("vp_trailing", free_end=True)
def vp_trailing(sde: SDE, n: int, t_start: float, t_end: float, eps: float = 1e-3) -> Tensor:
    tau = (1 - _u(n) * n / (n + 1)).clamp_min(eps)
    return _vp_times(sde, tau, t_start, t_end, eps)


#: published schedules as shapes: log σ̃ at fractions u of the log range, at k/10 of the way
SHAPES = {"ays": (1.0, .869, .786, .728, .671, .622, .563, .500, .420, .265, 0.0),
          "gits": (1.0, .853, .737, .651, .582, .522, .458, .386, .309, .195, 0.0)}


def _shape(name: str):
    def schedule(sde: SDE, n: int, t_start: float, t_end: float) -> Tensor:
        knots = torch.tensor(SHAPES[name], dtype=torch.float64)
        pos = _u(n) * (len(knots) - 1)
        lo = pos.floor().long().clamp(max=len(knots) - 2)
        u = knots[lo] + (pos - lo) * (knots[lo + 1] - knots[lo])
        nu = sde.noise_level(torch.tensor([t_start, t_end], dtype=torch.float64)).log()
        return sde.t_from_noise_level(torch.exp(nu[1] + u * (nu[0] - nu[1])))
    return schedule


for _name in SHAPES:
    register_schedule(_name)(_shape(_name))


def _trailing(base: str):
    def schedule(sde: SDE, n: int, t_start: float, t_end: float, **opts) -> Tensor:
        return _SCHEDULES[base](sde, n + 1, t_start, t_end, **opts)[:-1]
    schedule.__doc__ = f"``{base}`` with n + 1 steps, its last time dropped (trailing)."
    return schedule


for _name in ("logsnr", "karras", "ays", "gits"):
    register_schedule(f"{_name}_trailing", free_end=True)(_trailing(_name))


def get_timesteps(sde: SDE, steps: int, schedule: str | None = None, *,
                  t_start: float | None = None, t_end: float | None = None,
                  dtype=torch.float64, device=None, allow_free_end: bool = False,
                  **opts) -> Tensor:
    """``steps + 1`` decreasing times from ``t_start`` to ``t_end`` under the named schedule.

    ``schedule=None`` takes the SDE's default (``karras`` for EDM, ``uniform`` otherwise).
    Extra ``opts`` go to the schedule (e.g. ``rho`` for ``karras``). A *free-end* schedule
    (:data:`FREE_END`, e.g. ``vp_trailing``) ends before ``t_end`` and is refused unless
    ``allow_free_end`` (callers that finish with the final denoising x̂0: :func:`~sdeflow.sample`
    with ``denoise=True``, tuning with ``free_end=True``). An SDE that declares ``schedules``
    (CLD) takes only those.
    """
    schedule = schedule or sde.default_schedule
    _check_schedule(sde, schedule, allow_free_end)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    t_start = sde.T if t_start is None else float(t_start)
    t_end = sde.t_min if t_end is None else float(t_end)
    sde.check_t(torch.tensor([t_start, t_end]), "t_start/t_end")
    if not t_start > t_end:
        raise ValueError(f"need t_start > t_end, got {t_start} and {t_end}")
    ts = _SCHEDULES[schedule](sde, steps, t_start, t_end, **opts).to(torch.float64)
    ts[0] = t_start
    if schedule not in FREE_END:
        ts[-1] = t_end
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError(f"schedule {schedule!r} produced non-decreasing times for {steps} steps")
    return ts.to(dtype=dtype, device=device)


def _check_schedule(sde: SDE, schedule: str, allow_free_end: bool) -> None:
    if schedule not in _SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choices: {list_schedules()}")
    own = getattr(sde, "schedules", None)
    if own is not None and schedule not in own:
        raise ValueError(f"schedule {schedule!r} is not defined for the {sde.name} SDE; "
                         f"choices: {list(own)}")
    if schedule in FREE_END and not allow_free_end:
        raise ValueError(f"schedule {schedule!r} ends early (before t_end) and needs the final "
                         "denoising x̂0 to finish: only sample() with denoise=True (a fixed-grid "
                         "solver) and tuning with free_end=True may use it")


def ends_early(sde: SDE, ts: Tensor) -> bool:
    """Whether the grid ``ts`` stops above the SDE's ``t_min`` (a trailing schedule of
    :data:`FREE_END`, a tuned free-end grid, an explicit ``t_end``): then the final denoising
    x̂0(x, t_N) is a real last step to σ = 0, which iPNDM counts when it lowers its order at
    the end (``Context.final_denoise``). Named or explicit, the same grid gets the same
    treatment. ``t_min`` is compared in the grid's dtype (a float16 or float32 ``t_min`` still
    counts as ``t_min``), with a relative tolerance of 1e-6."""
    t_min = float(torch.tensor(sde.t_min, dtype=ts.dtype))
    return float(ts[-1].detach()) > t_min * (1 + 1e-6)


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

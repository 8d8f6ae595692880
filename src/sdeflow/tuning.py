r"""Tuned time-step schedules: for a given model, solver and step budget, move the grid times
to minimise the distance between the solver's answer and a high-accuracy reference answer
(in the spirit of "optimised" / learned schedules: Watson et al. 2021, Sabour et al. 2024).

Parameterisation: the interior times of a grid t_0 = T > t_1 > … > t_N = t_min are placed in
log-SNR λ = log(s/σ) as

.. math:: \lambda_k = \lambda(T) + \Big(\sum_{j\le k} w_j\Big)\,(\lambda(t_{min}) - \lambda(T)),
          \quad w = \mathrm{softmax}(\theta),

so every θ ∈ R^N gives a valid, strictly decreasing grid with the fixed endpoints. The loss is
the RMS error of the solver's denoised output on **calibration** noise draws against the
reference (adaptive RK45 at rtol = atol = 1e-6 by default); θ is optimised by a derivative-free
pattern search (any ODE solver, no gradients through the network), started from the best of
the named schedules. Evaluate on noise that was *not* used for calibration: :func:`tune_timesteps`
reports the loss on a separate held-out draw too.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .samplers import get_solver, sample
from .schedules import check_timesteps, get_timesteps

__all__ = ["TunedSchedule", "tune_timesteps", "timesteps_from_theta", "theta_from_timesteps"]


@dataclass
class TunedSchedule:
    """A tuned grid and how it was obtained; ``save``/``load`` as JSON."""

    solver: str
    steps: int
    timesteps: list
    sde: dict
    calibration_loss: float
    start_loss: float
    start_schedule: str
    heldout_loss: float | None = None
    heldout_start_loss: float | None = None
    kept_start: bool = False
    n_calibration: int = 0
    calibration_seed: int = 0
    evaluations: int = 0
    solver_opts: dict = field(default_factory=dict)

    def save(self, path) -> Path:
        from .checkpoint import write_text_atomic
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path) -> "TunedSchedule":
        d = json.loads(Path(path).read_text())
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)} in a tuned schedule")
        return cls(**d)

    def tensor(self, sde=None) -> Tensor:
        """The grid as a float64 tensor (validated against ``sde`` when given)."""
        ts = torch.tensor(self.timesteps, dtype=torch.float64)
        if sde is not None:
            if sde.config() != self.sde:
                raise ValueError(f"schedule was tuned for SDE {self.sde}, not {sde.config()}")
            check_timesteps(sde, ts)
        return ts


def _lams(sde, t_start: float, t_end: float) -> tuple[Tensor, Tensor]:
    f64 = torch.float64
    return (sde.log_snr(torch.tensor(t_start, dtype=f64)), sde.log_snr(torch.tensor(t_end, dtype=f64)))


def timesteps_from_theta(sde, theta: Tensor, t_start: float, t_end: float) -> Tensor:
    """Grid of len(θ) intervals from θ (module docstring); endpoints exact."""
    lam0, lam1 = _lams(sde, t_start, t_end)
    pos = torch.softmax(theta.to(torch.float64), 0).cumsum(0)[:-1]
    ts = sde.t_from_log_snr(lam0 + pos * (lam1 - lam0))
    return torch.cat([torch.tensor([t_start], dtype=torch.float64), ts.to(torch.float64),
                      torch.tensor([t_end], dtype=torch.float64)])


def theta_from_timesteps(sde, ts: Tensor) -> Tensor:
    lam = sde.log_snr(ts.to(torch.float64))
    w = (lam[1:] - lam[:-1]) / (lam[-1] - lam[0])
    return w.clamp_min(1e-12).log()


def tune_timesteps(model, x_cal: Tensor, *, solver: str = "dpmpp_2m", steps: int = 10,
                   reference: Tensor | None = None, x_heldout: Tensor | None = None,
                   reference_heldout: Tensor | None = None, start_schedules=("karras", "logsnr", "uniform", "quadratic"),
                   max_evals: int = 400, step0: float = 0.5, min_step: float = 1e-3,
                   reference_opts: dict | None = None, cond: dict | None = None,
                   calibration_seed: int = 0, progress: bool = False, **solver_opts) -> TunedSchedule:
    """Tune the ``steps``-interval grid of ``solver`` for ``model`` on calibration noise ``x_cal``
    (prior draws at T). ``reference`` is the accurate answer for ``x_cal`` (computed with
    ``reference_opts``, default RK45 at 1e-6, when not given). With ``x_heldout`` (separate
    validation draws) the result reports the start and tuned losses on them, and keeps the
    starting grid (``kept_start``) if tuning made the validation loss worse — in high dimension
    a few draws that switch modes can dominate the RMS error of a small calibration set."""
    info = get_solver(solver)
    if info.kind != "ode" or info.adaptive:
        raise ValueError(f"tuning needs a fixed-step ODE solver; {solver!r} is "
                         f"{'adaptive' if info.adaptive else info.kind}")
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    sde = model.sde
    cond = cond or {}
    ref_opts = {**dict(solver="rk45", rtol=1e-6, atol=1e-6), **(reference_opts or {})}

    @torch.no_grad()
    def answer(x, **opts):
        return sample(model, x, cond=cond, **opts)

    if reference is None:
        reference = answer(x_cal, **ref_opts)
    if x_heldout is not None and reference_heldout is None:
        reference_heldout = answer(x_heldout, **ref_opts)

    def loss(ts, x=x_cal, ref=reference) -> float:
        out = answer(x, solver=solver, timesteps=ts, **solver_opts)
        err = (out - ref).pow(2).mean().sqrt().item()
        return err if math.isfinite(err) else math.inf

    t_start, t_end = float(sde.T), float(sde.t_min)
    starts = {}
    for name in start_schedules:
        ts = get_timesteps(sde, steps, name)
        starts[name] = (loss(ts), ts)
    start_name = min(starts, key=lambda k: starts[k][0])
    best, ts0 = starts[start_name]
    theta = theta_from_timesteps(sde, ts0)
    evals, delta = len(starts), step0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_evals, initial=evals, desc=f"tuning {solver} ({steps} steps)")
    while delta >= min_step and evals < max_evals and steps > 1:
        improved = False
        for i in range(steps):
            for sign in (1.0, -1.0):
                trial = theta.clone()
                trial[i] += sign * delta
                value = loss(timesteps_from_theta(sde, trial, t_start, t_end))
                evals += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{best:.3g}", delta=f"{delta:.3g}")
                if value < best:
                    best, theta, improved = value, trial, True
                    break
            if evals >= max_evals:
                break
        if not improved:
            delta /= 2
    if bar is not None:
        bar.close()
    ts = timesteps_from_theta(sde, theta, t_start, t_end) if steps > 1 else ts0
    out = TunedSchedule(solver=solver, steps=steps, timesteps=ts.tolist(), sde=sde.config(),
                        calibration_loss=best, start_loss=starts[start_name][0],
                        start_schedule=start_name, n_calibration=len(x_cal),
                        calibration_seed=calibration_seed, evaluations=evals,
                        solver_opts=dict(solver_opts))
    if x_heldout is not None:
        out.heldout_loss = loss(ts, x_heldout, reference_heldout)
        out.heldout_start_loss = loss(ts0, x_heldout, reference_heldout)
        if out.heldout_loss > out.heldout_start_loss:
            # the tuned grid fitted the calibration draws' outliers, not the solver's error:
            # keep the starting schedule (validation on draws the search never saw)
            out.timesteps, out.kept_start = ts0.tolist(), True
    return out

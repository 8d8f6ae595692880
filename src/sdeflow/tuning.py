r"""Tuned time-step schedules: for a given model, solver and step budget, move the grid times
to minimise the distance between the solver's answer and a high-accuracy reference answer
(in the spirit of "optimised" / learned schedules: Watson et al. 2021; Sabour et al. 2024;
Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs").

Parameterisation: the times after t_0 = T are placed in log-SNR λ = log(s/σ) as

.. math:: \lambda_k = \lambda(T) + \Big(\sum_{j\le k} w_j\Big)\,(\lambda(t_{min}) - \lambda(T)),
          \quad w = \mathrm{softmax}(\theta),

so every θ gives a valid, strictly decreasing grid. With N steps, θ ∈ R^N fixes the last time at
t_min; with ``free_end`` (default) θ ∈ R^{N+1} and the last weight is the unused gap, so the
final time t_N ≥ t_min is tuned too. The solver's answer is its denoised output x̂0(x_N, t_N) —
the same count of network calls as samplers that end with a step to σ = 0 (k-diffusion,
diffusers) — and moving t_N lets the tuner choose where that last denoising happens.

The loss is the RMS error of the denoised output on **calibration** noise draws against the
reference (adaptive RK45 at rtol = atol = 1e-6 by default). ``method="gradient"`` (default)
minimises it with Adam on θ, differentiating through the solver and the network (every
sdeflow solver is a differentiable function of its grid); ``method="pattern"`` is a
derivative-free pattern search for models one cannot differentiate. Both start from the best
named schedule and keep the best grid seen. Evaluate on noise that was *not* used for
calibration: :func:`tune_timesteps` reports the loss on a separate held-out draw too.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .samplers import get_solver, sample
from .samplers.registry import Context
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
    method: str = "pattern"
    free_end: bool = False

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


def timesteps_from_theta(sde, theta: Tensor, t_start: float, t_end: float,
                         free_end: bool = False) -> Tensor:
    """Grid from θ (module docstring): len(θ) intervals ending exactly at t_end, or with
    ``free_end`` len(θ) − 1 intervals ending at some t_N ≥ t_end. Differentiable in θ."""
    lam0, lam1 = _lams(sde, t_start, t_end)
    pos = torch.softmax(theta.to(torch.float64), 0).cumsum(0)[:-1]
    ts = sde.t_from_log_snr(lam0 + pos * (lam1 - lam0)).to(torch.float64)
    head = torch.tensor([t_start], dtype=torch.float64)
    if free_end:
        return torch.cat([head, ts])
    return torch.cat([head, ts, torch.tensor([t_end], dtype=torch.float64)])


def theta_from_timesteps(sde, ts: Tensor, t_end: float | None = None,
                         min_gap: float = 1e-3) -> Tensor:
    """θ of a grid; with ``t_end`` (free-end form) the gap from ts[-1] down to t_end becomes the
    last weight, at least ``min_gap`` of the range so that the search can move it."""
    lam = sde.log_snr(ts.to(torch.float64))
    if t_end is None:
        w = (lam[1:] - lam[:-1]) / (lam[-1] - lam[0])
        return w.clamp_min(1e-12).log()
    lam1 = sde.log_snr(torch.tensor(t_end, dtype=torch.float64))
    w = torch.cat([lam[1:] - lam[:-1], (lam1 - lam[-1]).reshape(1)]) / (lam1 - lam[0])
    w[-1] = w[-1].clamp_min(min_gap)
    return w.clamp_min(1e-12).log()


def tune_timesteps(model, x_cal: Tensor, *, solver: str = "dpmpp_2m", steps: int = 10,
                   method: str = "gradient", free_end: bool = True,
                   reference: Tensor | None = None, x_heldout: Tensor | None = None,
                   reference_heldout: Tensor | None = None,
                   start_schedules=("karras", "logsnr", "uniform", "quadratic"),
                   max_evals: int = 400, lr: float = 0.05, step0: float = 0.5,
                   min_step: float = 1e-3, reference_opts: dict | None = None,
                   cond: dict | None = None, calibration_seed: int = 0, progress: bool = False,
                   **solver_opts) -> TunedSchedule:
    """Tune the ``steps``-interval grid of ``solver`` for ``model`` on calibration noise ``x_cal``
    (prior draws at T). ``reference`` is the accurate answer for ``x_cal`` (computed with
    ``reference_opts``, default RK45 at 1e-6, when not given). ``method``: ``"gradient"`` (Adam
    on θ with learning rate ``lr``, cosine-decayed; ``max_evals`` iterations of one forward and
    one backward pass) or ``"pattern"`` (``max_evals`` solver runs of coordinate pattern search
    with steps ``step0`` → ``min_step``). ``free_end`` tunes the final time too (module
    docstring). With ``x_heldout`` (separate validation draws) the result reports the start and
    tuned losses on them, and keeps the starting grid (``kept_start``) if tuning made the
    validation loss worse — in high dimension a few draws that switch modes can dominate the RMS
    error of a small calibration set."""
    info = get_solver(solver)
    if info.kind != "ode" or info.adaptive:
        raise ValueError(f"tuning needs a fixed-step ODE solver; {solver!r} is "
                         f"{'adaptive' if info.adaptive else info.kind}")
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    if method not in ("gradient", "pattern"):
        raise ValueError(f"unknown tuning method {method!r}; choices: ['gradient', 'pattern']")
    sde = model.sde
    cond = cond or {}
    ref_opts = {**dict(solver="rk45", rtol=1e-6, atol=1e-6), **(reference_opts or {})}
    if reference is None:
        with torch.no_grad():
            reference = sample(model, x_cal, cond=cond, **ref_opts)
    if x_heldout is not None and reference_heldout is None:
        with torch.no_grad():
            reference_heldout = sample(model, x_heldout, cond=cond, **ref_opts)

    def answer(x, ts):
        """The solver's denoised output on the grid ``ts`` (differentiable in ts)."""
        ts = ts.to(dtype=x.dtype, device=x.device)
        out = info.fn(model, x, ts, Context(cond=cond), **solver_opts)
        return model.x0(out, ts[-1], **cond)

    def rmse(ts, x=x_cal, ref=reference) -> Tensor:
        return (answer(x, ts) - ref).pow(2).mean().sqrt()

    def loss(ts, x=x_cal, ref=reference) -> float:
        with torch.no_grad():
            err = rmse(ts, x, ref).item()
        return err if math.isfinite(err) else math.inf

    t_start, t_end = float(sde.T), float(sde.t_min)
    starts = {}
    for name in start_schedules:
        ts = get_timesteps(sde, steps, name)
        starts[name] = (loss(ts), ts)
    start_name = min(starts, key=lambda k: starts[k][0])
    ts0 = starts[start_name][1]
    theta = theta_from_timesteps(sde, ts0, t_end if free_end else None)

    def grid(th):
        return timesteps_from_theta(sde, th, t_start, t_end, free_end=free_end)
    best = loss(grid(theta))
    evals = len(starts) + 1
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_evals, initial=evals, desc=f"tuning {solver} ({steps} steps)")
    if len(theta) > 1:
        search = _adam if method == "gradient" else _pattern
        theta, best, evals = search(grid, rmse, loss, theta, best, evals, max_evals, bar,
                                    lr=lr, step0=step0, min_step=min_step)
    if bar is not None:
        bar.close()
    ts = grid(theta).detach()
    out = TunedSchedule(solver=solver, steps=steps, timesteps=ts.tolist(), sde=sde.config(),
                        calibration_loss=best, start_loss=starts[start_name][0],
                        start_schedule=start_name, n_calibration=len(x_cal),
                        calibration_seed=calibration_seed, evaluations=evals,
                        solver_opts=dict(solver_opts), method=method, free_end=free_end)
    if x_heldout is not None:
        out.heldout_loss = loss(ts, x_heldout, reference_heldout)
        out.heldout_start_loss = loss(ts0, x_heldout, reference_heldout)
        if out.heldout_loss > out.heldout_start_loss:
            # the tuned grid fitted the calibration draws' outliers, not the solver's error:
            # keep the starting schedule (validation on draws the search never saw)
            out.timesteps, out.kept_start = ts0.tolist(), True
    return out


def _pattern(grid, rmse, loss, theta, best, evals, max_evals, bar, step0, min_step, **_):
    """Coordinate pattern search: try ±δ on each θ_i, keep improvements, halve δ otherwise."""
    delta = step0
    while delta >= min_step and evals < max_evals:
        improved = False
        for i in range(len(theta)):
            for sign in (1.0, -1.0):
                trial = theta.clone()
                trial[i] += sign * delta
                value = loss(grid(trial))
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
    return theta, best, evals


def _adam(grid, rmse, loss, theta, best, evals, max_evals, bar, lr, **_):
    """Adam on θ through the solver (cosine-decayed learning rate); keeps the best θ seen. A
    non-finite loss (a grid the solver cannot handle) restarts from the best θ at half the rate."""
    best_theta = theta.clone()
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    n_iter = max(max_evals - evals, 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_iter, 1))
    for _ in range(n_iter):
        value = rmse(grid(theta))
        evals += 1
        v = value.item()
        if not math.isfinite(v):
            with torch.no_grad():
                theta.copy_(best_theta)
            for g in opt.param_groups:
                g["lr"] /= 2
            continue
        if v < best:
            best, best_theta = v, theta.detach().clone()
        (g,) = torch.autograd.grad(value, [theta])
        theta.grad = g
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{best:.3g}")
    # the last step's θ has not been scored yet
    v = loss(grid(theta.detach()))
    evals += 1
    if v < best:
        best, best_theta = v, theta.detach().clone()
    return best_theta, best, evals

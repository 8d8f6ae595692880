r"""One loop for every adaptive solver: accept/reject, step-size control, rows still active.

A method supplies its **trial step**: from the active rows' times t, states x and signed step
sizes Δt (t → t + Δt) it returns the proposed states and a scaled error estimate per row,
``err`` ≤ 1 accepting the step (embedded pair, predictor–corrector difference, …). The loop
(:func:`adaptive_loop`) owns the rest, as torchdiffeq's ``RKAdaptiveStepsizeODESolver`` does:

* the rows still short of ``t_end`` (finished samples cost nothing), the last step clipped to
  land exactly on ``t_end``;
* acceptance, per-sample accepted/rejected counts (→ ``ctx.stats``), progress and callback;
* the next step from the :class:`StepController`, a PI controller (Gustafsson 1991; Hairer &
  Wanner, *Solving ODEs II*, §IV.2) for an error estimate of order k:

  .. math:: h' = h\cdot\mathrm{clip}\big(\text{safety}\cdot err_n^{-(1-\beta)/k}\,
            err_{n-1}^{\beta/k},\ \text{min\_factor},\ \text{max\_factor}\big),

  β = 0 being the plain I-controller h' = h·safety·err^{−1/k}; optionally no growth on a
  rejected step nor on the step right after one (as scipy's RK45);
* per-sample control (each row its own h: a sample's result does not depend on its batch) or
  batch control (one error, the RMS over the batch, and one step for all rows);
* a non-finite error stops at once (``FloatingPointError`` naming the solver) instead of
  rejecting until ``max_steps``.

A new adaptive solver is a trial-step function and a :func:`~.registry.register_solver` entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .registry import Context

__all__ = ["StepController", "Trial", "AdaptiveState", "TrialStep", "adaptive_loop", "rms",
           "select_rows"]


def rms(e: Tensor) -> Tensor:
    """Per-sample root-mean-square over all but the batch dimension."""
    return e.reshape(e.shape[0], -1).pow(2).mean(1).sqrt()


def select_rows(cond: dict, rows: Tensor | None) -> dict:
    """Per-sample conditioning restricted to ``rows`` (tensors with a batch dim are sliced)."""
    if rows is None:
        return cond
    return {k: v[rows] if torch.is_tensor(v) and v.ndim > 0 else v for k, v in cond.items()}


@dataclass(frozen=True)
class StepController:
    """Step-size factor rule (module docstring). ``order`` is k, the exponent's denominator
    (the order of the error estimate plus one for an embedded pair); ``hold_after_reject``
    forbids growth on and right after a rejection; ``control`` is ``"sample"`` or ``"batch"``."""

    order: float
    safety: float = 0.9
    beta: float = 0.0
    min_factor: float = 0.2
    max_factor: float = 10.0
    hold_after_reject: bool = True
    control: str = "sample"

    def __post_init__(self):
        if self.control not in ("sample", "batch"):
            raise ValueError(f"control must be 'sample' or 'batch', got {self.control!r}")
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {self.beta}")

    def factor(self, err: Tensor, err_prev: Tensor, order: Tensor | None = None) -> Tensor:
        """h'/h for rows with errors ``err`` (this step) and ``err_prev`` (the last accepted);
        ``order`` (per row) overrides k for methods whose order changes along the way."""
        k = self.order if order is None else order
        f = self.safety * err.clamp_min(1e-10) ** (-(1 - self.beta) / k)
        if self.beta:
            f = f * err_prev ** (self.beta / k)
        return f.clamp(self.min_factor, self.max_factor)


@dataclass
class Trial:
    """What a trial step returns for its rows: proposed states ``x``, scaled errors ``err``
    (≤ 1 accepts), optionally a per-row controller ``order``, and ``accept(ok, acc, t_acc)``,
    called with the accepted mask over the rows, their batch indices and new times, for the
    method's own state (an FSAL stage, a multistep history, …)."""

    x: Tensor
    err: Tensor
    order: Tensor | None = None
    accept: Callable[[Tensor, Tensor, Tensor], None] | None = None


# step(t of the rows (R,), x of the rows, signed step Δt (R,), batch indices of the rows (R,))
TrialStep = Callable[[Tensor, Tensor, Tensor, Tensor], Trial]


@dataclass
class AdaptiveState:
    """Per-sample times ``t`` (B,), states ``x`` (B, ...) and step sizes ``h`` > 0 (B,) of an
    integration towards ``t_end`` (either direction); updated in place by the loop."""

    t: Tensor
    x: Tensor
    h: Tensor
    t_end: float
    direction: float = field(init=False)  # +1 forwards, −1 backwards in t

    def __post_init__(self):
        self.t_end = float(self.t_end)
        ahead, behind = bool((self.t < self.t_end).any()), bool((self.t > self.t_end).any())
        if ahead and behind:
            raise ValueError(f"all samples must start on the same side of t_end={self.t_end:g}")
        if not bool((self.h > 0).all()):
            raise ValueError("initial step sizes must be positive")
        self.direction = 1.0 if ahead else -1.0


class _Counts:
    """Per-sample bookkeeping of the loop: accepted/rejected steps, the last accepted error
    (for the PI term) and whether the last trial was rejected."""

    def __init__(self, B: int, device):
        self.accepted = torch.zeros(B, dtype=torch.long, device=device)
        self.rejected = torch.zeros_like(self.accepted)
        self.just_rejected = torch.zeros(B, dtype=torch.bool, device=device)
        self.err_prev: Tensor | None = None

    def report(self, ctx: Context) -> None:
        a, r = self.accepted, self.rejected
        ctx.stats.update(accepted_mean=a.double().mean().item(), accepted_max=int(a.max()),
                         rejected_mean=r.double().mean().item(), rejected_max=int(r.max()))


def _scaled_error(trial: Trial, control: StepController, name: str) -> Tensor:
    err = trial.err
    if control.control == "batch":  # one error (RMS over the batch) and one step for all
        err = err.pow(2).mean().sqrt().expand_as(err)
    if not torch.isfinite(err).all():  # would reject every step until max_steps
        raise FloatingPointError(f"{name}: non-finite values in the solution (a NaN or inf "
                                 "from the model?)")
    return err


def _step_factor(err: Tensor, ok: Tensor, idx: Tensor, trial: Trial,
                 control: StepController, counts: _Counts) -> Tensor:
    """h'/h of the rows ``idx``; records their errors and rejections for the next step."""
    if counts.err_prev is None:
        counts.err_prev = torch.ones(len(counts.accepted), dtype=err.dtype, device=err.device)
    factor = control.factor(err, counts.err_prev[idx], trial.order)
    counts.err_prev[idx[ok]] = err.clamp_min(1e-10)[ok]
    if control.hold_after_reject:
        factor = torch.where(ok & ~counts.just_rejected[idx], factor, factor.clamp(max=1.0))
        counts.just_rejected[idx] = ~ok
    return factor


def _advance(state: AdaptiveState, trial: Trial, ok: Tensor, idx: Tensor, hi: Tensor,
             remaining: Tensor) -> Tensor:
    """Take the accepted rows' steps (landing exactly on t_end on the clipped last step) and
    tell the method; returns the accepted batch indices."""
    acc, d = idx[ok], state.direction
    state.x[acc] = trial.x[ok]
    t_acc = torch.where(hi[ok] >= remaining[ok], torch.full_like(hi[ok], state.t_end),
                        state.t[acc] + d * hi[ok])
    stuck = t_acc == state.t[acc]
    if stuck.any():  # h below the resolution of t: the loop would spin until max_steps
        raise FloatingPointError(f"step size underflow at t={float(t_acc[stuck][0]):g} "
                                 f"(h={float(hi[ok][stuck][0]):.3g}); loosen rtol/atol or "
                                 "integrate in float64")
    state.t[acc] = t_acc
    if trial.accept is not None:
        trial.accept(ok, acc, t_acc)
    return acc


def adaptive_loop(step: TrialStep, state: AdaptiveState, control: StepController,
                  ctx: Context | None = None, *, name: str, max_steps: int = 100_000,
                  observe: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
                  ) -> Tensor:
    """Integrate ``state`` to ``state.t_end`` with trial steps ``step`` (module docstring);
    returns the final x. ``ctx`` (optional) gets the step counts in ``stats``, a progress
    update per trial and ``callback(*observe(t, x))`` after trials that accepted a row
    (``observe`` maps the loop's variables to the sampler's t and x; default: as they are)."""
    d = state.direction
    counts = _Counts(state.x.shape[0], state.x.device)
    active = (state.t_end - state.t) * d > 0
    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        remaining = (state.t_end - state.t[idx]) * d
        hi = torch.minimum(state.h[idx], remaining)
        trial = step(state.t[idx], state.x[idx], d * hi, idx)
        err = _scaled_error(trial, control, name)
        ok = err <= 1.0
        state.h[idx] = hi * _step_factor(err, ok, idx, trial, control, counts)
        acc = _advance(state, trial, ok, idx, hi, remaining)
        counts.accepted[acc] += 1
        counts.rejected[idx[~ok]] += 1
        active[acc] = (state.t[acc] - state.t_end) * d < 0
        if ctx is not None:
            _report_step(ctx, state, ok, observe)
    else:
        raise RuntimeError(f"{name} did not reach t={state.t_end:g} in {max_steps} steps; "
                           "loosen the tolerances (rtol, atol) or raise max_steps")
    if ctx is not None:
        counts.report(ctx)
    return state.x


def _report_step(ctx: Context, state: AdaptiveState, ok: Tensor, observe) -> None:
    if ctx.progress is not None:
        ctx.progress.update(1)
    if ctx.callback is not None and ok.any():
        ctx.callback(*(observe(state.t, state.x) if observe else (state.t, state.x)))

"""Solver registry and the per-call context every solver receives.

A solver is one function ``fn(model, x, ts, ctx, **opts) -> x`` that integrates from ``ts[0]``
to ``ts[-1]`` (a decreasing grid from a schedule). It is registered under a name with its kind
(``"ode"`` or ``"sde"``), its order and its default number of steps, so the CLI, configs and
tests can enumerate what exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = ["SolverInfo", "Context", "register_solver", "get_solver", "list_solvers"]


@dataclass
class Context:
    """What a solver needs besides the model and the grid: randomness, conditioning, reporting."""

    generator: torch.Generator | None = None
    cond: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    callback: Callable[[Tensor, Tensor], None] | None = None
    progress: object | None = None  # a tqdm bar, advanced once per step
    # constraint(t, x, ctx) -> x: applied after every step of fixed-grid solvers (and every
    # corrector step of PC), e.g. inpainting's replacement of the known region
    constraint: Callable[[Tensor, Tensor, "Context"], Tensor] | None = None
    # the grid ends above t_min (schedules.ends_early: a trailing schedule, a tuned free-end
    # grid) and the final denoising follows: that x̂0 call is its last, first-order step to
    # σ = 0 (iPNDM counts it)
    final_denoise: bool = False

    def randn_like(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def constrain(self, t: Tensor, x: Tensor) -> Tensor:
        return x if self.constraint is None else self.constraint(t, x, self)

    def step_done(self, t: Tensor, x: Tensor, advance: int = 1) -> Tensor:
        """Apply the constraint, report the step; returns the (constrained) state."""
        x = self.constrain(t, x)
        if self.callback is not None:
            self.callback(t, x)
        if self.progress is not None:
            self.progress.update(advance)
        return x


@dataclass(frozen=True)
class SolverInfo:
    name: str
    fn: Callable
    kind: str  # "ode" or "sde"
    order: float | None
    default_steps: int | None  # None: adaptive, steps are not used
    description: str
    returns_data: bool = False  # the solver's answer is already x̂0 (no final denoising call)
    first_step: bool = False  # takes first_step="lookahead" (samplers/first_step.py)

    @property
    def adaptive(self) -> bool:
        return self.default_steps is None


_SOLVERS: dict[str, SolverInfo] = {}


def register_solver(name: str, *, kind: str, order: float | None, default_steps: int | None,
                    description: str, returns_data: bool = False, first_step: bool = False):
    """Decorator registering ``fn(model, x, ts, ctx, **opts)`` under ``name``. ``first_step``:
    a one-call-per-step multistep solver whose first step is DDIM's, which then also takes
    ``first_step="lookahead"`` (:mod:`.first_step`: its first two grid times from one call)."""
    if kind not in ("ode", "sde"):
        raise ValueError(f"kind must be 'ode' or 'sde', got {kind!r}")

    def wrap(fn):
        if name in _SOLVERS:
            raise ValueError(f"solver {name!r} is already registered")
        from .first_step import with_first_step
        _SOLVERS[name] = SolverInfo(name, with_first_step(fn, name, first_step), kind, order,
                                    default_steps, description, returns_data, first_step)
        return fn
    return wrap


def list_solvers(kind: str | None = None) -> list[str]:
    """Names usable as ``solver=``; ``kind="ode"`` or ``"sde"`` filters."""
    if kind not in (None, "ode", "sde"):
        raise ValueError(f"kind must be None, 'ode' or 'sde', got {kind!r}")
    return sorted(n for n, s in _SOLVERS.items() if kind is None or s.kind == kind)


def get_solver(name: str) -> SolverInfo:
    if name not in _SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choices: {list_solvers()}")
    return _SOLVERS[name]

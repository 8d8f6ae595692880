r"""RePaint (Lugmayr et al. 2022): inpainting with resampling.

The grid t_0 > … > t_n is walked with jumps: every ``jump_length`` steps down, the state is
sent back up ``jump_length`` steps by the exact forward transition
:math:`x_{t_{i-1}} = a\,x_{t_i} + \sqrt v\,z` (:meth:`SDE.transition`), ``resamplings`` − 1 times,
before going on. Each step down is one step of a one-step sampler followed by the replacement of
the known region (:mod:`.observation`); the back-and-forth lets the generated part harmonise with
the known part. Cost: about ``resamplings`` × the NFE of a plain pass.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..latent.inpaint import through_latent
from ..progress import progress_bar
from ..rng import make_generator
from ..samplers.registry import Context, get_solver
from ..schedules import get_timesteps
from ..sde import bcast
from .observation import Observation

__all__ = ["repaint_schedule", "repaint", "REPAINT_STEPS"]

REPAINT_STEPS = 250  # the paper's grid (Lugmayr et al. 2022: T = 250, j = 10, r = 10)


def repaint_schedule(steps: int, jump_length: int = 10, resamplings: int = 10) -> list[int]:
    """Indices into a decreasing grid of ``steps`` intervals, starting at 0 and ending at
    ``steps``, moving by ±1: at every multiple of ``jump_length`` go back up ``jump_length``
    indices, ``resamplings`` − 1 times."""
    if steps < 1 or jump_length < 1 or resamplings < 1:
        raise ValueError("steps, jump_length and resamplings must be ≥ 1")
    left = {}
    idx, path = 0, [0]
    while idx < steps:
        idx += 1
        path.append(idx)
        if idx % jump_length == 0 and idx >= jump_length:
            left.setdefault(idx, resamplings - 1)
            if left[idx] > 0:
                left[idx] -= 1
                for _ in range(jump_length):
                    idx -= 1
                    path.append(idx)
    return path


@through_latent
def repaint(model: Denoiser, y: Tensor, mask: Tensor, *, steps: int | None = None,
            jump_length: int = 10, resamplings: int = 10, solver: str = "ancestral",
            schedule: str | None = None,
            basis: Tensor | None = None, x_T: Tensor | None = None, seed: int | None = None,
            generator: torch.Generator | None = None, cond: dict | None = None, denoise: bool = True,
            progress: bool = False, return_stats: bool = False, **solver_opts):
    """RePaint with any one-step sampler for the steps down: ``ancestral`` (the paper's DDPM
    step), ``euler_maruyama``, ``reverse_diffusion``, ``ddim`` (η=0: deterministic steps down,
    the jumps up stay stochastic), ``heun``, ``dpm_solver_2`` …  (a multistep solver would
    restart at every step and act as its first-order member). ``steps``: the grid's intervals
    (None: the paper's 250). Returns the completions (and stats: nfe, seconds, the number of
    steps down and up)."""
    steps = REPAINT_STEPS if steps is None else steps
    if solver == "auto":
        raise ValueError("RePaint steps down its own jump schedule with one solver: "
                         "solver='auto' does not apply; give a one-step sampler such as "
                         "'ancestral' (the default), 'ddim' or 'heun'")
    info = get_solver(solver)
    if info.adaptive:
        raise ValueError(f"RePaint needs a fixed-grid one-step solver, not the adaptive {solver!r}")
    obs = Observation(y, mask, basis)
    sde = model.sde
    generator = make_generator(seed, generator, y.device)
    ts = get_timesteps(sde, steps, schedule, dtype=y.dtype, device=y.device)
    x = sde.prior_sample(tuple(y.shape), generator=generator, dtype=y.dtype, device=y.device) \
        if x_T is None else x_T
    path = repaint_schedule(steps, jump_length, resamplings)
    bar = progress_bar(total=len(path) - 1, desc=f"RePaint ({solver})",
                       leave=False) if progress else None
    ctx = Context(generator=generator, cond=cond or {}, progress=bar,
                  constraint=obs.constraint(sde))
    ones = torch.ones(y.shape[0], dtype=y.dtype, device=y.device)
    nfe0, t0, down, up = model.nfe, time.perf_counter(), 0, 0
    try:
        for i, j in zip(path[:-1], path[1:]):
            if j == i + 1:
                x = info.fn(model, x, ts[i:j + 1], ctx, **solver_opts)
                down += 1
            else:
                a, v = sde.transition(ts[i] * ones, ts[j] * ones)
                x = bcast(a, x) * x + bcast(v.sqrt(), x) * ctx.randn_like(x)
                up += 1
                if bar is not None:
                    bar.update(1)
        if denoise:
            x = model.x0(x, ts[-1] * ones, **ctx.cond)
    finally:
        if bar is not None:
            bar.close()
    x = obs.fill(x)
    if not return_stats:
        return x
    return x, dict(solver=solver, nfe=model.nfe - nfe0, seconds=time.perf_counter() - t0,
                   steps_down=down, steps_up=up, jump_length=jump_length, resamplings=resamplings)

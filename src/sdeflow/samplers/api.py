"""``sdeflow.sample``: one entry point for every registered sampler."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..denoiser import Denoiser, check_batch
from ..progress import progress_bar
from ..rng import make_generator
from ..schedules import check_timesteps, ends_early, get_timesteps
from .registry import Context, get_solver

__all__ = ["sample"]


def sample(model: Denoiser, x_T: Tensor | None = None, *, shape=None, solver: str | None = None,
           steps: int | None = None, schedule: str | None = None, t_start: float | None = None,
           t_end: float | None = None, denoise: bool | None = None,
           generator: torch.Generator | None = None,
           seed: int | None = None, dtype=None, device=None, cond: dict | None = None,
           callback: Callable[[Tensor, Tensor], None] | None = None, progress: bool = False,
           return_stats: bool = False, schedule_opts: dict | None = None,
           timesteps=None, constraint=None, force: bool = False, decode: bool | None = None,
           **solver_opts):
    """Draw samples by integrating a reverse-time process of ``model.sde`` from t_start to t_end.

    Args:
        model: a :class:`~sdeflow.Denoiser`, or a :class:`~sdeflow.cld.CLDModel` (sampled by
            :func:`sdeflow.cld.sample_cld`: ``solver="sscs"`` by default, x returned).
        x_T: starting point at ``t_start``; if None, drawn from the SDE's prior with ``shape``.
        solver: a name from :func:`sdeflow.list_solvers` (``kind="ode"`` or ``"sde"``); default
            ``"heun"``, or ``"ddim"`` for a distilled model; ``"auto"``: solver, schedule and
            final step chosen for the budget ``steps`` in NFE (:mod:`sdeflow.samplers.auto`;
            its one option: ``statistics``, DPM-Solver-v3's, used where its rule wants them).
        steps: number of grid intervals (default: the solver's own; unused by adaptive solvers).
        schedule: a name from :func:`sdeflow.list_schedules` (default: the SDE's); refused for
            adaptive solvers (they choose their own times). A free-end schedule
            (``vp_trailing``) needs ``denoise=True``: it ends early, at the final x̂0 call.
        t_start, t_end: integration interval, default [T → t_min].
        denoise: finish with x̂0(x, t_end) (one extra NFE), as score_sde and EDM do; default
            True, False for a distilled model (never trained at t_end) and for solvers whose
            answer is x̂0 already (``consistency``).
        generator / seed: randomness for x_T and stochastic solvers (``seed`` makes a generator).
        cond: keyword conditioning passed to the network.
        callback: called as ``callback(t, x)`` after each step (e.g. to record trajectories).
        timesteps: explicit decreasing times t_0 > … > t_n (e.g. a tuned schedule or a
            pretrained model's discrete steps) instead of ``steps``/``schedule``.
        constraint: ``constraint(t, x, ctx) -> x`` applied after every step (fixed-grid solvers
            only), e.g. :class:`sdeflow.inpainting.Observation`'s replacement of known values.
        force: sample a *distilled* model — one carrying ``model.timesteps``, the grid it was
            distilled for (:mod:`sdeflow.training.progressive`) — with another grid, steps count
            or solver. Without it a distilled model samples with deterministic DDIM on its own
            grid by default, and any other request is a ValueError naming that grid.
        progress: show a progress bar.
        decode: for a latent model (:class:`~sdeflow.latent.LatentDenoiser`, or a guided
            one), return the decoded images (default) or, with False, the latents; ``shape``
            may then be the images' or the latents' batch shape.
        return_stats: also return a dict with ``nfe``, ``seconds``, ``steps``, ``solver``,
            ``schedule``, with ``solver="auto"`` the ``options`` it chose (e.g. iPNDM's
            ``order``), and solver-specific entries (accepted/rejected steps of adaptive ones).
        **solver_opts: solver options, e.g. ``rtol``, ``atol``, ``eta``, ``snr``, ``gamma``,
            ``predictor``, ``corrector``, ``n_corrector_steps``; ``first_step="lookahead"``
            for iPNDM, DEIS, DPM-Solver++(2M/3M) and UniPC: one call serves the first two
            grid times, so ``steps`` steps cost ``steps`` calls with the final x̂0
            (:mod:`sdeflow.samplers.first_step`).

    Returns:
        The samples (same dtype/device as ``x_T``), or ``(samples, stats)``.
    """
    if _is_cld(model):  # its own samplers on the (x, v) state; x is returned
        return _sample_cld(dict(locals()))
    if not isinstance(model, Denoiser):
        raise TypeError("model must be an sdeflow.Denoiser (wrap your network with Denoiser(net, sde, "
                        "prediction=...)) or an sdeflow.cld.CLDModel")
    latent = _latent(model, decode)
    if latent is not None and shape is not None:
        shape = latent.sample_shape(shape)
    chosen = {}
    if solver == "auto":
        solver, steps, schedule, denoise, solver_opts, chosen = _auto(
            model, x_T, shape, steps, schedule, denoise, timesteps, solver_opts)
    solver, denoise, timesteps, own_grid = _distilled_defaults(
        model, solver, denoise, timesteps, force, solver_opts,
        asked=any(a is not None for a in (steps, schedule, t_start, t_end)))
    info = get_solver(solver)
    if info.returns_data:  # the answer is x̂0 already: a final denoising call is a wasted NFE
        denoise = False if denoise is None else denoise
    denoise = True if denoise is None else denoise
    sde = model.sde
    generator = make_generator(seed, generator, x_T.device if x_T is not None else device)
    x_T = _start(sde, x_T, shape, generator, dtype, device)
    if info.adaptive:
        _check_adaptive(solver, steps, schedule, constraint)
        steps = 1
    if timesteps is not None:
        if info.adaptive or steps not in (None, len(timesteps) - 1) or schedule is not None:
            raise ValueError("timesteps replaces steps/schedule (and adaptive solvers take none)")
        ts = check_timesteps(sde, timesteps).to(dtype=x_T.dtype, device=x_T.device)
        steps = len(ts) - 1
        schedule = "custom"
    else:
        steps = info.default_steps if steps is None else steps
        ts = get_timesteps(sde, steps, schedule, t_start=t_start, t_end=t_end, dtype=x_T.dtype,
                           device=x_T.device, allow_free_end=denoise and not info.adaptive,
                           **(schedule_opts or {}))
    if own_grid is not None:
        _check_distilled(own_grid, f"{steps} steps on t = {_fmt(ts)}", same_as=ts)
    bar = progress_bar(total=None if info.adaptive else steps, desc=f"sampling ({solver})",
                       leave=False) if progress else None
    ctx = Context(generator=generator, cond=cond or {}, callback=callback, progress=bar,
                  constraint=constraint, final_denoise=denoise and ends_early(sde, ts))
    nfe0, t0 = model.nfe, time.perf_counter()
    try:
        x = info.fn(model, x_T, ts, ctx, **solver_opts)
        if denoise:
            x = model.x0(x, ts[-1], **ctx.cond)
        if latent is not None and decode is not False:
            x = latent.decode(x)
    finally:
        if bar is not None:
            bar.close()
    if not return_stats:
        return x
    stats = dict(solver=solver, schedule=schedule or sde.default_schedule, steps=None
                 if info.adaptive else steps, **chosen, nfe=model.nfe - nfe0,
                 seconds=time.perf_counter() - t0, **ctx.stats)
    return x, stats


def _is_cld(model) -> bool:
    from ..cld.model import is_cld
    return is_cld(model)


def _latent(model, decode):
    """The latent model ``model`` is or wraps (None for a pixel-space model, where
    ``decode=True`` is refused)."""
    from ..latent import find_latent
    latent = find_latent(model)
    if latent is None and decode:
        raise ValueError("decode=True needs a latent model (sdeflow.latent.LatentDenoiser)")
    return latent


def _check_adaptive(solver: str, steps, schedule, constraint) -> None:
    """An adaptive solver chooses its own times (it uses only ts[0] and ts[-1])."""
    if steps is not None:
        raise ValueError(f"solver {solver!r} is adaptive: set rtol/atol, not steps")
    if schedule is not None:
        raise ValueError(f"solver {solver!r} is adaptive: it chooses its own times and uses no "
                         f"schedule (got schedule={schedule!r}); set rtol/atol")
    if constraint is not None:
        raise ValueError(f"solver {solver!r} is adaptive (per-sample times); a constraint "
                         "(inpainting) needs a fixed-grid solver")


def _start(sde, x_T, shape, generator, dtype, device) -> Tensor:
    """x_T as given (checked against ``shape``), or drawn from the SDE's prior."""
    if x_T is None:
        if shape is None:
            raise ValueError("give x_T or shape")
        return sde.prior_sample(tuple(shape), generator=generator,
                                dtype=dtype or torch.get_default_dtype(), device=device)
    check_batch(x_T, "x_T")
    if shape is not None and tuple(shape) != tuple(x_T.shape):
        raise ValueError(f"shape {tuple(shape)} disagrees with x_T.shape {tuple(x_T.shape)}")
    return x_T


def _auto(model, x_T, shape, steps, schedule, denoise, timesteps, opts: dict):
    """solver="auto": (solver, steps, schedule, denoise, options) of :func:`.auto.auto_config`
    for the budget ``steps`` (NFE; default 20), and the stats' record of the options chosen
    (statistics by their path or type, not their tensors)."""
    from .auto import DEFAULT_NFE, auto_config, predicts_noise, solver_options
    if getattr(model, "timesteps", None) is not None:
        raise ValueError("a distilled model samples on its own grid (model.timesteps); omit "
                         "solver='auto'")
    statistics = opts.get("statistics")
    if schedule is not None or timesteps is not None or denoise is not None \
            or set(opts) - {"statistics"}:
        raise ValueError("solver='auto' chooses the solver, its options, the schedule and the "
                         "final step itself: give only steps (the NFE budget) and, if you "
                         "have them, DPM-Solver-v3's statistics (statistics=)")
    if x_T is None and shape is None:
        raise ValueError("give x_T or shape")
    dims = tuple(x_T.shape if x_T is not None else shape)[1:]
    cfg = auto_config(model.sde, DEFAULT_NFE if steps is None else steps, max(1, math.prod(dims)),
                      predicts_noise(model), statistics=statistics is not None)
    opts = solver_options(cfg, statistics)
    shown = {k: v if isinstance(v, (int, float, str)) else str(v) if isinstance(v, Path)
             else type(v).__name__ for k, v in opts.items()}
    return cfg["solver"], cfg["steps"], cfg["schedule"], cfg["denoise"], opts, \
        dict(options=shown)


_CLD_ARGS = ("shape", "steps", "schedule", "t_end", "timesteps", "generator", "seed", "dtype",
             "device", "cond", "callback", "progress", "return_stats")


def _sample_cld(args: dict):
    """:func:`sdeflow.cld.sample_cld` with ``sample``'s arguments (SSCS by default); the
    arguments that do not apply to a CLD model are refused by name. ``solver="auto"`` is SSCS
    with ``steps`` = the NFE budget (default 20): SSCS costs 1 NFE per step and a CLD model has
    no final denoising call."""
    from ..cld import sample_cld
    given = sorted(k for k in ("t_start", "denoise", "constraint") if args[k] is not None)
    given += ["force"] if args["force"] else []
    given += ["schedule_opts"] if args["schedule_opts"] else []
    if given:
        raise ValueError(f"a CLD model samples from its prior to t_end: {', '.join(given)} "
                         "do(es) not apply")
    kwargs = {k: args[k] for k in _CLD_ARGS}
    solver = args["solver"] or "sscs"
    if solver == "auto":
        if args["schedule"] is not None or args["timesteps"] is not None or args["solver_opts"]:
            raise ValueError("solver='auto' chooses the solver and grid itself: give only steps "
                             "(the NFE budget)")
        solver, kwargs["steps"] = "sscs", 20 if args["steps"] is None else args["steps"]
    return sample_cld(args["model"], args["x_T"], solver=solver, **kwargs, **args["solver_opts"])


def _fmt(ts) -> str:
    return "[" + ", ".join(f"{t:.4g}" for t in torch.as_tensor(ts).tolist()) + "]"


def _check_distilled(grid: Tensor, asked: str, same_as: Tensor | None = None) -> None:
    """Raise unless ``same_as`` is the distilled ``grid`` (to float32 round-off)."""
    if same_as is not None and len(same_as) == len(grid) and torch.allclose(
            same_as.detach().to("cpu", torch.float64), grid, rtol=1e-6, atol=0.0):
        return
    n = len(grid) - 1
    raise ValueError(f"this model was distilled for {n} deterministic DDIM step{'s' * (n > 1)} "
                     f"on t = {_fmt(grid)} (model.timesteps), not for {asked}; sample it with "
                     "the defaults, or pass force=True to sample it anyway")


def _distilled_defaults(model, solver, denoise, timesteps, force: bool, opts: dict, asked: bool):
    """(solver, denoise, timesteps, grid to check ts against or None). A distilled model
    (``model.timesteps``) defaults to deterministic DDIM on its grid without the final
    denoising; without ``force`` another solver is refused here, another grid after it is
    built."""
    grid = getattr(model, "timesteps", None)
    if grid is None:
        return solver or "heun", denoise, timesteps, None
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    solver = solver or "ddim"
    if not force and (solver != "ddim" or opts.get("eta", 0.0)):
        _check_distilled(grid, f"solver {solver!r}" + (f" with eta={opts['eta']}"
                                                       if solver == "ddim" else ""))
    if timesteps is None and not asked and not get_solver(solver).adaptive:
        timesteps = grid
    return solver, False if denoise is None else denoise, timesteps, None if force else grid

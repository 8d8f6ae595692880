"""The image panels' work, run inside a job: a sample grid, the same seeds at several solvers
or NFE budgets, and inpainting/colorization of one image. Each ``*_work`` returns the function
a :class:`~sdeflow.serve.jobs.Job` runs: ``work(job) -> (result, {name: PNG bytes})``."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from ..samplers.auto import DEFAULT_NFE
from ..tuning import installed, installed_path
from .images import grid_png
from .runs import ApiError, Run

__all__ = ["Draw", "draw", "sample_work", "compare_panels", "compare_work", "inpaint_work",
           "test_images", "jsonable", "TEST_IMAGES"]

#: how many held-out images the Inpaint panel offers
TEST_IMAGES = 16
_TEST_CACHE: dict = {}
_TEST_LOCK = threading.Lock()


@dataclass
class Draw:
    """One sampling request: solver, steps, schedule (a name or ``file:<tuned schedule>``),
    seed, number of images, class (None: all classes in turn) and guidance scale."""

    solver: str
    steps: int | None
    schedule: str | None
    seed: int
    n: int
    class_label: int | None = None
    guidance: float = 0.0


def jsonable(value):
    """Stats as JSON: tensors become numbers or lists, floats are rounded for the page."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _grid(run: Run, model, d: Draw) -> dict:
    """The solver and grid of ``d``; DPM-Solver-v3 takes the statistics that `sdeflow ems`
    wrote into the run's checkpoint folder. ``auto`` on an unconditional model takes the
    schedule `tune-steps --install` put there for the budget, as `sdeflow sample` does, and
    else those statistics where its rule uses them."""
    from ..samplers.ems import auto_statistics, with_default_statistics
    tuned = None
    if d.schedule and d.schedule.startswith("file:"):
        tuned = run.schedule_files()[d.schedule[5:]]
    elif d.solver == "auto" and not d.schedule and not run.flag("class_cond", False):
        tuned = installed(run.path, d.steps or DEFAULT_NFE, model.sde)
    if tuned is not None:
        return dict(solver=tuned.solver, timesteps=tuned.tensor(model.sde),
                    **with_default_statistics(tuned.solver, tuned.solver_opts, run.path))
    found = auto_statistics(run.path) if d.solver == "auto" and not d.schedule \
        and not run.flag("class_cond", False) else {}
    return dict(solver=d.solver, steps=d.steps, schedule=d.schedule,
                **with_default_statistics(d.solver, {}, run.path), **found)


def _conditioned(run: Run, model, d: Draw):
    """(model, cond): class labels (the asked class, or 0, 1, … in turn) and CFG when asked."""
    from ..guidance import ClassifierFreeGuidance
    if not run.flag("class_cond", False):
        return model, {}
    k = run.flag("num_classes")
    labels = torch.full((d.n,), d.class_label) if d.class_label is not None else \
        torch.arange(d.n) % k
    if d.guidance > 0:
        model = ClassifierFreeGuidance.for_labels(model, d.guidance, k)
    return model, {"class_labels": labels}


def draw(run: Run, job, d: Draw):
    """(images, stats) of ``d``, reporting each step to ``job``."""
    from ..samplers import sample
    from ..samplers.ems import condition_mismatch, describe_condition
    model, cond = _conditioned(run, run.model(), d)
    grid = _grid(run, run.model(), d)
    warning = condition_mismatch(grid["solver"], grid,
                                 describe_condition(d.class_label, guidance=d.guidance or None))
    with torch.no_grad():
        x, st = sample(model, shape=(d.n, *run.shape), seed=d.seed, cond=cond,
                       callback=job.callback, return_stats=True, **grid)
    if d.solver == "auto" and not d.schedule and "timesteps" in grid:  # the installed one
        st = dict(st, installed=str(installed_path(run.path, d.steps or DEFAULT_NFE)))
    return x, (dict(st, warning=warning) if warning else st)


def sample_work(run: Run, d: Draw):
    def work(job):
        x, st = draw(run, job, d)
        return jsonable(dict(st, n=d.n, seed=d.seed, class_label=d.class_label,
                             guidance=d.guidance, requested_schedule=d.schedule)), \
            {"grid": grid_png(x)}
    return work


def compare_panels(solvers, steps, adaptive) -> list[tuple]:
    """(solver, steps) of each panel: every solver at every budget (an adaptive solver once)."""
    panels = []
    for s in solvers:
        panels += [(s, None)] if adaptive(s) else [(s, k) for k in dict.fromkeys(steps)]
    if len(panels) > 8:
        raise ApiError(400, f"{len(panels)} panels asked (solvers × steps); at most 8")
    return panels


def compare_work(run: Run, panels, base: Draw):
    def work(job):
        rows, images = [], {}
        for i, (solver, steps) in enumerate(panels):
            d = Draw(solver, steps, base.schedule, base.seed, base.n, base.class_label,
                     base.guidance)
            x, st = draw(run, job, d)
            images[f"panel{i}"] = grid_png(x, nrow=min(base.n, 4))
            rows.append(jsonable(dict(st, image=f"panel{i}")))
        return dict(panels=rows, seed=base.seed, n=base.n), images
    return work


def test_images(run: Run) -> tuple:
    """(images, labels or None) offered to inpaint: the first held-out images of the run."""
    from ..cli.common import held_out
    with _TEST_LOCK:
        if run.id not in _TEST_CACHE:
            _TEST_CACHE[run.id] = held_out(run.config, TEST_IMAGES)
        return _TEST_CACHE[run.id]


@dataclass
class Fill:
    """One inpainting/colorization request (see :class:`~.requests.InpaintRequest`)."""

    method: str
    solver: str | None
    steps: int | None
    seed: int
    samples: int
    jump_length: int = 5
    resamplings: int = 3
    label: int | None = None


def _count_nfe(model, job):
    """A forward pre-hook on the network reporting each evaluation to ``job`` (RePaint has no
    per-step callback; this also lets a cancel stop it), or None if the net is no Module."""
    net = getattr(model, "net", None)
    if not isinstance(net, torch.nn.Module):
        return None
    return net.register_forward_pre_hook(lambda *_: job.progress())


def _fill(model, y, mask, f: Fill, job, cond, statistics: dict):
    """(completions, stats) of replacement, RePaint or colorization (``statistics``: the
    run's DPM-Solver-v3 statistics option, when that solver is asked for)."""
    from ..inpainting import colorize, grey, inpaint, repaint
    opts = dict(seed=f.seed, steps=f.steps, return_stats=True, cond=cond, **statistics)
    if f.method == "colorize":
        return colorize(model, grey(y), method="replace", solver=f.solver or "pc",
                        callback=job.callback, **opts)
    if f.method == "replace":
        return inpaint(model, y, mask, solver=f.solver or "pc", callback=job.callback, **opts)
    hook = _count_nfe(model, job)
    try:
        return repaint(model, y, mask, solver=f.solver or "ancestral", jump_length=f.jump_length,
                       resamplings=f.resamplings, **{**opts, "steps": f.steps or 50})
    finally:
        if hook is not None:
            hook.remove()


def _fill_cond(run: Run, f: Fill) -> dict:
    """A class-conditional model's labels: the test image's class, else the null label."""
    if not run.flag("class_cond", False):
        return {}
    k = run.flag("num_classes")
    if f.label is None and not run.flag("p_uncond", 0) > 0:
        raise ValueError("this class-conditional model was trained without p_uncond, so it "
                         "needs the image's class: inpaint a test image instead of an upload")
    return {"class_labels": torch.full((f.samples,), k if f.label is None else f.label)}


def inpaint_work(run: Run, x: torch.Tensor, mask: torch.Tensor | None, f: Fill):
    """The job filling in image ``x`` (C, H, W) where ``mask`` is 0, ``f.samples`` times."""
    from ..inpainting import grey
    from ..samplers.ems import condition_mismatch, describe_condition, with_default_statistics

    def work(job):
        model = run.model()
        y = x[None].repeat(f.samples, 1, 1, 1)
        cond = _fill_cond(run, f)
        statistics = with_default_statistics(f.solver, {}, run.path)
        warning = condition_mismatch(f.solver, statistics, describe_condition(
            f.label if run.flag("class_cond", False) else None))
        with torch.no_grad():
            out, st = _fill(model, y, mask, f, job, cond, statistics)
        st = dict(st, warning=warning) if warning else st
        if f.method == "colorize":
            before = grey(x[None]).expand(-1, 3, -1, -1)
        else:
            before = torch.where(mask[0].bool(), x, torch.zeros_like(x))[None]
        images = {"before": grid_png(before, min_size=192), "after": grid_png(out, min_size=96),
                  "original": grid_png(x[None], min_size=192)}
        return jsonable(dict(st, method=f.method, samples=f.samples)), images
    return work

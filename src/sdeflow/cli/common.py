"""What the command modules share: the device, JSON options, the sampling arguments, loading a
run, held-out data and input images, and writing outputs (reports, grids, arrays)."""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

from ..data import SPLIT_DATA

__all__ = ["command_help", "add_command", "device", "json_dict", "add_sampling_args", "grid_args",
           "tuned_schedule", "load_run", "latest_checkpoint", "held_out", "load_images", "repeat",
           "write_report", "write_panels", "auto_by_default", "run_condition", "check_condition",
           "SPLIT_DATA"]

# Embedded data sets with a held-out ``test`` split.


def command_help(func) -> tuple[str, str]:
    """(help, description) of a command from the docstring of the function it runs: the first
    line is the one-line ``help`` of ``sdeflow --help``, the paragraphs after it the
    ``description`` of ``sdeflow COMMAND --help`` (argparse re-wraps them)."""
    first, _, rest = inspect.cleandoc(func.__doc__ or "").partition("\n")
    if not first or not rest.strip():
        raise ValueError(f"{func.__module__}.{func.__qualname__} needs a docstring: a one-line "
                         "help, a blank line, then the command's description")
    return first.strip(), rest.strip()


def add_command(sub, name: str, func, checkpoint: bool = False):
    """The parser of subcommand ``name`` (defaults shown in its --help; help and description
    from :func:`command_help`) that runs ``func(args)``; with ``checkpoint`` its first argument
    is the run directory or checkpoint folder to load."""
    help_, description = command_help(func)
    p = sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help=help_, description=description)
    p.set_defaults(func=func)
    if checkpoint:
        p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    return p


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def json_dict(text: str) -> dict:
    """argparse type of the ``--*-kwargs`` and ``--solver-opts`` options: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"rtol\": 1e-4}'")
    return value


def add_sampling_args(p, grid: bool = True, default: str | None = None,
                      steps_default: str = "the solver's") -> None:
    """--solver, --steps, --solver-opts and --seed; with ``grid`` also the time grid's
    --schedule and --timesteps-file, --no-denoise and --force (read back by
    :func:`grid_args`). ``default``: the --solver default in words where the command has its
    own (the image commands); ``steps_default``: likewise the --steps default."""
    from ..cld import list_cld_solvers
    from ..samplers import list_solvers
    from ..schedules import list_schedules
    asks = "--schedule, --no-denoise or --solver-opts" if grid else "--solver-opts"
    default = default or (f"auto — solver, schedule and final step chosen for the budget --steps "
                          f"in NFE (for an ε network with `sdeflow ems`' statistics in the "
                          f"checkpoint folder: DPM-Solver-v3 at 4–30 NFE), or the checkpoint's "
                          f"own tuned schedule for that budget (`tune-steps --install`); heun "
                          f"when {asks} is given")
    p.add_argument("--solver", default=None,
                   choices=sorted({*list_solvers(), *list_cld_solvers(), "auto"}),
                   help=f"sampler (default: {default}"  # image commands load score models only
                        + ("; a distilled model: DDIM on its own grid; a CLD model: sscs)"
                           if grid else ")"))
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps (default: {steps_default}); with --solver auto the budget in "
                        "network evaluations (NFE, default 20)")
    if grid:
        p.add_argument("--schedule", default=None, choices=list_schedules(),
                       help="time-step schedule (default: the SDE's)")
    p.add_argument("--solver-opts", type=json_dict, default={},
                   help="solver options as JSON, e.g. '{\"rtol\": 1e-4}' or '{\"snr\": 0.1}'")
    if grid:
        p.add_argument("--timesteps-file", default=None,
                       help="a tuned schedule (JSON from `sdeflow tune-steps`) instead of "
                            "--steps/--schedule")
        p.add_argument("--no-denoise", action="store_true", help="skip the final denoising step")
        p.add_argument("--force", action="store_true",
                       help="sample a distilled model on another grid than its own")
    p.add_argument("--seed", type=int, default=0)


def grid_args(a, model, unconditional: bool = False, dim: int | None = None,
              condition: str | None = None) -> dict:
    """solver/steps/schedule (or the solver and grid of a tuned schedule: :func:`tuned_schedule`),
    denoise, force and the solver options (--solver-opts over a tuned file's own;
    DPM-Solver-v3's statistics default to those of `sdeflow ems` in the checkpoint folder, and
    ``auto`` gets them when they were estimated for the run's one ``condition`` — in words,
    :func:`run_condition`; None with ``unconditional``: unconditional sampling —; without
    them, where its rule would use them for data of ``dim`` dimensions, a note on stderr says
    how to get them) from the arguments, as ``sdeflow.sample`` takes them (None: the model's
    own default)."""
    from ..samplers.ems import auto_statistics, with_default_statistics
    own = dict(denoise=False if a.no_denoise else None, force=a.force)
    tuned = tuned_schedule(a, model, unconditional)
    if tuned is None:
        solver = "auto" if auto_by_default(a, model) else a.solver
        if solver == "auto":  # `sdeflow ems`' statistics, for the run's one condition
            single = (unconditional or condition is not None) and not a.solver_opts
            found = auto_statistics(a.checkpoint, condition) if single else {}
            if single and not found and dim:
                _suggest_statistics(a, model, dim, condition)
            return dict(solver=solver, steps=a.steps, force=a.force, **a.solver_opts, **found)
        opts = with_default_statistics(solver, a.solver_opts, a.checkpoint)
        return dict(solver=solver, steps=a.steps, schedule=a.schedule, **own, **opts)
    opts = with_default_statistics(tuned.solver, {**tuned.solver_opts, **a.solver_opts},
                                   a.checkpoint)
    return dict(solver=tuned.solver, timesteps=tuned.tensor(model.sde), **own, **opts)


def _suggest_statistics(a, model, dim: int, condition: str | None) -> None:
    """Say on stderr how `sdeflow ems` would make ``auto`` better, where its rule would use
    the statistics (a noise-predicting network, docs/benchmarks.md)."""
    from ..samplers.auto import DEFAULT_NFE, auto_config, predicts_noise
    if getattr(a, "classifier", None):  # `sdeflow ems` cannot estimate them under one
        return
    nfe = DEFAULT_NFE if a.steps is None else a.steps
    if isinstance(nfe, int) and nfe > 0 and auto_config(
            model.sde, nfe, dim, predicts_noise(model), statistics=True)["solver"] \
            == "dpm_solver_v3":
        how = f" with this run's conditioning options ({condition})" if condition else ""
        print(f"note: `sdeflow ems {a.checkpoint}`{how} (once per model) lets auto run "
              f"DPM-Solver-v3 with this network's statistics at {nfe} NFE: 0.2-0.75x the error "
              f"of auto without them on four ε U-Nets (docs/benchmarks.md)", file=sys.stderr)


def tuned_schedule(a, model, unconditional: bool = False):
    """The tuned schedule to sample with (a :class:`~sdeflow.tuning.TunedSchedule`): the file
    of --timesteps-file, or — with no --solver, for ``unconditional`` sampling (tuning is
    unconditional) — the one ``tune-steps --install`` put in the checkpoint folder for the
    budget --steps (NFE, default 20), said on stderr; None: neither, so ``auto`` or --solver."""
    from ..samplers.auto import DEFAULT_NFE
    from ..tuning import TunedSchedule, installed, installed_path
    if getattr(a, "timesteps_file", None):
        if a.steps is not None or a.schedule is not None:
            raise ValueError("--timesteps-file replaces --steps and --schedule")
        return TunedSchedule.load(a.timesteps_file)
    if not (unconditional and auto_by_default(a, model)):
        return None
    nfe = DEFAULT_NFE if a.steps is None else a.steps
    tuned = installed(a.checkpoint, nfe, model.sde)
    if tuned is not None:
        print(f"sampling with the schedule tuned for this checkpoint at {nfe} NFE "
              f"({installed_path(a.checkpoint, nfe)}, from `sdeflow tune-steps --install`); "
              f"--solver auto for auto's own rule", file=sys.stderr)
    return tuned


def auto_by_default(a, model) -> bool:
    """No --solver: ``solver="auto"`` (the budget --steps in NFE, default 20) for a score model
    sampled on a grid of its choice — not for a distilled model (its own grid), a CLD model (its
    own sampler), or when --schedule, --no-denoise or --solver-opts ask for a particular solver's
    grid or options (then the library's default solver)."""
    from ..denoiser import Denoiser
    return (a.solver is None and isinstance(model, Denoiser)
            and getattr(model, "timesteps", None) is None
            and getattr(a, "schedule", None) is None and not getattr(a, "no_denoise", False)
            and not a.solver_opts and not getattr(a, "force", False))


def load_run(path, kind: str, device=None):
    """(model, config) of the EMA network in a run directory or checkpoint folder, which must
    hold a ``kind`` model: "denoiser" (a Denoiser — a score model, a distilled student, a
    consistency model — and its config), "classifier" (a NoisyClassifier and its
    ClassifierConfig), "cld" (a CLDModel), or a tuple of them. A missing, damaged or foreign file is a
    CheckpointError (a ValueError) whose message starts with the file's path. A saved
    diffusers folder (pipeline or model) loads through :mod:`sdeflow.interop`."""
    from ..interop.folders import is_diffusers_folder
    if is_diffusers_folder(path):
        from ..interop.cli import load_folder
        return load_folder(path, kind, device=device)
    from ..loading import load
    return load(path, ema=True, device=device, kind=kind)


def latest_checkpoint(run_dir) -> Path:
    """The checkpoint folder a run directory's ``latest`` file names."""
    run_dir = Path(run_dir)
    return run_dir / (run_dir / "latest").read_text().strip()


def held_out(cfg, n: int):
    """The first n images (and labels) of the model's held-out data: the ``test`` split of the
    embedded sets, else the training data."""
    from ..data import get_data
    kw = dict(cfg.data_kwargs)
    if cfg.data in SPLIT_DATA:
        kw["split"] = "test"
    data = get_data(cfg.data, **kw)
    return data.x[:n], (None if data.y is None else data.y[:n])


def image_shape(model, cfg) -> list:
    """The shape of the images a model makes: a latent model's decoded images, else the
    run's data shape."""
    from ..latent import find_latent
    latent = find_latent(model)
    return list(latent.image_shape) if latent is not None else list(cfg.shape)


def load_images(paths, size: int, channels: int) -> torch.Tensor:
    """Image files as a batch (N, channels, size, size) in [−1, 1], resized and centre-cropped."""
    from PIL import Image

    from ..data.images import pil_to_tensor, resize
    xs = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"input image {p} not found")
        with Image.open(p) as img:
            xs.append(resize(pil_to_tensor(img, channels)[None], size)[0])
    return torch.stack(xs)


def repeat(x, k: int):
    """Each row of ``x`` k times in a row (None stays None)."""
    return None if x is None else x.repeat_interleave(k, dim=0)


def write_report(path, report: dict, indent: int | None = 2) -> None:
    """The report as JSON to ``path`` and to stdout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=indent))


def write_panels(out: Path, panels: dict, report: dict, arrays: dict, title: str) -> None:
    """OUT/grid.png (one labelled column of images per panel), OUT/<name>.npy per array and
    OUT/report.json."""
    import numpy as np

    from ..plotting import labelled_grids
    out.mkdir(parents=True, exist_ok=True)
    nrow = max(1, int(len(next(iter(panels.values()))) ** 0.5))
    labelled_grids({k: v.cpu() for k, v in panels.items()}, out / "grid.png", nrow=nrow, title=title)
    for k, v in arrays.items():
        np.save(out / f"{k}.npy", v.cpu().numpy())
    write_report(out / "report.json", report)
    print(f"wrote {out / 'grid.png'}, {out / 'report.json'} and the arrays ({', '.join(arrays)}.npy)")


def run_condition(a) -> str | None:
    """The conditioning options of ``a`` in words (None: unconditional)."""
    from ..samplers.ems import describe_condition
    # 0: no guidance, as guided_model takes it (with a classifier, 0 is a scale: None is 1)
    guidance = a.guidance if a.classifier else a.guidance or None
    return describe_condition(a.class_label, a.prompt, guidance, a.classifier)


def check_condition(grid: dict, condition: str | None) -> None:
    """Warn when DPM-Solver-v3's statistics file was estimated under other conditioning
    options than ``condition`` (:func:`run_condition` of the sampling run)."""
    from ..samplers.ems import condition_mismatch
    message = condition_mismatch(grid.get("solver"), grid, condition)
    if message:
        import warnings
        warnings.warn(message, stacklevel=2)

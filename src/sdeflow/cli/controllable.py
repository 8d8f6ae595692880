"""Controllable generation: ``sdeflow inpaint``, ``colorize`` and ``sr``, and the guidance
options of ``sdeflow sample`` (``--class``, ``--guidance``, ``--classifier``). Each command
writes a before/after grid (PNG), the arrays (.npy) and a JSON report."""
from __future__ import annotations

from pathlib import Path

import torch

from .common import (SPLIT_DATA, add_command, add_sampling_args, auto_by_default,
                     check_condition, device, held_out, image_shape, load_images, load_run,
                     repeat, write_panels)

__all__ = ["add_guidance_args", "guided_model", "add_inpaint", "cmd_inpaint", "add_colorize",
           "cmd_colorize", "colour_stats", "colour_report", "add_sr", "cmd_sr", "sr_report"]


# --- guidance for `sdeflow sample` ------------------------------------------------------------

def add_guidance_args(p) -> None:
    p.add_argument("--class", dest="class_label", type=int, default=None,
                   help="class to sample (class-conditional model, or with --classifier)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale w: classifier-free (1+w)·cond − w·uncond for a model "
                        "trained with --p-uncond, or w·∇log p(y|x_t) with --classifier")
    p.add_argument("--prompt", default=None,
                   help="caption to sample (a model trained with --text-cond; words of "
                        "sdeflow.data.captions.vocabulary()); with --guidance: classifier-free "
                        "guidance against the empty prompt")
    p.add_argument("--classifier", default=None,
                   help="noise-conditional classifier checkpoint (from `sdeflow train-classifier`) "
                        "for classifier guidance of an unconditional model")


def _check_class(label: int, num_classes: int) -> None:
    if not 0 <= label < num_classes:
        raise ValueError(f"--class must lie in [0, {num_classes})")


def _prompted_model(a, model, cfg, n: int, device):
    """(model, cond) for ``--prompt`` (and ``--guidance``) of a text-conditional model."""
    from ..data.captions import tokenize
    from ..guidance import ClassifierFreeGuidance
    if not getattr(cfg, "text_cond", False):
        raise ValueError("--prompt needs a text-conditional model (trained with --text-cond)")
    if a.class_label is not None or a.classifier:
        raise ValueError("--prompt cannot be combined with --class or --classifier")
    tokens = tokenize([a.prompt], cfg.model_kwargs["text_length"]).repeat(n, 1).to(device)
    if a.guidance is None or a.guidance == 0:
        return model, {"tokens": tokens}
    if cfg.p_uncond <= 0:
        raise ValueError("classifier-free guidance needs a model trained with --p-uncond > 0 "
                         "(the empty prompt was never trained)")
    return ClassifierFreeGuidance.for_text(model, a.guidance), {"tokens": tokens}


def guided_model(a, model, cfg, n: int, device):
    """(model, cond) for the guidance options of ``a`` (see :func:`add_guidance_args`)."""
    from ..guidance import ClassifierFreeGuidance, ClassifierGuidance
    if getattr(a, "prompt", None) is not None:
        return _prompted_model(a, model, cfg, n, device)
    if a.class_label is None:
        if a.guidance is not None or a.classifier:
            raise ValueError("--guidance/--classifier need --class (the class to guide towards) "
                             "or, for a text-conditional model, --prompt")
        if getattr(cfg, "text_cond", False) and not cfg.p_uncond > 0:
            raise ValueError("this text-conditional model never trained on the empty prompt "
                             "(--p-uncond 0): give --prompt")
        return model, {}
    cond = {"class_labels": torch.full((n,), a.class_label, device=device)}
    if getattr(cfg, "KIND", "") == "cld" and (a.classifier or a.guidance):
        raise ValueError("guidance of CLD models is not implemented: sample a class-conditional "
                         "CLD model with --class alone")
    if a.classifier:
        clf, _ = load_run(a.classifier, "classifier", device=device)
        _check_class(a.class_label, clf.num_classes)
        if getattr(cfg, "class_cond", False):
            raise ValueError("--classifier guides an unconditional model; this one is "
                             "class-conditional (use --guidance alone for classifier-free guidance)")
        return ClassifierGuidance(model, clf, 1.0 if a.guidance is None else a.guidance), cond
    if not getattr(cfg, "class_cond", False):  # only score models are class-conditional
        raise ValueError("--class needs a class-conditional model (trained with --class-cond) "
                         "or a --classifier")
    _check_class(a.class_label, cfg.num_classes)
    if a.guidance is None or a.guidance == 0:
        return model, cond
    if cfg.p_uncond <= 0:
        raise ValueError("classifier-free guidance needs a model trained with --p-uncond > 0 "
                         "(its null label was never trained)")
    return ClassifierFreeGuidance.for_labels(model, a.guidance, cfg.num_classes), cond


# --- what the image commands share ------------------------------------------------------------

def _is_digits(cfg) -> bool:
    return cfg.data == "digits" and list(cfg.shape) == [1, 8, 8]


def _digit_labels(x: torch.Tensor) -> torch.Tensor:
    from ..metrics.digits import digits_features
    return digits_features(x)[1].argmax(1)


def _add_image_command(sub, name: str, func, default_out: str, default_solver: str | None = None,
                       steps_default: str = "the solver's"):
    """The parser of an image command: checkpoint, --input or -n held-out images, --samples per
    image, the solver options (``default_solver``/``steps_default``: the command's defaults in
    words, if not ``auto``'s and the solver's) and --out."""
    p = add_command(sub, name, func, checkpoint=True)
    p.add_argument("--input", nargs="+", default=None,
                   help="image files to process (default: the first --num held-out images)")
    p.add_argument("-n", "--num", type=int, default=16, help="held-out images to process")
    p.add_argument("--samples", type=int, default=None, help="samples per image")
    add_sampling_args(p, grid=False, default=default_solver, steps_default=steps_default)
    p.add_argument("--out", default=default_out, help="output folder")
    return p


def _panels(inputs: dict, out, k: int, name: str, original=None) -> dict:
    """The grid's columns: the ``inputs`` panels, one panel per sample index j of the k samples
    drawn for each input, and the original images when they are known."""
    samples = {f"{name} {j + 1}": out[j::k] for j in range(k)}
    return {**inputs, **samples, **({} if original is None else {"original": original})}


def _own_solver(a, model) -> str | None:
    """The solver of a model sampled by itself (SR3, Palette): --solver, or ``auto`` (the budget
    --steps in NFE, default 20) as `sdeflow sample` chooses it (None: the library's default,
    e.g. when --solver-opts asks for a particular solver's options)."""
    return "auto" if auto_by_default(a, model) else a.solver


# --- inpaint ------------------------------------------------------------------------------------

def _steps_default() -> str:
    """--steps' default in words for the commands with a RePaint method."""
    from ..inpainting import REPAINT_STEPS
    return f"the solver's; RePaint: {REPAINT_STEPS}"


def add_inpaint(sub) -> None:
    from ..inpainting import MASKS
    p = _add_image_command(sub, "inpaint", cmd_inpaint, "outputs/inpaint",
                           "pc for --method replace, ancestral for repaint",
                           steps_default=_steps_default())
    p.add_argument("--mask", default="center",
                   help=f"mask: one of {', '.join(MASKS)}, or an image file (bright = known)")
    p.add_argument("--mask-fraction", type=float, default=0.5, help="hidden fraction for --mask random")
    p.add_argument("--method", default="replace", choices=["replace", "repaint"])
    p.add_argument("--jump-length", type=int, default=10, help="RePaint jump length j")
    p.add_argument("--resamplings", type=int, default=10, help="RePaint resamplings r")


def _mask(a, size: int) -> torch.Tensor:
    from ..inpainting import MASKS, load_mask, make_mask
    if a.mask in MASKS:
        return make_mask(a.mask, size, fraction=a.mask_fraction, seed=a.seed)
    return load_mask(a.mask, size)


def _solver_opts(a, solver: str, cond: dict | None = None) -> dict:
    """--solver-opts, with DPM-Solver-v3's statistics defaulting to the checkpoint folder's
    (`sdeflow ems`), as `sdeflow sample` takes them; a warning when those were estimated under
    other conditioning than ``cond`` (each image's own class label, if any)."""
    from ..samplers.ems import describe_condition, with_default_statistics
    opts = with_default_statistics(solver, a.solver_opts, a.checkpoint)
    labels = (cond or {}).get("class_labels")
    if labels is None:
        condition = None
    elif bool((labels == labels[0]).all()):
        condition = describe_condition(int(labels[0]))
    else:
        condition = "each image's own class"
    check_condition(dict(opts, solver=solver), condition)
    return opts


def _inpaint(a, model, y, mask, cond):
    """(completions, stats) of --method replace or repaint."""
    from ..inpainting import inpaint, repaint
    solver = a.solver or ("pc" if a.method == "replace" else "ancestral")
    opts = dict(seed=a.seed, return_stats=True, cond=cond, progress=True,
                **_solver_opts(a, solver, cond))
    with torch.no_grad():
        if a.method == "replace":
            return inpaint(model, y, mask, solver=solver, steps=a.steps, **opts)
        return repaint(model, y, mask, solver=solver, steps=a.steps,
                       jump_length=a.jump_length, resamplings=a.resamplings, **opts)


def _agreement(out, y, m, labels, k: int) -> dict:
    """How often the digits classifier reads the original's label in the completions and in the
    masked input (unknown pixels at −1)."""
    masked = torch.where(m.bool(), y, torch.full_like(m, -1.0))
    truth = repeat(labels, k)
    return dict(classifier_agrees_with_original=(_digit_labels(out) == truth).double().mean().item(),
                classifier_agrees_masked_input=(_digit_labels(masked) == truth).double().mean().item())


def cmd_inpaint(a) -> int:
    """fill in the masked part of images with a trained model

    Inpaint with an unconditional (or class-conditional) model: 'replace' runs any fixed-grid
    sampler with the known pixels replaced by forward-noised copies after every step
    (score_sde; default solver pc); 'repaint' walks the time grid with jumps back up (RePaint,
    --jump-length, --resamplings). Known pixels are kept exactly. Writes OUT/grid.png (masked
    input | completions | original) and OUT/report.json.
    """
    dev = device()
    model, cfg = load_run(a.checkpoint, "score", device=dev)
    shape = image_shape(model, cfg)  # a latent model inpaints images through its latents
    if len(shape) != 3 or cfg.task is not None:
        raise ValueError("inpaint needs an unconditional image model (no --task)")
    k = a.samples or 1
    if a.input:
        x, labels = load_images(a.input, shape[-1], shape[0]), None
    else:
        x, labels = held_out(cfg, a.num)
    mask = _mask(a, shape[-1])
    y = repeat(x, k).to(dev)
    cond = {"class_labels": repeat(labels, k).to(dev)} if cfg.class_cond and labels is not None else {}
    out, st = _inpaint(a, model, y, mask.to(dev), cond)
    out, y = out.cpu(), y.cpu()
    m = mask.expand_as(y).cpu()
    report = dict(checkpoint=str(a.checkpoint), method=a.method, mask=a.mask, images=len(x),
                  samples_per_image=k, known_fraction=mask.mean().item(),
                  known_max_abs_error=(out - y).abs().mul(m).max().item(), **st)
    if _is_digits(cfg) and labels is not None:
        report.update(_agreement(out, y, m, labels, k))
    masked = {"masked input (grey = unknown)": torch.where(m.bool(), y, torch.zeros_like(y))[::k]}
    write_panels(Path(a.out), _panels(masked, out, k, "completion", x), report,
                 dict(inpainted=out, mask=mask),
                 f"inpainting ({a.method}, {st['solver']}), NFE {st['nfe']}")
    return 0


# --- colorize -----------------------------------------------------------------------------------

def add_colorize(sub) -> None:
    p = _add_image_command(sub, "colorize", cmd_colorize, "outputs/colorize",
                           "a Palette model: auto (the budget --steps in NFE; heun when "
                           "--solver-opts is given); score_sde's method: pc for --method "
                           "replace, ancestral for repaint",
                           steps_default=_steps_default())
    p.add_argument("--method", default="replace", choices=["replace", "repaint"],
                   help="for unconditional models")


def colour_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-image colour statistics (N, 6): mean and std of each RGB channel."""
    f = x.flatten(2)
    return torch.cat([f.mean(2), f.std(2)], dim=1).double()


def colour_report(out: torch.Tensor, x: torch.Tensor, k: int, cfg) -> dict:
    """Grey error, diversity across the k samples of each image, and the Fréchet distance of
    per-image colour statistics to held-out data, beside the same distance between data splits."""
    from ..data import get_data
    from ..inpainting import grey
    from ..metrics.frechet import frechet_distance
    n = len(x)
    per = out.reshape(n, k, *out.shape[1:])
    kw = dict(cfg.data_kwargs)
    train = get_data(cfg.data, **kw).x if cfg.data not in SPLIT_DATA else \
        get_data(cfg.data, **{**kw, "split": "train"}).x
    test = held_out(cfg, 10**9)[0]
    return dict(grey_max_abs_error=(grey(out) - repeat(grey(x), k)).abs().max().item(),
                out_of_range_fraction=(out.abs() > 1).double().mean().item(),
                colour_diversity=per.std(1).mean().item() if k > 1 else None,
                colour_diversity_data=test.std(0).mean().item(),
                colour_fd=frechet_distance(colour_stats(out), colour_stats(test)),
                colour_fd_floor_train_vs_test=frechet_distance(colour_stats(train[:len(test)]),
                                                               colour_stats(test)))


def _colorize(a, model, cfg, g, dev):
    """(colourings, stats, method name) of a Palette model or score_sde's colorization."""
    from ..inpainting import colorize
    from ..samplers import sample
    opts = dict(steps=a.steps, seed=a.seed, progress=True, return_stats=True)
    with torch.no_grad():
        if cfg.task == "colorize":
            out, st = sample(model, shape=(len(g), *cfg.shape), solver=_own_solver(a, model),
                             device=dev, cond={"x_cond": g}, **opts, **a.solver_opts)
            return out, st, "palette"
        if cfg.task is None:
            solver = a.solver or ("pc" if a.method == "replace" else "ancestral")
            out, st = colorize(model, g, method=a.method, solver=solver, **opts,
                               **_solver_opts(a, solver))
            return out, st, f"score_sde {a.method}"
    raise ValueError(f"a model trained for task {cfg.task!r} cannot colorize")


def cmd_colorize(a) -> int:
    """colour grey images with a trained RGB model

    With an unconditional RGB model: score_sde's colorization (inpainting in a decoupled colour
    basis; the grey level is kept exactly). With a Palette model (trained with --task
    colorize): conditional sampling given the grey image. Writes OUT/grid.png (grey |
    colourings | original), OUT/report.json (grey-level error, colour diversity across
    samples, colour statistics vs the data).
    """
    from ..inpainting import grey
    dev = device()
    model, cfg = load_run(a.checkpoint, "score", device=dev)
    if image_shape(model, cfg) != list(cfg.shape):
        raise ValueError("colorize works in pixel space (a per-pixel colour basis); this is a "
                         "latent model: use a pixel-space RGB model")
    if len(cfg.shape) != 3 or cfg.shape[0] != 3:
        raise ValueError("colorize needs an RGB image model")
    k = a.samples or 4
    x = load_images(a.input, cfg.shape[-1], 3) if a.input else held_out(cfg, a.num)[0]
    out, st, method = _colorize(a, model, cfg, repeat(grey(x), k).to(dev), dev)
    out = out.cpu()  # not clamped: clamping would change the grey level kept exactly
    report = dict(checkpoint=str(a.checkpoint), method=method, images=len(x), samples_per_image=k,
                  **st, **colour_report(out, x, k, cfg))
    panels = _panels({"grey input": grey(x).expand(-1, 3, -1, -1)}, out, k, "colouring", x)
    write_panels(Path(a.out), panels, report, dict(colorized=out), f"colorization ({method})")
    return 0


# --- super-resolution ---------------------------------------------------------------------------

def add_sr(sub) -> None:
    _add_image_command(sub, "sr", cmd_sr, "outputs/sr")


def sr_report(out, hr, low, task, k, cfg) -> dict:
    """PSNR/SSIM of bicubic, of single SR3 samples and of their mean against ``hr`` (when
    known), consistency of the samples with ``low``, and FDD for digit models."""
    from ..metrics.image import psnr, ssim
    bicubic = task.upsample(low)
    n = len(low)
    mean = out.reshape(n, k, *out.shape[1:]).mean(1)
    rep = dict(consistency_psnr=psnr(task.low_res(out), repeat(low, k)).mean().item())
    if hr is not None:
        hr_k = repeat(hr, k)
        rep.update(psnr_bicubic=psnr(bicubic, hr).mean().item(),
                   psnr_sr3_sample=psnr(out, hr_k).mean().item(),
                   psnr_sr3_mean=psnr(mean, hr).mean().item(),
                   ssim_bicubic=ssim(bicubic, hr).mean().item(),
                   ssim_sr3_sample=ssim(out, hr_k).mean().item(),
                   ssim_sr3_mean=ssim(mean, hr).mean().item())
    if _is_digits(cfg):
        from ..metrics.digits import digits_metrics
        rep.update(fdd_sr3=digits_metrics(out)["fdd"], fdd_bicubic=digits_metrics(bicubic)["fdd"],
                   fdd_floor_train_vs_test=digits_metrics(bicubic)["fdd_floor_train_vs_test"])
    return rep


def cmd_sr(a) -> int:
    """super-resolve images with an SR3 model (--task sr)

    Sample an SR3 model (trained with `sdeflow train --task sr`) conditioned on the bicubic
    upsampling of low-resolution images: held-out images are box-downsampled by the model's
    factor (or --input gives low-resolution files). Writes OUT/grid.png (low-res | bicubic |
    SR3 samples | original) and OUT/report.json: PSNR/SSIM of bicubic, of single SR3 samples
    and of their mean, consistency with the low-res input, and the digits metric (FDD) of
    bicubic and SR3 for digit models.
    """
    from torch.nn import functional as F

    from ..samplers import sample
    dev = device()
    model, cfg = load_run(a.checkpoint, "score", device=dev)
    if cfg.task != "sr":
        raise ValueError("sr needs a model trained with --task sr")
    task = cfg.get_task()
    k = a.samples or 1
    if a.input:
        hr, low = None, load_images(a.input, cfg.shape[-1] // task.factor, cfg.shape[0])
    else:
        hr = held_out(cfg, a.num)[0]
        low = task.low_res(hr)
    cond = {"x_cond": repeat(task.upsample(low), k).to(dev)}
    with torch.no_grad():
        out, st = sample(model, shape=(len(low) * k, *cfg.shape), solver=_own_solver(a, model),
                         steps=a.steps, seed=a.seed, device=dev, cond=cond, progress=True,
                         return_stats=True, **a.solver_opts)
    out = out.cpu().clamp(-1, 1)
    report = dict(checkpoint=str(a.checkpoint), factor=task.factor, images=len(low),
                  samples_per_image=k, **st, **sr_report(out, hr, low, task, k, cfg))
    inputs = {"low-res": F.interpolate(low, scale_factor=task.factor, mode="nearest"),
              "bicubic": task.upsample(low)}
    panels = _panels(inputs, out, k, "SR3", hr)
    write_panels(Path(a.out), panels, report, dict(sr=out), f"SR3 ×{task.factor}, NFE {st['nfe']}")
    return 0

"""CLI commands for controllable generation: ``train-classifier``, ``inpaint``, ``colorize``,
``sr``, and the guidance options of ``sample`` (``--class``, ``--guidance``, ``--classifier``).
Each command writes a before/after grid (PNG), the arrays (.npy) and a JSON report."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

_SPLIT_DATA = ("digits", "color_digits", "photos")


# --- guidance for `sdeflow sample` ------------------------------------------------------------

def add_guidance_args(p) -> None:
    p.add_argument("--class", dest="class_label", type=int, default=None,
                   help="class to sample (class-conditional model, or with --classifier)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale w: classifier-free (1+w)·cond − w·uncond for a model "
                        "trained with --p-uncond, or w·∇log p(y|x_t) with --classifier")
    p.add_argument("--classifier", default=None,
                   help="noise-conditional classifier checkpoint (from `sdeflow train-classifier`) "
                        "for classifier guidance of an unconditional model")


def guided_model(a, model, cfg, n: int, device):
    """(model, cond) for the guidance options of ``a`` (see :func:`add_guidance_args`)."""
    from .guidance import ClassifierFreeGuidance, ClassifierGuidance, load_classifier
    if a.class_label is None:
        if a.guidance is not None or a.classifier:
            raise ValueError("--guidance/--classifier need --class (the class to guide towards)")
        return model, {}
    labels = torch.full((n,), a.class_label, device=device)
    if a.classifier:
        clf = load_classifier(a.classifier, device=device)
        k = clf.num_classes
        if not 0 <= a.class_label < k:
            raise ValueError(f"--class must lie in [0, {k})")
        if cfg.class_cond:
            raise ValueError("--classifier guides an unconditional model; this one is "
                             "class-conditional (use --guidance alone for classifier-free guidance)")
        scale = 1.0 if a.guidance is None else a.guidance
        return ClassifierGuidance(model, clf, scale), {"class_labels": labels}
    if not cfg.class_cond:
        raise ValueError("--class needs a class-conditional model (trained with --class-cond) "
                         "or a --classifier")
    if not 0 <= a.class_label < cfg.num_classes:
        raise ValueError(f"--class must lie in [0, {cfg.num_classes})")
    cond = {"class_labels": labels}
    if a.guidance is None or a.guidance == 0:
        return model, cond
    if cfg.p_uncond <= 0:
        raise ValueError("classifier-free guidance needs a model trained with --p-uncond > 0 "
                         "(its null label was never trained)")
    return ClassifierFreeGuidance.for_labels(model, a.guidance, cfg.num_classes), cond


# --- inputs and outputs -------------------------------------------------------------------------

def _load_files(paths, size: int, channels: int) -> torch.Tensor:
    from PIL import Image
    from .data.images import _pil_to_tensor, _resize
    xs = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"input image {p} not found")
        with Image.open(p) as img:
            xs.append(_resize(_pil_to_tensor(img, channels)[None], size)[0])
    return torch.stack(xs)


def held_out(cfg, n: int):
    """The first n images (and labels) of the model's held-out data: the ``test`` split of the
    embedded sets, else the training data."""
    from .data import get_data
    kw = dict(cfg.data_kwargs)
    if cfg.data in _SPLIT_DATA:
        kw["split"] = "test"
    data = get_data(cfg.data, **kw)
    return data.x[:n], (None if data.y is None else data.y[:n])


def _write(out: Path, panels: dict, report: dict, arrays: dict, title: str) -> None:
    from .plotting import labelled_grids
    out.mkdir(parents=True, exist_ok=True)
    nrow = max(1, int(len(next(iter(panels.values()))) ** 0.5))
    labelled_grids({k: v.cpu() for k, v in panels.items()}, out / "grid.png", nrow=nrow, title=title)
    for k, v in arrays.items():
        np.save(out / f"{k}.npy", v.cpu().numpy())
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out / 'grid.png'}, {out / 'report.json'} and the arrays ({', '.join(arrays)}.npy)")


def _is_digits(cfg) -> bool:
    return cfg.data == "digits" and list(cfg.shape) == [1, 8, 8]


def _digit_labels(x: torch.Tensor) -> torch.Tensor:
    from .metrics.digits import digits_features
    return digits_features(x)[1].argmax(1)


def _common(p, default_out: str, default_num: int = 16):
    from .cli import _json_dict
    from .samplers import list_solvers
    p.add_argument("checkpoint", help="run directory or ckpt-* folder")
    p.add_argument("--input", nargs="+", default=None,
                   help="image files to process (default: the first --num held-out images)")
    p.add_argument("-n", "--num", type=int, default=default_num, help="held-out images to process")
    p.add_argument("--samples", type=int, default=None, help="samples per image")
    p.add_argument("--solver", default=None, choices=list_solvers(), help="sampler")
    p.add_argument("--steps", type=int, default=None, help="steps (default: the solver's)")
    p.add_argument("--solver-opts", type=_json_dict, default={},
                   help="solver options as JSON, e.g. '{\"snr\": 0.16}'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out, help="output folder")


def _repeat(x, k):
    return None if x is None else x.repeat_interleave(k, dim=0)


def _add_samples(panels: dict, out, k: int, name: str) -> None:
    """One panel per sample index j of the k samples drawn for each input."""
    for j in range(k):
        panels[f"{name} {j + 1}"] = out[j::k]


# --- inpaint ------------------------------------------------------------------------------------

def add_inpaint(sub) -> None:
    from .inpainting import MASKS
    p = sub.add_parser("inpaint", help="fill in the masked part of images with a trained model",
                       description="Inpaint with an unconditional (or class-conditional) model: "
                                   "'replace' runs any fixed-grid sampler with the known pixels "
                                   "replaced by forward-noised copies after every step (score_sde; "
                                   "default solver pc); 'repaint' walks the time grid with jumps "
                                   "back up (RePaint, --jump-length, --resamplings). Known pixels "
                                   "are kept exactly. Writes OUT/grid.png (masked input | "
                                   "completions | original) and OUT/report.json.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p, "outputs/inpaint")
    p.add_argument("--mask", default="center",
                   help=f"mask: one of {', '.join(MASKS)}, or an image file (bright = known)")
    p.add_argument("--mask-fraction", type=float, default=0.5, help="hidden fraction for --mask random")
    p.add_argument("--method", default="replace", choices=["replace", "repaint"])
    p.add_argument("--jump-length", type=int, default=10, help="RePaint jump length j")
    p.add_argument("--resamplings", type=int, default=10, help="RePaint resamplings r")
    p.set_defaults(func=cmd_inpaint)


def _mask(a, size: int) -> torch.Tensor:
    from .inpainting import MASKS, load_mask, make_mask
    if a.mask in MASKS:
        return make_mask(a.mask, size, fraction=a.mask_fraction, seed=a.seed)
    return load_mask(a.mask, size)


def cmd_inpaint(a) -> int:
    from .cli import _device
    from .inpainting import inpaint, repaint
    from .train import load_denoiser
    device = _device()
    model, cfg = load_denoiser(a.checkpoint, device=device)
    if len(cfg.shape) != 3 or cfg.task is not None:
        raise ValueError("inpaint needs an unconditional image model (no --task)")
    k = a.samples or 1
    if a.input:
        x, labels = _load_files(a.input, cfg.shape[-1], cfg.shape[0]), None
    else:
        x, labels = held_out(cfg, a.num)
    mask = _mask(a, cfg.shape[-1])
    y = _repeat(x, k).to(device)
    cond = {"class_labels": _repeat(labels, k).to(device)} if cfg.class_cond and labels is not None else {}
    opts = dict(seed=a.seed, return_stats=True, cond=cond, progress=True, **a.solver_opts)
    with torch.no_grad():
        if a.method == "replace":
            out, st = inpaint(model, y, mask.to(device), solver=a.solver or "pc", steps=a.steps, **opts)
        else:
            out, st = repaint(model, y, mask.to(device), solver=a.solver or "ancestral",
                              steps=a.steps or 250, jump_length=a.jump_length,
                              resamplings=a.resamplings, **opts)
    out = out.cpu()
    m = mask.expand_as(y).cpu()
    report = dict(checkpoint=str(a.checkpoint), method=a.method, mask=a.mask, images=len(x),
                  samples_per_image=k, known_fraction=mask.mean().item(),
                  known_max_abs_error=(out - y.cpu()).abs().mul(m).max().item(), **st)
    if _is_digits(cfg) and labels is not None:
        agree = _digit_labels(out) == _repeat(labels, k)
        masked = torch.where(m.bool(), y.cpu(), torch.full_like(m, -1.0))
        report.update(classifier_agrees_with_original=agree.double().mean().item(),
                      classifier_agrees_masked_input=(_digit_labels(masked) == _repeat(labels, k))
                      .double().mean().item())
    shown = torch.where(m.bool(), y.cpu(), torch.zeros_like(y.cpu()))
    panels = {"masked input (grey = unknown)": shown[::k]}
    _add_samples(panels, out, k, "completion")
    panels["original"] = x
    _write(Path(a.out), panels, report, dict(inpainted=out, mask=mask),
           f"inpainting ({a.method}, {st['solver']}), NFE {st['nfe']}")
    return 0


# --- colorize -----------------------------------------------------------------------------------

def add_colorize(sub) -> None:
    p = sub.add_parser("colorize", help="colour grey images with a trained RGB model",
                       description="With an unconditional RGB model: score_sde's colorization "
                                   "(inpainting in a decoupled colour basis; the grey level is "
                                   "kept exactly). With a Palette model (trained with --task "
                                   "colorize): conditional sampling given the grey image. Writes "
                                   "OUT/grid.png (grey | colourings | original), OUT/report.json "
                                   "(grey-level error, colour diversity across samples, colour "
                                   "statistics vs the data).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p, "outputs/colorize")
    p.add_argument("--method", default="replace", choices=["replace", "repaint"],
                   help="for unconditional models")
    p.set_defaults(func=cmd_colorize)


def colour_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-image colour statistics (N, 6): mean and std of each RGB channel."""
    f = x.flatten(2)
    return torch.cat([f.mean(2), f.std(2)], dim=1).double()


def colour_report(out: torch.Tensor, x: torch.Tensor, k: int, cfg) -> dict:
    """Grey error, diversity across the k samples of each image, and the Fréchet distance of
    per-image colour statistics to held-out data, beside the same distance between data splits."""
    from .data import get_data
    from .inpainting import grey
    from .metrics.frechet import frechet_distance
    n = len(x)
    per = out.reshape(n, k, *out.shape[1:])
    kw = dict(cfg.data_kwargs)
    train = get_data(cfg.data, **kw).x if cfg.data not in _SPLIT_DATA else \
        get_data(cfg.data, **{**kw, "split": "train"}).x
    test = held_out(cfg, 10**9)[0]
    rep = dict(grey_max_abs_error=(grey(out) - _repeat(grey(x), k)).abs().max().item(),
               out_of_range_fraction=(out.abs() > 1).double().mean().item(),
               colour_diversity=per.std(1).mean().item() if k > 1 else None,
               colour_diversity_data=test.std(0).mean().item(),
               colour_fd=frechet_distance(colour_stats(out), colour_stats(test)),
               colour_fd_floor_train_vs_test=frechet_distance(colour_stats(train[:len(test)]),
                                                              colour_stats(test)))
    return rep


def cmd_colorize(a) -> int:
    from .cli import _device
    from .inpainting import colorize, grey
    from .samplers import sample
    from .train import load_denoiser
    device = _device()
    model, cfg = load_denoiser(a.checkpoint, device=device)
    if len(cfg.shape) != 3 or cfg.shape[0] != 3:
        raise ValueError("colorize needs an RGB image model")
    k = a.samples or 4
    x = _load_files(a.input, cfg.shape[-1], 3) if a.input else held_out(cfg, a.num)[0]
    g = _repeat(grey(x), k).to(device)
    with torch.no_grad():
        if cfg.task == "colorize":
            out, st = sample(model, shape=(len(g), *cfg.shape), solver=a.solver or "heun",
                             steps=a.steps, seed=a.seed, device=device, cond={"x_cond": g},
                             progress=True, return_stats=True, **a.solver_opts)
            method = "palette"
        elif cfg.task is None:
            out, st = colorize(model, g, method=a.method, solver=a.solver or
                               ("pc" if a.method == "replace" else "ancestral"), steps=a.steps,
                               seed=a.seed, progress=True, return_stats=True, **a.solver_opts)
            method = f"score_sde {a.method}"
        else:
            raise ValueError(f"a model trained for task {cfg.task!r} cannot colorize")
    out = out.cpu()  # not clamped: clamping would change the grey level kept exactly
    report = dict(checkpoint=str(a.checkpoint), method=method, images=len(x), samples_per_image=k,
                  **st, **colour_report(out, x, k, cfg))
    panels = {"grey input": grey(x).expand(-1, 3, -1, -1)}
    _add_samples(panels, out, k, "colouring")
    panels["original"] = x
    _write(Path(a.out), panels, report, dict(colorized=out), f"colorization ({method})")
    return 0


# --- super-resolution ---------------------------------------------------------------------------

def add_sr(sub) -> None:
    p = sub.add_parser("sr", help="super-resolve images with an SR3 model (--task sr)",
                       description="Sample an SR3 model (trained with `sdeflow train --task sr`) "
                                   "conditioned on the bicubic upsampling of low-resolution "
                                   "images: held-out images are box-downsampled by the model's "
                                   "factor (or --input gives low-resolution files). Writes "
                                   "OUT/grid.png (low-res | bicubic | SR3 samples | original) and "
                                   "OUT/report.json: PSNR/SSIM of bicubic, of single SR3 samples "
                                   "and of their mean, consistency with the low-res input, and "
                                   "the digits metric (FDD) of bicubic and SR3 for digit models.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p, "outputs/sr")
    p.set_defaults(func=cmd_sr)


def sr_report(out, hr, low, task, k, cfg) -> dict:
    from .metrics.image import psnr, ssim
    bicubic = task.upsample(low)
    n = len(low)
    mean = out.reshape(n, k, *out.shape[1:]).mean(1)
    rep = dict(consistency_psnr=psnr(task.low_res(out), _repeat(low, k)).mean().item())
    if hr is not None:
        hr_k = _repeat(hr, k)
        rep.update(psnr_bicubic=psnr(bicubic, hr).mean().item(),
                   psnr_sr3_sample=psnr(out, hr_k).mean().item(),
                   psnr_sr3_mean=psnr(mean, hr).mean().item(),
                   ssim_bicubic=ssim(bicubic, hr).mean().item(),
                   ssim_sr3_sample=ssim(out, hr_k).mean().item(),
                   ssim_sr3_mean=ssim(mean, hr).mean().item())
    if _is_digits(cfg):
        from .metrics.digits import digits_metrics
        rep.update(fdd_sr3=digits_metrics(out)["fdd"], fdd_bicubic=digits_metrics(bicubic)["fdd"],
                   fdd_floor_train_vs_test=digits_metrics(bicubic)["fdd_floor_train_vs_test"])
    return rep


def cmd_sr(a) -> int:
    from torch.nn import functional as F

    from .cli import _device
    from .samplers import sample
    from .train import load_denoiser
    device = _device()
    model, cfg = load_denoiser(a.checkpoint, device=device)
    if cfg.task != "sr":
        raise ValueError("sr needs a model trained with --task sr")
    task = cfg.get_task()
    k = a.samples or 1
    if a.input:
        hr, low = None, _load_files(a.input, cfg.shape[-1] // task.factor, cfg.shape[0])
    else:
        hr = held_out(cfg, a.num)[0]
        low = task.low_res(hr)
    cond = {"x_cond": _repeat(task.upsample(low), k).to(device)}
    with torch.no_grad():
        out, st = sample(model, shape=(len(low) * k, *cfg.shape), solver=a.solver or "heun",
                         steps=a.steps, seed=a.seed, device=device, cond=cond, progress=True,
                         return_stats=True, **a.solver_opts)
    out = out.cpu().clamp(-1, 1)
    report = dict(checkpoint=str(a.checkpoint), factor=task.factor, images=len(low),
                  samples_per_image=k, **st, **sr_report(out, hr, low, task, k, cfg))
    panels = {"low-res": F.interpolate(low, scale_factor=task.factor, mode="nearest"),
              "bicubic": task.upsample(low)}
    _add_samples(panels, out, k, "SR3")
    if hr is not None:
        panels["original"] = hr
    _write(Path(a.out), panels, report, dict(sr=out), f"SR3 ×{task.factor}, NFE {st['nfe']}")
    return 0


# --- train-classifier ---------------------------------------------------------------------------

def add_train_classifier(sub) -> None:
    from .cli import _json_dict
    from .data import list_data
    from .guidance import ClassifierConfig
    from .models.classifier import list_classifiers
    from .sde import list_sdes
    d = ClassifierConfig()
    p = sub.add_parser("train-classifier", help="train a noise-conditional classifier p(y | x_t, t)",
                       description="Cross-entropy on forward-noised data at log-uniform noise "
                                   "levels, for classifier guidance (`sdeflow sample --classifier "
                                   "RUN --class y --guidance w`). Use the same --sde as the "
                                   "diffusion model. Checkpoints are atomic and resumable; the "
                                   "held-out accuracy per noise level goes to OUT/accuracy.json.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=d.data, choices=list_data())
    p.add_argument("--data-kwargs", type=_json_dict, default={})
    p.add_argument("--sde", default=d.sde, choices=list_sdes())
    p.add_argument("--model", default=None, choices=list_classifiers(),
                   help="network (default: encoder for images, mlp for toy data)")
    p.add_argument("--model-kwargs", type=_json_dict, default={})
    p.add_argument("--sigma-data", type=float, default=d.sigma_data)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--out", default="runs/classifier")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_train_classifier)


def cmd_train_classifier(a) -> int:
    from .data import list_toy
    from .guidance import ClassifierConfig, classifier_accuracy, train_classifier
    model = a.model or ("mlp" if a.data in list_toy() else "encoder")
    cfg = ClassifierConfig(data=a.data, data_kwargs=a.data_kwargs, sde=a.sde, model=model,
                           model_kwargs=a.model_kwargs, sigma_data=a.sigma_data, steps=a.steps,
                           batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                           ckpt_every=a.ckpt_every).validate()
    clf = train_classifier(cfg, a.out, resume=a.resume).cpu()
    x, y = held_out(cfg, 10**9)
    if y is not None:
        acc = classifier_accuracy(clf, x, y)
        (Path(a.out) / "accuracy.json").write_text(json.dumps(acc, indent=2))
        print("held-out accuracy by noise level σ̃:", json.dumps(acc))
    print(f"checkpoint in {Path(a.out) / (Path(a.out) / 'latest').read_text()}")
    return 0

"""Controllable generation on the embedded digits: class guidance (classifier-free and
classifier) with the accuracy/diversity trade-off, inpainting (replacement and RePaint, with
RePaint's cost vs r and j), SR3 ×2 super-resolution vs bicubic, and colorization (score_sde's
method on an unconditional RGB model, and Palette) on coloured digits.

    python benchmarks/controllable.py --runs runs/control --figures docs --markdown \\
        --out docs/controllable_results.jsonl

Every model is trained first (the demo's U-Net and recipe, 3000 steps) if its run directory has
no checkpoint. The judge of "which digit is this" is the digits metric's classifier
(sdeflow.metrics.digits, trained on the train split, 99.7 % on the held-out 360), never the
noise-conditional classifier used for guidance.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from common import run_benchmark

import sdeflow

W_CFG = [0.0, 0.5, 1.0, 2.0, 4.0]
W_CG = [0.0, 1.0, 2.0, 4.0, 8.0]


STUDY_MODELS = dict(guidance=("uncond", "cond", "classifier"), inpainting=("uncond",),
                    repaint=("uncond",), sr=("sr",), colorization=("color", "palette"))
# the solvers of the SR3 and Palette studies: the benchmark's Heun 18, the old CLI default (Heun
# at its 35 steps) and the CLI's default since 2026-12-04 (auto, 20 NFE), beside auto at 10
SOLVER_ROWS = [("heun", dict(steps=18)), ("heun", {}), ("auto", dict(steps=10)),
               ("auto", dict(steps=20))]
ODE_DRAWS = 256


def _models(a, device, names):
    from sdeflow.demo import digits_config
    from sdeflow.guidance import ClassifierConfig, load_classifier, train_classifier
    from sdeflow.train import load_denoiser, train
    runs, steps = Path(a.runs), a.steps
    cfgs = dict(
        uncond=digits_config(steps=steps, sample_every=0),
        cond=digits_config(steps=steps, sample_every=0, class_cond=True, p_uncond=0.1),
        sr=digits_config(steps=steps, sample_every=0, task="sr", task_kwargs={"factor": 2}),
        color=digits_config(steps=steps, sample_every=0, data="color_digits"),
        palette=digits_config(steps=steps, sample_every=0, data="color_digits", task="colorize"))
    out = {}
    for name, cfg in cfgs.items():
        if name not in names:
            continue
        if not (runs / name / "latest").exists():
            cfg.tensorboard = False
            train(cfg, runs / name, progress=False)
        out[name] = load_denoiser(runs / name, device=device)
    clf_run = runs / "classifier"
    if "classifier" not in names:
        return out
    if not (clf_run / "latest").exists():
        train_classifier(ClassifierConfig(steps=steps, model_kwargs=dict(
            channels=32, channel_mult=[1, 2], num_res_blocks=1)), clf_run, progress=False)
    out["classifier"] = load_classifier(clf_run, device=device)
    return out


def _within_class_spread(feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of the trace of the feature covariance (diversity within a class)."""
    return torch.stack([feats[labels == c].double().T.cov().trace() for c in labels.unique()]).mean().item()


def body(emit, a):
    from sdeflow.data import get_data
    from sdeflow.metrics.digits import digits_features
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figs = Path(a.figures)
    figs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    studies = set(a.studies.split(","))
    if studies - STUDY_MODELS.keys():
        raise SystemExit(f"--studies: unknown {sorted(studies - STUDY_MODELS.keys())}; choose "
                         f"from {', '.join(STUDY_MODELS)}")
    m = _models(a, device, {n for s in studies for n in STUDY_MODELS[s]})
    emit(dict(study="setup", device=str(device), train_seconds=round(time.perf_counter() - t0, 1)))
    test = get_data("digits", split="test")
    f_test, _ = digits_features(test.x)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if "guidance" in studies:
        _guidance(emit, m, test, f_test, a, device, sync, figs)
    if "inpainting" in studies:
        _inpainting(emit, m, test, device, sync, figs)
    if "repaint" in studies:
        _repaint_cost(emit, m, test, device, sync)
    if "sr" in studies:
        _sr(emit, m, test, device, figs)
    if "colorization" in studies:
        _colorization(emit, m, device, sync, figs)


def _guidance(emit, m, test, f_test, a, device, sync, figs):
    from sdeflow.guidance import ClassifierFreeGuidance, ClassifierGuidance, classifier_accuracy
    from sdeflow.metrics.digits import digits_features, digits_metrics
    from sdeflow.plotting import labelled_grids
    spread_data = _within_class_spread(f_test, test.y)
    n_per = a.per_class
    labels = torch.arange(10).repeat_interleave(n_per).to(device)
    sampling = dict(solver="heun", steps=18, seed=0, device=device)
    acc = classifier_accuracy(m["classifier"].cpu(), test.x, test.y)
    m["classifier"].to(device)
    emit(dict(study="noisy_classifier", **{f"acc_sigma_{k}": v for k, v in acc.items()}))
    grids = {}
    uncond, ucfg = m["uncond"]
    cond_model, ccfg = m["cond"]
    for kind, ws in (("cfg", W_CFG), ("classifier", W_CG)):
        for w in ws:
            if kind == "cfg":
                model = ClassifierFreeGuidance.for_labels(cond_model, w, 10)
            else:
                model = ClassifierGuidance(uncond, m["classifier"], w)
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                x, st = sdeflow.sample(model, shape=(len(labels), 1, 8, 8), cond={"class_labels": labels},
                                       return_stats=True, **sampling)
            sync()
            secs = time.perf_counter() - t1
            x = x.float().cpu()
            met = digits_metrics(x, labels.cpu())
            feats, _ = digits_features(x)
            emit(dict(study="guidance", kind=kind, w=w, n=len(x), nfe=st["nfe"],
                      ms_per_sample=round(1000 * secs / len(x), 3), accuracy=met["accuracy"],
                      fdd=met["fdd"], fdd_floor=met["fdd_floor_train_vs_test"],
                      confidence=met["confidence"],
                      spread_ratio=_within_class_spread(feats, labels.cpu()) / spread_data))
            grids[f"{kind} w={w:g}"] = torch.cat([x[c * n_per:(c * n_per) + 4] for c in range(10)])
    sync()
    t1 = time.perf_counter()
    with torch.no_grad():
        _, st = sdeflow.sample(uncond, shape=(len(labels), 1, 8, 8), return_stats=True, **sampling)
    sync()
    emit(dict(study="guidance", kind="unguided", w=None, n=len(labels), nfe=st["nfe"],
              ms_per_sample=round(1000 * (time.perf_counter() - t1) / len(labels), 3)))
    for kind, ws in (("cfg", W_CFG), ("classifier", W_CG)):
        labelled_grids({k: v for k, v in grids.items() if k.startswith(kind)},
                       figs / f"control_{kind}.png", nrow=4,
                       title=f"{'classifier-free' if kind == 'cfg' else 'classifier'} guidance: "
                             "rows = digits 0–9, 4 samples each")



def _inpainting(emit, m, test, device, sync, figs):
    from sdeflow.inpainting import inpaint, make_mask, repaint
    from sdeflow.metrics.digits import digits_features, digits_metrics
    from sdeflow.plotting import labelled_grids
    uncond, _ = m["uncond"]
    x, y = test.x.to(device), test.y
    masked_baseline = {}
    panels = {}
    for mask_name in ("left", "top", "center", "random"):
        mask = make_mask(mask_name, 8, fraction=0.5).to(device)
        filled = torch.where(mask.bool(), x, torch.full_like(x, -1.0))
        masked_baseline[mask_name] = (digits_features(filled.cpu())[1].argmax(1) == y).double().mean().item()
        methods = [("replace", "pc", dict(steps=200, snr=0.16)),
                   ("replace", "heun", dict(steps=18)),
                   ("repaint", "euler_maruyama", dict(steps=100, jump_length=5, resamplings=5))]
        for method, solver, opts in methods:
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                fn = inpaint if method == "replace" else repaint
                out, st = fn(uncond, x, mask, solver=solver, seed=0, return_stats=True, **opts)
            sync()
            secs = time.perf_counter() - t1
            out = out.cpu()
            agree = (digits_features(out)[1].argmax(1) == y).double().mean().item()
            emit(dict(study="inpainting", mask=mask_name, method=method, solver=solver,
                      **{k: v for k, v in opts.items()}, nfe=st["nfe"],
                      ms_per_image=round(1000 * secs / len(x), 3),
                      known_max_abs_error=((out - x.cpu()).abs() * mask.cpu()).max().item(),
                      agreement=agree, agreement_masked_input=masked_baseline[mask_name],
                      fdd=digits_metrics(out)["fdd"]))
            if solver == "euler_maruyama" or solver == "pc":
                panels.setdefault(f"{mask_name}: input", torch.where(mask.bool(), x, torch.zeros_like(x)).cpu()[:16])
                panels[f"{mask_name}: {method}"] = out[:16]
    labelled_grids(panels, figs / "control_inpaint.png", nrow=4,
                   title="inpainting held-out digits (grey = unknown): input, PC replacement, RePaint")


def _repaint_cost(emit, m, test, device, sync):
    from sdeflow.inpainting import make_mask, repaint
    from sdeflow.metrics.digits import digits_features
    uncond, _ = m["uncond"]
    x, y = test.x.to(device), test.y
    mask = make_mask("left", 8).to(device)
    for j in (2, 5, 10):
        for r in (1, 2, 5, 10):
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                out, st = repaint(uncond, x, mask, solver="euler_maruyama", steps=100, jump_length=j,
                                  resamplings=r, seed=0, return_stats=True)
            sync()
            emit(dict(study="repaint_cost", jump_length=j, resamplings=r, nfe=st["nfe"],
                      ms_per_image=round(1000 * (time.perf_counter() - t1) / len(x), 3),
                      agreement=(digits_features(out.cpu())[1].argmax(1) == y).double().mean().item()))



def _sr(emit, m, test, device, figs):
    from sdeflow.cli.controllable import sr_report
    from sdeflow.metrics.digits import digits_features
    from sdeflow.plotting import labelled_grids
    srm, scfg = m["sr"]
    task = scfg.get_task()
    k = 4
    low = task.low_res(test.x)
    with torch.no_grad():
        out, st = sdeflow.sample(srm, shape=(len(low) * k, 1, 8, 8), solver="heun", steps=18, seed=0,
                                 device=device, return_stats=True,
                                 cond={"x_cond": task.upsample(low).repeat_interleave(k, 0).to(device)})
    out = out.cpu().clamp(-1, 1)
    rep = sr_report(out, test.x, low, task, k, scfg)
    hr_agree = (digits_features(out)[1].argmax(1) == test.y.repeat_interleave(k)).double().mean().item()
    bic_agree = (digits_features(task.upsample(low))[1].argmax(1) == test.y).double().mean().item()
    emit(dict(study="sr", factor=task.factor, samples_per_image=k, nfe=st["nfe"],
              agreement_sr3=hr_agree, agreement_bicubic=bic_agree, **rep))
    _solver_rows(emit, "sr", srm, (1, 8, 8), dict(x_cond=task.upsample(low).repeat_interleave(k, 0)),
                 test.x.repeat_interleave(k, 0), device)
    labelled_grids({"low-res 4×4": torch.nn.functional.interpolate(low[:16], scale_factor=2),
                    "bicubic": task.upsample(low[:16]), "SR3 sample 1": out[0:64:k],
                    "SR3 sample 2": out[1:64:k], "original 8×8": test.x[:16]},
                   figs / "control_sr.png", nrow=4, title="SR3 ×2 on held-out digits")



def _solver_rows(emit, study, model, shape, cond, truth, device):
    """Each of SOLVER_ROWS on the first ODE_DRAWS prior draws (seed 0) of a conditional model:
    its RMS distance to the model's own PF-ODE solution from the same draws (RK45 at 1e-6,
    ``tuning.REFERENCE``) and its mean PSNR against ``truth`` (the original images)."""
    from sdeflow.metrics.image import psnr
    from sdeflow.tuning import REFERENCE
    x_T = model.sde.prior_sample((ODE_DRAWS, *shape), generator=torch.Generator().manual_seed(0))
    x_T, cond = x_T.to(device), {k: v[:ODE_DRAWS].to(device) for k, v in cond.items()}
    with torch.no_grad():
        ref, st = sdeflow.sample(model, x_T, cond=cond, return_stats=True, **REFERENCE)
    for solver, opts in SOLVER_ROWS:
        with torch.no_grad():
            x, sx = sdeflow.sample(model, x_T, solver=solver, cond=cond, return_stats=True,
                                   **opts)
        emit(dict(study=f"{study}_solvers", solver=solver, config=f"{sx['solver']}/"
                  f"{sx.get('schedule')}", nfe=sx["nfe"], draws=ODE_DRAWS,
                  rmse_to_ode=(x - ref).pow(2).mean().sqrt().item(), reference_nfe=st["nfe"],
                  psnr=psnr(x.cpu().clamp(-1, 1), truth[:ODE_DRAWS]).mean().item()))


def _colorization(emit, m, device, sync, figs):
    from sdeflow.cli.controllable import colour_report
    from sdeflow.data import get_data
    from sdeflow.inpainting import colorize, grey
    from sdeflow.plotting import labelled_grids
    k = 4
    ctest = get_data("color_digits", split="test")
    xc = ctest.x
    g = grey(xc).repeat_interleave(k, 0).to(device)
    cpanels = {"grey input": grey(xc[:16]).expand(-1, 3, -1, -1)}
    for name, (model, cfg) in (("score_sde (PC replacement)", m["color"]), ("Palette", m["palette"])):
        sync()
        t1 = time.perf_counter()
        with torch.no_grad():
            if cfg.task == "colorize":
                out, st = sdeflow.sample(model, shape=(len(g), 3, 8, 8), solver="heun", steps=18,
                                         seed=0, device=device, cond={"x_cond": g}, return_stats=True)
            else:
                out, st = colorize(model, g, solver="pc", steps=200, seed=0, return_stats=True)
        sync()
        out = out.float().cpu()
        emit(dict(study="colorization", method=name, samples_per_image=k, nfe=st["nfe"],
                  ms_per_image=round(1000 * (time.perf_counter() - t1) / len(g), 3),
                  **colour_report(out, xc, k, cfg)))
        cpanels[f"{name} 1"] = out[0:64:k].clamp(-1, 1)
        cpanels[f"{name} 2"] = out[1:64:k].clamp(-1, 1)
    _solver_rows(emit, "palette", m["palette"][0], (3, 8, 8), dict(x_cond=g),
                 xc.repeat_interleave(k, 0), device)
    cpanels["original"] = xc[:16]
    labelled_grids(cpanels, figs / "control_colorize.png", nrow=4,
                   title="colorizing held-out coloured digits from their grey level")


def markdown(rows):
    out = []
    g = [r for r in rows if r.get("study") == "guidance" and r["kind"] != "unguided"]
    if g:
        out += ["| guidance | w | accuracy | FDD (floor) | within-class spread / data | NFE | ms/sample |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['kind']} | {r['w']:g} | {r['accuracy']:.3f} | {r['fdd']:.2f} ({r['fdd_floor']:.2f}) "
                f"| {r['spread_ratio']:.2f} | {r['nfe']} | {r['ms_per_sample']:.2f} |" for r in g]
    u = [r for r in rows if r.get("study") == "guidance" and r["kind"] == "unguided"]
    if u:
        out += ["", f"Unguided: NFE {u[0]['nfe']}, {u[0]['ms_per_sample']:.2f} ms/sample."]
    i = [r for r in rows if r.get("study") == "inpainting"]
    if i:
        out += ["", "| mask | method | solver | NFE | known max error | classifier agrees (masked input) | FDD | ms/image |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['mask']} | {r['method']} | {r['solver']} | {r['nfe']} | {r['known_max_abs_error']:.0e} "
                f"| {r['agreement']:.3f} ({r['agreement_masked_input']:.3f}) | {r['fdd']:.2f} | {r['ms_per_image']:.2f} |"
                for r in i]
    c = [r for r in rows if r.get("study") == "repaint_cost"]
    if c:
        out += ["", "| RePaint j | r | NFE | ms/image | classifier agrees |", "|---|---|---|---|---|"]
        out += [f"| {r['jump_length']} | {r['resamplings']} | {r['nfe']} | {r['ms_per_image']:.2f} | {r['agreement']:.3f} |" for r in c]
    s = [r for r in rows if r.get("study") == "sr"]
    for r in s:
        out += ["", "| ×2 SR (4×4 → 8×8) | PSNR | SSIM | FDD | classifier agrees |", "|---|---|---|---|---|",
                f"| bicubic | {r['psnr_bicubic']:.2f} | {r['ssim_bicubic']:.3f} | {r['fdd_bicubic']:.2f} | {r['agreement_bicubic']:.3f} |",
                f"| SR3 sample | {r['psnr_sr3_sample']:.2f} | {r['ssim_sr3_sample']:.3f} | {r['fdd_sr3']:.2f} | {r['agreement_sr3']:.3f} |",
                f"| SR3 mean of {r['samples_per_image']} | {r['psnr_sr3_mean']:.2f} | {r['ssim_sr3_mean']:.3f} | – | – |",
                "", f"FDD floor {r['fdd_floor_train_vs_test']:.2f}; consistency PSNR(↓(SR3), low-res) {r['consistency_psnr']:.1f} dB; NFE {r['nfe']}."]
    col = [r for r in rows if r.get("study") == "colorization"]
    if col:
        out += ["", "| colorization | grey max error | colour diversity (data) | colour FD (floor) | out of range | NFE |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['method']} | {r['grey_max_abs_error']:.1e} | {r['colour_diversity']:.3f} ({r['colour_diversity_data']:.3f}) "
                f"| {r['colour_fd']:.4f} ({r['colour_fd_floor_train_vs_test']:.4f}) | {r['out_of_range_fraction']:.3f} | {r['nfe']} |" for r in col]
    sv = [r for r in rows if r.get("study", "").endswith("_solvers")]
    if sv:
        out += ["", "| model | solver | configuration | NFE | RMS to its PF-ODE | PSNR |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['study'][:-8]} | {r['solver']} | {r['config']} | {r['nfe']} "
                f"| {r['rmse_to_ode']:.4f} | {r['psnr']:.2f} |" for r in sv]
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--runs", default="runs/control", help="where the models are (or get trained)")
    ap.add_argument("--figures", default="docs", help="where the grids go")
    ap.add_argument("--steps", type=int, default=3000, help="training steps of each model")
    ap.add_argument("--per-class", type=int, default=100, help="guided samples per class")
    ap.add_argument("--studies", default="guidance,inpainting,repaint,sr,colorization",
                    help="comma-separated subset to run")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

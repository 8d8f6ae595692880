"""``sdeflow train`` (score matching, or iCT with --objective ict) and
``sdeflow train-classifier``: every field of :class:`~sdeflow.train.TrainConfig` and
:class:`~sdeflow.guidance.classifier.ClassifierConfig` gets its flag from
:mod:`.config_flags`."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .common import add_command, latest_checkpoint
from .config_flags import (add_config_flags, add_run_flags, config_from_args, is_vector_data,
                           no_precondition)
from .distill import add_ict_flags, ict_config, loss_choices, score_flags_only

__all__ = ["score_config", "classifier_config", "add_train", "cmd_train", "add_train_classifier",
           "cmd_train_classifier"]


def _mlp_options(a, model: str) -> dict:
    """--hidden/--depth as model kwargs (MLP options only)."""
    kw = {}
    for name in ("hidden", "depth"):
        if getattr(a, name) is not None:
            if model != "mlp":
                raise ValueError(f"--{name} is an MLP option; use --model-kwargs for {model}")
            kw[name] = getattr(a, name)
    return kw


def score_config(a):
    """The validated TrainConfig of ``sdeflow train``'s arguments."""
    from ..train import TrainConfig
    cfg = config_from_args(TrainConfig, a, model=lambda c: "mlp" if is_vector_data(c) else "unet",
                           sigma_data=lambda c: 1.0 if is_vector_data(c) else 0.5)
    return dataclasses.replace(
        no_precondition(cfg), model_kwargs={**cfg.model_kwargs, **_mlp_options(a, cfg.model)},
        task_kwargs={"factor": a.sr_factor} if cfg.task == "sr" else {}).validate()


def cld_config(a):
    """The validated CLDConfig of ``sdeflow train --sde cld``: --sde-kwargs are the process's
    arguments (beta, beta_max, M, gamma, T, t_min); score matching's other flags are refused."""
    import argparse

    from ..training.cld import CLDConfig
    from .distill import _refuse_flags
    if a.objective != "score":
        raise ValueError("--sde cld trains by (hybrid) score matching, not --objective "
                         f"{a.objective}")
    rest = argparse.Namespace(**{k: v for k, v in vars(a).items() if k not in ("sde", "sde_kwargs")})
    _refuse_flags(rest, CLDConfig, "CLD (--sde cld)")
    cfg = config_from_args(CLDConfig, a, model=lambda c: "mlp" if is_vector_data(c) else "unet",
                           sigma_data=lambda c: 1.0 if is_vector_data(c) else 0.5)
    return dataclasses.replace(
        no_precondition(cfg), cld_kwargs=dict(getattr(a, "sde_kwargs", {})),
        model_kwargs={**cfg.model_kwargs, **_mlp_options(a, cfg.model)}).validate()


def classifier_config(a):
    """The validated ClassifierConfig of ``sdeflow train-classifier``'s arguments."""
    from ..guidance import ClassifierConfig
    return config_from_args(ClassifierConfig, a,
                            model=lambda c: "mlp" if is_vector_data(c) else "encoder").validate()


def add_train(sub) -> None:
    from ..cld import list_cld_solvers
    from ..cld.losses import CLD_LOSSES, CLD_WEIGHTINGS
    from ..losses import list_losses
    from ..models import list_models
    from ..samplers import list_solvers
    from ..sde import list_sdes
    from ..train import TrainConfig
    p = add_command(sub, "train", cmd_train)
    add_config_flags(p, TrainConfig,
                     sde=dict(choices=[*list_sdes(), "cld"],
                              help="forward SDE; 'cld': critically-damped Langevin diffusion "
                                   "(x with a velocity v, hybrid score matching, SSCS sampler; "
                                   "--sde-kwargs: beta, beta_max, M, gamma, T, t_min)"),
                     precondition=dict(choices=["edm", "mixed", "none"],
                                       help="EDM preconditioning of the network, CLD's 'mixed' "
                                            "score (the default with --sde cld), or 'none'",
                                       show_default=False),
                     sample_solver=dict(choices=sorted({*list_solvers(), *list_cld_solvers()}),
                                        help="solver of the sample grids", show_default=False),
                     loss=dict(choices=[*list_losses(), *loss_choices(), *CLD_LOSSES],
                               help="training objective (score matching; with --sde cld: hsm "
                                    "or dsm), or the distance of --objective ict"),
                     model=dict(choices=list_models(), show_default=False,
                                help="network (default: mlp for toy data, unet for images)"),
                     sigma_data=dict(show_default=False,
                                     help="σ_data of EDM preconditioning (default 1.0 for toy "
                                          "data, 0.5 for images)"))
    p.add_argument("--hidden", type=int, default=None, help="MLP width (default 128)")
    p.add_argument("--depth", type=int, default=None, help="MLP residual blocks (default 3)")
    p.add_argument("--sr-factor", type=int, default=2, help="super-resolution factor (--task sr)")
    p.add_argument("--weighting", choices=CLD_WEIGHTINGS, default=argparse.SUPPRESS,
                   help="--sde cld: λ(t) of the loss, 'eps' (ε_v regression) or 'likelihood' "
                        "(Γβ, bounds the NLL) (default: eps)")
    p.add_argument("--t-eps", dest="t_eps", type=float, default=argparse.SUPPRESS,
                   help="--sde cld: training times are uniform on [t_eps, T] (default: 1e-05)")
    p.add_argument("--objective", default="score", choices=["score", "ict"],
                   help="score matching, or consistency training from scratch (iCT, Song & "
                        "Dhariwal 2023; sample with --solver consistency)")
    add_ict_flags(p)
    add_run_flags(p, "runs/toy")


def cmd_train(a) -> int:
    """train a score model on toy data or images

    Train a score model by denoising score matching and save checkpoints (safetensors + JSON
    config) to --out. 2-D toy data train an MLP; image data (--data digits, the embedded 8×8
    digits, or folder/torchvision/hf with --data-kwargs) train a U-Net or DiT. Multi-GPU:
    torchrun --nproc_per_node=N -m sdeflow.cli train ... (--batch-size is the global batch).
    """
    from ..training import train
    if getattr(a, "sde", None) == "cld":
        cfg = cld_config(a)
    elif a.objective == "ict":
        cfg = ict_config(a)
    else:
        score_flags_only(a)
        cld_only = [f"--{k.replace('_', '-')}" for k in ("weighting", "t_eps") if hasattr(a, k)]
        if cld_only:
            raise ValueError(f"{', '.join(cld_only)}: option(s) of --sde cld")
        cfg = score_config(a)
    st = train(cfg, a.out, resume=a.resume)
    if st.dist.is_main:
        print(f"trained {st.step} steps; checkpoint in {latest_checkpoint(a.out)}")
    return 0


def add_train_classifier(sub) -> None:
    from ..guidance import ClassifierConfig
    from ..models.classifier import list_classifiers
    p = add_command(sub, "train-classifier", cmd_train_classifier)
    add_config_flags(p, ClassifierConfig,
                     model=dict(choices=list_classifiers(), show_default=False,
                                help="network (default: encoder for images, mlp for toy data)"))
    add_run_flags(p, "runs/classifier")


def cmd_train_classifier(a) -> int:
    """train a noise-conditional classifier p(y | x_t, t)

    Cross-entropy on forward-noised data at log-uniform noise levels, for classifier guidance
    (`sdeflow sample --classifier RUN --class y --guidance w`). Use the same --sde as the
    diffusion model. Checkpoints are atomic and resumable; the held-out accuracy per noise
    level goes to OUT/accuracy.json.
    """
    import json

    from ..guidance import classifier_accuracy, train_classifier
    from .common import held_out
    cfg = classifier_config(a)
    clf = train_classifier(cfg, a.out, resume=a.resume).cpu()
    x, y = held_out(cfg, 10**9)
    if y is not None:
        acc = classifier_accuracy(clf, x, y)
        (Path(a.out) / "accuracy.json").write_text(json.dumps(acc, indent=2))
        print("held-out accuracy by noise level σ̃:", json.dumps(acc))
    print(f"checkpoint in {latest_checkpoint(a.out)}")
    return 0

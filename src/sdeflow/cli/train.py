"""``sdeflow train`` and ``sdeflow train-classifier``.

Each field of :class:`~sdeflow.train.TrainConfig` and
:class:`~sdeflow.guidance.classifier.ClassifierConfig` gets its flag from one table
(:func:`field_flags`); a flag's default is the dataclass's: the parser leaves an absent flag out
of the namespace (``argparse.SUPPRESS``) and the dataclass fills the field in.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .common import add_command, json_dict, latest_checkpoint

__all__ = ["field_flags", "add_config_flags", "config_from_args", "score_config",
           "classifier_config", "add_train", "cmd_train", "add_train_classifier",
           "cmd_train_classifier"]

# Fields no flag sets directly: filled in from the data when a run starts (shape, num_classes),
# or built from other flags (task_kwargs: from --task and --sr-factor).
NOT_FLAGS = ("shape", "num_classes", "task_kwargs")


def field_flags() -> dict:
    """Config field → ``add_argument`` options of its flag (``flag``: when not --field-name;
    ``show_default=False``: the help says the default itself)."""
    from ..data import list_data
    from ..denoiser import PREDICTIONS
    from ..losses import list_losses
    from ..samplers import list_solvers
    from ..sde import list_sdes
    from ..tasks import list_tasks
    from ..train import PRECISIONS
    return dict(
        data=dict(choices=list_data(), help="data set"),
        data_kwargs=dict(type=json_dict, help="data arguments as JSON, e.g. "
                                              "'{\"root\": \"imgs\", \"resolution\": 32}'"),
        sde=dict(choices=list_sdes(), help="forward SDE"),
        sde_kwargs=dict(type=json_dict, help="SDE arguments as JSON"),
        prediction=dict(choices=list(PREDICTIONS), help="what the network predicts"),
        precondition=dict(choices=["edm", "none"],
                          help="EDM preconditioning of the network ('none' feeds t as is)"),
        sigma_data=dict(type=float, help="σ_data of the data (EDM preconditioning)"),
        loss=dict(choices=list_losses(), help="training objective"),
        model_kwargs=dict(type=json_dict, help="network arguments as JSON, e.g. '{\"channels\": 32}'"),
        class_cond=dict(action="store_true", help="condition on the data's labels"),
        p_uncond=dict(type=float, help="label dropout for classifier-free guidance "
                                       "(needs --class-cond)"),
        task=dict(choices=list_tasks(), help="image-to-image model (SR3/Palette): sr "
                  "(super-resolution) or colorize; the condition image is concatenated to x_t"),
        hflip=dict(action="store_true", help="random horizontal flips"),
        steps=dict(type=int, help="training steps"),
        batch_size=dict(type=int, help="global batch size"),
        lr=dict(type=float, help="AdamW learning rate"),
        weight_decay=dict(type=float, help="AdamW weight decay"),
        warmup=dict(type=int, help="linear learning-rate warm-up steps"),
        grad_clip=dict(type=float, help="max gradient norm (0: off)"),
        ema_decay=dict(type=float, help="decay of the weights' exponential moving average"),
        precision=dict(choices=list(PRECISIONS), help="autocast precision (bf16/fp16 for GPUs)"),
        compile=dict(action="store_true", help="torch.compile the network"),
        seed=dict(type=int, help="seed of the network's initialisation and of every batch"),
        ckpt_every=dict(type=int, help="steps between checkpoints"),
        keep=dict(type=int, help="checkpoints kept"),
        log_every=dict(type=int, help="steps between loss.csv rows"),
        sample_every=dict(type=int, help="save an EMA sample grid every N steps (0: never)"),
        sample_solver=dict(choices=list_solvers(), help="solver of the sample grids"),
        sample_steps=dict(type=int, help="solver steps of the sample grids"),
        sample_num=dict(type=int, help="images in a sample grid"),
        tensorboard=dict(flag="--no-tensorboard", action="store_false",
                         help="log to loss.csv only"))


def add_config_flags(p, config_cls, **overrides) -> None:
    """One flag per field of ``config_cls`` that :func:`field_flags` (updated by
    ``overrides``) knows, in field order; the help shows the dataclass default."""
    table = {**field_flags(), **overrides}
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        if f.name not in table:
            continue
        opts = dict(table[f.name])
        flag = opts.pop("flag", "--" + f.name.replace("_", "-"))
        show = opts.pop("show_default", "action" not in opts)
        help_ = opts.pop("help", "")
        if show:
            help_ = f"{help_} (default: {getattr(defaults, f.name)})".replace("%", "%%")
        p.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_, **opts)


def config_from_args(config_cls, a, **derived):
    """``config_cls`` from the flags given in ``a``; a field whose flag was not given takes its
    value from ``derived`` (defaults that depend on other fields: field → function of the
    config), else the dataclass default."""
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(config_cls) if hasattr(a, f.name)}
    cfg = config_cls(**given)
    return dataclasses.replace(cfg, **{k: fn(cfg) for k, fn in derived.items() if k not in given})


def _is_toy(cfg) -> bool:
    from ..data import list_toy
    return cfg.data in list_toy()


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
    cfg = config_from_args(TrainConfig, a, model=lambda c: "mlp" if _is_toy(c) else "unet",
                           sigma_data=lambda c: 1.0 if _is_toy(c) else 0.5)
    return dataclasses.replace(
        cfg, precondition=None if cfg.precondition == "none" else cfg.precondition,
        model_kwargs={**cfg.model_kwargs, **_mlp_options(a, cfg.model)},
        task_kwargs={"factor": a.sr_factor} if cfg.task == "sr" else {}).validate()


def classifier_config(a):
    """The validated ClassifierConfig of ``sdeflow train-classifier``'s arguments."""
    from ..guidance import ClassifierConfig
    return config_from_args(ClassifierConfig, a,
                            model=lambda c: "mlp" if _is_toy(c) else "encoder").validate()


def _add_run_flags(p, out: str) -> None:
    p.add_argument("--out", default=out, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")


def add_train(sub) -> None:
    from ..models import list_models
    from ..train import TrainConfig
    p = add_command(sub, "train", cmd_train,
                    help="train a score model on toy data or images",
                    description="Train a score model by denoising score matching and save "
                                "checkpoints (safetensors + JSON config) to --out. 2-D toy data "
                                "train an MLP; image data (--data digits, the embedded 8×8 "
                                "digits, or folder/torchvision/hf with --data-kwargs) train a "
                                "U-Net or DiT. Multi-GPU: torchrun --nproc_per_node=N -m "
                                "sdeflow.cli train ... (--batch-size is the global batch).")
    add_config_flags(p, TrainConfig,
                     model=dict(choices=list_models(), show_default=False,
                                help="network (default: mlp for toy data, unet for images)"),
                     sigma_data=dict(type=float, show_default=False,
                                     help="σ_data of EDM preconditioning (default 1.0 for toy "
                                          "data, 0.5 for images)"))
    p.add_argument("--hidden", type=int, default=None, help="MLP width (default 128)")
    p.add_argument("--depth", type=int, default=None, help="MLP residual blocks (default 3)")
    p.add_argument("--sr-factor", type=int, default=2, help="super-resolution factor (--task sr)")
    _add_run_flags(p, "runs/toy")


def cmd_train(a) -> int:
    from ..train import train
    st = train(score_config(a), a.out, resume=a.resume)
    if st.dist.is_main:
        print(f"trained {st.step} steps; checkpoint in {latest_checkpoint(a.out)}")
    return 0


def add_train_classifier(sub) -> None:
    from ..guidance import ClassifierConfig
    from ..models.classifier import list_classifiers
    p = add_command(sub, "train-classifier", cmd_train_classifier,
                    help="train a noise-conditional classifier p(y | x_t, t)",
                    description="Cross-entropy on forward-noised data at log-uniform noise "
                                "levels, for classifier guidance (`sdeflow sample --classifier "
                                "RUN --class y --guidance w`). Use the same --sde as the "
                                "diffusion model. Checkpoints are atomic and resumable; the "
                                "held-out accuracy per noise level goes to OUT/accuracy.json.")
    add_config_flags(p, ClassifierConfig,
                     model=dict(choices=list_classifiers(), show_default=False,
                                help="network (default: encoder for images, mlp for toy data)"))
    _add_run_flags(p, "runs/classifier")


def cmd_train_classifier(a) -> int:
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

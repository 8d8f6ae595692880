"""Command-line flags generated from the config dataclasses, so that each field is defined
once: its type and default are the dataclass's, and the parser leaves an absent flag out of the
namespace (``argparse.SUPPRESS``) for the dataclass to fill in. :func:`field_flags` holds the
help of the fields every training program shares."""
from __future__ import annotations

import argparse
import dataclasses
import typing

from .common import json_dict

__all__ = ["NOT_FLAGS", "field_flags", "add_config_flags", "config_from_args", "is_vector_data",
           "no_precondition", "add_run_flags"]

# Fields no flag sets directly: filled in from the data when a run starts (shape, num_classes,
# latent_scale), copied from another run (latent_config), or built from other flags
# (task_kwargs: from --task and --sr-factor).
NOT_FLAGS = ("shape", "num_classes", "task_kwargs", "latent_config", "latent_digest",
             "latent_scale")


def field_flags() -> dict:
    """Config field → the help of its flag, or the ``add_argument`` options of its flag with
    its help (``flag``: when not --field-name; ``show_default=False``: the help says the
    default itself). The flag's type follows the field's annotation (:func:`_typed`)."""
    from ..data import list_data
    from ..denoiser import PREDICTIONS
    from ..losses import list_losses
    from ..samplers import list_solvers
    from ..sde import list_sdes
    from ..tasks import list_tasks
    from ..train import PRECISIONS
    return dict(
        # flags with a choice of names (from the registries), or another name
        data=dict(choices=list_data(), help="data set"),
        sde=dict(choices=list_sdes(), help="forward SDE"),
        prediction=dict(choices=list(PREDICTIONS), help="what the network predicts"),
        precondition=dict(choices=["edm", "none"],
                          help="EDM preconditioning of the network ('none' feeds t as is)"),
        loss=dict(choices=list_losses(), help="training objective"),
        task=dict(choices=list_tasks(), help="image-to-image model (SR3/Palette): sr "
                  "(super-resolution) or colorize; the condition image is concatenated to x_t"),
        precision=dict(choices=list(PRECISIONS), help="autocast precision (bf16/fp16 for GPUs)"),
        sample_solver=dict(choices=list_solvers(), help="solver of the sample grids"),
        tensorboard=dict(flag="--no-tensorboard", action="store_false",
                         help="log to loss.csv only"),
        # flags that take a number, a JSON object, or nothing (a switch)
        data_kwargs="data arguments as JSON, e.g. '{\"root\": \"imgs\", \"resolution\": 32}'",
        sde_kwargs="SDE arguments as JSON",
        sigma_data="σ_data of the data (EDM preconditioning)",
        model_kwargs="network arguments as JSON, e.g. '{\"channels\": 32}'",
        learn_sigma="also learn the reverse variance (Improved DDPM; VP SDE, twice the "
                    "network's outputs, loss L_simple + vlb_weight·L_vlb)",
        vlb_weight="λ of the L_vlb term with --learn-sigma",
        ddpm_steps="DDPM's T: steps of the discrete chain --learn-sigma trains on",
        vlb_bins="levels of image data for --learn-sigma's discrete decoder (256: 8-bit "
                 "images; 17: the embedded digits)",
        class_cond="condition on the data's labels",
        p_uncond="label (or caption) dropout for classifier-free guidance (needs --class-cond "
                 "or --text-cond)",
        text_cond="condition on the data's captions (captioned_digits, captioned_gmm): a text "
                  "encoder, its pooled output added to the noise embedding, cross-attention "
                  "in U-Net/DiT; sample with --prompt",
        hflip="random horizontal flips",
        latent="train on the latents of this autoencoder run (`sdeflow train-autoencoder`): "
               "the data are encoded once (cached in RUN/latent-cache), rescaled to unit std, "
               "and the model's samples are decoded images",
        steps="training steps",
        batch_size="global batch size",
        lr="AdamW learning rate",
        weight_decay="AdamW weight decay",
        warmup="linear learning-rate warm-up steps",
        grad_clip="max gradient norm (0: off)",
        ema_decay="decay of the weights' exponential moving average",
        compile="torch.compile the network",
        seed="seed of the network's initialisation and of every batch",
        ckpt_every="steps between checkpoints",
        keep="checkpoints kept",
        log_every="steps between loss.csv rows",
        sample_every="save an EMA sample grid every N steps (0: never)",
        sample_steps="solver steps of the sample grids",
        sample_num="images in a sample grid")


def _typed(opts: dict, annotation) -> dict:
    """``opts`` with the type its field's annotation implies, unless they give a type or an
    action: a bool field is a switch (store_true); an int, float or dict field parses its value
    (a dict as JSON)."""
    if "type" in opts or "action" in opts:
        return opts
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(inner) == 1:  # X | None: the flag gives an X
        annotation = inner[0]
    if annotation is bool:
        return {**opts, "action": "store_true"}
    parse = {int: int, float: float, dict: json_dict}.get(annotation)
    return {**opts, "type": parse} if parse else opts


def add_config_flags(p, config_cls, **overrides) -> None:
    """One flag per field of ``config_cls`` that :func:`field_flags` (updated by
    ``overrides``) knows, in field order; the help shows the dataclass default."""
    table = {**field_flags(), **overrides}
    defaults, annotations = config_cls(), typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if table.get(f.name) is None:  # not in the table, or set otherwise
            continue
        opts = table[f.name]
        opts = _typed(dict(help=opts) if isinstance(opts, str) else dict(opts), annotations[f.name])
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


def is_vector_data(cfg) -> bool:
    from ..data import list_vector_data
    return cfg.data in list_vector_data()


def no_precondition(cfg):
    """``--precondition none`` as the config's None."""
    return dataclasses.replace(cfg, precondition=None if cfg.precondition == "none"
                               else cfg.precondition)


def add_run_flags(p, out: str) -> None:
    p.add_argument("--out", default=out, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")

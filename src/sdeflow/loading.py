"""``sdeflow.load``: the one way from a checkpoint to a model, for Python and the CLI alike.

A checkpoint's ``config.json`` names its kind (``score`` when absent: checkpoints written
before kinds existed); the training program registered for that kind
(:mod:`sdeflow.training.objective`) rebuilds its networks from the config, the weights are
loaded (EMA by default), and the program exports the model users get — a
:class:`~sdeflow.Denoiser` for a score model, a noisy classifier for ``classifier``. Every
missing, damaged or foreign file is a :class:`~sdeflow.checkpoint.CheckpointError` naming it.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .checkpoint import (CheckpointError, load_weights, read_config, read_weights,
                         resolve_checkpoint)

__all__ = ["load", "read_config_of", "CheckpointError"]


def read_config_of(ck: dict):
    """The typed, validated config of ``ck`` (``path`` and ``config`` of a checkpoint)."""
    from .training.objective import get_objective, list_objectives
    cfg_file = Path(ck["path"]) / "config.json"
    kind = ck["config"].get("kind", "score")
    if kind not in list_objectives():
        raise CheckpointError(cfg_file, f"unknown checkpoint kind {kind!r} (this sdeflow "
                                        f"knows {list_objectives()})")
    try:
        cfg = get_objective(kind).Config.from_dict(ck["config"])
    except ValueError as e:
        raise CheckpointError(cfg_file, str(e)) from None
    if cfg.shape is None:
        raise CheckpointError(cfg_file, "has no data shape (not the config of a started run)")
    return cfg


def load(path, *, ema: bool = True, device=None, kind: str | None = None):
    """``(model, config)`` of a run directory or ``ckpt-<step>`` folder.

    Args:
        path: a run directory (its ``latest`` checkpoint is used) or a checkpoint folder.
        ema: the EMA weights (default) or the raw trained ones.
        device: where to put the model (default CPU).
        kind: the kind expected (``"score"``, ``"classifier"``, …; ``"denoiser"``: any
            program whose model is a :class:`~sdeflow.Denoiser` — score models, distilled
            students, consistency models; ``"cld"``: a :class:`~sdeflow.cld.CLDModel`), or a
            tuple of kinds any of which will do; another kind is refused.

    The model is in eval mode with gradients off. Raises
    :class:`~sdeflow.checkpoint.CheckpointError` for every bad file."""
    from .training.engine import ema_file, weight_file
    from .training.objective import get_objective, list_objectives
    ck = resolve_checkpoint(path)
    raw = read_config(ck)
    found = raw.get("kind", "score")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if kinds and not any(found == k or _exports(found, k) for k in kinds):
        hints = [get_objective(k).how_to_train for k in kinds if k in list_objectives()]
        hint = "; ".join(h for h in hints if h)
        raise CheckpointError(ck / "config.json", f"not a {' or '.join(kinds)} checkpoint (it "
                                                  f"holds a {found} model){'; ' + hint if hint else ''}")
    cfg = read_config_of(dict(path=ck, config=raw))
    program = get_objective(cfg.KIND)
    try:
        nets = program.build(cfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(ck / "config.json", f"describes a network that cannot be built "
                                                  f"({e})") from None
    for name, net in nets.items():
        stem = ema_file(name) if ema and name in program.trainable else weight_file(name)
        load_weights(net, read_weights(ck, stem), ck / f"{stem}.safetensors")
    model: nn.Module = program.export(nets, cfg)
    return model.eval().requires_grad_(False).to(device or "cpu"), cfg


def _exports(found: str, kind: str) -> bool:
    """A checkpoint of kind ``found`` gives what ``kind`` asks for (e.g. a denoiser)."""
    from .training.objective import get_objective, list_objectives
    return found in list_objectives() and get_objective(found).exports == kind

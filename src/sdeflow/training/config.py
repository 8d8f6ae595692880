"""The settings every training program shares, as a typed dataclass saved with each checkpoint.

A program's config (score matching's :class:`~sdeflow.training.score.TrainConfig`, the noisy
classifier's :class:`~sdeflow.training.classifier.ClassifierConfig`, …) subclasses
:class:`EngineConfig`, adds its own fields and checks, and names its checkpoint ``KIND``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..data import list_data

__all__ = ["EngineConfig", "PRECISIONS"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict,
          "list": list, "None": type(None)}


def _is(value, kind: str) -> bool:
    """``value`` is of the annotated type ``kind`` (a bool is not an int here)."""
    if isinstance(value, bool) and kind in ("int", "float"):
        return False
    return kind not in _TYPES or isinstance(value, _TYPES[kind])  # other annotations: unchecked


@dataclass
class EngineConfig:
    """Optimisation, EMA, precision, checkpointing and logging: what the engine reads.

    ``shape`` and ``num_classes`` are filled in from the data when the run starts (and the
    network's input size from them), so a checkpoint rebuilds its networks without the data.
    """

    KIND: ClassVar[str] = ""

    data: str = "gmm"
    data_kwargs: dict = field(default_factory=dict)
    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)
    steps: int = 3000
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    ckpt_every: int = 1000
    keep: int = 2
    log_every: int = 50
    sample_every: int = 0
    tensorboard: bool = True
    shape: list | None = None
    num_classes: int = 0

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs; subclasses extend the list with their own."""
        return [(self.data in list_data(), f"data {self.data!r} not in {list_data()}"),
                (self.steps > 0 and self.batch_size > 0, "steps and batch_size must be positive"),
                (self.lr > 0 and self.ckpt_every > 0 and self.log_every > 0,
                 "lr, ckpt_every and log_every must be positive"),
                (self.weight_decay >= 0 and self.warmup >= 0 and self.grad_clip >= 0,
                 "weight_decay, warmup and grad_clip must be ≥ 0"),
                (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1)"),
                (self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}"),
                (self.keep >= 1, "keep must be at least 1"),
                (self.sample_every >= 0, "sample_every must be ≥ 0 (0 = no sample grids)"),
                (isinstance(self.data_kwargs, dict) and isinstance(self.model_kwargs, dict),
                 "data_kwargs and model_kwargs must be JSON objects")]

    def type_checks(self) -> list[tuple[bool, str]]:
        """Every field holds a value of its annotated type (a JSON config or a Python caller
        can give ``steps=2.5`` or ``compile="false"``): ints are ints (not bools), floats
        ints or floats, bools bools, and so on; ``X | None`` also admits None."""
        out = []
        for f in dataclasses.fields(self):
            ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            v, kinds = getattr(self, f.name), ann.replace(" ", "").split("|")
            ok = any(_is(v, k) for k in kinds)
            out.append((ok, f"{f.name} must be {' or '.join(kinds)}, got {v!r}"))
        return out

    def shape_checks(self) -> list[tuple[bool, str]]:
        """A started run's data shape is positive sizes the network's input agrees with."""
        shape, kw = self.shape, self.model_kwargs
        if shape is None:
            return []
        if not (shape and all(_is(n, "int") and n > 0 for n in shape)):
            return [(False, f"shape must be a list of positive integers, got {shape!r}")]
        return [(kw.get(k, v) == v, f"shape {shape} disagrees with model_kwargs {k}={kw.get(k)}")
                for k, v in (("dim", math.prod(shape)), ("in_channels", shape[0]),
                             ("resolution", shape[-1])) if k in kw]

    def complete(self) -> None:
        """Fill in (in place) defaults that depend on something outside the config — a
        teacher's data, say; :meth:`validate` calls it first. Nothing to do here."""

    def load_data(self):
        """The data this program trains on: ``get_data(data, **data_kwargs)`` (a program may
        transform it, e.g. encode it into an autoencoder's latents)."""
        from ..data import get_data
        return get_data(self.data, **self.data_kwargs)

    def validate(self):
        self.complete()
        types = self.type_checks()
        bad = [msg for ok, msg in types if not ok]
        if not bad:  # the other checks compare values of the right types
            bad = [msg for ok, msg in self.checks() + self.shape_checks() if not ok]
        if bad:
            raise ValueError(f"invalid {self.KIND or 'training'} config: " + "; ".join(bad))
        return self

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "kind": self.KIND}

    @classmethod
    def from_dict(cls, d: dict):
        """The config of a saved ``to_dict`` (a checkpoint's config.json), validated. Keys
        missing from older checkpoints take their defaults."""
        d = dict(d)
        kind = d.pop("kind", cls.KIND)
        if kind != cls.KIND:
            raise ValueError(f"a {kind!r} config, not a {cls.KIND!r} one")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        try:
            return cls(**d).validate()
        except TypeError as e:  # e.g. a list where a number goes
            raise ValueError(f"bad value in config: {e}") from None

    def resolved(self, data):
        """A copy with ``shape``, ``num_classes`` and the network's input size taken from
        ``data``; subclasses add what their networks need (:meth:`resolve_model`)."""
        cfg = copy.deepcopy(self)
        fresh, shape = cfg.shape is None, list(data.shape)
        if cfg.shape is not None and list(cfg.shape) != shape:
            raise ValueError(f"config shape {cfg.shape} does not match the data's {shape}")
        cfg.shape, cfg.num_classes = shape, int(data.num_classes)
        kw = cfg.model_kwargs
        if cfg.model == "mlp":
            kw.setdefault("dim", math.prod(shape))
        else:
            kw.setdefault("in_channels", shape[0])
            kw.setdefault("resolution", shape[-1])
        cfg.resolve_model(data, fresh)
        return cfg

    def default_network(self, fresh: bool) -> None:
        """Lay the default architecture of the data's shape
        (:func:`~sdeflow.models.default_model_kwargs`) under the user's network arguments —
        for a new run only: a started run keeps the architecture it was built with."""
        if fresh:
            from ..models import default_model_kwargs
            self.model_kwargs = {**default_model_kwargs(self.model, self.shape),
                                 **self.model_kwargs}

    def resolve_model(self, data, fresh: bool) -> None:
        """Hook: fill in further network arguments from the data (in place); ``fresh``: the
        run has not started (a started run keeps the architecture it was built with)."""

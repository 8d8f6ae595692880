"""Training: a typed config, one state object (model, EMA, optimizer, step, RNG) that saves and
restores as a whole, and the loop that `sdeflow train` runs."""
from __future__ import annotations

import copy
import csv
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import read_checkpoint, save_checkpoint
from .data import list_toy, toy_sample
from .denoiser import PREDICTIONS, Denoiser
from .losses import list_losses, loss_fn
from .models import build_model, list_models
from .sde import get_sde, list_sdes

__all__ = ["TrainConfig", "TrainState", "train", "load_denoiser"]


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as JSON next to every checkpoint."""

    data: str = "gmm"
    sde: str = "edm"
    sde_kwargs: dict = field(default_factory=dict)
    prediction: str = "x0"
    precondition: str | None = "edm"
    sigma_data: float = 1.0
    loss: str = "edm"
    model: str = "mlp"
    model_kwargs: dict = field(default_factory=lambda: dict(hidden=128, depth=3))
    steps: int = 3000
    batch_size: int = 512
    lr: float = 2e-3
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 50

    def validate(self) -> "TrainConfig":
        checks = [(self.data in list_toy(), f"data {self.data!r} not in {list_toy()}"),
                  (self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
                  (self.prediction in PREDICTIONS, f"prediction {self.prediction!r} not in {list(PREDICTIONS)}"),
                  (self.loss in list_losses(), f"loss {self.loss!r} not in {list_losses()}"),
                  (self.model in list_models(), f"model {self.model!r} not in {list_models()}"),
                  (self.precondition in (None, "edm"), "precondition must be None or 'edm'"),
                  (not (self.precondition == "edm" and self.prediction != "x0"),
                   "precondition='edm' needs prediction='x0'"),
                  (self.steps > 0 and self.batch_size > 0, "steps and batch_size must be positive"),
                  (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1)"),
                  (self.lr > 0 and self.ckpt_every > 0, "lr and ckpt_every must be positive")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError("invalid training config: " + "; ".join(bad))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d).validate()


def build_denoiser(cfg: TrainConfig) -> Denoiser:
    """The network of ``cfg`` wrapped as a Denoiser under its SDE."""
    sde = get_sde(cfg.sde, **cfg.sde_kwargs)
    net = build_model(cfg.model, dim=2, **cfg.model_kwargs)
    return Denoiser(net, sde, prediction=cfg.prediction, precondition=cfg.precondition,
                    sigma_data=cfg.sigma_data)


class TrainState:
    """Model, EMA copy, optimizer, step counter and data RNG: saved and restored together."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg.validate()
        torch.manual_seed(cfg.seed)
        self.model = build_denoiser(cfg)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.step = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.loss = loss_fn(cfg.loss)

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def train_step(self) -> float:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        x0 = toy_sample(cfg.data, cfg.batch_size, self.generator).to(torch.float32)
        loss = self.loss(self.model, x0, generator=self.generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(p, 1 - cfg.ema_decay)
        self.step += 1
        return loss.item()

    def save(self, run_dir) -> Path:
        state = dict(step=self.step, optimizer=self.opt.state_dict(),
                     generator=self.generator.get_state(), torch_rng=torch.get_rng_state())
        return save_checkpoint(run_dir, self.step, self.cfg.to_dict(), self.model.state_dict(),
                               self.ema.state_dict(), state)

    @classmethod
    def load(cls, path) -> "TrainState":
        ck = read_checkpoint(path)
        st = cls(TrainConfig.from_dict(ck["config"]))
        st.model.load_state_dict(ck["model"])
        st.ema.load_state_dict(ck["ema"])
        st.opt.load_state_dict(ck["state"]["optimizer"])
        st.step = int(ck["state"]["step"])
        st.generator.set_state(ck["state"]["generator"])
        torch.set_rng_state(ck["state"]["torch_rng"])
        return st


def train(cfg: TrainConfig, run_dir, *, resume: bool = False, progress: bool = True) -> TrainState:
    """Train to ``cfg.steps``, checkpointing every ``cfg.ckpt_every`` steps and at the end.
    With ``resume``, continue from the run directory's latest checkpoint."""
    run_dir = Path(run_dir)
    if resume and (run_dir / "latest").is_file():
        st = TrainState.load(run_dir)
        if st.cfg.to_dict() != {**cfg.to_dict(), "steps": st.cfg.steps}:
            raise ValueError("the config differs from the checkpoint's; resume with the same settings")
        st.cfg.steps = cfg.steps
    else:
        st = TrainState(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "loss.csv"
    new_log = not log_path.exists() or st.step == 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=st.step, desc="training", unit="step")
    t0, avg = time.perf_counter(), math.nan
    with open(log_path, "w" if new_log else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["step", "loss"])
        while st.step < cfg.steps:
            loss = st.train_step()
            avg = loss if math.isnan(avg) else 0.98 * avg + 0.02 * loss
            if st.step % cfg.log_every == 0:
                writer.writerow([st.step, f"{loss:.6g}"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{avg:.4f}",
                                it_s=f"{st.step / max(time.perf_counter() - t0, 1e-9):.0f}")
            if st.step % cfg.ckpt_every == 0 or st.step == cfg.steps:
                st.save(run_dir)
    if bar is not None:
        bar.close()
    return st


def load_denoiser(path, ema: bool = True) -> tuple[Denoiser, TrainConfig]:
    """The trained model of a run directory or checkpoint folder (EMA weights by default)."""
    ck = read_checkpoint(path, with_state=False)
    cfg = TrainConfig.from_dict(ck["config"])
    model = build_denoiser(cfg)
    model.load_state_dict(ck["ema" if ema else "model"])
    return model.eval().requires_grad_(False), cfg

"""The training engine: one loop for every training program (:mod:`.objective`).

It owns AdamW with linear warm-up, gradient clipping, AMP (bf16/fp16 autocast, GradScaler),
``torch.compile``, an EMA copy of every trainable network, DDP, logging (CSV, TensorBoard, a
progress bar with loss and throughput), preview grids, atomic checkpoints and exact resume.

One CPU generator drives every random choice of a step (the objective's :meth:`batch` draws
the *global* batch from it) and dropout is reseeded from (seed, step, rank): a run killed at
any moment and resumed from its last checkpoint takes exactly the steps it would have taken,
and N ranks together take the step one process takes on the same global batch.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoint import (CheckpointError, load_weights, read_checkpoint, read_weights,
                          save_checkpoint)
from ..distributed import DistInfo, all_reduce_mean, barrier, process_group
from .config import PRECISIONS, EngineConfig
from .log import RunLog
from .objective import Objective, get_objective

__all__ = ["Trainer", "train", "weight_file", "ema_file"]


def weight_file(name: str) -> str:
    """The checkpoint file stem of network ``name``."""
    return name


def ema_file(name: str) -> str:
    """The checkpoint file stem of the EMA copy of network ``name`` (``model`` → ``ema``, the
    layout of every score-model checkpoint)."""
    return "ema" if name == "model" else f"{name}_ema"


def _device(dist: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _dropout_seed(seed: int, step: int, rank: int) -> int:
    return ((seed % 2**20) * 2**30 + step) * 1024 + rank


class Trainer:
    """Networks, EMA copies, optimiser, grad scaler, step counter and data RNG of one run of a
    training program: saved and restored together. ``dist`` says which slice of the global
    batch this process trains on."""

    def __init__(self, cfg: EngineConfig, dist: DistInfo | None = None, device=None, data=None,
                 fresh: bool = True):
        cfg.validate()
        self.dist = dist or DistInfo()
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the "
                             f"{self.dist.world_size} ranks")
        program = get_objective(cfg.KIND)
        self.data = data if data is not None else cfg.load_data()
        self.cfg = cfg.resolved(self.data)
        self.device = torch.device(device) if device is not None else _device(self.dist)
        torch.manual_seed(cfg.seed)
        self.nets = {k: v.to(self.device) for k, v in program.build(self.cfg).items()}
        self.objective: Objective = program(self.cfg, self.data)
        if fresh:
            self.objective.initialize(self.nets)
        self.trainable = program.trainable
        self.ema = {k: copy.deepcopy(self.nets[k]).requires_grad_(False) for k in self.trainable}
        self.objective.ema = self.ema  # read by programs that hand EMA weights on (after_step)
        self.opt = torch.optim.AdamW(self._params(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.step = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.views = {k: self.objective.view(k, v, self._wrap) if k in self.trainable else v
                      for k, v in self.nets.items()}

    @property
    def model(self) -> nn.Module:
        """The (first) trained network."""
        return self.nets[self.trainable[0]]

    @property
    def ema_model(self) -> nn.Module:
        return self.ema[self.trainable[0]]

    def _params(self) -> list[nn.Parameter]:
        return [p for k in self.trainable for p in self.nets[k].parameters()]

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            module = DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(module) if self.cfg.compile else module

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def global_batch(self) -> dict[str, Tensor]:
        return self.objective.batch(self.cfg.batch_size, self.generator)

    def _local(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b = self.cfg.batch_size // self.dist.world_size
        sl = slice(self.dist.rank * b, (self.dist.rank + 1) * b)
        return {k: v[sl].to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(self) -> Tensor:
        """One optimisation step; returns this rank's loss (0-d, not synchronised) and keeps
        the objective's metrics in ``self.last_metrics``."""
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        batch = self._local(self.global_batch())
        torch.manual_seed(_dropout_seed(cfg.seed, self.step, self.dist.rank))
        dtype = PRECISIONS[cfg.precision]
        amp = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        for k in self.trainable:
            self.nets[k].train()
        with amp:
            loss, metrics = self.objective.loss(self.views, batch, self.generator)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self._params(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            for k in self.trainable:
                torch._foreach_lerp_(list(self.ema[k].parameters()),
                                     list(self.nets[k].parameters()), 1 - cfg.ema_decay)
        self.step += 1
        self.objective.after_step(self.nets, self.step)
        self.last_metrics = {k: v.detach() for k, v in metrics.items()}
        return loss.detach()

    def save(self, run_dir) -> Path:
        weights = {weight_file(k): v.state_dict() for k, v in self.nets.items()}
        weights.update({ema_file(k): v.state_dict() for k, v in self.ema.items()})
        state = dict(step=self.step, optimizer=self.opt.state_dict(),
                     scaler=self.scaler.state_dict(), generator=self.generator.get_state())
        return save_checkpoint(run_dir, self.step, self.cfg.to_dict(), weights, state,
                               keep=self.cfg.keep)

    @classmethod
    def load(cls, path, dist: DistInfo | None = None, device=None) -> "Trainer":
        """The trainer of a checkpoint, ready to continue; every file error is a
        :class:`~sdeflow.checkpoint.CheckpointError` naming the file."""
        from ..loading import read_config_of
        ck = read_checkpoint(path, weights=[])
        cfg, folder = read_config_of(ck), ck["path"]
        try:
            st = cls(cfg, dist, device, fresh=False)
        except (ValueError, TypeError) as e:
            raise CheckpointError(folder / "config.json", f"cannot rebuild the run ({e})") from None
        for stem, net in [*((weight_file(k), v) for k, v in st.nets.items()),
                          *((ema_file(k), v) for k, v in st.ema.items())]:
            load_weights(net, read_weights(folder, stem), folder / f"{stem}.safetensors")
        try:
            st._restore(ck["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(folder / "state.pt", f"does not fit this run "
                                                       f"({type(e).__name__}: {e})") from None
        return st

    def _restore(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])

    @torch.no_grad()
    def preview(self, path) -> Path | None:
        model = self.ema_model.eval()
        return self.objective.preview(model, Path(path), self.step, self.device)


def _resume_or_start(cfg: EngineConfig, run_dir: Path, dist: DistInfo, resume: bool,
                     device) -> Trainer:
    if not (resume and (run_dir / "latest").is_file()):
        return Trainer(cfg, dist, device)
    st = Trainer.load(run_dir, dist, device)
    if type(st.cfg) is not type(cfg):
        raise ValueError(f"{run_dir} holds a {st.cfg.KIND!r} run, not a {cfg.KIND!r} one")
    diff = _config_changes(cfg, st)
    if diff:
        raise ValueError(f"the config differs from the checkpoint's in {diff}; resume with "
                         f"the same settings")
    st.cfg.steps = cfg.steps
    return st


def _config_changes(cfg: EngineConfig, st: Trainer) -> list[str]:
    """Fields where ``cfg`` asks for something else than the run ``st`` was started with.
    Network arguments count only where the user gave them: the run keeps the architecture it
    was built with (a newer default architecture applies to new runs only)."""
    given = dict(cfg.model_kwargs)
    ours = dataclasses.replace(cfg.resolved(st.data), steps=st.cfg.steps).to_dict()
    saved = st.cfg.to_dict()
    ours["model_kwargs"] = {**saved["model_kwargs"], **given}
    return sorted(k for k, v in ours.items() if saved.get(k) != v)


class _Meter:
    """Loss, lr, throughput and metrics every ``log_every`` steps → log and progress bar."""

    def __init__(self, st: Trainer, log: RunLog | None, bar):
        self.st, self.log, self.bar = st, log, bar
        self.t_last, self.s_last, self.avg = time.perf_counter(), st.step, math.nan

    def __call__(self, loss: Tensor) -> None:
        st = self.st
        value = all_reduce_mean(loss).item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {st.step}")
        metrics = {k: all_reduce_mean(v).item() for k, v in st.last_metrics.items()}
        now = time.perf_counter()
        rate = (st.step - self.s_last) * st.cfg.batch_size / max(now - self.t_last, 1e-9)
        self.t_last, self.s_last = now, st.step
        self.avg = value if math.isnan(self.avg) else 0.9 * self.avg + 0.1 * value
        if self.log is not None:
            self.log.scalars(st.step, dict(loss=value, lr=st.lr_at(st.step - 1), img_per_s=rate,
                                           **metrics))
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.avg:.4f}", img_s=f"{rate:.0f}")


def train(cfg: EngineConfig, run_dir, *, resume: bool = False, progress: bool = True,
          device=None) -> Trainer:
    """Run the program of ``cfg`` to ``cfg.steps``, checkpointing every ``cfg.ckpt_every``
    steps and at the end. With ``resume``, continue from the run directory's latest
    checkpoint. Under ``torchrun`` every rank runs this; rank 0 alone writes checkpoints,
    logs and previews. A process group this call joined is left again (all ranks meet, then
    it is destroyed) before it returns; one the caller set up is left to the caller."""
    with process_group() as dist:
        run_dir = Path(run_dir)
        cfg = copy.deepcopy(cfg).validate()  # the caller's config stays as given
        st = _resume_or_start(cfg, run_dir, dist, resume, device)
        _run(st, run_dir, progress)
    return st


def _run(st: Trainer, run_dir: Path, progress: bool) -> None:
    """The training loop of :func:`train`: step, log, preview and checkpoint to ``cfg.steps``."""
    cfg, main = st.cfg, st.dist.is_main
    log = bar = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log = RunLog(run_dir, st.step, cfg.tensorboard, st.objective.metrics)
        if progress:
            from ..progress import progress_bar
            bar = progress_bar(total=cfg.steps, initial=st.step, desc=f"training {cfg.KIND}",
                               unit="step")
    meter = _Meter(st, log, bar)
    try:
        while st.step < cfg.steps:
            loss = st.train_step()
            if st.step % cfg.log_every == 0 or st.step == cfg.steps:
                meter(loss)
            if bar is not None:
                bar.update(1)
            if main and cfg.sample_every and st.step % cfg.sample_every == 0:
                path = st.preview(run_dir / "samples" / f"step-{st.step:08d}.png")
                if path is not None:
                    log.image(st.step, path)
            if st.step % cfg.ckpt_every == 0 or st.step == cfg.steps:
                if main:
                    st.save(run_dir)
                barrier()
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()

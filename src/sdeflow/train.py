"""Training: a typed config, one state object (model, EMA, optimizer, step, RNG) that saves and
restores as a whole, and the loop that ``sdeflow train`` runs — on 2-D toy data or images, on
CPU or GPU (bf16/fp16 autocast, ``torch.compile``), in one process or many (DDP via torchrun).

One CPU generator drives every random choice of a step (batch indices, flips, label dropout,
times, noise) for the *global* batch, and dropout is reseeded from (seed, step, rank): a run
killed at any moment and resumed from its last checkpoint takes exactly the steps it would have
taken, and N ranks together take the step one process takes on the same global batch.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import read_checkpoint, save_checkpoint
from .data import get_data, list_data, list_toy
from .denoiser import PREDICTIONS, Denoiser
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from .losses import draw_noise, list_losses, loss_fn
from .models import IMAGE_MODELS, build_model, list_models
from .sde import get_sde, list_sdes
from .tasks import get_task, list_tasks

__all__ = ["TrainConfig", "TrainState", "train", "load_denoiser", "build_denoiser"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as JSON next to every checkpoint.

    ``shape`` and ``num_classes`` are filled in from the data when the run starts (and the
    model's input size from them), so a checkpoint rebuilds its network without the data.
    """

    data: str = "gmm"
    data_kwargs: dict = field(default_factory=dict)
    sde: str = "edm"
    sde_kwargs: dict = field(default_factory=dict)
    prediction: str = "x0"
    precondition: str | None = "edm"
    sigma_data: float = 1.0
    loss: str = "edm"
    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)
    class_cond: bool = False
    p_uncond: float = 0.0
    task: str | None = None
    task_kwargs: dict = field(default_factory=dict)
    hflip: bool = False
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
    sample_solver: str = "heun"
    sample_steps: int = 18
    sample_num: int = 64
    tensorboard: bool = True
    shape: list | None = None
    num_classes: int = 0

    def validate(self) -> "TrainConfig":
        image_data = self.data not in list_toy()
        checks = [(self.data in list_data(), f"data {self.data!r} not in {list_data()}"),
                  (self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
                  (self.prediction in PREDICTIONS, f"prediction {self.prediction!r} not in {list(PREDICTIONS)}"),
                  (self.loss in list_losses(), f"loss {self.loss!r} not in {list_losses()}"),
                  (self.model in list_models(), f"model {self.model!r} not in {list_models()}"),
                  (not (image_data and self.model not in IMAGE_MODELS),
                   f"image data {self.data!r} needs an image model ({', '.join(IMAGE_MODELS)})"),
                  (not (not image_data and self.model in IMAGE_MODELS),
                   f"toy data {self.data!r} needs model 'mlp'"),
                  (self.precondition in (None, "edm"), "precondition must be None or 'edm'"),
                  (not (self.precondition == "edm" and self.prediction != "x0"),
                   "precondition='edm' needs prediction='x0'"),
                  (self.steps > 0 and self.batch_size > 0, "steps and batch_size must be positive"),
                  (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1)"),
                  (0 <= self.p_uncond < 1, "p_uncond must lie in [0, 1)"),
                  (not (self.p_uncond > 0 and not self.class_cond), "p_uncond needs class_cond"),
                  (self.precision in PRECISIONS, f"precision must be one of {list(PRECISIONS)}"),
                  (self.lr > 0 and self.ckpt_every > 0 and self.log_every > 0,
                   "lr, ckpt_every and log_every must be positive"),
                  (self.keep >= 1, "keep must be at least 1"),
                  (self.sample_every >= 0, "sample_every must be ≥ 0 (0 = no sample grids)"),
                  (self.task is None or self.task in list_tasks(),
                   f"task {self.task!r} not in {list_tasks()}"),
                  (self.task is None or image_data, "image-to-image tasks need image data")]
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

    def resolved(self, data) -> "TrainConfig":
        """A copy with ``shape``, ``num_classes`` and the model's input size taken from ``data``."""
        cfg = copy.deepcopy(self)
        shape, k = list(data.shape), int(data.num_classes)
        if cfg.shape is not None and list(cfg.shape) != shape:
            raise ValueError(f"config shape {cfg.shape} does not match the data's {shape}")
        if cfg.class_cond and (k == 0 or getattr(data, "y", None) is None):
            raise ValueError(f"class_cond needs labelled data; {cfg.data!r} has none")
        cfg.shape, cfg.num_classes = shape, k
        kw = cfg.model_kwargs
        if cfg.model == "mlp":
            kw.setdefault("dim", math.prod(shape))
        else:
            kw.setdefault("in_channels", shape[0])
            kw.setdefault("resolution", shape[-1])
            if cfg.class_cond:
                kw.setdefault("num_classes", k)
            if cfg.task is not None:
                kw.setdefault("cond_channels", cfg.get_task().cond_channels(shape[0]))
        return cfg

    def get_task(self):
        """The image-to-image task (:mod:`sdeflow.tasks`) or None."""
        return None if self.task is None else get_task(self.task, **self.task_kwargs)


def build_denoiser(cfg: TrainConfig) -> Denoiser:
    """The network of a resolved ``cfg`` wrapped as a Denoiser under its SDE."""
    sde = get_sde(cfg.sde, **cfg.sde_kwargs)
    net = build_model(cfg.model, **cfg.model_kwargs)
    return Denoiser(net, sde, prediction=cfg.prediction, precondition=cfg.precondition,
                    sigma_data=cfg.sigma_data)


def _device(dist: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _dropout_seed(seed: int, step: int, rank: int) -> int:
    return ((seed % 2**20) * 2**30 + step) * 1024 + rank


class TrainState:
    """Model, EMA copy, optimizer, grad scaler, step counter and data RNG: saved and restored
    together. ``dist`` says which slice of the global batch this process trains on."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo | None = None, device=None, data=None):
        cfg.validate()
        self.dist = dist or DistInfo()
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the "
                             f"{self.dist.world_size} ranks")
        self.data = data if data is not None else get_data(cfg.data, **cfg.data_kwargs)
        self.cfg = cfg.resolved(self.data)
        self.device = torch.device(device) if device is not None else _device(self.dist)
        torch.manual_seed(cfg.seed)
        self.model = build_denoiser(self.cfg).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.step = 0
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.loss = loss_fn(cfg.loss)
        self.task = self.cfg.get_task()
        net = self.model.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            net = DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        # the view the loss calls: same parameters, DDP/compile wrappers around the net
        self.train_model = Denoiser(net, self.model.sde, prediction=cfg.prediction,
                                    precondition=cfg.precondition, sigma_data=cfg.sigma_data,
                                    check_finite=False)

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def global_batch(self):
        """x0, conditioning and (t, ε) of the whole global batch (CPU), from the generator."""
        cfg, g = self.cfg, self.generator
        x0, y = self.data.draw(cfg.batch_size, g)
        if cfg.hflip:
            flip = torch.rand(cfg.batch_size, generator=g) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        cond = {}
        if cfg.class_cond:
            if cfg.p_uncond > 0:
                drop = torch.rand(cfg.batch_size, generator=g) < cfg.p_uncond
                y = torch.where(drop, torch.full_like(y, cfg.num_classes), y)
            cond["class_labels"] = y
        if cfg.task is not None:
            cond["x_cond"] = self.task.condition(x0)
        t, eps = draw_noise(self.model.sde, x0, cfg.loss, g)
        return x0, cond, t, eps

    def train_step(self) -> torch.Tensor:
        """One optimisation step; returns this rank's loss (a 0-d tensor, not synchronised)."""
        cfg, d = self.cfg, self.dist
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        x0, cond, t, eps = self.global_batch()
        b = cfg.batch_size // d.world_size
        sl = slice(d.rank * b, (d.rank + 1) * b)
        dev = self.device
        x0, t, eps = (v[sl].to(dev, non_blocking=True) for v in (x0, t, eps))
        cond = {k: v[sl].to(dev, non_blocking=True) for k, v in cond.items()}
        torch.manual_seed(_dropout_seed(cfg.seed, self.step, d.rank))
        dtype = PRECISIONS[cfg.precision]
        amp = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()
        self.model.train()
        with amp:
            loss = self.loss(self.train_model, x0, generator=self.generator, cond=cond,
                             noise=(t, eps))
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()),
                                 1 - cfg.ema_decay)
        self.step += 1
        return loss.detach()

    def save(self, run_dir) -> Path:
        state = dict(step=self.step, optimizer=self.opt.state_dict(),
                     scaler=self.scaler.state_dict(), generator=self.generator.get_state())
        return save_checkpoint(run_dir, self.step, self.cfg.to_dict(), self.model.state_dict(),
                               self.ema.state_dict(), state, keep=self.cfg.keep)

    @classmethod
    def load(cls, path, dist: DistInfo | None = None, device=None) -> "TrainState":
        ck = read_checkpoint(path)
        st = cls(TrainConfig.from_dict(ck["config"]), dist, device)
        st.model.load_state_dict(ck["model"])
        st.ema.load_state_dict(ck["ema"])
        st.opt.load_state_dict(ck["state"]["optimizer"])
        if ck["state"].get("scaler"):
            st.scaler.load_state_dict(ck["state"]["scaler"])
        st.step = int(ck["state"]["step"])
        st.generator.set_state(ck["state"]["generator"])
        return st

    @torch.no_grad()
    def preview(self, path) -> Path:
        """EMA samples with the config's sampler and a fixed seed: a grid (images) or a
        scatter plot (2-D)."""
        from .plotting import save_samples
        from .samplers import sample
        cfg = self.cfg
        cond = {}
        if cfg.class_cond:
            cond["class_labels"] = torch.arange(cfg.sample_num, device=self.device) % cfg.num_classes
        if self.task is not None:  # condition on the first images of the data set
            x0 = self.data.x[:cfg.sample_num] if hasattr(self.data, "x") else \
                self.data.draw(cfg.sample_num, torch.Generator().manual_seed(cfg.seed))[0]
            cond["x_cond"] = self.task.condition(x0).to(self.device)
            cfg = dataclasses.replace(cfg, sample_num=len(x0))
        self.ema.eval()
        x = sample(self.ema, shape=(cfg.sample_num, *cfg.shape), solver=cfg.sample_solver,
                   steps=cfg.sample_steps, seed=cfg.seed, device=self.device, cond=cond)
        return save_samples(x, path, f"step {self.step}")


class _Log:
    """CSV (always) and TensorBoard (when installed and asked for) scalars and images."""

    def __init__(self, run_dir: Path, step: int, tensorboard: bool):
        path = run_dir / "loss.csv"
        rows = []
        if step > 0 and path.exists():  # drop what a killed run logged after its checkpoint
            with open(path, newline="") as fh:
                rows = [r for r in list(csv.reader(fh))[1:] if r and int(r[0]) <= step]
        self.fh = open(path, "w", newline="")
        self.csv = csv.writer(self.fh)
        self.csv.writerow(["step", "loss", "lr", "img_per_s"])
        self.csv.writerows(rows)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1)
            except ImportError:
                print("sdeflow train: tensorboard is not installed; logging to loss.csv only")

    def scalars(self, step: int, loss: float, lr: float, rate: float):
        self.csv.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{rate:.1f}"])
        self.fh.flush()
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/samples_per_s", rate, step)

    def image(self, step: int, path: Path):
        if self.tb is not None:
            import numpy as np
            from PIL import Image
            a = np.asarray(Image.open(path).convert("RGB"))
            self.tb.add_image("samples", a, step, dataformats="HWC")

    def close(self):
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def train(cfg: TrainConfig, run_dir, *, resume: bool = False, progress: bool = True) -> TrainState:
    """Train to ``cfg.steps``, checkpointing every ``cfg.ckpt_every`` steps and at the end.
    With ``resume``, continue from the run directory's latest checkpoint. Under ``torchrun``
    every rank runs this; rank 0 alone writes checkpoints, logs and sample grids."""
    dist = init_distributed()
    run_dir = Path(run_dir)
    if resume and (run_dir / "latest").is_file():
        st = TrainState.load(run_dir, dist)
        ours = dataclasses.replace(cfg.resolved(st.data), steps=st.cfg.steps)
        if st.cfg.to_dict() != ours.to_dict():
            diff = sorted(k for k, v in ours.to_dict().items() if st.cfg.to_dict()[k] != v)
            raise ValueError(f"the config differs from the checkpoint's in {diff}; resume with "
                             f"the same settings")
        st.cfg.steps = cfg.steps
    else:
        st = TrainState(cfg, dist)
    cfg = st.cfg
    main = dist.is_main
    log = bar = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log = _Log(run_dir, st.step, cfg.tensorboard)
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=st.step, desc="training", unit="step")
    t_last, s_last, avg = time.perf_counter(), st.step, math.nan
    try:
        while st.step < cfg.steps:
            loss = st.train_step()
            if st.step % cfg.log_every == 0 or st.step == cfg.steps:
                value = all_reduce_mean(loss).item()
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {st.step}")
                now = time.perf_counter()
                rate = (st.step - s_last) * cfg.batch_size / max(now - t_last, 1e-9)
                t_last, s_last = now, st.step
                avg = value if math.isnan(avg) else 0.9 * avg + 0.1 * value
                if main:
                    log.scalars(st.step, value, st.lr_at(st.step - 1), rate)
                    if bar is not None:
                        bar.set_postfix(loss=f"{avg:.4f}", img_s=f"{rate:.0f}")
            if bar is not None:
                bar.update(1)
            if main and cfg.sample_every and st.step % cfg.sample_every == 0:
                path = st.preview(run_dir / "samples" / f"step-{st.step:08d}.png")
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
    return st


def load_denoiser(path, ema: bool = True, device=None) -> tuple[Denoiser, TrainConfig]:
    """The trained model of a run directory or checkpoint folder (EMA weights by default)."""
    ck = read_checkpoint(path, with_state=False)
    cfg = TrainConfig.from_dict(ck["config"])
    if cfg.shape is None:
        raise ValueError(f"{path}: the checkpoint's config has no data shape")
    model = build_denoiser(cfg)
    model.load_state_dict(ck["ema" if ema else "model"])
    return model.eval().requires_grad_(False).to(device or "cpu"), cfg

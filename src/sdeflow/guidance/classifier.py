r"""Classifier guidance (Song et al. 2021, sec. 5; Dhariwal & Nichol 2021).

A noise-conditional classifier :math:`p_\phi(y\mid x_t, t)`, trained by cross-entropy on
forward-noised data :math:`x_t = s\,x_0 + \sigma\varepsilon` at noise levels spread over the whole
trajectory, turns an unconditional score model into a conditional one:

.. math:: \nabla\log p_t(x\mid y) \approx \nabla\log p_t(x) + w\,\nabla_x\log p_\phi(y\mid x, t),

exact for w = 1 and the true classifier. :class:`ClassifierGuidance` adds the second term to
every prediction of a Denoiser, so all samplers (SDE, PC, ODE, exponential integrators) use it.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checkpoint import read_checkpoint, save_checkpoint
from ..data import get_data, list_data, list_toy
from ..denoiser import Denoiser, Prediction
from ..models.classifier import build_classifier, list_classifiers
from ..sde import SDE, bcast, get_sde, list_sdes
from .base import GuidedDenoiser, shift_score

__all__ = ["NoisyClassifier", "ClassifierGuidance", "ClassifierConfig", "train_classifier",
           "load_classifier", "sample_noise_levels", "classifier_accuracy"]


class NoisyClassifier(nn.Module):
    r"""``net(c_in·x/s, c_noise) -> logits`` with EDM's input scaling, so one network sees
    unit-variance inputs at every noise level of any SDE: :math:`\tilde\sigma = \sigma/s`,
    :math:`c_{in} = (\tilde\sigma^2+\sigma_d^2)^{-1/2}`, :math:`c_{noise} = \tfrac14\log\tilde\sigma`.
    Called as ``classifier(x, t) -> logits (B, K)``."""

    def __init__(self, net: nn.Module, sde: SDE, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)

    def forward(self, x: Tensor, t) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        s, nu = self.sde.s(t), self.sde.noise_level(t)
        c_in = bcast((nu**2 + self.sigma_data**2).rsqrt() / s, x)
        return self.net(c_in * x, 0.25 * nu.log())


class ClassifierGuidance(GuidedDenoiser):
    r"""Score :math:`\nabla\log p_t(x) + w\,\nabla_x\log p(y\mid x, t)` for the labels passed
    as ``cond[label_key]`` (removed before the base model is called).

    Args:
        model: the (usually unconditional) Denoiser.
        classifier: ``classifier(x, t) -> logits (B, K)`` (e.g. a :class:`NoisyClassifier`, or
            the exact log-likelihoods of a Gaussian mixture's classes).
        scale: w (float or per-sample tensor (B,)); 1 targets p(x | y) exactly.
        label_key: the cond entry holding integer labels (B,).
    """

    def __init__(self, model: Denoiser, classifier: Callable[[Tensor, Tensor], Tensor],
                 scale=1.0, label_key: str = "class_labels"):
        super().__init__(model)
        if not callable(classifier):
            raise TypeError("classifier must be callable as classifier(x, t) -> logits")
        self.classifier, self.scale, self.label_key = classifier, scale, label_key
        self.classifier_evals = 0

    def grad_log_prob(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """∇_x log p(y | x, t) by autograd through the classifier."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"classifier must return logits (B, K), got {tuple(logits.shape)}")
            y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
            if ((y < 0) | (y >= logits.shape[1])).any():
                raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
            self.classifier_evals += 1
            lp = F.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
            return torch.autograd.grad(lp, xg)[0].detach()

    def predict(self, x: Tensor, t, **cond) -> Prediction:
        if self.label_key not in cond:
            raise ValueError(f"classifier guidance needs the target labels as cond[{self.label_key!r}]")
        y = cond.pop(self.label_key)
        t = self._time(x, t)
        self.nfe += 1
        p = self.base.predict(x, t, **cond)
        if not torch.is_tensor(self.scale) and float(self.scale) == 0:
            return p
        w = bcast(self.scale, x) if torch.is_tensor(self.scale) else float(self.scale)
        return shift_score(p, x, t, self.sde, w * self.grad_log_prob(x, t, y))


# --- training -----------------------------------------------------------------------------------

def sample_noise_levels(sde: SDE, n: int, generator=None, dtype=torch.float32) -> Tensor:
    """Times whose noise level σ̃ is log-uniform on [σ̃(t_min), σ̃(T)]: a classifier must be
    right along the whole trajectory, not only where the denoiser's loss weighting looks."""
    lo, hi = (sde.noise_level(torch.tensor(v, dtype=torch.float64)).log() for v in (sde.t_min, sde.T))
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return sde.t_from_noise_level((lo + (hi - lo) * u).exp()).to(dtype)


@dataclass
class ClassifierConfig:
    """A noise-conditional classifier run; saved as JSON beside each checkpoint."""

    data: str = "digits"
    data_kwargs: dict = field(default_factory=dict)
    sde: str = "edm"
    sde_kwargs: dict = field(default_factory=dict)
    sigma_data: float = 0.5
    model: str = "encoder"
    model_kwargs: dict = field(default_factory=dict)
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    ckpt_every: int = 1000
    keep: int = 2
    log_every: int = 50
    kind: str = "classifier"
    shape: list | None = None
    num_classes: int = 0

    def validate(self) -> "ClassifierConfig":
        checks = [(self.data in list_data(), f"data {self.data!r} not in {list_data()}"),
                  (self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
                  (self.model in list_classifiers(), f"model {self.model!r} not in {list_classifiers()}"),
                  ((self.model == "mlp") == (self.data in list_toy()),
                   "use model 'mlp' for toy data and 'encoder' for images"),
                  (self.steps > 0 and self.batch_size > 0 and self.lr > 0, "steps, batch_size and lr must be positive"),
                  (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1)"),
                  (self.kind == "classifier", "kind must be 'classifier'")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError("invalid classifier config: " + "; ".join(bad))
        return self

    def resolved(self, data) -> "ClassifierConfig":
        cfg = copy.deepcopy(self)
        if not data.num_classes or getattr(data, "y", None) is None:
            raise ValueError(f"data {cfg.data!r} has no labels to train a classifier on")
        cfg.shape, cfg.num_classes = list(data.shape), int(data.num_classes)
        kw = cfg.model_kwargs
        kw.setdefault("num_classes", cfg.num_classes)
        if cfg.model == "mlp":
            kw.setdefault("dim", math.prod(cfg.shape))
        else:
            kw.setdefault("in_channels", cfg.shape[0])
            kw.setdefault("resolution", cfg.shape[-1])
        return cfg


def _build(cfg: ClassifierConfig) -> NoisyClassifier:
    clf = NoisyClassifier(build_classifier(cfg.model, **cfg.model_kwargs),
                          get_sde(cfg.sde, **cfg.sde_kwargs), cfg.sigma_data)
    clf.num_classes = cfg.num_classes
    return clf


def train_classifier(cfg: ClassifierConfig, run_dir, *, resume: bool = False,
                     progress: bool = True, device=None) -> NoisyClassifier:
    """Cross-entropy on x_t = s x0 + σ ε at log-uniform noise levels; AdamW with warm-up, EMA,
    atomic checkpoints (resumable: one CPU generator draws every batch). Returns the EMA model."""
    cfg.validate()
    data = get_data(cfg.data, **cfg.data_kwargs)
    run_dir = Path(run_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ck = read_checkpoint(run_dir) if resume and (run_dir / "latest").is_file() else None
    if ck is not None:
        saved = ClassifierConfig(**ck["config"])
        if dataclasses.replace(saved, steps=cfg.steps) != dataclasses.replace(cfg.resolved(data), steps=cfg.steps):
            raise ValueError("the config differs from the checkpoint's; resume with the same settings")
    cfg = cfg.resolved(data)
    torch.manual_seed(cfg.seed)
    model = _build(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["state"]["optimizer"])
        g.set_state(ck["state"]["generator"])
        step = int(ck["state"]["step"])
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc="training classifier", unit="step")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "loss.csv"
    kept = []  # on resume, drop what a killed run logged after its checkpoint
    if step and path.exists():
        kept = [r for r in path.read_text().splitlines()[1:] if r and int(r.split(",")[0]) <= step]
    log = open(path, "w")
    log.write("\n".join(["step,loss,accuracy", *kept]) + "\n")
    sde = model.sde
    try:
        while step < cfg.steps:
            x0, y = data.draw(cfg.batch_size, g)
            t = sample_noise_levels(sde, cfg.batch_size, g)
            eps = torch.randn(x0.shape, generator=g)
            x0, y, t, eps = (v.to(device) for v in (x0, y, t, eps))
            xt = bcast(sde.s(t), x0) * x0 + bcast(sde.sigma(t), x0) * eps
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            model.train()
            logits = model(xt, t)
            loss = F.cross_entropy(logits, y.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - cfg.ema_decay)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                acc = (logits.argmax(1) == y).float().mean().item()
                log.write(f"{step},{loss.item():.6g},{acc:.4f}\n")
                log.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
            if bar is not None:
                bar.update(1)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_checkpoint(run_dir, step, dataclasses.asdict(cfg), model.state_dict(),
                                ema.state_dict(), dict(step=step, optimizer=opt.state_dict(),
                                                       generator=g.get_state()), keep=cfg.keep)
    finally:
        log.close()
        if bar is not None:
            bar.close()
    return ema.eval()


def load_classifier(path, device=None) -> NoisyClassifier:
    """The EMA classifier of a run directory or checkpoint folder."""
    ck = read_checkpoint(path, with_state=False)
    if ck["config"].get("kind") != "classifier":
        raise ValueError(f"{path} is not a classifier checkpoint (train one with "
                         "`sdeflow train-classifier`)")
    model = _build(ClassifierConfig(**ck["config"]).validate())
    model.load_state_dict(ck["ema"])
    return model.eval().requires_grad_(False).to(device or "cpu")


@torch.no_grad()
def classifier_accuracy(classifier: NoisyClassifier, x0: Tensor, y: Tensor,
                        noise_levels=(0.0, 0.1, 0.5, 1.0, 2.0, 5.0), seed: int = 0) -> dict:
    """Accuracy on clean data noised to each EDM noise level σ̃ (0 = the smallest level)."""
    sde = classifier.sde
    g = torch.Generator().manual_seed(seed)
    out = {}
    for nu in noise_levels:
        lo = sde.noise_level(torch.tensor(sde.t_min, dtype=torch.float64))
        t = sde.t_from_noise_level(torch.tensor(max(float(nu), float(lo)), dtype=torch.float64))
        t = t.to(x0.dtype).expand(x0.shape[0])
        xt = bcast(sde.s(t), x0) * x0 + bcast(sde.sigma(t), x0) * torch.randn(x0.shape, generator=g).to(x0)
        out[f"{float(nu):g}"] = (classifier(xt, t).argmax(1).cpu() == y.cpu()).float().mean().item()
    return out

r"""The offline digits metric: a small CNN trained on the embedded 8×8 digits' *train* split
stands in for Inception. For generated digits x̂ it reports

* **FDD**, the Fréchet distance between its penultimate features of the samples and of the
  held-out *test* split, beside the **noise floor** FD(train, test) — what a model that
  reproduced the training images exactly would score at the same sample sizes;
* **confidence**: the mean max-softmax probability (recognisable digits score near the data's);
* **class_kl**: KL(predicted class histogram ‖ uniform) in nats (mode dropping shows up here);
* ``accuracy`` against requested labels, for class-conditional samples.

The weights ship with the package (``digits_classifier.safetensors``, trained by
:func:`train_digits_classifier` with seed 0; held-out accuracy is checked by the tests).
Images of another resolution are area-resampled to 8×8 first.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..progress import progress_bar
from .frechet import frechet_distance

__all__ = ["DigitsClassifier", "train_digits_classifier", "load_digits_classifier",
           "digits_features", "digits_metrics", "WEIGHTS"]

WEIGHTS = Path(__file__).with_name("digits_classifier.safetensors")


class DigitsClassifier(nn.Module):
    """(B, 1, 8, 8) in [−1, 1] → 10 logits; ``features`` gives the 128-d penultimate layer."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.GroupNorm(4, w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, 10)

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected grey images (B, 1, H, W), got {tuple(x.shape)}")
        if x.shape[-2:] != (8, 8):
            x = F.interpolate(x, size=(8, 8), mode="area")
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Random translations by up to one pixel (background −1 fills in)."""
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2,), generator=g).tolist()
    return pad[..., dy:dy + 8, dx:dx + 8]


def train_digits_classifier(epochs: int = 60, seed: int = 0, progress: bool = False) -> DigitsClassifier:
    """Train the classifier on the train split (Adam, cosine learning rate, ±1-pixel shifts)."""
    from ..data import digits
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = digits("train")
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    steps = epochs * math.ceil(len(data) / 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in progress_bar(range(epochs), desc="digits classifier", unit="epoch", disable=not progress):
        perm = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(_shift(data.x[idx], g)), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval().requires_grad_(False)


@lru_cache(maxsize=1)
def load_digits_classifier() -> DigitsClassifier:
    """The shipped classifier (loaded with safetensors; nothing is executed)."""
    from safetensors.torch import load_file
    if not WEIGHTS.is_file():
        raise FileNotFoundError(f"{WEIGHTS} is missing; run python -m sdeflow.metrics.digits")
    net = DigitsClassifier()
    net.load_state_dict(load_file(str(WEIGHTS)))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def digits_features(x: Tensor, batch: int = 1024) -> tuple[Tensor, Tensor]:
    """(features (N, 128), probabilities (N, 10)) of images in [−1, 1], float32 on the CPU."""
    net = load_digits_classifier()
    x = x.detach().to("cpu", torch.float32).clamp(-1, 1)
    feats = torch.cat([net.features(x[i:i + batch]) for i in range(0, len(x), batch)])
    return feats, net.head(feats).softmax(1)


@lru_cache(maxsize=1)
def _reference():
    from ..data import digits
    f_train, p_train = digits_features(digits("train").x)
    f_test, p_test = digits_features(digits("test").x)
    return f_train, f_test, p_test


def digits_metrics(x: Tensor, labels: Tensor | None = None) -> dict:
    """FDD of samples ``x`` against the test split, with the train-vs-test noise floor and the
    data's confidence beside it (see the module docstring). Use n ≈ 1437 samples (the train
    split's size) for a floor at the same sample size."""
    f_train, f_test, p_test = _reference()
    feats, probs = digits_features(x)
    hist = probs.argmax(1).bincount(minlength=10).double() / len(x)
    kl = (hist * (hist.clamp_min(1e-12) * 10).log()).sum().item()
    out = dict(n=len(x), fdd=frechet_distance(feats, f_test),
               fdd_floor_train_vs_test=frechet_distance(f_train, f_test),
               confidence=probs.max(1).values.mean().item(),
               confidence_data=p_test.max(1).values.mean().item(), class_kl=kl)
    if labels is not None:
        out["accuracy"] = (probs.argmax(1) == labels.cpu()).double().mean().item()
    return out


if __name__ == "__main__":  # regenerate the shipped weights
    from safetensors.torch import save_file

    from ..data import digits
    net = train_digits_classifier(progress=True)
    test = digits("test")
    acc = (net(test.x).argmax(1) == test.y).double().mean().item()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(WEIGHTS))
    print(f"held-out accuracy {acc:.4f}; wrote {WEIGHTS}")

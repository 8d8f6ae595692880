r"""Classifier guidance (Song et al. 2021, sec. 5; Dhariwal & Nichol 2021).

A noise-conditional classifier :math:`p_\phi(y\mid x_t, t)`, trained by cross-entropy on
forward-noised data :math:`x_t = s\,x_0 + \sigma\varepsilon` at noise levels spread over the whole
trajectory, turns an unconditional score model into a conditional one:

.. math:: \nabla\log p_t(x\mid y) \approx \nabla\log p_t(x) + w\,\nabla_x\log p_\phi(y\mid x, t),

exact for w = 1 and the true classifier. :class:`ClassifierGuidance` adds the second term to
every prediction of a Denoiser, so all samplers (SDE, PC, ODE, exponential integrators) use it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..denoiser import Denoiser, Prediction, edm_scalings
from ..sde import SDE, bcast
from .base import GuidedDenoiser, shift_score

__all__ = ["NoisyClassifier", "ClassifierGuidance", "sample_noise_levels", "classifier_accuracy"]


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
        c_in, _, _, c_noise = edm_scalings(self.sde, t, self.sigma_data, x)
        return self.net(c_in / bcast(self.sde.s(t), x) * x, c_noise)


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


def sample_noise_levels(sde: SDE, n: int, generator=None, dtype=torch.float32) -> Tensor:
    """Times whose noise level σ̃ is log-uniform on [σ̃(t_min), σ̃(T)]: a classifier must be
    right along the whole trajectory, not only where the denoiser's loss weighting looks."""
    lo, hi = (sde.noise_level(torch.tensor(v, dtype=torch.float64)).log() for v in (sde.t_min, sde.T))
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return sde.t_from_noise_level((lo + (hi - lo) * u).exp()).to(dtype)


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
        xt = sde.marginal(x0, t, torch.randn(x0.shape, generator=g).to(x0))
        out[f"{float(nu):g}"] = (classifier(xt, t).argmax(1).cpu() == y.cpu()).float().mean().item()
    return out

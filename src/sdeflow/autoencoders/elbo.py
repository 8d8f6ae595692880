r"""The evidence lower bound of a variational autoencoder and its importance-weighted sharpening,
as pure functions of tensors (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; Burda
et al. 2016, "Importance Weighted Autoencoders"; lecture notes ch. 2).

With the encoder's q(z|x) = N(μ(x), diag σ²(x)), the prior p(z) = N(0, I) and a decoder p(x|z),

.. math:: \log p(x) \ge \mathrm{ELBO}(x) = \mathbb E_{q(z|x)}[\log p(x|z)]
          - \mathrm{KL}(q(z|x)\,\|\,p(z)),\qquad
          \mathrm{KL} = \tfrac12\sum_j(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)\ \text{(eq. 2.6)},

estimated with the reparameterisation z = μ + σ ε, ε ~ N(0, I), so that its gradient flows into
μ and log σ². The IWAE bound with K samples,

.. math:: \mathcal L_K(x) = \log\frac1K\sum_{k=1}^K \frac{p(x|z_k)\,p(z_k)}{q(z_k|x)},
          \qquad z_k \sim q(z|x),

is the ELBO at K = 1, grows with K and tends to log p(x).

The functions taking an autoencoder use two of its methods: ``posterior(x) -> (μ, log σ²)`` and
``decoder_log_prob(x, z) -> log p(x|z)`` per example. Every log-density is summed over all but
the batch dimension and returned per example, in nats, in the input's dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["gaussian_kl", "reparameterize", "draw_noise", "diagonal_gaussian_log_prob",
           "standard_normal_log_prob", "gaussian_log_prob", "laplace_log_prob",
           "bernoulli_log_prob", "discretized_gaussian_log_prob", "elbo_estimate", "elbo",
           "log_importance_weights", "iwae", "bits_per_dim"]

_LOG_2PI = math.log(2 * math.pi)


def _per_example(v: Tensor) -> Tensor:
    return v.flatten(1).sum(1)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    r"""KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) per example (eq. 2.6)."""
    logvar = logvar.expand_as(mu)
    return 0.5 * _per_example(mu.square() + logvar.exp() - 1 - logvar)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = μ + σ ε with σ = exp(½ log σ²)."""
    return mu + (0.5 * logvar).exp() * eps


def draw_noise(shape, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """ε ~ N(0, I) of ``shape`` in ``like``'s dtype and device, drawn from ``generator`` (on
    its own device, then moved: a CPU generator drives a GPU run) or torch's global RNG."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def diagonal_gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; μ, diag σ²) per example."""
    return -0.5 * _per_example(_LOG_2PI + logvar + (z - mu).square() * (-logvar).exp())


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) per example."""
    return -0.5 * _per_example(_LOG_2PI + z.square())


def gaussian_log_prob(x: Tensor, mean: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(x; mean, σ² I) per example (σ a scalar or broadcastable)."""
    scaled = (x - mean) * (-log_sigma).exp()
    return -0.5 * _per_example(_LOG_2PI + 2 * log_sigma + scaled.square())


def laplace_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log Laplace(x; mean, b) = −|x − mean|/b − log 2b per example: the likelihood behind an
    L1 reconstruction loss (LDM's, with a learned scale)."""
    return -_per_example((x - mean).abs() * (-log_scale).exp() + log_scale + math.log(2))


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """Σ t log p + (1 − t) log(1 − p), p = sigmoid(logits), for data x in [−1, 1] mapped to
    t = (x + 1)/2 ∈ [0, 1] (grey levels between 0 and 1 give the usual cross-entropy)."""
    target = ((x + 1) / 2).clamp(0, 1)
    return -_per_example(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_sigma: Tensor,
                                  bits: int = 8) -> Tensor:
    r"""log P(x) of a Gaussian N(mean, σ²) integrated over the bin of each of the 2^bits levels
    of [−1, 1] (Ho et al. 2020, eq. 13): with half-width δ = 1/(2^bits − 1),

    .. math:: P(x) = \Phi\big(\tfrac{x + δ - m}{σ}\big) - \Phi\big(\tfrac{x - δ - m}{σ}\big),

    the outer bins reaching to ∓∞. ``x`` is snapped to the nearest level first. A proper
    probability: −log P / (D log 2) is a true bits/dim."""
    k = 2 ** bits - 1
    x = torch.round((x.clamp(-1, 1) + 1) / 2 * k) * 2 / k - 1
    inv, delta = (-log_sigma).exp(), 1.0 / k
    upper, lower = (x + delta - mean) * inv, (x - delta - mean) * inv
    log_p = torch.where(x < -1 + delta / 2, torch.special.log_ndtr(upper),
                        torch.where(x > 1 - delta / 2, torch.special.log_ndtr(-lower),
                                    _log_ndtr_difference(upper, lower)))
    return _per_example(log_p)


def _log_ndtr_difference(hi: Tensor, lo: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) for hi > lo, in the tail where it is accurate: Φ(hi) − Φ(lo) =
    Φ(−lo) − Φ(−hi) when both lie right of 0."""
    right = lo > 0
    a, b = torch.where(right, -lo, hi), torch.where(right, -hi, lo)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return log_a + torch.log(-torch.expm1((log_b - log_a).clamp(max=-1e-12)))


def elbo_estimate(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor,
                  decoder_log_prob: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    r"""(1/S) Σ_s log p(x | μ + σ ε_s) − KL(q ‖ p) per example, for noise ``eps`` of shape
    (S, *μ.shape); the KL in closed form (eq. 2.6). Differentiable in μ and log σ²."""
    s = eps.shape[0]
    z = reparameterize(mu, logvar, eps).flatten(0, 1)
    xs = x.unsqueeze(0).expand(s, *x.shape).flatten(0, 1)
    recon = decoder_log_prob(xs, z).view(s, -1).mean(0)
    return recon - gaussian_kl(mu, logvar)


def elbo(ae, x: Tensor, samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """ELBO(x) per example (nats) with ``samples`` reparameterised draws of z."""
    mu, logvar = ae.posterior(x)
    eps = draw_noise((samples, *mu.shape), mu, generator)
    return elbo_estimate(x, mu, logvar.expand_as(mu), eps, ae.decoder_log_prob)


def log_importance_weights(ae, x: Tensor, k: int,
                           generator: torch.Generator | None = None) -> Tensor:
    r"""log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x), z_k ~ q(z|x): shape (K, B)."""
    mu, logvar = ae.posterior(x)
    logvar = logvar.expand_as(mu)
    z = reparameterize(mu, logvar, draw_noise((k, *mu.shape), mu, generator))
    zs = z.flatten(0, 1)
    xs = x.unsqueeze(0).expand(k, *x.shape).flatten(0, 1)
    mus, logvars = (v.unsqueeze(0).expand(k, *v.shape).flatten(0, 1) for v in (mu, logvar))
    log_w = (ae.decoder_log_prob(xs, zs) + standard_normal_log_prob(zs)
             - diagonal_gaussian_log_prob(zs, mus, logvars))
    return log_w.view(k, -1)


def iwae(ae, x: Tensor, k: int, generator: torch.Generator | None = None,
         chunk: int = 256) -> Tensor:
    r"""The IWAE bound log (1/K) Σ_k w_k per example (nats), via logsumexp; the K samples are
    drawn ``chunk`` at a time to bound memory."""
    if k < 1:
        raise ValueError(f"iwae needs k ≥ 1 samples, got {k}")
    parts = [log_importance_weights(ae, x, min(chunk, k - i), generator)
             for i in range(0, k, chunk)]
    return torch.logsumexp(torch.cat(parts), 0) - math.log(k)


def bits_per_dim(log_likelihood: Tensor, dims: int) -> Tensor:
    """−log p(x) / (D log 2): bits per dimension of a log-likelihood (or its bound) in nats.
    For a discretized decoder this is the usual bits/dim; for a continuous (Gaussian, Laplace)
    decoder it is a density's and can be negative — compare it only with other densities; a
    Bernoulli decoder on grey levels (not binary data) is no normalised likelihood at all, so
    its ELBO and IWAE are scores, not bounds."""
    return -log_likelihood / (dims * math.log(2))

r"""The DDPM variational bound (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", eq. 5)
on the discrete chain of a VP SDE, and the learned reverse variance with its hybrid loss
(Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", §3.1).

**The chain.** N steps (DDPM's T) at :math:`t_i = iT/N`, i = 0…N (T the SDE's end time), with

.. math:: \bar\alpha_i = s(t_i)^2 = e^{-B(t_i)},\qquad
          \beta_i = 1 - \bar\alpha_i/\bar\alpha_{i-1} = 1 - e^{-(B(t_i) - B(t_{i-1}))},

so :math:`x_i = \sqrt{1-\beta_i}\,x_{i-1} + \sqrt{\beta_i}\,z` has exactly the SDE's marginals
N(s(t_i)x_0, σ(t_i)²I) at every t_i. For the default linear VP (β_min = 0.1, β_max = 20) and
N = 1000, β_i = 1 − exp(−∫β dt over step i) runs from 1.10·10⁻⁴ to 0.0198 against DDPM's linear
10⁻⁴ … 0.02 (10 % apart at i = 1, within 1.05 % from i = 100 on; ᾱ_N = 4.3·10⁻⁵ against
4.0·10⁻⁵). The network is evaluated at t_1 … t_N only.

**The bound.** :math:`-\log p_\theta(x_0) \le L = L_N + \sum_{i=2}^N L_{i-1} + L_0` with

.. math::
    L_N = \mathrm{KL}\big(q(x_N\mid x_0)\,\|\,\mathcal N(0, I)\big),\quad
    L_{i-1} = E_q\,\mathrm{KL}\big(q(x_{i-1}\mid x_i, x_0)\,\|\,p_\theta(x_{i-1}\mid x_i)\big),\quad
    L_0 = E_q\big[-\log p_\theta(x_0\mid x_1)\big].

The posterior is
:math:`q(x_{i-1}\mid x_i, x_0) = \mathcal N(\tilde\mu_i(x_i, x_0), \tilde\beta_i I)`,

.. math:: \tilde\mu_i(x_i, x_0) = \frac{s_{i-1}\beta_i}{\sigma_i^2}x_0
          + \frac{\sqrt{\alpha_i}\,\sigma_{i-1}^2}{\sigma_i^2}x_i,\qquad
          \tilde\beta_i = \frac{\sigma_{i-1}^2}{\sigma_i^2}\beta_i,

(s_i = s(t_i), σ_i = σ(t_i), α_i = 1 − β_i), and the model is
:math:`p_\theta(x_{i-1}\mid x_i) = \mathcal N(\tilde\mu_i(x_i, \hat x_0), \Sigma_i)` with x̂₀ the
Denoiser's at (x_i, t_i) — for an ε-network DDPM's μ_θ = (x_i − β_i ε̂/σ_i)/√α_i. The reverse
variance Σ_i is ``"beta"`` (β_i), ``"beta_tilde"`` (β̃_i) or ``"learned"``,
:math:`\exp(v\log\beta_i + (1-v)\log\tilde\beta_i)` with v from the network
(:func:`~sdeflow.denoiser.learned_log_variance`). As β̃_1 = 0, β̃_2 stands in for it at i = 1
(Improved DDPM's clipping), and ``"beta"`` also takes β̃_2 rather than β_1 there, as Ho et
al.'s ``fixedlarge`` and improved-diffusion's ``FIXED_LARGE`` do "to get a better decoder log
likelihood" (Ho et al.'s code); the learned variance keeps β_1 as its upper end there, as
Improved DDPM's does. The decoder
:math:`p_\theta(x_0\mid x_1) = \mathcal N(\hat x_0(x_1), \Sigma_1)` is DDPM's ``"discrete"``
one — the Gaussian's mass on x₀'s bin for data on the grid of ``num_bins`` levels spanning
``data_range`` (8-bit images in [−1, 1]: bins of width 2/255, the outer two reaching to ±∞), so
L bounds −log P(x₀) of the discrete data — or the ``"gaussian"`` density for continuous data.
Terms are in nats; bits/dim divide by D ln 2.

**Estimates.** L_N is closed-form and L_0 one network evaluation; the sum over i = 2…N is exact
with ``full=True`` (N − 1 evaluations) or estimated without bias as (N − 1)/K times the sum of
K terms at steps drawn uniformly from {2, …, N}, each at its own draw of x_i.

**Learned variance.** :func:`hybrid_loss` is L_hybrid = L_simple + λ L_vlb (λ = 0.001, Improved
DDPM eq. 16): one step i ~ U{1, …, N} per sample, L_simple the score-matching loss at t_i, and
L_vlb = N·L_{i−1} in bits/dim with the mean held fixed (x̂₀ detached), so L_vlb trains only v.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser, check_batch, learned_log_variance
from .losses import weighted_x0_error
from .progress import progress_bar
from .rng import make_generator
from .sde import SDE, VPSDE, bcast

__all__ = ["DDPMChain", "ddpm_chain", "check_vp", "BoundOptions", "VLB", "ddpm_bound",
           "step_terms", "prior_kl", "hybrid_loss", "normal_kl", "discretized_gaussian_nll",
           "gaussian_nll", "VARIANCES", "DECODERS"]

VARIANCES = ("beta", "beta_tilde", "learned")
DECODERS = ("discrete", "gaussian")


def check_vp(sde: SDE, what: str = "the DDPM bound") -> None:
    """Raise a one-line ValueError unless ``sde`` is the VP SDE (DDPM's chain)."""
    if not (isinstance(sde, VPSDE) and sde.name == "vp"):
        name = getattr(sde, "name", type(sde).__name__)
        raise ValueError(f"{what} needs a model on the VP SDE (DDPM's discrete chain), not on "
                         f"{name!r}: use the PF-ODE likelihood instead (sdeflow.log_likelihood, "
                         "`sdeflow likelihood --bound ode`)")


@dataclass(frozen=True)
class DDPMChain:
    """The N-step chain of a VP SDE. Each tensor has N + 1 entries, index i for step i
    (i = 0 is the data, where β and β̃ are 0 and unused)."""

    t: Tensor
    s: Tensor
    sigma2: Tensor
    beta: Tensor
    beta_tilde: Tensor

    @property
    def steps(self) -> int:
        return self.t.shape[0] - 1

    def marginal(self, x0: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """x_i = s_i x_0 + σ_i ε."""
        return bcast(self.s[i], x0) * x0 + bcast(self.sigma2[i].sqrt(), x0) * eps

    def posterior_mean(self, x0: Tensor, xt: Tensor, i: Tensor) -> Tensor:
        """μ̃_i(x_i, x_0), the mean of q(x_{i−1} | x_i, x_0)."""
        c0 = self.s[i - 1] * self.beta[i] / self.sigma2[i]
        ct = self.s[i] / self.s[i - 1] * self.sigma2[i - 1] / self.sigma2[i]
        return bcast(c0, x0) * x0 + bcast(ct, xt) * xt

    def to(self, dtype=None, device=None) -> "DDPMChain":
        return DDPMChain(*(getattr(self, f).to(dtype=dtype, device=device)
                           for f in ("t", "s", "sigma2", "beta", "beta_tilde")))

    def log_variances(self, i: Tensor) -> tuple[Tensor, Tensor]:
        """(log β_i, log β̃_i) at steps i ≥ 1, with β̃_2 in place of β̃_1 = 0."""
        bt = torch.where(i == 1, self.beta_tilde[2], self.beta_tilde[i])
        return self.beta[i].log(), bt.log()


def ddpm_chain(sde: SDE, steps: int = 1000, *, dtype=torch.float64, device=None) -> DDPMChain:
    """The ``steps``-step chain of a VP SDE at t_i = i·T/steps (see the module docstring),
    computed in float64 and returned in ``dtype``."""
    check_vp(sde)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps (DDPM's T) must be an integer ≥ 2, got {steps!r}")
    t = torch.arange(steps + 1, dtype=torch.float64) * (sde.T / steps)
    B = sde.B(t)
    zero = torch.zeros(1, dtype=torch.float64)
    beta = torch.cat([zero, -torch.expm1(-(B[1:] - B[:-1]))])
    sigma2 = -torch.expm1(-B)
    beta_tilde = torch.cat([zero, sigma2[:-1] * beta[1:] / sigma2[1:]])
    return DDPMChain(t, torch.exp(-0.5 * B), sigma2, beta, beta_tilde).to(dtype, device)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def gaussian_nll(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """−log N(x; mean, e^logvar), elementwise."""
    return 0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def _log_mass(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) for finite lo < hi, accurate in both tails: an interval right of 0 is
    mirrored to the left, where log Φ keeps its precision."""
    flip = lo > 0
    lo, hi = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_hi = torch.special.log_ndtr(hi)
    # the floor keeps log finite (and its gradient) where float rounding empties the bin
    mass = (-torch.expm1(torch.special.log_ndtr(lo) - log_hi)).clamp_min(torch.finfo(lo.dtype).tiny)
    return log_hi + mass.log()


def discretized_gaussian_nll(x: Tensor, mean: Tensor, logvar: Tensor, num_bins: int = 256,
                             data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """−log of the mass of N(mean, e^logvar) on x's bin, elementwise (Ho et al. 2020, eq. 13):
    the levels a = x⁽⁰⁾ < … < x⁽ⁿ⁻¹⁾ = b of ``data_range`` have bins of half-width
    h = (b − a)/(2(n − 1)), the first reaching down to −∞ and the last up to +∞."""
    a, b = data_range
    h = (b - a) / (2 * (num_bins - 1))
    inv_std = torch.exp(-0.5 * logvar)
    lo, hi = (x - mean - h) * inv_std, (x - mean + h) * inv_std
    inner = _log_mass(lo, hi)
    log_p = torch.where(x < a + h, torch.special.log_ndtr(hi),
                        torch.where(x > b - h, torch.special.log_ndtr(-lo), inner))
    return -log_p


@dataclass(frozen=True)
class BoundOptions:
    """How the bound completes p_θ: its reverse variance and its decoder (module docstring)."""

    variance: str = "beta"
    decoder: str = "discrete"
    num_bins: int = 256
    data_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self):
        if self.variance not in VARIANCES:
            raise ValueError(f"unknown variance {self.variance!r}; choices: {list(VARIANCES)}")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choices: {list(DECODERS)}")
        if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int) \
                or self.num_bins < 2:
            raise ValueError(f"num_bins must be an integer ≥ 2, got {self.num_bins!r}")
        if not self.data_range[1] > self.data_range[0]:
            raise ValueError(f"data_range must be (low, high) with high > low, "
                             f"got {self.data_range}")

    def decoder_nll(self, x0: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
        if self.decoder == "gaussian":
            return gaussian_nll(x0, mean, logvar)
        return discretized_gaussian_nll(x0, mean, logvar, self.num_bins, self.data_range)


def step_terms(chain: DDPMChain, x0: Tensor, xt: Tensor, i: Tensor, x0_hat: Tensor,
               v: Tensor | None, opts: BoundOptions) -> Tensor:
    """Per sample, in nats: L_{i−1} = KL(q(x_{i−1}|x_i, x_0) ‖ p_θ(x_{i−1}|x_i)) where i ≥ 2 and
    the decoder's L_0 = −log p_θ(x_0|x_1) where i = 1, at the given x_i of steps i (B,), with the
    model's x̂0 at (x_i, t_i) and, for ``variance="learned"``, its v."""
    log_beta, log_bt = chain.log_variances(i)
    if opts.variance == "learned":
        logvar = learned_log_variance(v, log_beta, log_bt)
    else:  # "beta" at i = 1: β̃_2 (fixedlarge; module docstring)
        fixed = torch.where(i == 1, log_bt, log_beta) if opts.variance == "beta" else log_bt
        logvar = bcast(fixed, x0).expand_as(x0)
    mean_p = chain.posterior_mean(x0_hat, xt, i)
    # at i = 1 the KL (with β̃_2 for β̃_1) is computed but not used: the decoder replaces it
    kl = normal_kl(chain.posterior_mean(x0, xt, i), bcast(log_bt, x0), mean_p, logvar)
    first = (i == 1).reshape(-1, *[1] * (x0.ndim - 1))
    per = torch.where(first, opts.decoder_nll(x0, mean_p, logvar), kl)
    return per.reshape(x0.shape[0], -1).sum(1)


def prior_kl(chain: DDPMChain, x0: Tensor) -> Tensor:
    """L_N = KL(N(s_N x_0, σ_N² I) ‖ N(0, I)) per sample, in nats."""
    n = chain.steps
    kl = normal_kl(chain.s[n] * x0, chain.sigma2[n].log(), torch.zeros_like(x0),
                   torch.zeros_like(x0))
    return kl.reshape(x0.shape[0], -1).sum(1)


@dataclass
class VLB:
    """Result of :func:`ddpm_bound`, per sample in nats: ``prior`` L_N, ``diffusion``
    Σ_{i=2}^N L_{i−1} (exact or estimated), ``decoder`` L_0; ``steps`` (B, K) the steps
    evaluated for the sum and ``kl`` (B, K) their L_{i−1}."""

    prior: Tensor
    diffusion: Tensor
    decoder: Tensor
    steps: Tensor
    kl: Tensor
    dims: int
    n_steps: int
    exact: bool
    options: BoundOptions
    nfe: int
    seconds: float

    @property
    def nats(self) -> Tensor:
        """L per sample: an upper bound on −log p_θ(x_0) (in expectation over the draws)."""
        return self.prior + self.diffusion + self.decoder

    @property
    def bpd(self) -> Tensor:
        return self.nats / (self.dims * math.log(2))

    @property
    def mean(self) -> float:
        return self.bpd.mean().item()

    def breakdown(self) -> dict[str, float]:
        """Mean bits/dim of each term."""
        to_bpd = self.dims * math.log(2)
        return {"L_T": self.prior.mean().item() / to_bpd,
                "sum_L_t-1": self.diffusion.mean().item() / to_bpd,
                "L_0": self.decoder.mean().item() / to_bpd}

    def report(self) -> str:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in self.breakdown().items())
        how = "exact sum" if self.exact else f"{self.kl.shape[1]} sampled step(s) per sample"
        return (f"{self.mean:.4f} bits/dim DDPM bound over {self.bpd.numel()} samples "
                f"(T = {self.n_steps}, {how}; {parts}; variance {self.options.variance}, "
                f"{self.options.decoder} decoder; NFE {self.nfe})")


def _check_grid(x0: Tensor, opts: BoundOptions) -> None:
    a, b = opts.data_range
    level = (x0 - a) / (b - a) * (opts.num_bins - 1)
    if (level - level.round()).abs().max() > 1e-3 or level.min() < -1e-3 \
            or level.max() > opts.num_bins - 1 + 1e-3:
        raise ValueError(f"the discrete decoder needs x0 on the {opts.num_bins} levels spanning "
                         f"[{a:g}, {b:g}] (8-bit images: x/127.5 − 1); use decoder='gaussian' "
                         "for continuous data")


def _bound_noise(x0: Tensor, n: int, full: bool, t_draws: int, noise, generator):
    """(steps (B, K+1) with the decoder's step 1 first, ε of term k or None to draw it)."""
    B = x0.shape[0]
    if noise is not None:
        steps, eps = noise
        K = steps.shape[1] if steps.ndim == 2 else -1
        if steps.shape != (B, K) or eps.shape != (K + 1, *x0.shape) or \
                steps.min() < 2 or steps.max() > n:
            raise ValueError(f"noise must be (steps (B, K) in [2, {n}], eps (K+1, *x0.shape))")
        eps = eps.to(dtype=x0.dtype, device=x0.device)
    elif full:
        steps, eps = torch.arange(2, n + 1, device=x0.device).expand(B, n - 1), None
    else:
        if isinstance(t_draws, bool) or not isinstance(t_draws, int) or t_draws < 1:
            raise ValueError(f"t_draws must be a positive integer, got {t_draws!r}")
        steps = torch.randint(2, n + 1, (B, t_draws), generator=generator, device=x0.device)
        eps = None
    ones = torch.ones(B, 1, dtype=steps.dtype, device=steps.device)
    return torch.cat([ones, steps.to(x0.device)], 1), eps


def _terms(model: Denoiser, chain: DDPMChain, x0: Tensor, steps: Tensor,
           noise_at: Callable[[int], Tensor], opts: BoundOptions, cond: dict, bar) -> Tensor:
    """(B, K+1) terms, one network evaluation per column of ``steps``."""
    out = []
    for k in range(steps.shape[1]):
        i = steps[:, k]
        xt = chain.marginal(x0, i, noise_at(k))
        if opts.variance == "learned":
            pred, v = model.predict_variance(xt, chain.t[i], **cond)
        else:
            pred, v = model.predict(xt, chain.t[i], **cond), None
        out.append(step_terms(chain, x0, xt, i, pred.x0, v, opts))
        if bar is not None:
            bar.update(1)
    return torch.stack(out, 1)


def ddpm_bound(model: Denoiser, x0: Tensor, steps: int = 1000, *, variance: str | None = None,
               decoder: str = "discrete", num_bins: int = 256,
               data_range: tuple[float, float] = (-1.0, 1.0), full: bool = False,
               t_draws: int = 1, noise: tuple[Tensor, Tensor] | None = None,
               generator: torch.Generator | None = None, seed: int | None = None,
               cond: dict | None = None, progress: bool = False) -> VLB:
    """DDPM's negative ELBO of ``x0`` on the ``steps``-step chain of the model's VP SDE
    (module docstring), per sample with its terms; bits/dim in ``.bpd``.

    Args:
        steps: N, DDPM's T.
        variance: ``"beta"`` (β̃_2 for the decoder at i = 1, as DDPM's ``fixedlarge``),
            ``"beta_tilde"`` or ``"learned"`` (default: ``"learned"`` for a ``learn_sigma``
            model, else ``"beta"``).
        decoder: ``"discrete"`` (x0 on ``num_bins`` levels spanning ``data_range``) or
            ``"gaussian"`` (continuous data).
        full: sum all N − 1 KL terms exactly; else ``t_draws`` steps drawn per sample.
        noise: (steps (B, K) in [2, N], ε (K+1, *x0.shape)) to fix the randomness: ε[0] draws
            the decoder's x_1, ε[k+1] the x_i of steps[:, k].
    """
    if not isinstance(model, Denoiser):
        raise TypeError("model must be an sdeflow.Denoiser")
    check_batch(x0, "x0")
    chain = ddpm_chain(model.sde, steps, dtype=x0.dtype, device=x0.device)
    opts = BoundOptions(variance or ("learned" if model.learn_sigma else "beta"), decoder,
                        num_bins, tuple(float(r) for r in data_range))
    if opts.variance == "learned" and not model.learn_sigma:
        raise ValueError("variance='learned' needs a model trained with learn_sigma=True; "
                         "this one predicts the mean only: use 'beta' or 'beta_tilde'")
    if opts.decoder == "discrete":
        _check_grid(x0, opts)
    g = make_generator(seed, generator, x0.device)
    idx, eps = _bound_noise(x0, chain.steps, full, t_draws, noise, g)
    noise_at = (lambda k: eps[k]) if eps is not None else \
        (lambda k: torch.randn(x0.shape, generator=g, dtype=x0.dtype, device=x0.device))
    bar = progress_bar(total=idx.shape[1], desc="DDPM bound", leave=False, unit="step") \
        if progress else None
    nfe0, start = model.nfe, time.perf_counter()
    try:
        with torch.no_grad():
            terms = _terms(model, chain, x0, idx, noise_at, opts, cond or {}, bar)
    finally:
        if bar is not None:
            bar.close()
    kl = terms[:, 1:]
    return VLB(prior=prior_kl(chain, x0), diffusion=(chain.steps - 1) * kl.mean(1),
               decoder=terms[:, 0], steps=idx[:, 1:], kl=kl, dims=x0[0].numel(),
               n_steps=chain.steps, exact=full and noise is None, options=opts,
               nfe=model.nfe - nfe0, seconds=time.perf_counter() - start)


def hybrid_loss(model: Denoiser, x0: Tensor, noise: tuple[Tensor, Tensor], chain: DDPMChain, *,
                weighting: str = "eps", vlb_weight: float = 0.001, decoder: str = "gaussian",
                num_bins: int = 256, cond: dict | None = None) -> tuple[Tensor, Tensor]:
    """(L_simple + λ·L_vlb, the L_vlb estimate in bits/dim) of a ``learn_sigma`` model, from one
    network evaluation at the steps ``noise[0]`` (B,) in [1, N] with ε = ``noise[1]``: L_simple
    is :func:`~sdeflow.losses.dsm_loss`'s ``weighting`` at t_i and L_vlb = N·L_{i−1} (bits/dim,
    x̂0 detached so that it trains the variance only); the ``"discrete"`` decoder takes data on
    ``num_bins`` levels in [−1, 1]."""
    step, eps = noise
    xt = chain.marginal(x0, step, eps)
    t = chain.t[step].to(x0.dtype)
    pred, v = model.predict_variance(xt, t, **(cond or {}))
    simple = weighted_x0_error(model, weighting, t, pred.x0, x0)
    opts = BoundOptions("learned", decoder, num_bins)
    nats = step_terms(chain, x0, xt, step, pred.x0.detach().to(x0.dtype), v.to(x0.dtype), opts)
    vlb = chain.steps * nats.mean() / (x0[0].numel() * math.log(2))
    return simple + vlb_weight * vlb, vlb.detach()

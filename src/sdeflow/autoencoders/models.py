r"""Autoencoders for latent diffusion and for the ELBO: a plain convolutional autoencoder, a
convolutional VAE, LDM's KL-regularised autoencoder (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", §3 and app. G) and a linear-Gaussian VAE whose
likelihood and posterior are known in closed form (the ground truth of the tests).

Every model is an :class:`Autoencoder`: ``encode(x)`` is the deterministic latent a diffusion
model is trained on (the posterior mean μ(x) of a VAE), ``decode(z)`` the mean of p(x|z),
``latent_shape((C, H, W)) = (c, H/f, W/f)`` and ``loss(x)`` the training loss. The Gaussian ones
also give ``posterior(x) = (μ, log σ²)`` and ``decoder_log_prob(x, z) = log p(x|z)``, which is
all :mod:`.elbo` needs. LDM's autoencoder is the β-VAE of a learned-scale Laplace (L1) or
Gaussian (L2) decoder with the tiny β = ``kl_weight`` = 10⁻⁶:

.. math:: \mathcal L = \frac{|x - D(z)|}{e^{s}} + s + β\,\mathrm{KL}(q(z|x)\,\|\,N(0, I)),
          \qquad z = μ(x) + σ(x)\,ε.
"""
from __future__ import annotations

import importlib.util
import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..metrics.image import psnr
from ..models.args import (NONNEGATIVE_INT, POSITIVE_INT, POSITIVE_INT_LIST, POSITIVE_REAL,
                           Relation, Rule, checked_args, int_at_least, one_of)
from ..models.conditioning import norm_groups
from .elbo import (bernoulli_log_prob, discretized_gaussian_log_prob, draw_noise,
                   gaussian_kl, gaussian_log_prob, laplace_log_prob, reparameterize)

__all__ = ["Autoencoder", "ConvAutoencoder", "ConvVAE", "KLAutoencoder", "LinearVAE",
           "LIKELIHOODS", "FACTORS", "ResBlock", "conv_encoder", "conv_decoder"]

FACTORS = (1, 2, 4, 8)
LIKELIHOODS = ("gaussian", "laplace", "bernoulli", "discretized")
FACTOR = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v in FACTORS,
              f"one of {list(FACTORS)}")
NONNEGATIVE_REAL = Rule(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                        and v >= 0, "a number ≥ 0")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
OPTIONAL_MULT = Rule(lambda v: v is None or POSITIVE_INT_LIST.ok(v),
                     "None or a non-empty list of positive integers")
TRUNK_RULES = dict(in_channels=POSITIVE_INT, channels=POSITIVE_INT, channel_mult=OPTIONAL_MULT,
                   num_res_blocks=NONNEGATIVE_INT, latent_channels=POSITIVE_INT,
                   downsample=FACTOR)
LEVELS = Relation("channel_mult",
                  lambda a: a["channel_mult"] is None
                  or len(a["channel_mult"]) == int(math.log2(a["downsample"])) + 1,
                  lambda a: f"a list of log2(downsample) + 1 = "
                            f"{int(math.log2(a['downsample'])) + 1} widths (one per resolution)")


class Autoencoder(nn.Module):
    """What every autoencoder gives (see the module docstring)."""

    variational: ClassVar[bool] = False  # has a posterior q(z|x) (and so an ELBO)
    downsample: int = 1
    latent_channels: int = 1

    def latent_shape(self, shape) -> tuple:
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError(f"{type(self).__name__} is a deterministic autoencoder: it has no "
                        "posterior q(z|x) (and no ELBO); use a 'vae', 'kl' or 'linear' one")

    def loss(self, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar training loss, {"recon", "kl", "psnr"}); ``noise``: the ε of the
        reparameterisation (drawn from ``generator`` when not given)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction D(E(x))."""
        return self.decode(self.encode(x))


# --- the convolutional trunk -------------------------------------------------------------------


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, plus a (1×1 when the width changes) skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(norm_groups(cin), cin), nn.SiLU(),
                                  nn.Conv2d(cin, cout, 3, padding=1),
                                  nn.GroupNorm(norm_groups(cout), cout), nn.SiLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _head(c: int, cout: int) -> list[nn.Module]:
    return [nn.GroupNorm(norm_groups(c), c), nn.SiLU(), nn.Conv2d(c, cout, 3, padding=1)]


def conv_encoder(cin: int, widths, num_res_blocks: int, cout: int) -> nn.Sequential:
    """Residual blocks at each width, a stride-2 conv between widths: H → H / 2^(len−1)."""
    c, layers = widths[0], [nn.Conv2d(cin, widths[0], 3, padding=1)]
    for i, w in enumerate(widths):
        for _ in range(num_res_blocks):
            layers.append(ResBlock(c, w))
            c = w
        if i < len(widths) - 1:
            layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
    return nn.Sequential(*layers, ResBlock(c, c), *_head(c, cout))


def conv_decoder(cin: int, widths, num_res_blocks: int, cout: int) -> nn.Sequential:
    """The encoder's mirror image, with nearest-neighbour up-sampling."""
    c = widths[-1]
    layers = [nn.Conv2d(cin, c, 3, padding=1), ResBlock(c, c)]
    for i in reversed(range(len(widths))):
        for _ in range(num_res_blocks):
            layers.append(ResBlock(c, widths[i]))
            c = widths[i]
        if i > 0:
            layers.append(Upsample(c))
    return nn.Sequential(*layers, *_head(c, cout))


class _ConvTrunk(Autoencoder):
    """Encoder and decoder of ``channels · channel_mult`` widths with log2(f) down-samplings;
    the encoder gives ``code_channels`` maps, the decoder ``out_channels``."""

    def _build(self, in_channels, channels, channel_mult, num_res_blocks, latent_channels,
               downsample, code_channels: int, out_channels: int) -> None:
        levels = int(math.log2(downsample)) + 1
        mult = list(channel_mult) if channel_mult is not None else [1, 2, 2, 4][:levels]
        widths = [channels * m for m in mult]
        self.in_channels, self.downsample, self.latent_channels = (
            in_channels, downsample, latent_channels)
        self.encoder = conv_encoder(in_channels, widths, num_res_blocks, code_channels)
        self.decoder = conv_decoder(latent_channels, widths, num_res_blocks, out_channels)

    def latent_shape(self, shape) -> tuple:
        """(C, H, W) → (c, H/f, W/f)."""
        shape, f = tuple(int(n) for n in shape), self.downsample
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"this autoencoder takes images ({self.in_channels}, H, W), got "
                             f"shape {shape}")
        if shape[1] % f or shape[2] % f:
            raise ValueError(f"image size {shape[1]}×{shape[2]} is not divisible by the "
                             f"down-sampling factor {f}")
        return (self.latent_channels, shape[1] // f, shape[2] // f)


class ConvAutoencoder(_ConvTrunk):
    """A plain convolutional autoencoder (no KL): loss = mean |x − D(E(x))| (``recon="l1"``)
    or its square (``"l2"``)."""

    @checked_args("ae", dict(TRUNK_RULES, recon=one_of("l1", "l2")), LEVELS)
    def __init__(self, in_channels: int = 3, channels: int = 32, channel_mult=None,
                 num_res_blocks: int = 1, latent_channels: int = 4, downsample: int = 4,
                 recon: str = "l1"):
        super().__init__()
        self._build(in_channels, channels, channel_mult, num_res_blocks, latent_channels,
                    downsample, latent_channels, in_channels)
        self.recon = recon

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def loss(self, x, generator=None, noise=None):
        xr = self.decode(self.encode(x))
        err = (xr - x).abs() if self.recon == "l1" else (xr - x).square()
        recon = err.mean()
        return recon, dict(recon=recon.detach(), kl=torch.zeros_like(recon.detach()),
                           psnr=psnr(xr.detach(), x).mean().to(recon.dtype))


# --- decoder likelihoods p(x|z) ----------------------------------------------------------------


class Likelihood(nn.Module):
    r"""p(x|z) from the decoder's output ``out``: ``mean(out)`` (the reconstruction) and
    ``log_prob(x, out)`` per example; a learned (or fixed) scalar scale s = log σ_x."""

    def __init__(self, kind: str, sigma: float, learn_sigma: bool, bits: int):
        super().__init__()
        self.kind, self.bits = kind, bits
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out) * 2 - 1 if self.kind == "bernoulli" else out

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        s = self.log_sigma.to(out.dtype)
        if self.kind == "gaussian":
            return gaussian_log_prob(x, out, s)
        if self.kind == "laplace":
            return laplace_log_prob(x, out, s)
        if self.kind == "bernoulli":
            return bernoulli_log_prob(x, out)
        return discretized_gaussian_log_prob(x, out, s, self.bits)


def perceptual_available() -> bool:
    """The ``lpips`` package is importable (its weights are checked when it is built)."""
    return importlib.util.find_spec("lpips") is not None


class _Perceptual:
    """LPIPS distance, built on first use and kept outside the module's state (it is not
    trained and not saved with the autoencoder)."""

    def __init__(self):
        self.net = None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.net is None:
            try:
                import lpips
                self.net = lpips.LPIPS(net="alex", verbose=False).eval().requires_grad_(False)
            except Exception as e:  # not installed, or weights that cannot be fetched
                raise ValueError(f"perceptual_weight > 0 needs the lpips package and its "
                                 f"weights available locally ({type(e).__name__}: {e}); set "
                                 f"perceptual_weight to 0") from None
        net = self.net.to(device=x.device)
        c = x.shape[1]
        x, y = (a.float().expand(-1, 3, -1, -1) if c == 1 else a.float() for a in (x, y))
        return net(x, y).flatten(1).mean(1)


VAE_RULES = dict(TRUNK_RULES, likelihood=one_of(*LIKELIHOODS), beta=NONNEGATIVE_REAL,
                 sigma_x=POSITIVE_REAL, learn_sigma_x=BOOL, bits=int_at_least(1),
                 perceptual_weight=NONNEGATIVE_REAL)


class ConvVAE(_ConvTrunk):
    r"""A convolutional VAE: q(z|x) = N(μ(x), diag σ²(x)) (the encoder gives 2c maps: μ and
    log σ²), p(z) = N(0, I), p(x|z) one of ``LIKELIHOODS`` with scale ``sigma_x`` (learned
    unless ``learn_sigma_x`` is false; ``bits`` for the discretized one). Loss:
    (−log p(x|z) + β KL) per data dimension, plus ``perceptual_weight`` × LPIPS."""

    variational = True

    @checked_args("vae", VAE_RULES, LEVELS)
    def __init__(self, in_channels: int = 3, channels: int = 32, channel_mult=None,
                 num_res_blocks: int = 1, latent_channels: int = 4, downsample: int = 4,
                 likelihood: str = "gaussian", beta: float = 1.0, sigma_x: float = 0.1,
                 learn_sigma_x: bool = True, bits: int = 8, perceptual_weight: float = 0.0):
        super().__init__()
        self._setup(in_channels, channels, channel_mult, num_res_blocks, latent_channels,
                    downsample, likelihood, beta, sigma_x, learn_sigma_x, bits, perceptual_weight)

    def _setup(self, in_channels, channels, channel_mult, num_res_blocks, latent_channels,
               downsample, likelihood, beta, sigma_x, learn_sigma_x, bits, perceptual_weight):
        self._build(in_channels, channels, channel_mult, num_res_blocks, latent_channels,
                    downsample, 2 * latent_channels, in_channels)
        self.likelihood = Likelihood(likelihood, sigma_x, learn_sigma_x, bits)
        self.beta, self.perceptual_weight = float(beta), float(perceptual_weight)
        self.perceptual = _Perceptual()

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of q(z|x); log σ² clamped to [−30, 20] as LDM does."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.likelihood.mean(self.decoder(z))

    def decoder_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        return self.likelihood.log_prob(x, self.decoder(z))

    def loss(self, x, generator=None, noise=None):
        mu, logvar = self.posterior(x)
        eps = noise.to(mu) if noise is not None else draw_noise(mu.shape, mu, generator)
        out = self.decoder(reparameterize(mu, logvar, eps))
        dims = x[0].numel()
        recon = -self.likelihood.log_prob(x, out).mean() / dims
        kl = gaussian_kl(mu, logvar).mean() / dims
        loss = recon + self.beta * kl
        xr = self.likelihood.mean(out)
        if self.perceptual_weight > 0:
            loss = loss + self.perceptual_weight * self.perceptual(x, xr).mean()
        return loss, dict(recon=recon.detach(), kl=kl.detach(),
                          psnr=psnr(xr.detach(), x).mean().to(loss.dtype))


class KLAutoencoder(ConvVAE):
    r"""LDM's KL-regularised autoencoder: a :class:`ConvVAE` with a learned-scale Laplace
    (``recon="l1"``) or Gaussian (``"l2"``) decoder, scale initialised at 1 (LDM's log-variance
    0), and β = ``kl_weight`` (10⁻⁶: the latent is barely regularised, so it stays close to a
    plain autoencoder's while keeping a bounded scale); optional LPIPS term."""

    @checked_args("kl", dict(TRUNK_RULES, recon=one_of("l1", "l2"), kl_weight=NONNEGATIVE_REAL,
                             perceptual_weight=NONNEGATIVE_REAL), LEVELS)
    def __init__(self, in_channels: int = 3, channels: int = 32, channel_mult=None,
                 num_res_blocks: int = 1, latent_channels: int = 4, downsample: int = 4,
                 recon: str = "l1", kl_weight: float = 1e-6, perceptual_weight: float = 0.0):
        nn.Module.__init__(self)  # ConvVAE's checked __init__ would check other arguments
        self._setup(in_channels, channels, channel_mult, num_res_blocks, latent_channels,
                    downsample, "laplace" if recon == "l1" else "gaussian", kl_weight, 1.0, True,
                    8, perceptual_weight)


# --- the linear-Gaussian VAE -------------------------------------------------------------------


class LinearVAE(Autoencoder):
    r"""A VAE whose every quantity has a closed form, on flattened inputs of ``shape``:

    .. math:: p(z) = N(0, I_d),\quad p(x|z) = N(Wz + b, σ_x^2 I_D),\quad
              q(z|x) = N(Ax + c, \operatorname{diag} e^{\ell}),

    with ℓ a learned vector (input-independent). Then p(x) = N(b, WWᵀ + σ_x² I) and the exact
    posterior is N(M⁻¹Wᵀ(x − b)/σ_x², M⁻¹), M = I + WᵀW/σ_x²: diagonal, so reachable by q, when
    the columns of W are orthogonal (:meth:`set_optimal_encoder`)."""

    variational = True

    @checked_args("linear", dict(shape=POSITIVE_INT_LIST, latent_dim=POSITIVE_INT,
                                 sigma_x=POSITIVE_REAL, learn_sigma_x=BOOL,
                                 beta=NONNEGATIVE_REAL))
    def __init__(self, shape=(2,), latent_dim: int = 2, sigma_x: float = 1.0,
                 learn_sigma_x: bool = True, beta: float = 1.0):
        super().__init__()
        self.shape = tuple(int(n) for n in shape)
        dim = math.prod(self.shape)
        self.latent_channels, self.beta = latent_dim, float(beta)
        self.W = nn.Parameter(torch.randn(dim, latent_dim) / math.sqrt(latent_dim))
        self.b = nn.Parameter(torch.zeros(dim))
        self.A = nn.Parameter(0.1 * self.W.detach().t().clone())
        self.c = nn.Parameter(torch.zeros(latent_dim))
        self.logvar = nn.Parameter(torch.zeros(latent_dim))
        self.likelihood = Likelihood("gaussian", sigma_x, learn_sigma_x, 8)

    @property
    def sigma_x(self) -> Tensor:
        return self.likelihood.log_sigma.exp()

    def latent_shape(self, shape) -> tuple:
        if math.prod(shape) != math.prod(self.shape):
            raise ValueError(f"this linear VAE takes inputs of shape {self.shape}, got "
                             f"{tuple(shape)}")
        return (self.latent_channels,)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = x.flatten(1) @ self.A.t() + self.c
        return mu, self.logvar.expand_as(mu)

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return (z @ self.W.t() + self.b).view(len(z), *self.shape)

    def decoder_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        return self.likelihood.log_prob(x.flatten(1), z @ self.W.t() + self.b)

    def loss(self, x, generator=None, noise=None):
        mu, logvar = self.posterior(x)
        eps = noise.to(mu) if noise is not None else draw_noise(mu.shape, mu, generator)
        dims = math.prod(self.shape)
        z = reparameterize(mu, logvar, eps)
        recon = -self.decoder_log_prob(x, z).mean() / dims
        kl = gaussian_kl(mu, logvar).mean() / dims
        loss = recon + self.beta * kl
        return loss, dict(recon=recon.detach(), kl=kl.detach(),
                          psnr=torch.zeros_like(loss.detach()))

    def _precision(self) -> Tensor:
        """M = I + WᵀW/σ_x²."""
        eye = torch.eye(self.latent_channels, dtype=self.W.dtype, device=self.W.device)
        return eye + self.W.t() @ self.W / self.sigma_x ** 2

    def exact_log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = log N(x; b, WWᵀ + σ_x² I) per example."""
        dim = self.W.shape[0]
        cov = self.W @ self.W.t() + self.sigma_x ** 2 * torch.eye(dim, dtype=self.W.dtype,
                                                                   device=self.W.device)
        dist = torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)
        return dist.log_prob(x.flatten(1).to(self.W.dtype))

    def exact_posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean (B, d), covariance (d, d)) of p(z|x) = N(M⁻¹Wᵀ(x − b)/σ_x², M⁻¹)."""
        cov = torch.linalg.inv(self._precision())
        mean = (x.flatten(1) - self.b) @ self.W @ cov.t() / self.sigma_x ** 2
        return mean, cov

    @torch.no_grad()
    def set_optimal_encoder(self) -> None:
        """Set q to the KL-optimal diagonal Gaussian: the exact posterior mean and variances
        1/M_jj — the exact posterior when WᵀW is diagonal (then ELBO = log p(x))."""
        m = self._precision()
        a = torch.linalg.solve(m, self.W.t()) / self.sigma_x ** 2
        self.A.copy_(a)
        self.c.copy_(-a @ self.b)
        self.logvar.copy_(-torch.log(torch.diagonal(m)))

    def analytic_elbo(self, x: Tensor) -> Tensor:
        r"""The ELBO in closed form: E_q log p(x|z) = −½[D log 2πσ_x² + (‖x − Wμ − b‖² +
        tr(W diag σ² Wᵀ))/σ_x²], minus the KL of eq. 2.6."""
        mu, logvar = self.posterior(x)
        var_x, dim = self.sigma_x ** 2, self.W.shape[0]
        resid = (x.flatten(1) - mu @ self.W.t() - self.b).square().sum(1)
        trace = (self.W.square().sum(0) * logvar.exp()).sum(1)
        expected = -0.5 * (dim * torch.log(2 * math.pi * var_x) + (resid + trace) / var_x)
        return expected - gaussian_kl(mu, logvar)

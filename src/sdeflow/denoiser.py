r"""One wrapper for every network parameterisation.

A network ``net(x, t, **cond)`` predicts one of four equivalent targets of
:math:`x_t = s(t)\,x_0 + \sigma(t)\,\varepsilon`:

* ``"x0"``:    the denoiser :math:`\hat x_0 = D(x_t, t) \approx E[x_0 \mid x_t]`;
* ``"eps"``:   :math:`\hat\varepsilon = (x_t - s\hat x_0)/\sigma` (Ho et al. 2020);
* ``"v"``:     :math:`v = \alpha\,\varepsilon - \bar\sigma\,x_0` with
  :math:`\alpha = s/r,\ \bar\sigma = \sigma/r,\ r = \sqrt{s^2+\sigma^2}` (Salimans & Ho 2022;
  for VP r = 1 and this is their v);
* ``"score"``: :math:`\nabla_x \log p_t(x) = -\hat\varepsilon/\sigma = (s\hat x_0 - x)/\sigma^2`
  (Tweedie).

:class:`Denoiser` converts any of them into all the others, so samplers, losses and likelihoods
only talk to it. With ``precondition="edm"`` the network is wrapped as in Karras et al. 2022
(Table 1), with noise level :math:`\tilde\sigma = \sigma/s` and :math:`\tilde x = x/s`:

.. math:: D(x,t) = c_{skip}\tilde x + c_{out} F(c_{in}\tilde x,\ c_{noise}),\quad
    c_{skip} = \frac{\sigma_d^2}{\tilde\sigma^2+\sigma_d^2},\ c_{out} = \frac{\tilde\sigma\sigma_d}
    {\sqrt{\tilde\sigma^2+\sigma_d^2}},\ c_{in} = \frac{1}{\sqrt{\tilde\sigma^2+\sigma_d^2}},\
    c_{noise} = \tfrac14\log\tilde\sigma.

With ``precondition="consistency"`` the same network is a consistency function (Song et al.
2023, "Consistency Models", §3): with :math:`\tilde\sigma_{\min} = \tilde\sigma(t_{\min})`,

.. math:: f(x,t) = c_{skip}\tilde x + c_{out} F(c_{in}\tilde x,\ c_{noise}),\quad
    c_{skip} = \frac{\sigma_d^2}{(\tilde\sigma-\tilde\sigma_{\min})^2+\sigma_d^2},\
    c_{out} = \frac{\sigma_d(\tilde\sigma-\tilde\sigma_{\min})}{\sqrt{\tilde\sigma^2+\sigma_d^2}},

(c_in and c_noise as EDM's), so c_skip = 1 and c_out = 0 at t_min and the boundary condition
:math:`f(x, t_{\min}) = x/s(t_{\min})` (= x for VE and EDM) holds exactly, whatever F is.

With ``learn_sigma=True`` the network returns twice the channels (dim 1) of x: the first half
is its prediction as above, the second half r gives the *variance interpolation*
:math:`v = (r + 1)/2` of a learned reverse variance (Nichol & Dhariwal 2021, "Improved DDPM",
eq. 15; r = 0 at initialisation is the midpoint)

.. math:: \Sigma_\theta = \exp\big(v\log\beta + (1 - v)\log\tilde\beta\big)

between the forward step's variance β and the posterior's β̃ of whatever step the sampler or
the bound (:mod:`sdeflow.vlb`) takes. Every other method ignores those channels.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from .sde import SDE, bcast

__all__ = ["Denoiser", "Prediction", "Targets", "prediction_from_x0", "PREDICTIONS",
           "PRECONDITIONS", "check_batch", "edm_scalings", "learned_log_variance"]

PREDICTIONS = ("x0", "eps", "v", "score")
PRECONDITIONS = (None, "edm", "consistency")


def check_batch(x, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a finite floating-point tensor of shape (B, ...)."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension: shape (B, ...), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")


def edm_scalings(sde: SDE, t: Tensor, sigma_data: float, like: Tensor,
                 consistency: bool = False):
    r"""EDM's (c_in, c_skip, c_out, c_noise) at noise level σ̃ = σ(t)/s(t) (Karras et al. 2022,
    Table 1), the first three broadcast against ``like``: c_in = (σ̃² + σ_d²)^{-1/2},
    c_skip = σ_d²/(σ̃² + σ_d²), c_out = σ̃σ_d c_in, c_noise = ¼ log σ̃ (shape (B,)).

    ``consistency=True``: the consistency model's c_skip and c_out, with σ̃ − σ̃_min in place of
    σ̃ (Song et al. 2023), so c_skip = 1 and c_out = 0 exactly at t = t_min."""
    nu = sde.noise_level(t)
    # σ̃_min from a tensor like t: the same kernel as σ̃, so σ̃ − σ̃_min is exactly 0 at t_min
    shift = nu - sde.noise_level(torch.full_like(t, sde.t_min)) if consistency else nu
    nu_b, shift_b, sd2 = bcast(nu, like), bcast(shift, like), sigma_data**2
    c_in = (nu_b**2 + sd2).rsqrt()
    return c_in, sd2 / (shift_b**2 + sd2), shift_b * sigma_data * c_in, 0.25 * nu.log()


def learned_log_variance(v: Tensor, log_beta: Tensor, log_beta_tilde: Tensor) -> Tensor:
    """log Σθ = v log β + (1 − v) log β̃: the learned reverse variance of Improved DDPM, with
    ``log_beta`` and ``log_beta_tilde`` of shape () or (B,) broadcast against ``v`` (B, ...)."""
    return v * bcast(log_beta, v) + (1 - v) * bcast(log_beta_tilde, v)


class Prediction(NamedTuple):
    """All four targets at one (x, t)."""

    x0: Tensor
    eps: Tensor
    v: Tensor
    score: Tensor


def _complete(s: Tensor, sig: Tensor, x0: Tensor, eps: Tensor, v: Tensor | None = None) -> Prediction:
    """The four targets from x̂0 and ε̂ (v̂ = (s ε̂ − σ x̂0)/√(s² + σ²) unless given)."""
    if v is None:
        v = (s * eps - sig * x0) / (s**2 + sig**2).sqrt()
    return Prediction(x0, eps, v, -eps / sig)


def prediction_from_x0(sde: SDE, x: Tensor, t: Tensor, x0: Tensor) -> Prediction:
    """All four targets at (x, t) for a given x̂0: ε̂ = (x − s x̂0)/σ."""
    s, sig = bcast(sde.s(t), x), bcast(sde.sigma(t), x)
    return _complete(s, sig, x0, (x - s * x0) / sig)


class Targets:
    """``x0``, ``eps``, ``v`` and ``score`` of anything with ``predict(x, t, **cond)`` returning
    a :class:`Prediction` (a :class:`Denoiser`, or a view of one that a sampler sees)."""

    def x0(self, x: Tensor, t, **cond) -> Tensor:
        """Denoised estimate x̂0(x, t)."""
        return self.predict(x, t, **cond).x0

    def eps(self, x: Tensor, t, **cond) -> Tensor:
        """Noise estimate ε̂(x, t)."""
        return self.predict(x, t, **cond).eps

    def v(self, x: Tensor, t, **cond) -> Tensor:
        """Velocity estimate v̂(x, t)."""
        return self.predict(x, t, **cond).v

    def score(self, x: Tensor, t, **cond) -> Tensor:
        """Score estimate ∇ log p_t(x)."""
        return self.predict(x, t, **cond).score


class Denoiser(Targets, nn.Module):
    """Wrap ``net(x, t, **cond)`` predicting ``prediction`` under ``sde``.

    Args:
        net: callable (usually an ``nn.Module``); ``t`` is the SDE's continuous time, shape (B,).
        sde: the forward SDE the net was trained for.
        prediction: one of ``"x0"``, ``"eps"``, ``"v"``, ``"score"``.
        precondition: ``None`` (call the net on (x, t) as is), ``"edm"`` (EDM's c_skip, c_out,
            c_in, c_noise around an F-network) or ``"consistency"`` (a consistency model's
            c_skip, c_out with f(x, t_min) = x/s(t_min)); with either, ``prediction`` is ``"x0"``.
        sigma_data: σ_d of the preconditioning.
        check_finite: raise if the network returns NaN/inf (one host sync per call).
        learn_sigma: the network also returns the variance interpolation v (twice the channels,
            see the module docstring; :meth:`predict_variance`).

    ``nfe`` counts network evaluations since construction (samplers report differences of it).
    """

    learn_sigma: bool = False  # the class default: guided wrappers have no variance output

    def __init__(self, net: Callable[..., Tensor], sde: SDE, prediction: str = "x0",
                 precondition: str | None = None, sigma_data: float = 0.5,
                 check_finite: bool = True, learn_sigma: bool = False):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choices: {list(PREDICTIONS)}")
        if precondition not in PRECONDITIONS:
            raise ValueError(f"unknown precondition {precondition!r}; choices: {list(PRECONDITIONS)}")
        if precondition is not None and prediction != "x0":
            raise ValueError(f"precondition={precondition!r} wraps an F-network into a denoiser: "
                             "use prediction='x0'")
        if not callable(net):
            raise TypeError("net must be callable as net(x, t, **cond)")
        self.net = net
        self.sde = sde
        self.prediction = prediction
        self.precondition = precondition
        self.sigma_data = float(sigma_data)
        self.check_finite = check_finite
        self.learn_sigma = bool(learn_sigma)
        self.nfe = 0

    def _time(self, x: Tensor, t) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    def _split(self, out: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(prediction channels, variance channels or None) of a network output."""
        if not self.learn_sigma:
            return out, None
        want = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
        if out.shape != want:
            raise ValueError(f"a learn_sigma network returns twice the channels of x: expected "
                             f"shape {want}, got {tuple(out.shape)}")
        return out.chunk(2, dim=1)

    def _evaluate(self, x: Tensor, t: Tensor, cond: dict) -> tuple[Tensor, Tensor | None]:
        """One network evaluation: (output in its parameterisation, raw variance channels)."""
        self.nfe += 1
        if self.precondition is not None:
            c_in, c_skip, c_out, c_noise = edm_scalings(
                self.sde, t, self.sigma_data, x, consistency=self.precondition == "consistency")
            xt = x / bcast(self.sde.s(t), x)
            f, var = self._split(self.net(c_in * xt, c_noise, **cond), x)
            out = c_skip * xt + c_out * f
        else:
            out, var = self._split(self.net(x, t, **cond), x)
        if out.shape != x.shape:
            raise ValueError(f"network returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        if self.check_finite and not (torch.isfinite(out).all()
                                      and (var is None or torch.isfinite(var).all())):
            raise FloatingPointError(
                f"network returned non-finite values at t in [{t.min().item():g}, {t.max().item():g}]")
        return out, var

    def raw(self, x: Tensor, t, **cond) -> Tensor:
        """The network's output in its own parameterisation (after preconditioning: x̂0)."""
        return self._evaluate(x, self._time(x, t), cond)[0]

    def predict(self, x: Tensor, t, **cond) -> Prediction:
        """All of x̂0, ε̂, v̂ and the score at (x, t), from one network evaluation."""
        t = self._time(x, t)
        return self._convert(x, t, self.raw(x, t, **cond))

    def predict_variance(self, x: Tensor, t, **cond) -> tuple[Prediction, Tensor]:
        """(all targets, the variance interpolation v) at (x, t) from one evaluation of a
        ``learn_sigma`` network; v is shaped like x (see :func:`learned_log_variance`)."""
        if not self.learn_sigma:
            raise ValueError("this model has no learned variance (train it with learn_sigma=True)")
        t = self._time(x, t)
        out, var = self._evaluate(x, t, cond)
        return self._convert(x, t, out), (var + 1) / 2

    def _convert(self, x: Tensor, t: Tensor, out: Tensor) -> Prediction:
        s, sig = bcast(self.sde.s(t), x), bcast(self.sde.sigma(t), x)
        r = (s**2 + sig**2).sqrt()
        if self.prediction == "x0":
            x0 = out
            eps = (x - s * x0) / sig
        elif self.prediction == "eps":
            eps = out
            x0 = (x - sig * eps) / s
        elif self.prediction == "score":
            eps = -sig * out
            x0 = (x - sig * eps) / s
        else:  # v
            x0 = (s * x - sig * r * out) / r**2
            eps = (sig * x + s * r * out) / r**2
        return _complete(s, sig, x0, eps, out if self.prediction == "v" else None)

    def forward(self, x: Tensor, t, **cond) -> Tensor:
        return self.x0(x, t, **cond)

    def with_net(self, net: Callable[..., Tensor], check_finite: bool | None = None) -> "Denoiser":
        """The same parameterisation around another callable sharing this one's weights (e.g.
        the DDP- or compile-wrapped network a trainer calls)."""
        return Denoiser(net, self.sde, prediction=self.prediction, precondition=self.precondition,
                        sigma_data=self.sigma_data,
                        check_finite=self.check_finite if check_finite is None else check_finite,
                        learn_sigma=self.learn_sigma)

r"""A network as a CLD score model: ``net(u, c, **cond)`` → α, with
:math:`\nabla_v\log p_t(u) \approx -\ell_t\,\alpha` (Dockhorn et al. 2022, §3.2).

α is the network's estimate of the velocity noise ε_v of hybrid score matching, so a perfect
model has α = E[ε_v | u_t]. With ``precondition="mixed"`` (the paper's mixed score, in the form
of EDM's skip connection) the network only learns the residual to the score of Gaussian data
N(0, σ_d² I), which is exact per dimension:

.. math:: \nabla_v\log p^{\mathcal N}_t(u) = -\big(P_t^{-1}(x, v)\big)_v,\qquad
          P_t = \Sigma_t + \sigma_d^2\,(a, b)(a, b)^\top,

and sees its input scaled to unit variance per half, c_in = (a²σ_d² + Σxx)^{-1/2} for x and
(b²σ_d² + Σvv)^{-1/2} for v, with the noise input c_noise = ¼ log(√Σxx / a), the x-part's
noise-to-signal ratio (EDM's ¼ log σ̃). Without preconditioning ``net(u, t)`` returns α itself.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..denoiser import check_batch
from ..sde import bcast
from .process import CLD, join_state, split_state

__all__ = ["CLDModel", "PRECONDITIONS", "is_cld"]

PRECONDITIONS = (None, "mixed")


def is_cld(model) -> bool:
    """Whether ``model`` is a :class:`CLDModel` (samplers and the likelihood branch on it)."""
    return isinstance(model, CLDModel)


class CLDModel(nn.Module):
    """A CLD score model (module docstring). ``nfe`` counts network evaluations; ``sde`` is the
    :class:`~sdeflow.cld.CLD` process (the name samplers and the likelihood look for)."""

    def __init__(self, net: Callable[..., Tensor], cld: CLD, precondition: str | None = "mixed",
                 sigma_data: float = 1.0, check_finite: bool = True):
        super().__init__()
        if precondition not in PRECONDITIONS:
            raise ValueError(f"unknown precondition {precondition!r}; choices: {list(PRECONDITIONS)}")
        if not callable(net):
            raise TypeError("net must be callable as net(u, t, **cond)")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.net, self.sde = net, cld
        self.precondition, self.sigma_data = precondition, float(sigma_data)
        self.check_finite = check_finite
        self.nfe = 0

    def _time(self, u: Tensor, t) -> Tensor:
        t = torch.as_tensor(t, dtype=u.dtype, device=u.device)
        t = t.expand(u.shape[0]) if t.ndim == 0 else t
        if t.shape != (u.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({u.shape[0]},), got {tuple(t.shape)}")
        return t

    def gaussian_alpha(self, u: Tensor, t: Tensor) -> Tensor:
        """α of Gaussian data N(0, σ_d² I): (P_t⁻¹u)_v / ℓ_t (module docstring)."""
        x, v = split_state(u)
        pxx, pxv, pvv = self.sde.data_cov(t.double(), self.sigma_data**2)
        det = pxx * pvv - pxv**2
        k_x, k_v = (-pxv / det).to(u.dtype), (pxx / det).to(u.dtype)
        ell = self.sde.ell(t.double()).to(u.dtype)
        return (bcast(k_x / ell, x) * x + bcast(k_v / ell, v) * v)

    def _inputs(self, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_in-scaled state, c_noise) of the mixed parameterisation."""
        x, v = split_state(u)
        a, _ = self.sde.mean_coeffs(t.double())
        sxx = self.sde.cov(t.double())[0]
        pxx, _, pvv = self.sde.data_cov(t.double(), self.sigma_data**2)
        c_x, c_v = pxx.rsqrt(), pvv.rsqrt()
        c_noise = 0.125 * (sxx.clamp_min(1e-30) / a**2).log()
        return (join_state(bcast(c_x.to(u.dtype), x) * x, bcast(c_v.to(u.dtype), v) * v),
                c_noise.to(u.dtype))

    def alpha(self, u: Tensor, t, **cond) -> Tensor:
        """α(u, t) ≈ E[ε_v | u_t = u] (one network evaluation)."""
        check_batch(u, "u")
        x, _ = split_state(u)
        t = self._time(u, t)
        self.nfe += 1
        if self.precondition == "mixed":
            out = self.net(*self._inputs(u, t), **cond)
        else:
            out = self.net(u, t, **cond)
        if out.shape != x.shape:
            raise ValueError(f"network returned shape {tuple(out.shape)}, expected the data's "
                             f"{tuple(x.shape)} (half of the state's)")
        if self.check_finite and not torch.isfinite(out).all():
            raise FloatingPointError(
                f"network returned non-finite values at t in [{t.min().item():g}, {t.max().item():g}]")
        if self.precondition == "mixed":
            out = self.gaussian_alpha(u, t) + out
        return out

    def score_v(self, u: Tensor, t, **cond) -> Tensor:
        """∇_v log p_t(u) ≈ −ℓ_t α(u, t)."""
        t = self._time(u, t)
        return -bcast(self.sde.ell(t), u) * self.alpha(u, t, **cond)

    def pf_ode_drift(self, u: Tensor, t, **cond) -> Tensor:
        """The (x, v) probability-flow ODE's drift βAu − (0, Γβ ∇_v log p_t)."""
        t = self._time(u, t)
        return self.sde.pf_ode_drift(u, t, self.score_v(u, t, **cond))

    def forward(self, u: Tensor, t, **cond) -> Tensor:
        return self.score_v(u, t, **cond)

    def with_net(self, net: Callable[..., Tensor], check_finite: bool | None = None) -> "CLDModel":
        """The same parameterisation around another callable sharing this one's weights."""
        return CLDModel(net, self.sde, self.precondition, self.sigma_data,
                        self.check_finite if check_finite is None else check_finite)

    def sample(self, shape=None, **kwargs) -> Tensor:
        """:func:`sdeflow.cld.sample_cld` on this model (x only)."""
        from .sampling import sample_cld
        return sample_cld(self, shape=shape, **kwargs)

r"""The *lookahead first step*: a multistep solver's first two grid times served by one network
call, so a budget of n calls runs n steps instead of n − 1 (``first_step="lookahead"``).

A one-call-per-step multistep solver (iPNDM, DEIS, DPM-Solver++(2M/3M), UniPC) starts with a
first-order step from :math:`t_0` to :math:`t_1`, DDIM's: in scaled coordinates
:math:`\tilde x = x/s`, :math:`\tilde\sigma = \sigma/s`,

.. math:: \tilde x_1 = \frac{\tilde\sigma_1}{\tilde\sigma_0}\tilde x_0
    + \Big(1 - \frac{\tilde\sigma_1}{\tilde\sigma_0}\Big)\hat x_0 .            \qquad (1)

The exact PF-ODE step replaces :math:`\hat x_0` by the average
:math:`\int_{\tilde\sigma_1}^{\tilde\sigma_0} \hat x_0(\tilde\sigma)\,\tilde\sigma^{-2}d\tilde\sigma
\,/\int_{\tilde\sigma_1}^{\tilde\sigma_0}\tilde\sigma^{-2}d\tilde\sigma`, which puts at least
half its weight on :math:`[\tilde\sigma_1, 2\tilde\sigma_1]`: the denoiser at the *end* of the
step matters most, the call at :math:`t_0` least. At :math:`t_0` the denoiser is also nearly
known: for data of mean μ and covariance Σ, :math:`\hat x_0 \approx \mu + \Sigma\tilde x/
\tilde\sigma^2` while :math:`\tilde\sigma` is far above the data's scale.

* The *analytic first step* (AFS; Zhou et al. 2024, "Fast ODE-based sampling for diffusion
  models in around 5 steps") takes :math:`\hat x_0 = 0` in (1) and saves the call. That is
  right for data centred at 0 only: on a 64-D mixture with its mean off 0 it had 1.1–6.9× the
  error of the same solver without it (docs/solver_notes.md).
* The **lookahead** step takes :math:`\hat x_0` in (1) from one call at :math:`t_1`, at the
  point AFS reaches, :math:`x_1' = (\sigma_1/\sigma_0)\,x_0`, and reuses that call as the
  solver's evaluation at :math:`t_1`. The reuse is stale by the move from :math:`x_1'` to the
  solver's :math:`x_1`, :math:`(1 - \tilde\sigma_1/\tilde\sigma_0)\hat x_0`, which changes
  :math:`\hat x_0` by about :math:`\Sigma/\tilde\sigma_1^2` times that: small while
  :math:`\tilde\sigma_1` is above the data's scale, as it is on every grid ``auto`` uses.
  The call at :math:`t_1` is counted once; the one at :math:`t_0` is never made.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..denoiser import Prediction, Targets, prediction_from_x0

__all__ = ["FIRST_STEPS", "LookaheadFirst"]

FIRST_STEPS = ("network", "lookahead")  # first_step= values of the solvers that take it


class LookaheadFirst(Targets):
    """``model`` as a solver on the grid ``ts`` sees it with the lookahead first step: the
    first call (at ``ts[0]``) returns x̂0 of one network call at ``ts[1]`` from
    x₁' = (σ(t₁)/σ(t₀))·x₀, the second (at ``ts[1]``) returns that x̂0 again without a call, and
    every later call goes to ``model`` (module docstring). Anything else is ``model``'s."""

    def __init__(self, model, ts: Tensor):
        if len(ts) < 3:
            raise ValueError("first_step='lookahead' needs at least 2 steps (it serves the first "
                             "two grid times with one call)")
        self.model, self.t0, self.t1 = model, ts[0], ts[1]
        self._calls, self._x0 = 0, None

    def __getattr__(self, name):  # sde, nfe, prediction, … of the wrapped model
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, x: Tensor, t, **cond) -> Prediction:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        self._calls += 1
        if self._calls == 1:
            self._check(t, self.t0, "first")
            sde = self.model.sde
            t1 = torch.full_like(t, float(self.t1))
            x1 = (sde.sigma(self.t1) / sde.sigma(self.t0)).to(x) * x
            self._x0 = self.model.predict(x1, t1, **cond).x0
        elif self._calls == 2:
            self._check(t, self.t1, "second")
        else:
            return self.model.predict(x, t, **cond)
        return prediction_from_x0(self.model.sde, x, t, self._x0)

    @staticmethod
    def _check(t: Tensor, want: Tensor, which: str) -> None:
        if not bool((t == want).all()):
            raise RuntimeError(f"first_step='lookahead': the solver's {which} call was at "
                               f"t={t[0].item():g}, not at the grid's {float(want):g}; it takes "
                               "solvers that call the model once per grid time, in order")

    def __call__(self, x: Tensor, t, **cond) -> Tensor:
        return self.x0(x, t, **cond)


def with_first_step(fn, name: str, takes_it: bool):
    """``fn(model, x, ts, ctx, **opts)`` taking ``first_step="network"`` (the default: the
    solver as it is) and, where the solver ``takes_it``, ``"lookahead"`` (:class:`LookaheadFirst`
    around the model); anything else is a ValueError naming the choices."""
    @functools.wraps(fn)
    def solve(model, x, ts, ctx, first_step: str = "network", **opts):
        if first_step == "lookahead" and takes_it:
            model = LookaheadFirst(model, ts)
        elif first_step != "network":
            from .registry import get_solver, list_solvers
            takers = [n for n in list_solvers() if get_solver(n).first_step]
            raise ValueError(f"first_step={first_step!r} for solver {name!r}: choices "
                             f"{list(FIRST_STEPS)}, 'lookahead' for the one-call-per-step "
                             f"multistep solvers {takers}")
        return fn(model, x, ts, ctx, **opts)
    return solve

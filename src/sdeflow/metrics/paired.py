r"""How sure is "method A has 0.7× the error of the best of B₁ … B_M"? A paired bootstrap of
the ratio of RMS errors on shared draws.

Solvers compared on the same prior draws against the same answer give, per draw i, squared
errors :math:`e_{m,i}` (mean over coordinates). The figure reported is

.. math:: r = \sqrt{\frac{\bar e_A}{\min_m \bar e_{B_m}}}, \qquad
          \bar e = \frac1N\sum_i e_i ,

and its spread comes from the draws: each replicate reweights every draw by an independent
Poisson(1) count :math:`w_i` (the Poisson bootstrap, a multinomial resample for large N) and
recomputes :math:`r^* = \sqrt{\sum_i w_i e_{A,i} / \min_m \sum_i w_i e_{B_m,i}}` — the *same*
weights for every method, so what the methods share (draws that are hard for all) cancels,
and the best competitor is chosen again in each replicate (the minimum over M noisy
competitors is biased low; a fixed one would hide that). The interval is the percentile
interval of :math:`r^*`.

The tested side may be a set too, :math:`A_1 … A_K`: the ratio is then the best of them over
the best competitor, both chosen again in each replicate. With many configurations on the
tested side that figure is optimistic for it (the winner's curse is on its side too); it
answers "could *any* of these reach the goal?" — if even the best of K is resolved above a
goal, no rule choosing among them reaches it on these draws.

Where a few draws that end in another mixture component carry most of the error (few-step
sampling in high dimension: 0–3 of 4096 draws at 20 NFE, each worth ≈ d²/N), the interval
is wide: the ratio of two Poisson counts of 1–3 cannot be resolved, and this says so instead of
reporting a ratio of 0.71 as a win.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["RatioInterval", "rmse_ratio"]


class RatioInterval(NamedTuple):
    """``ratio``: RMS of the tested method over the best competitor's; ``low``/``high``: its
    bootstrap percentile interval at ``level``; ``best``: index of the best competitor on all
    draws; ``p_below``: fraction of replicates with ratio ≤ ``below`` (``nan`` if not asked);
    ``chosen``: index of the best tested row on all draws (0 for one tested method)."""
    ratio: float
    low: float
    high: float
    best: int
    p_below: float
    chosen: int = 0


def _as_errors(x, name: str) -> Tensor:
    x = torch.as_tensor(x).to(torch.float64)
    if x.dim() not in (1, 2) or x.shape[-1] < 2:
        raise ValueError(f"{name}: per-draw squared errors of shape (N,) or (M, N) with N ≥ 2, "
                         f"got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all() or (x < 0).any():
        raise ValueError(f"{name}: squared errors must be finite and ≥ 0 (a NaN or a negative "
                         f"value means the errors were not computed as (x - ref)²)")
    return x.reshape(-1, x.shape[-1])


def rmse_ratio(sq_err, competitors, *, level: float = 0.9, replicates: int = 1000,
               seed: int = 0, below: float | None = None, chunk: int = 100) -> RatioInterval:
    r"""Ratio of the RMS error of one method to the best competitor's, with a paired Poisson
    bootstrap interval (module docstring). ``sq_err``: shape (N,), the tested method's
    per-draw squared error, or (K, N) for the best of K tested methods (chosen again in each
    replicate, as the competitors are); ``competitors``: shape (N,) or (M, N), the
    competitors' on the same draws in the same order. ``below``: also report the fraction of
    replicates whose ratio is ≤ ``below`` (e.g. 0.7, a goal). Deterministic for a given
    ``seed``."""
    a = _as_errors(sq_err, "sq_err")
    b = _as_errors(competitors, "competitors")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sq_err has {a.shape[1]} draws and competitors {b.shape[1]}: the "
                         f"comparison is paired, so both must be on the same draws")
    if not 0 < level < 1 or replicates < 10 or chunk < 1:
        raise ValueError(f"need 0 < level < 1, replicates ≥ 10 and chunk ≥ 1, got {level}, "
                         f"{replicates}, {chunk}")
    mb = b.mean(1)
    if (mb == 0).any():
        raise ValueError(f"competitor {int((mb == 0).nonzero()[0])} has zero error on every "
                         f"draw: the ratio to it is undefined (drop it, or it is the answer)")
    k_own = a.shape[0]
    e = torch.cat([a, b])  # (K + M, N)
    g = torch.Generator().manual_seed(seed)
    ratios = []
    for start in range(0, replicates, chunk):
        k = min(chunk, replicates - start)
        w = torch.poisson(torch.ones(k, e.shape[1], dtype=torch.float64), generator=g)
        m = w @ e.T  # (k, K + M): weighted sums; the common normaliser cancels in the ratio
        num, den = m[:, :k_own].min(1).values, m[:, k_own:].min(1).values
        # a replicate that drew none of a sparse competitor's nonzero draws: ratio ∞ (1 if
        # ours is zero there too), so the interval widens instead of turning NaN
        r = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny),
                        torch.where(num > 0, torch.inf, 1.0))
        ratios.append(r.sqrt())
    r = torch.cat(ratios)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(r, q, interpolation="nearest").tolist()  # ∞ stays ∞
    p = float((r <= below).double().mean()) if below is not None else float("nan")
    ma = a.mean(1)
    return RatioInterval(float((ma.min() / mb.min()).sqrt()), low, high, int(mb.argmin()), p,
                         int(ma.argmin()))

r"""``solver="auto"``: a solver, its options and a time grid chosen from the NFE budget, the SDE
and the data's dimension — the defaults for users who never tune.

With ``solver="auto"``, ``steps`` is the **budget in network evaluations** (the final
denoising call included), not a step count. :func:`auto_config` returns what
:func:`~sdeflow.sample` then runs. The rules (docs/solver_notes.md, "Defaults by budget",
gives the measurements behind them):

* **1–3 NFE**: DDIM (first order: nothing higher pays with so few evaluations) on the
  ``vp_trailing`` grid — every call where the sample's coarse shape is decided, the answer the
  last call's x̂0 (diffusers' trailing spacing).
* **4–30 NFE**: the fixed-coefficient 4th-order Adams–Bashforth iPNDM (1 NFE per step, no
  start-up calls: the best named solver on 26 of our 28 benchmark budgets) on a grid shaped by
  the dimension:

  - **low dimension** (D < 16): ``gits`` — GITS's geometry-informed shape, quick through large
    σ̃ and dense near the data, where a low-dimensional trajectory bends most;
  - **high dimension** (D ≥ 16): ``ays`` — Align Your Steps' shape, which keeps more of the
    budget at σ̃ ≈ 1–10, where a draw's mixture component (an image's layout) is decided: in
    high dimension the few draws that end in the wrong component carry most of the error
    (docs/solver_notes.md); at 4–6 NFE there UniPC (order 3, bh2 predictor–corrector) on
    ``ays`` — its corrector is worth more than iPNDM's fourth order when every step is long.

* **Above 30 NFE**: iPNDM on the ``logsnr`` grid (every solver is near its asymptotic order
  there; log-SNR steps spread the error evenly).

The rules were chosen on our four benchmark problems (2-D ring and 64-D mixture, EDM and VP) by
the worst ratio to the best anchor over the two SDEs of each dimension class — one solver and
two grid shapes, no per-budget table — and checked on problems not used to choose them
(docs/benchmarks.md, "solver='auto'").
"""
from __future__ import annotations

__all__ = ["auto_config", "HIGH_DIM"]

HIGH_DIM = 16  # data dimension from which the high-dimensional rule applies


def auto_config(sde, nfe: int, dim: int) -> dict:
    """``dict(solver, steps, schedule, opts)`` for a budget of ``nfe`` network evaluations
    (final denoising included) under ``sde`` for data of ``dim`` dimensions (module docstring)."""
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"solver='auto' takes the NFE budget as steps: a positive integer, "
                         f"got {nfe!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if nfe == 1:  # one call: x̂0 of the prior draw (a DDIM step to t_min, no denoising)
        return dict(solver="ddim", steps=1, schedule="uniform", opts={}, denoise=False)
    if nfe <= 3:
        return dict(solver="ddim", steps=nfe - 1, schedule="vp_trailing", opts={}, denoise=True)
    steps = nfe - 1  # one call per step plus the final denoising
    if nfe > 30:
        return dict(solver="ipndm", steps=steps, schedule="logsnr", opts={}, denoise=True)
    if dim < HIGH_DIM:
        return dict(solver="ipndm", steps=steps, schedule="gits", opts={}, denoise=True)
    if nfe <= 6:
        return dict(solver="unipc", steps=steps, schedule="ays", opts=dict(order=3), denoise=True)
    return dict(solver="ipndm", steps=steps, schedule="ays", opts={}, denoise=True)

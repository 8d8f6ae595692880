r"""``solver="auto"``: a solver, its options and a time grid chosen from the NFE budget, the SDE,
the data's dimension and the network's parameterisation — the defaults for users who never tune.

With ``solver="auto"``, ``steps`` is the **budget in network evaluations** (the final
denoising call included), not a step count. :func:`auto_config` returns what
:func:`~sdeflow.sample` then runs. The rules (docs/solver_notes.md, "Defaults by budget",
gives the measurements behind them):

* **1–3 NFE**: DDIM (first order: nothing higher pays with so few evaluations) on the
  ``vp_trailing`` grid — every call where the sample's coarse shape is decided, the answer the
  last call's x̂0 (diffusers' trailing spacing).
* **4–30 NFE**: the fixed-coefficient 4th-order Adams–Bashforth iPNDM (1 NFE per step, no
  start-up calls; order 2 or 3 at 4–20 NFE for a noise-predicting network, below) on a
  *trailing* grid (``<shape>_trailing``: the shape's grid for one more
  step with its last time dropped, so the final x̂0 call sits on the shape's last noise level
  instead of at σ_min where it barely moves the sample, and iPNDM counts it as its first-order
  last step), the shape chosen by the dimension and the network's parameterisation:

  - **low dimension** (D < 16): ``gits_trailing`` — GITS's geometry-informed shape, quick
    through large σ̃ and dense near the data, where a low-dimensional trajectory bends most;
  - **high dimension** (D ≥ 16), a network returning x̂0 or v̂: ``ays_trailing`` (Align Your
    Steps' shape: after one large first jump, more of the calls at intermediate σ̃, where a
    draw's mixture component — an image's layout — is decided; in high dimension the draws
    that end in the wrong component carry most of the error), except from 7 NFE in **very high dimension** (D ≥ 128):
    ``karras_trailing`` (ρ = 7), with nearly twice the calls above σ̃ ≈ 10 (7 to 4 at 20
    NFE). Why the dimension decides: for data of unit scale per coordinate, two draws lie
    ≈ √(2D) apart, so components are told apart at σ̃ ≈ √(D/2) — ≈ 6 at D = 64, ≈ 11 at
    D = 256; the two shapes' step densities cross between σ̃ ≈ 6 and 8 (on [0.002, 80]),
    i.e. near D = 128. Measured at 8–20 NFE (4096 draws): in 16–96 D ``ays_trailing`` sends
    as few or fewer draws to another component than ``karras_trailing`` (up to 9× fewer), in
    256 D 2–3× more, and 6 of 1024 where ``karras_trailing`` sends none
    (docs/solver_notes.md).

  - **a noise-predicting network** in high dimension (ε or score parameterisation without
    EDM preconditioning, :func:`predicts_noise` — DDPM, Stable Diffusion 1.x and most
    pretrained VP models; D ≥ 16): ``karras_trailing`` at every budget. Its
    :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/s` carries the network's error in ε̂ times
    σ̃ (up to ×150 on the VP SDE), so its PF-ODE is rough at large σ̃, where ρ = 7 puts more
    of the calls. On a VP-trained ε U-Net of the digits, ``ays_trailing`` had 1.3–4.7×
    diffusers' best error at 5–20 NFE and ``karras_trailing`` 0.51–1.84×; on a second one
    (cosine VP), trained before the rule was run on it, ``karras_trailing`` had 2–3.6× less
    error than ``ays_trailing`` at 5–12 NFE. On a 2-D ε MLP ``gits_trailing`` stayed 2–3.5×
    better than ``karras_trailing``, so low dimension keeps its rule (docs/benchmarks.md,
    "Trained ε-prediction networks"). Networks and oracles returning x̂0 or v̂ (EDM or
    consistency preconditioning included) keep the rules above.
  - **iPNDM's order for a noise-predicting network** (any D): 2 up to 8 NFE, 3 up to 20,
    4 above (:func:`noise_order`); other networks keep 4 throughout. A step adds
    Δσ̃·Σ_j c_j ε̂_{i−j}, and the equal-step Adams–Bashforth weights c of order
    p = 1, 2, 3, 4 amplify an error in ε̂ that changes from one node to the next by
    (Σ_j c_j²)^{1/2} = 1, 1.6, 2.4, 3.7. An exact ε̂ is nearly constant at large σ̃
    (ε ≈ x̃/σ̃); an ε-network's is not. With an exact state and history, the first three
    steps of the 10-NFE ``karras_trailing`` grid have 10–190× the EDM U-Net's local error on
    the linear-VP ε U-Net, and on its steps from σ̃ ≈ 50 to 13 order 3 has 2.5× order 2's
    error and order 4 6× (``benchmarks/local_error.py``). An x̂0-returning network's
    ε̂ = (x̃ − x̂0)/σ̃ carries its error divided by σ̃, and order 4 stays best or level on
    the EDM U-Net at every budget. On finer grids the truncation error that a higher order
    removes takes over: order 4 had 0.78–0.85× order 3's error at 30 NFE on four ε U-Nets.
    Measured on those four (docs/benchmarks.md, "iPNDM's order on noise-predicting
    networks"): within 0.7× the best anchor at 19 of their 28 cells at 5–20 NFE (order 4
    throughout: 14), at most 1.26× (order 4: 2.03×); order 4 loses by up to 3× order 3's
    error at 10–15 NFE.

  - **a noise-predicting network with its statistics** (D ≥ 16, 4–30 NFE, :data:`STATS_NFE`;
    DPM-Solver-v3's statistics given, ``sample(solver="auto", statistics=…)`` — `sdeflow
    sample`/`evaluate` and `serve` pass those `sdeflow ems` wrote into the checkpoint folder
    when they sample under the condition they were estimated for): DPM-Solver-v3 on
    ``gits_trailing``. The statistics — the network's own mean ∂x̂0/∂x and the linear trend
    of its x̂0 along its trajectories — take up the roughness at large σ̃ that
    ``karras_trailing`` spends its calls on, so GITS's one large first jump costs little. On
    four ε U-Nets of the digits (two trained after the rule was written down) 0.36–0.75× the
    error of the rule without statistics at 5–20 NFE (1.01× at one cell), 0.25–0.46× at 4 NFE
    and 0.22–1.10× at 25–30; ≤ 0.7× the best anchor at 25 of 28 cells at 5–20 NFE (18
    without). Not for x̂0 networks or oracles: the same rule for every model lost by up to
    1.57× on a held-out 48-D mixture.

  - **the lookahead first step** (``first_step="lookahead"``, :mod:`.first_step`) at 4–12
    NFE (:data:`LOOKAHEAD_NFE`), and at 4–8 NFE for a noise-predicting network
    (:data:`LOOKAHEAD_NOISE_NFE`): one network call at the second grid time serves the first
    two, so the budget runs ``nfe`` steps on the same shape instead of ``nfe − 1``. Measured
    against the plain start at the same NFE (docs/benchmarks.md, "The lookahead first step"):
    on 16 mixture problems and six U-Nets at those budgets, less error at most cells and
    ≤ 0.7× the best anchor at more of them; above 12 NFE one more step is worth least while
    approximating the first two nodes costs the same, and on a 256-D mixture with narrow
    components it sent 3 draws of 4096 into another component at 15–20 NFE (5–10× the
    error); on three weakly trained ε U-Nets it lost above 8 NFE (up to 1.9×).

* **Above 30 NFE**: iPNDM on the ``logsnr`` grid (every solver is near its asymptotic order
  there; log-SNR steps spread the error evenly).

History (docs/solver_notes.md, "Defaults by budget"): the first rules were chosen on our four
benchmark problems (2-D ring and 64-D mixture, EDM and VP); a held-out 256-D mixture with narrow
components showed iPNDM on ``ays`` losing by up to 27× at 20 NFE, and the second revision moved
to ``karras``; the third moved every shape to its trailing form; this fourth one keeps ``ays``
below D = 128 (both chosen on all seven benchmark problems, held-out ones included) and was
checked on two fresh problems designed before it was run on them (32-D narrow components under
EDM, 96-D unequal weights under VP; docs/benchmarks.md). The fifth (eighth session) gives
noise-predicting networks ``karras_trailing`` from D = 16: chosen on a linear-VP ε U-Net of the
digits, checked on a cosine-VP one trained before it was run on it; its first form (every D)
failed on a 2-D ε MLP. The sixth (ninth session) lowers iPNDM's order for noise-predicting
networks: chosen on those three ε networks; a sub-VP ε U-Net, trained after its first form
(⌈nfe/4⌉, order 4 from 13 NFE) was written down, kept the order 2/3 part and rejected order 4
at 15 NFE (2.2× order 3's error); the capped form was checked on a fourth, a linear-VP ε
U-Net trained longer from another seed; order 4 above 20 NFE was then measured on all four.
The seventh (twelfth session) gives a noise-predicting network DPM-Solver-v3 on
``gits_trailing`` at 4–30 NFE when its statistics are at hand: chosen on the better-trained
linear-VP ε U-Net; a form for every model was rejected on the held-out third mixture set, and
the ε form was checked on a sub-VP and a cosine-VP ε U-Net trained after it was written down.
The eighth (thirteenth session) adds the lookahead first step: its first form (every budget
4–30, every model) was rejected on held-out ε U-Nets, its second (ε networks only to 8 NFE)
on a held-out 256-D mixture at 15–20 NFE; the third, to 12 NFE, was checked on a fourth
mixture set and a v-prediction U-Net designed after it was written down.
A ninth form, ``karras_trailing`` also at 4–6 NFE from D = 128, was rejected on a fifth
held-out set (fourteenth session: 1.24–1.39× the error on a 160-D mixture at 4–6 NFE).
An exact score oracle (``GaussianMixture.denoiser(prediction="score")``) counts as
noise-predicting too: the rule cannot tell it from a network.
"""
from __future__ import annotations

__all__ = ["auto_config", "solver_options", "predicts_noise", "noise_order", "nfe_of", "HIGH_DIM",
           "WIDE_DIM", "STATS_NFE", "LOOKAHEAD_NFE", "LOOKAHEAD_NOISE_NFE"]

HIGH_DIM = 16  # data dimension from which the high-dimensional rule applies
WIDE_DIM = 128  # ... and from which its components are decided above σ̃ ≈ 8 (karras above 6 NFE)
DEFAULT_NFE = 20  # the budget of solver="auto" when no steps are given
STATS_NFE = range(4, 31)  # budgets (NFE) where an ε network's statistics are used
LOOKAHEAD_NFE = 12  # the lookahead first step up to this budget (x̂0/v̂ models) ...
LOOKAHEAD_NOISE_NFE = 8  # ... and up to this one for a noise-predicting network


def auto_config(sde, nfe: int, dim: int, noise_prediction: bool = False,
                statistics: bool = False) -> dict:
    """``dict(solver, steps, schedule, opts, denoise)`` for a budget of ``nfe`` network
    evaluations (final denoising included) for data of ``dim`` dimensions (module docstring);
    ``noise_prediction``: the network predicts ε (or the score) and x̂0 is derived from it
    (:func:`predicts_noise`); ``statistics``: DPM-Solver-v3's statistics of the model are at
    hand (``sdeflow ems``), which the rule for a noise-predicting network uses at
    :data:`STATS_NFE` (the caller passes them to the solver: ``opts`` does not hold them).
    ``sde`` is accepted for rules that depend on the process but no rule uses it yet: the same
    configuration is returned for every SDE."""
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"solver='auto' takes the NFE budget as steps: a positive integer, "
                         f"got {nfe!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if nfe == 1:
        # one call: a single deterministic DDIM step T → t_min with no final denoising; its
        # output s(t_min)·x̂0 + σ(t_min)·ε̂ ≈ x̂0 of the prior draw, since σ(t_min) is tiny
        return dict(solver="ddim", steps=1, schedule="uniform", opts={}, denoise=False)
    if nfe <= 3:
        return dict(solver="ddim", steps=nfe - 1, schedule="vp_trailing", opts={}, denoise=True)
    steps = nfe - 1  # one call per step plus the final denoising
    if statistics and noise_prediction and dim >= HIGH_DIM and nfe in STATS_NFE:
        return dict(solver="dpm_solver_v3", steps=steps, schedule="gits_trailing", opts={},
                    denoise=True)
    if nfe > 30:
        return dict(solver="ipndm", steps=steps, schedule="logsnr", opts={}, denoise=True)
    if dim < HIGH_DIM:
        shape = "gits"
    elif noise_prediction or nfe > 6 and dim >= WIDE_DIM:
        shape = "karras"
    else:
        shape = "ays"
    opts = {"order": noise_order(nfe)} if noise_prediction else {}
    if nfe <= (LOOKAHEAD_NOISE_NFE if noise_prediction else LOOKAHEAD_NFE):  # 1 call: t_0, t_1
        steps, opts = nfe, {**opts, "first_step": "lookahead"}
    return dict(solver="ipndm", steps=steps, schedule=f"{shape}_trailing", opts=opts, denoise=True)


def nfe_of(cfg: dict) -> int:
    """Network calls of a configuration (``auto_config``'s): one per step, the final x̂0 call,
    one fewer with the lookahead first step."""
    return cfg["steps"] + cfg["denoise"] - (cfg["opts"].get("first_step") == "lookahead")


def solver_options(cfg: dict, statistics=None) -> dict:
    """The options to run ``auto_config``'s choice ``cfg`` with: its own, and DPM-Solver-v3's
    ``statistics`` when that is the solver chosen (``cfg["opts"]`` never holds them)."""
    return {"statistics": statistics} if cfg["solver"] == "dpm_solver_v3" else dict(cfg["opts"])


def noise_order(nfe: int) -> int:
    """iPNDM's order for a noise-predicting network at a budget of 4–30 calls: 2 up to 8 NFE,
    3 up to 20, 4 above (module docstring)."""
    return 2 if nfe <= 8 else 3 if nfe <= 20 else 4


def predicts_noise(model) -> bool:
    r"""Whether ``model``'s x̂0 is derived from a noise prediction: an ε- (or score-)
    parameterised network without EDM preconditioning, whose
    :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/s` carries the network's error in ε̂ times
    σ̃ — ×150 at the top of the VP SDE's range (module docstring)."""
    return getattr(model, "prediction", "x0") in ("eps", "score") \
        and getattr(model, "precondition", None) is None

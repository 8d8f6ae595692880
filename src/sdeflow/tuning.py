r"""Tuned time-step schedules: for a given model, solver and step budget, move the grid times
to minimise the distance between the solver's answer and a high-accuracy reference answer
(in the spirit of "optimised" / learned schedules: Watson et al. 2021; Sabour et al. 2024;
Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs").

Parameterisation: the times after t_0 = T are placed in log-SNR λ = log(s/σ) as

.. math:: \lambda_k = \lambda(T) + \Big(\sum_{j\le k} w_j\Big)\,(\lambda(t_{min}) - \lambda(T)),
          \quad w = \mathrm{softmax}(\theta),

so every θ gives a valid, strictly decreasing grid. With N steps, θ ∈ R^N fixes the last time at
t_min; with ``free_end`` (default) θ ∈ R^{N+1} and the last weight is the unused gap, so the
final time t_N ≥ t_min is tuned too. The solver's answer is its denoised output x̂0(x_N, t_N) —
the same count of network calls as samplers that end with a step to σ = 0 (k-diffusion,
diffusers) — and moving t_N lets the tuner choose where that last denoising happens.

The loss is the RMS error of the denoised output on **calibration** noise draws against the
reference (adaptive RK45 at rtol = atol = 1e-6 by default). ``method="gradient"`` (default)
minimises it with Adam on θ, differentiating through the solver and the network (every
sdeflow solver is a differentiable function of its grid); ``method="pattern"`` is a
derivative-free pattern search for models one cannot differentiate. Both start from the best
named schedule and keep the best grid seen. Evaluate on noise that was *not* used for
calibration: :func:`tune_timesteps` reports the loss on a separate held-out draw too.

**Pool line search** (``calibration_pool``): the gradient search fits the draws that stay in
their mode — a draw the solver sends into another mode adds a large but flat error, nothing to
the gradient — so a tuned grid is more accurate on typical draws and can cross more often than a
named one. After it, the grids are compared on a large pool of prior draws (N, e.g. 4096;
references for ``pool_draws`` of them, half where the candidates disagree most, half at
random: :func:`pool_losses`), where the crossing rate is counted: first the base solver on
every named schedule, then every blend of the tuned grid and the ``pool_partners`` best of
those, pairwise, in log-SNR,

.. math:: \lambda_k(\alpha) = (1-\alpha)\,\lambda^{(a)}_k + \alpha\,\lambda^{(b)}_k,
          \quad \alpha \in \{\tfrac14, \tfrac12, \tfrac34\}

(:func:`blend_grids`; a convex combination of two decreasing grids is one) — a derivative-free
search along one-parameter families, few enough that a pool of thousands does not overfit; the
least-loss grid becomes the tuned result.

``coefficients=True`` tunes the solver with its grid (Shaul et al. 2024, "Bespoke
Non-Stationary Solvers"; S4S, Frankel et al. 2025): a one-call-per-step solver is read off as
x_j = a_j x_0 + Σ_k c_jk x̂0_k (:mod:`sdeflow.samplers.bespoke`) and written in step form

.. math:: x_{j+1} = \rho_j\,x_j + \sum_{k=j-w+1}^{j} w_{jk}\,\hat x_0(x_k, t_k),

(:func:`~sdeflow.samplers.bespoke.step_form`; for the exponential integrators
ρ_j = σ_{j+1}/σ_j and w holds the last ≤ 3 x̂0 weights); ρ_j is scaled by e^{δ_j} and the
``window`` w most recent weights of each step are shifted by s(t_{j+1})Δ_jk, with δ = Δ = 0
at the start, so the search starts from the named solver on the best named grid. The result
is the ``"bns"`` solver with the unrolled (a, c) — same NFE as the starting solver. It has
~(w + 1) parameters per step besides the grid, so it wants more calibration draws than a grid
(how many: docs/solver_notes.md).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor

from .progress import progress_bar
from .samplers import get_solver, sample
from .samplers.registry import Context
from .schedules import check_timesteps, ends_early, get_timesteps

__all__ = ["TunedSchedule", "tune_timesteps", "stratified_draws", "pool_losses",
           "choice_instability", "unseen_lead", "blend_grids", "choose_tuned",
           "timesteps_from_theta", "theta_from_timesteps", "config_label", "install",
           "installed", "installed_path", "INSTALLED_DIR"]


@dataclass
class TunedSchedule:
    """A tuned grid and how it was obtained; ``save``/``load`` as JSON."""

    solver: str
    steps: int
    timesteps: list
    sde: dict
    calibration_loss: float
    start_loss: float
    start_schedule: str
    # held-out losses: the untrimmed RMS error on the held-out draws (as ``_validate`` and
    # ``_fall_back`` compute them); ``heldout_loss`` is that of the *returned* configuration
    heldout_loss: float | None = None
    heldout_start_loss: float | None = None  # the starting (best named) grid with ``solver``
    kept_start: bool = False
    n_calibration: int = 0
    calibration_seed: int = 0
    evaluations: int = 0  # iterations (gradient) or solver runs (pattern) of the search
    # grids the pool line search ran over the whole calibration pool (0: no pool search)
    search_runs: int = 0
    solver_opts: dict = field(default_factory=dict)
    method: str = "pattern"
    free_end: bool = False
    base_solver: str | None = None
    fallback: str | None = None  # "solver(opts)/schedule" of the named configuration kept instead
    # held-out loss (same convention) of the best named configuration on the calibration draws
    heldout_best_named_loss: float | None = None
    best_named: str | None = None  # "solver(opts)/schedule" of that configuration
    pool: int = 0  # calibration/validation draws stratified from a pool this large (0: plain)
    # validation drawn *after* tuning from a pool this large, stratified by how much the
    # candidates disagree (0: the held-out draws were given); every candidate's held-out loss
    heldout_pool: int = 0
    heldout_losses: dict = field(default_factory=dict)
    # bootstrap probability that another candidate would have won on a re-drawn pool of that
    # size (:func:`choice_instability`); the pool grows until it is at most ``max_p_change``
    heldout_p_change: float | None = None
    # the chosen candidate's lead over the runner-up in units of ``unseen_draws`` unseen draws
    # with the largest error seen (:func:`unseen_lead`); the pool also grows while it is below
    # 1 (None: the check was off, or no candidate gave other answers)
    heldout_lead: float | None = None
    # pool line search (``calibration_pool``): the grid it chose ("tuned", a named schedule or
    # "a+α*b", a blend in log-SNR) and every candidate's RMS error estimated on the pool (the
    # tuned grid, its partners and the blends from the second round's references, the other
    # named schedules from the first's); ``calibration_loss`` is then the chosen grid's
    search_choice: str | None = None
    search_losses: dict = field(default_factory=dict)

    def save(self, path) -> Path:
        """Write the schedule as JSON (atomically). Solver options held in memory as
        :class:`~sdeflow.samplers.ems.ModelStatistics` are written beside it
        (``<name>.<option>.safetensors``) and named by their absolute path."""
        from .checkpoint import write_text_atomic
        from .samplers.ems import ModelStatistics
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        opts = dict(self.solver_opts)
        for key, value in opts.items():
            if isinstance(value, ModelStatistics):
                file = value.save(path.with_name(f"{path.stem}.{key}.safetensors"))
                opts[key] = str(file.resolve())
        try:
            text = json.dumps({**{f.name: getattr(self, f.name) for f in fields(self)},
                               "solver_opts": opts}, indent=2)
        except TypeError as e:
            raise ValueError(f"tuned schedule for {path}: a solver option is not JSON ({e}); give "
                             f"it as a number, a string or the path of a file") from None
        write_text_atomic(path, text)
        return path

    @classmethod
    def load(cls, path) -> "TunedSchedule":
        """Read a file written by :meth:`save`; one that is not such a file is a ValueError
        that names it."""
        try:
            d = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a tuned schedule (not JSON: {e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a tuned schedule (a JSON object is expected)")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)} in a tuned schedule")
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"{path}: not a tuned schedule ({e})") from None

    def tensor(self, sde=None) -> Tensor:
        """The grid as a float64 tensor (validated against ``sde`` when given)."""
        ts = torch.tensor(self.timesteps, dtype=torch.float64)
        if sde is not None:
            if sde.config() != self.sde:
                raise ValueError(f"schedule was tuned for SDE {self.sde}, not {sde.config()}")
            check_timesteps(sde, ts)
        return ts


#: the folder inside a checkpoint folder where ``tune-steps --install`` puts tuned schedules
INSTALLED_DIR = "tuned"


def installed_path(checkpoint, nfe: int) -> Path:
    """Where ``sdeflow tune-steps --install`` puts the tuned schedule of ``nfe`` network calls
    for ``checkpoint``: ``tuned/nfe<N>.json`` in its checkpoint folder, beside the weights it
    was tuned on (:func:`~sdeflow.checkpoint.checkpoint_folder`)."""
    from .checkpoint import checkpoint_folder
    return checkpoint_folder(checkpoint) / INSTALLED_DIR / f"nfe{int(nfe)}.json"


def install(res: TunedSchedule, model, checkpoint, x: Tensor) -> tuple[Path, int]:
    """Save ``res`` as ``checkpoint``'s installed schedule (:func:`installed_path`) for the
    network calls it makes, counted by running it once on the prior draw(s) ``x``: (path, NFE).
    The CLI's default sampler (no ``--solver``) uses it at that budget (:func:`installed`).
    Statistics that are the checkpoint folder's own (`sdeflow ems`) are not named in the file:
    readers take them from the folder, so a moved or copied run keeps working."""
    from dataclasses import replace

    from .samplers.ems import statistics_path
    with torch.no_grad():
        _, st = sample(model, x, solver=res.solver, timesteps=res.tensor(model.sde),
                       return_stats=True, **res.solver_opts)
    opts = dict(res.solver_opts)
    stats = opts.get("statistics")
    if isinstance(stats, (str, Path)) and Path(stats).resolve() == \
            statistics_path(checkpoint).resolve():  # found there wherever the run moves
        del opts["statistics"]
    return replace(res, solver_opts=opts).save(installed_path(checkpoint, st["nfe"])), st["nfe"]


def installed(checkpoint, nfe: int, sde) -> TunedSchedule | None:
    """The schedule ``tune-steps --install`` put in ``checkpoint``'s folder for ``nfe`` network
    calls, checked against the model's ``sde`` (None: there is none). A damaged file, or one
    tuned for another SDE, is a ValueError that names it."""
    path = installed_path(checkpoint, nfe)
    if not path.is_file():
        return None
    tuned = TunedSchedule.load(path)
    try:
        tuned.tensor(sde)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; delete it or install another with `sdeflow tune-steps "
                         f"--install`") from None
    return tuned


def _lams(sde, t_start: float, t_end: float) -> tuple[Tensor, Tensor]:
    f64 = torch.float64
    return (sde.log_snr(torch.tensor(t_start, dtype=f64)), sde.log_snr(torch.tensor(t_end, dtype=f64)))


def timesteps_from_theta(sde, theta: Tensor, t_start: float, t_end: float,
                         free_end: bool = False) -> Tensor:
    """Grid from θ (module docstring): len(θ) intervals ending exactly at t_end, or with
    ``free_end`` len(θ) − 1 intervals ending at some t_N ≥ t_end. Differentiable in θ."""
    lam0, lam1 = _lams(sde, t_start, t_end)
    pos = torch.softmax(theta.to(torch.float64), 0).cumsum(0)[:-1]
    ts = sde.t_from_log_snr(lam0 + pos * (lam1 - lam0)).to(torch.float64)
    head = torch.tensor([t_start], dtype=torch.float64)
    if free_end:
        return torch.cat([head, ts])
    return torch.cat([head, ts, torch.tensor([t_end], dtype=torch.float64)])


def theta_from_timesteps(sde, ts: Tensor, t_end: float | None = None,
                         min_gap: float = 1e-3) -> Tensor:
    """θ of a grid; with ``t_end`` (free-end form) the gap from ts[-1] down to t_end becomes the
    last weight, at least ``min_gap`` of the range so that the search can move it."""
    lam = sde.log_snr(ts.to(torch.float64))
    if t_end is None:
        w = (lam[1:] - lam[:-1]) / (lam[-1] - lam[0])
        return w.clamp_min(1e-12).log()
    lam1 = sde.log_snr(torch.tensor(t_end, dtype=torch.float64))
    w = torch.cat([lam[1:] - lam[:-1], (lam1 - lam[-1]).reshape(1)]) / (lam1 - lam[0])
    w[-1] = w[-1].clamp_min(min_gap)
    return w.clamp_min(1e-12).log()


def blend_grids(sde, a: Tensor, b: Tensor, alpha: float) -> Tensor:
    r"""The grid :math:`\lambda_k = (1-\alpha)\lambda^{(a)}_k + \alpha\lambda^{(b)}_k` in
    log-SNR between two grids of the same length that start at the same time (a convex
    combination of two increasing λ sequences increases, so the result is a valid decreasing
    grid; where both end at the same time, so does it)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"blend_grids needs two 1-D grids of the same length, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    lam = (1 - alpha) * sde.log_snr(a) + alpha * sde.log_snr(b)
    ts = sde.t_from_log_snr(lam).to(torch.float64)
    ts[0] = a[0]
    if a[-1] == b[-1]:
        ts[-1] = a[-1]
    return ts


#: how references are solved unless ``reference_opts`` says otherwise
REFERENCE = dict(solver="rk45", rtol=1e-6, atol=1e-6)


def tune_timesteps(model, x_cal: Tensor, *, solver: str = "dpmpp_2m", steps: int = 10,
                   method: str = "gradient", free_end: bool = True, coefficients: bool = False,
                   reference: Tensor | None = None, x_heldout: Tensor | None = None,
                   reference_heldout: Tensor | None = None,
                   start_schedules=("karras", "logsnr", "uniform", "quadratic"),
                   window: int | None = 3, max_evals: int = 400, lr: float = 0.05,
                   coef_scale: float = 0.2, validation_trim: float = 0.01,
                   step0: float = 0.5, min_step: float = 1e-3, reference_opts: dict | None = None,
                   cond: dict | None = None, calibration_seed: int = 0, progress: bool = False,
                   fallback: bool = True, calibration_weights: Tensor | None = None,
                   heldout_weights: Tensor | None = None, heldout_draws: int | None = None,
                   named_candidates: int = 3, heldout_start: int | None = None,
                   max_p_change: float = 0.1, unseen_draws: float = 3.0,
                   calibration_pool: Tensor | None = None, pool_partners: int = 3,
                   pool_draws: int = 512, **solver_opts) -> TunedSchedule:
    r"""Tune the ``steps``-interval grid of ``solver`` for ``model`` on calibration noise ``x_cal``
    (prior draws at T). ``reference`` is the accurate answer for ``x_cal`` (computed with
    ``reference_opts``, default RK45 at 1e-6, when not given). ``method``: ``"gradient"`` (Adam
    on θ with learning rate ``lr``, cosine-decayed; ``max_evals`` iterations of one forward and
    one backward pass) or ``"pattern"`` (``max_evals`` solver runs of coordinate pattern search
    with steps ``step0`` → ``min_step``). ``free_end`` tunes the final time too (module
    docstring).

    ``coefficients=True`` tunes the solver itself as well (gradient method only; module
    docstring): the result is a :func:`~sdeflow.samplers.bespoke.bns` solver whose step-form
    coefficients start as ``solver``'s on the current grid, :math:`\rho_j e^{\delta_j}` and
    :math:`w_{jk} + s(t_{j+1})\Delta_{jk}` for the ``window`` most recent k, with δ, Δ tuned
    jointly with θ (their learning rate is ``coef_scale``·``lr``).

    With ``x_heldout`` (separate validation draws) the result reports the start and
    tuned RMS errors on them, and keeps the starting grid and solver (``kept_start``) if tuning
    made the validation error worse. With ``fallback`` (default) it then also picks the best
    named one-call-per-step solver × named schedule at the same NFE (:data:`NAMED`; free-end
    schedules only with ``free_end``) on the *calibration* draws, as the tuned grid was chosen,
    and returns it (``fallback`` names it) when it beats the tuned result on the held-out
    draws — so tuning never returns a configuration worse on held-out draws than that named
    candidate — and ``solver="auto"``'s configuration at the same NFE is compared too
    (:func:`~sdeflow.samplers.auto.auto_config`; one-call-per-step solvers, 4–30 NFE): tuning
    never returns a configuration worse on the held-out draws than not tuning.
    ``heldout_loss`` is the returned configuration's untrimmed held-out RMS error,
    ``heldout_best_named_loss`` the candidate's. The comparison leaves out the worst ``validation_trim``
    fraction of draws of each: in high dimension a draw near the boundary between two modes
    lands in the other mode after almost any perturbation, and one such draw moves the RMS error
    of hundreds by more than the solver's typical error does (docs/solver_notes.md).

    ``calibration_weights`` / ``heldout_weights`` (non-negative, summing to 1; e.g. from
    :func:`stratified_draws`) make every loss the weighted mean squared error over the draws —
    an unbiased estimate of the error over the pool they were drawn from — and the held-out
    comparisons then trim nothing (the rare draws are in the set on purpose, at their weight).

    ``heldout_draws = n`` makes ``x_heldout`` a validation *pool* of N > n prior draws, used
    after tuning (:func:`_select_on_pool`): the candidates — the tuned result, its starting
    grid and (with ``fallback``) the ``named_candidates`` best named configurations on the
    calibration draws — are run on all N draws (no reference needed), the n draws where they
    disagree most with the tuned answer are taken with the rest sampled at random, as
    :func:`stratified_draws` weights them, and only those n get a reference. The candidate
    with the least weighted RMS error is returned. Why: a tuned grid can send a draw into
    another mode that no named solver sends there — an event rarer than 1/n is in no fixed
    validation set of n draws, but it makes the candidates disagree, so it is in this one
    (and counted at its weight 1/N), and the comparison is no longer blind to it.

    ``heldout_start = N0`` (< N) validates on the pool's first N0 draws first and doubles the
    prefix (references for n·size/N0 draws) while the choice is unstable — while the bootstrap
    probability that another candidate would win on a re-drawn pool of that size
    (:func:`choice_instability`) exceeds ``max_p_change`` — up to the whole pool; the cost
    grows only where a few rare draws decide the choice (``heldout_pool`` records the size used,
    ``heldout_p_change`` the probability there). The prefix also doubles while the chosen
    candidate's lead rests on the *absence* of rare draws (:func:`unseen_lead` with
    ``count=unseen_draws`` below 1, recorded as ``heldout_lead``; 0 turns the check off): a
    bootstrap resamples only the draws the pool holds, and a candidate that sends one draw in
    600 to another mode crosses on none of 4096 once in 1000 pools — the rule of three says
    zero of N only bounds its rate below 3/N.

    ``calibration_pool`` (prior draws, e.g. the pool :func:`stratified_draws` chose ``x_cal``
    from) runs the pool line search after the gradient or pattern search (module docstring):
    the base solver on every named schedule (free-end ones with ``free_end``) and the blends of
    the tuned grid with the ``pool_partners`` best of them are scored on the pool with
    references for ``pool_draws`` draws (:func:`pool_losses`: half where the candidates disagree
    most, half at random), and the least-loss grid is the tuned result (``search_choice``;
    ``search_losses`` every candidate's estimate; ``calibration_loss`` the chosen grid's on
    ``x_cal``, which can exceed the gradient search's: the pool decides). Not with
    ``coefficients`` (the coefficients belong to their grid); ``pool_partners=0`` scores the
    tuned grid against the named ones only. Validation then treats the result as the tuned
    one."""
    _check_request(solver, steps, method, coefficients, window)
    from .cld.model import is_cld
    if is_cld(model):
        raise TypeError("tuning works on Denoiser models, not on a CLD model (sample it with "
                        "its own grids: sdeflow.cld.sample_cld)")
    cond = cond or {}
    _check_pool(x_heldout, heldout_draws, reference_heldout, heldout_weights, cond, x_cal)
    if heldout_start is not None and (heldout_draws is None
                                      or not heldout_draws < heldout_start <= len(x_heldout)):
        raise ValueError(f"heldout_start ({heldout_start}) needs heldout_draws and must lie "
                         f"between heldout_draws ({heldout_draws}) + 1 and the pool size "
                         f"{None if x_heldout is None else len(x_heldout)}")
    if not 0.0 <= max_p_change <= 1.0:
        raise ValueError(f"max_p_change must be a probability in [0, 1], got {max_p_change}")
    if not 0.0 <= unseen_draws < math.inf:
        raise ValueError(f"unseen_draws must be a finite count ≥ 0, got {unseen_draws}")
    _check_search_pool(calibration_pool, pool_partners, pool_draws, coefficients, x_cal, cond)
    ref_opts = {**REFERENCE, **(reference_opts or {})}
    with torch.no_grad():
        if reference is None:
            reference = sample(model, x_cal, cond=cond, **ref_opts)
        if x_heldout is not None and reference_heldout is None and heldout_draws is None:
            reference_heldout = sample(model, x_heldout, cond=cond, **ref_opts)
    obj = _Objective(model, solver, steps, solver_opts, cond, free_end, coefficients, window,
                     coef_scale)
    cal = (x_cal, reference, _weights(calibration_weights, x_cal, "calibration_weights"))
    starts = {name: obj.start(get_timesteps(model.sde, steps, name), *cal)
              for name in start_schedules}
    start_name = min(starts, key=lambda k: starts[k][0])
    params, best, evals = _search(obj, cal, starts[start_name][1], len(starts), method,
                                  max_evals, progress, lr=lr, step0=step0, min_step=min_step)
    search = None
    if calibration_pool is not None:
        params, search = _pool_search(obj, params, calibration_pool, pool_draws, pool_partners,
                                      ref_opts, torch.Generator().manual_seed(calibration_seed))
        best = _rms(obj.per_draw(params, *cal[:2]), cal[2])  # the chosen grid's
    ts_list, name, opts = obj.record(params)
    out = TunedSchedule(solver=name, steps=steps, timesteps=ts_list, sde=model.sde.config(),
                        calibration_loss=best, start_loss=starts[start_name][0],
                        start_schedule=start_name, n_calibration=len(x_cal),
                        calibration_seed=calibration_seed, evaluations=evals,
                        solver_opts=opts, method=method, free_end=free_end, base_solver=solver)
    if search is not None:
        out.search_choice, out.search_losses = search
        out.search_runs = len(out.search_losses)
    if x_heldout is not None and heldout_draws is not None:
        _select_on_pool(out, obj, params, (start_name, starts[start_name][2]), cal, x_heldout,
                        heldout_draws, ref_opts, named_candidates,
                        torch.Generator().manual_seed(calibration_seed + 1),
                        start_size=heldout_start, max_p_change=max_p_change,
                        unseen_draws=unseen_draws, fallback=fallback)
    elif x_heldout is not None:
        heldout = (x_heldout, reference_heldout,
                   _weights(heldout_weights, x_heldout, "heldout_weights"))
        _validate(out, obj, params, starts[start_name][2], heldout, validation_trim)
        if fallback:
            _fall_back(out, obj, cal, heldout, validation_trim)
    return out


def stratified_draws(model, x_pool: Tensor, n: int, *, solver: str = "dpmpp_2m", steps: int = 10,
                     hard: float = 0.5, cond: dict | None = None,
                     generator: torch.Generator | None = None,
                     solver_opts: dict | None = None) -> tuple[Tensor, Tensor]:
    r"""Choose ``n`` calibration draws from a pool of prior draws ``x_pool`` (N of them),
    stratified by how hard they are for ``solver`` at ``steps`` steps, with weights that keep
    the loss an unbiased estimate of the error over the whole pool.

    Why: in high dimension a few draws start near the boundary between two modes' basins; the
    solver sends them into the wrong mode and they carry most of the RMS error, but a plain
    sample of 128 draws holds few or none of them, and a draw that has already crossed adds
    nothing to the gradient (its error is flat in the grid). Stratifying puts the draws near
    the separatrix into every calibration set.

    Hardness, with no reference solution needed: :math:`h_i = \lVert \hat x_{steps}(x_i) -
    \hat x_{4\,steps}(x_i)\rVert^2`, the change of the solver's denoised answer when its
    steps (on the SDE's default schedule) are quadrupled — an estimate of its error there
    (N·5·steps network calls, no gradients). The ``k = round(hard·n)`` hardest draws are taken
    with weight 1/N each; the other n − k are a uniform sample (``generator``) of the
    remaining N − k, each with weight (N − k)/((n − k)·N). For any per-draw error e_i,
    :math:`\sum_j w_j e_j` is then an unbiased estimate of :math:`\frac1N \sum_i e_i` (the
    hard stratum is enumerated, the rest is a simple random sample), with lower variance than
    n plain draws when the error concentrates on the hard draws.

    ``solver_opts`` go to the solver (e.g. DPM-Solver-v3's ``statistics``).

    Returns ``(index, weights)``: ``x_pool[index]`` are the draws (with ``cond`` indexed the
    same way), ``weights`` sum to 1 — for :func:`tune_timesteps`'s ``calibration_weights`` /
    ``heldout_weights``."""
    N = len(x_pool)
    if not 1 <= n <= N:
        raise ValueError(f"n must be between 1 and the pool size {N}, got {n}")
    if not 0.0 <= hard <= 1.0:
        raise ValueError(f"hard must be a fraction in [0, 1], got {hard}")
    with torch.no_grad():
        opts = solver_opts or {}
        coarse = sample(model, x_pool, solver=solver, steps=steps, cond=cond, **opts)
        fine = sample(model, x_pool, solver=solver, steps=4 * steps, cond=cond, **opts)
    return _stratify((coarse - fine).pow(2).flatten(1).sum(1).cpu(), n, hard, generator)


def _stratify(h: Tensor, n: int, hard: float, generator: torch.Generator | None):
    """(index, weights) of n of the N scores ``h``: the ``round(hard·n)`` largest with weight
    1/N, a uniform sample of the rest with weight (N − k)/((n − k)·N) (:func:`stratified_draws`)."""
    N = len(h)
    k = min(round(hard * n), n - 1) if n < N else n
    order = h.argsort(descending=True)
    top, rest = order[:k], order[k:]
    pick = rest[torch.randperm(len(rest), generator=generator)[:n - k]]
    w = torch.cat([torch.full((k,), 1.0 / N, dtype=torch.float64),
                   torch.full((n - k,), (N - k) / ((n - k) * N) if n > k else 0.0,
                              dtype=torch.float64)])
    return torch.cat([top, pick]), w


def _check_request(solver: str, steps: int, method: str, coefficients: bool, window) -> None:
    info = get_solver(solver)
    if info.kind != "ode" or info.adaptive:
        raise ValueError(f"tuning needs a fixed-step ODE solver; {solver!r} is "
                         f"{'adaptive' if info.adaptive else info.kind}")
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    if method not in ("gradient", "pattern"):
        raise ValueError(f"unknown tuning method {method!r}; choices: ['gradient', 'pattern']")
    if coefficients and method != "gradient":
        raise ValueError("tuning the coefficients needs method='gradient'")
    if window is not None and window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")


class _Objective:
    """What is tuned and how it is scored: params p = (θ, δ, Δ) (module docstring) → grid,
    solver and options; per-draw mean squared errors of the denoised output vs a reference."""

    def __init__(self, model, solver: str, steps: int, solver_opts: dict, cond: dict,
                 free_end: bool, coefficients: bool, window: int | None, coef_scale: float):
        self.model, self.solver, self.steps, self.opts, self.cond = model, solver, steps, \
            solver_opts, cond
        self.free_end, self.coefficients, self.coef_scale = free_end, coefficients, coef_scale
        sde = model.sde
        self.t_start, self.t_end = float(sde.T), float(sde.t_min)
        self.n_theta = steps + 1 if free_end else steps
        rows, cols = torch.tril_indices(steps, steps)
        if window is not None:
            band = rows - cols < window
            rows, cols = rows[band], cols[band]
        self.rows, self.cols = rows, cols

    def unpack(self, p: Tensor):
        """params → (grid, solver name, its options)."""
        from .samplers.bespoke import linear_coefficients, step_form, unrolled_form
        sde, n, steps = self.model.sde, self.n_theta, self.steps
        ts = timesteps_from_theta(sde, p[:n], self.t_start, self.t_end, free_end=self.free_end)
        if not self.coefficients:
            return ts, self.solver, self.opts
        a, c = step_form(*linear_coefficients(sde, self.solver, ts, **self.opts))
        a = a * torch.exp(self.coef_scale * p[n:n + steps])
        delta = torch.zeros(steps, steps, dtype=c.dtype, device=c.device)
        delta = delta.index_put((self.rows, self.cols), self.coef_scale * p[n + steps:])
        return ts, "bns", dict(zip("ac", unrolled_form(a, c + sde.s(ts[1:])[:, None] * delta)))

    def answer(self, ts, name, opts, x: Tensor) -> Tensor:
        """The solver's denoised output x̂0(x_N, t_N) from prior draws ``x``."""
        ts = ts.to(dtype=x.dtype, device=x.device)
        ctx = Context(cond=self.cond, final_denoise=ends_early(self.model.sde, ts))  # as sample()
        out = get_solver(name).fn(self.model, x, ts, ctx, **opts)
        return self.model.x0(out, ts[-1], **self.cond)

    def error(self, ts, name, opts, x: Tensor, ref: Tensor) -> Tensor:
        """Per-draw mean squared error of the solver's denoised output."""
        return _mse(self.answer(ts, name, opts, x), ref)

    def per_draw(self, p: Tensor | None, x: Tensor, ref: Tensor, ts=None) -> Tensor:
        """Per-draw errors of params ``p`` (or of the base solver on ``ts``), no gradient."""
        with torch.no_grad():
            run = self.unpack(p) if ts is None else (ts, self.solver, self.opts)
            return self.error(*run, x, ref)

    def start(self, ts: Tensor, x: Tensor, ref: Tensor, w: Tensor | None):
        """(loss, params, grid) of a named grid with the solver's own coefficients."""
        th = theta_from_timesteps(self.model.sde, ts, self.t_end if self.free_end else None)
        extra = self.steps + len(self.rows) if self.coefficients else 0
        th = torch.cat([th, torch.zeros(extra, dtype=th.dtype)])
        return _rms(self.per_draw(None, x, ref, ts=ts), w), th, ts

    def record(self, p: Tensor):
        """params → JSON-ready (grid, solver name, options)."""
        ts, name, opts = self.unpack(p.detach())
        return ts.tolist(), name, {k: (v.tolist() if torch.is_tensor(v) else v)
                                   for k, v in opts.items()}


def _search(obj: _Objective, cal, params0: Tensor, evals: int, method: str, max_evals: int,
            progress: bool, **search_opts):
    """Run the search from ``params0``; returns (params, calibration loss, evaluations)."""
    x, ref, w = cal

    def rmse(p: Tensor) -> Tensor:
        e = obj.error(*obj.unpack(p), x, ref)
        return (e.mean() if w is None else (w.to(e) * e).sum()).sqrt()

    def loss(p: Tensor) -> float:
        return _rms(obj.per_draw(p, x, ref), w)
    best = loss(params0)
    evals += 1
    bar = progress_bar(total=max_evals, initial=evals,
                       desc=f"tuning {obj.solver} ({obj.steps} steps)") if progress else None
    params = params0
    if len(params) > 1:
        search = _adam if method == "gradient" else _pattern
        params, best, evals = search(rmse, loss, params0, best, evals, max_evals, bar,
                                     **search_opts)
    if bar is not None:
        bar.close()
    return params, best, evals


def _validate(out: TunedSchedule, obj: _Objective, params: Tensor, ts0: Tensor, heldout,
              trim: float) -> None:
    """Held-out losses of the tuned and the starting grid into ``out``; keep the start if the
    tuned one is worse on the held-out draws (leaving out the worst ``trim`` of each)."""
    x, ref, w = heldout
    tuned, start = obj.per_draw(params, x, ref), obj.per_draw(None, x, ref, ts=ts0)
    out.heldout_loss, out.heldout_start_loss = _rms(tuned, w), _rms(start, w)
    if _rms(tuned, w, trim) > _rms(start, w, trim):
        # the tuned grid fitted the calibration draws' outliers, not the solver's error:
        # keep the starting schedule (validation on draws the search never saw)
        out.timesteps = ts0.tolist()
        out.solver, out.solver_opts, out.kept_start = obj.solver, dict(obj.opts), True
        out.heldout_loss = out.heldout_start_loss  # the returned configuration's


#: the named configurations a tuned result must beat on held-out draws (one call per step)
NAMED = (("dpmpp_2m", {}), ("dpmpp_3m", {}), ("unipc", {}), ("unipc", dict(order=3)),
         ("deis", {}), ("ipndm", {}), ("ddim", {}))


def _fall_back(out: TunedSchedule, obj: _Objective, cal, heldout, trim: float) -> None:
    """Choose the best named solver × schedule at the same steps on the *calibration* draws
    (as the tuned grid was), then return it instead of ``out`` when its (trimmed) held-out RMS
    error is lower than the tuned result's (:func:`tune_timesteps`). Free-end schedules take
    part only when ``obj.free_end``."""
    if obj.solver in MULTI_CALL:
        return  # several calls per step: the named one-call solvers would use another NFE
    x, ref, w = heldout
    name, opts, schedule = _rank_named(obj, cal)[0]
    cands = {config_label(name, opts, schedule): (_named_grid(obj, schedule), name, opts)}
    cands.update(_auto_candidate(obj, x[0].numel()))
    with torch.no_grad():
        ts = torch.tensor(out.timesteps, dtype=torch.float64)
        tuned = obj.error(ts, out.solver, _tensors(out.solver_opts), x, ref)
        errors = {k: obj.error(*c, x, ref) for k, c in cands.items()}
    best = min(errors, key=lambda k: _rms(errors[k], w, trim))
    out.heldout_best_named_loss = _rms(errors[best], w)
    out.heldout_loss = _rms(tuned, w)
    out.best_named = best
    if _rms(errors[best], w, trim) < _rms(tuned, w, trim):
        grid, out.solver, named_opts = cands[best]
        out.solver_opts, out.timesteps = dict(named_opts), grid.tolist()
        out.steps = len(grid) - 1  # auto's lookahead runs one more step on the same calls
        out.heldout_loss = out.heldout_best_named_loss
        out.fallback = best


def _rank_named(obj: _Objective, cal, distinct: bool = False) -> list[tuple[str, dict, str]]:
    """Every named solver × named schedule at ``obj.steps`` steps, (solver, options,
    schedule), best first by the (weighted) RMS error on the calibration draws ``cal``.
    ``distinct``: drop a configuration whose per-draw calibration errors all equal those of a
    better-ranked one — the same answers under another name (e.g. DPM-Solver++ 2M and 3M on two
    steps, where 3M has no history to use), which would waste a validation slot."""
    with torch.no_grad():
        scored = []
        for i, ((name, opts), schedule) in enumerate(
                (c, s) for c in NAMED for s in _named_schedules(obj)):
            e = obj.error(_named_grid(obj, schedule), name, opts, *cal[:2])
            scored.append((_rms(e, cal[2]), i, e, (name, opts, schedule)))
    scored.sort(key=lambda r: r[:2])
    kept: list = []
    for *_, e, c in scored:
        if not (distinct and any(torch.equal(e, k) for k, _ in kept)):
            kept.append((e, c))
    return [c for _, c in kept]


def config_label(name: str, opts: dict, schedule: str) -> str:
    """``solver(opts)/schedule``, as ``TunedSchedule.best_named`` / ``fallback`` name it; a file
    option (DPM-Solver-v3's statistics) by its file name, an object by its type — the one "/"
    of a label is the schedule's."""
    def text(v) -> str:
        if isinstance(v, (str, Path)) and ("/" in str(v) or "\\" in str(v)):
            return Path(v).name
        return str(v) if isinstance(v, (str, int, float, bool, type(None))) else type(v).__name__
    label = ", ".join(f"{k}={text(v)}" for k, v in opts.items())
    return f"{name}{f'({label})' if label else ''}/{schedule}"


def _check_pool(x_pool, n, reference, weights, cond: dict, x_cal: Tensor) -> None:
    """``heldout_draws`` needs a held-out *pool* (more than n draws, no reference or weights
    of its own: they are chosen and weighted after tuning) and conditioning shared by all draws."""
    if n is None:
        return
    if x_pool is None:
        raise ValueError("heldout_draws needs x_heldout: the pool of prior draws to choose from")
    if not 1 <= n < len(x_pool):
        raise ValueError(f"heldout_draws must be between 1 and the pool size {len(x_pool)} - 1 "
                         f"(x_heldout is the pool), got {n}")
    if reference is not None or weights is not None:
        raise ValueError("with heldout_draws the validation draws, their references and "
                         "weights are chosen from the pool after tuning: give neither "
                         "reference_heldout nor heldout_weights")
    if x_pool.shape[1:] != x_cal.shape[1:]:
        raise ValueError(f"x_heldout draws have shape {tuple(x_pool.shape[1:])}, the "
                         f"calibration draws {tuple(x_cal.shape[1:])}")
    _check_shared_cond(cond, "a validation pool", " (give x_heldout of the calibration's size "
                       "and no heldout_draws)")


def _check_shared_cond(cond: dict, what: str, hint: str = "") -> None:
    """Pool draws are run in chunks of any size: their conditioning must be shared by all."""
    per_draw = [k for k, v in cond.items() if torch.is_tensor(v) and v.dim() and len(v) > 1]
    if per_draw:
        raise ValueError(f"{what} needs conditioning shared by every draw; {per_draw} hold one "
                         f"entry per draw{hint}")


def _check_search_pool(pool, partners: int, n: int, coefficients: bool, x_cal: Tensor,
                       cond: dict) -> None:
    if pool is None:
        return
    if coefficients:
        raise ValueError("calibration_pool (the pool line search over grids) does not work with "
                         "coefficients=True: a BNS solver's coefficients belong to its grid")
    if not torch.is_tensor(pool) or pool.shape[1:] != x_cal.shape[1:]:
        raise ValueError(f"calibration_pool must be prior draws shaped like x_cal "
                         f"(N, {', '.join(map(str, x_cal.shape[1:]))}), got "
                         f"{tuple(pool.shape) if torch.is_tensor(pool) else type(pool).__name__}")
    if not 1 <= n < len(pool):
        raise ValueError(f"pool_draws must be between 1 and the pool size {len(pool)} - 1, "
                         f"got {n}")
    if not (isinstance(partners, int) and partners >= 0):
        raise ValueError(f"pool_partners must be an integer ≥ 0, got {partners!r}")
    if pool.device != x_cal.device:
        raise ValueError(f"calibration_pool is on {pool.device}, the calibration draws on "
                         f"{x_cal.device}: put both where the model runs")
    _check_shared_cond(cond, "the pool line search (calibration_pool)")


#: blend weights α of the pool line search (:func:`blend_grids`)
BLENDS = (0.25, 0.5, 0.75)


def _pool_search(obj: _Objective, params: Tensor, pool: Tensor, n: int, partners: int,
                 ref_opts: dict, generator: torch.Generator, chunk: int = 1024):
    """The pool line search (module docstring): (params of the chosen grid, (its label, every
    candidate's estimated pool RMS)). Every candidate is held as params, so that the grid
    scored is the grid returned."""
    sde = obj.model.sde
    t_end = obj.t_end if obj.free_end else None
    reference_at = _references(obj, pool, ref_opts, chunk)
    answers: dict = {}  # label → answers on the pool, kept for the second round

    def score(cands: dict) -> dict:
        with torch.no_grad():
            for k, p in cands.items():
                if k not in answers:
                    answers[k] = torch.cat([obj.answer(*obj.unpack(p), xb)
                                            for xb in pool.split(chunk)])
            errors, w = _pool_errors({k: answers[k] for k in cands}, reference_at, n,
                                     generator=generator)
        return {k: _rms(e, w) for k, e in errors.items()}

    def as_params(ts: Tensor) -> Tensor:  # exact: a grid ending at t_min keeps its end
        return theta_from_timesteps(sde, ts, t_end, min_gap=0.0)
    cands = {"tuned": params.detach()}
    cands.update((schedule, as_params(_named_grid(obj, schedule)))
                 for schedule in _named_schedules(obj))
    first = score(cands)
    grids = {k: obj.unpack(cands[k])[0] for k in
             ["tuned"] + sorted((k for k in cands if k != "tuned"), key=first.get)[:partners]}
    for k in set(answers) - set(grids):
        del answers[k]  # only the partners' answers are used again
    blends = {}
    for i, a in enumerate(grids):
        for b in list(grids)[i + 1:]:
            for alpha in BLENDS:
                blends[f"{a}+{alpha}*{b}"] = as_params(blend_grids(sde, grids[a], grids[b], alpha))
    losses = score({**{k: cands[k] for k in grids}, **blends}) if blends else first
    cands.update(blends)
    best = min(losses, key=lambda k: (losses[k], k != "tuned"))
    return cands[best], (best, {**first, **losses})


def _select_on_pool(out: TunedSchedule, obj: _Objective, params: Tensor, start, cal,
                    pool: Tensor, n: int, ref_opts: dict, n_named: int,
                    generator: torch.Generator, hard: float = 0.5, chunk: int = 1024,
                    start_size: int | None = None, max_p_change: float = 0.1,
                    unseen_draws: float = 3.0, fallback: bool = True) -> None:
    """Validate on ``n`` draws chosen from ``pool`` after tuning (:func:`tune_timesteps`,
    ``heldout_draws``) and return the best candidate in ``out``.

    Candidates: the tuned result, the base solver on its starting grid, and with
    ``fallback`` the ``n_named`` best distinct named configurations on the calibration draws
    and ``solver="auto"``'s configuration (neither for multi-call solvers). Their answers on
    the N pool draws (N·NFE network calls each, no gradients) go to
    :func:`pool_losses`, which solves the reference (``ref_opts``) for n of them. With
    ``start_size`` the pool is used in doubling prefixes from that size (n growing with it),
    answers computed for the new draws only, until :func:`choice_instability` is at most
    ``max_p_change`` and the chosen candidate's lead covers ``unseen_draws`` unseen rare draws
    (:func:`unseen_lead`)."""
    start_name, ts0 = start
    start_label = config_label(obj.solver, obj.opts, start_name)
    cands = {"tuned": obj.unpack(params.detach()), start_label: (ts0, obj.solver, obj.opts)}
    if fallback and obj.solver not in MULTI_CALL:
        for name, opts, schedule in _rank_named(obj, cal, distinct=True)[:n_named] if n_named \
                else []:  # ranking runs every named configuration: skip it when none is wanted
            cands.setdefault(config_label(name, opts, schedule),
                             (_named_grid(obj, schedule), name, opts))
        for label, c in _auto_candidate(obj, pool[0].numel()).items():
            cands.setdefault(label, c)
    sizes = [len(pool)] if start_size is None else _doublings(start_size, len(pool))
    answers: dict = {k: [] for k in cands}
    reference_at = _references(obj, pool, ref_opts, chunk)  # kept across the doublings
    done = 0
    for size in sizes:
        with torch.no_grad():
            for k, c in cands.items():
                answers[k] += [obj.answer(*c, xb) for xb in pool[done:size].split(chunk)]
            done = size
            errors, w = _pool_errors({k: torch.cat(a) for k, a in answers.items()},
                                     reference_at, min(n * size // sizes[0], size - 1),
                                     hard=hard, generator=generator)
        p_change = choice_instability(errors, w, generator=generator)
        lead = unseen_lead(errors, w, size, count=unseen_draws) if unseen_draws else math.inf
        if p_change <= max_p_change and lead >= 1.0:
            break
    losses = {k: _rms(e, w) for k, e in errors.items()}
    best = min(losses, key=lambda k: (losses[k], k != "tuned"))
    out.heldout_pool, out.heldout_losses, out.heldout_p_change = size, losses, p_change
    out.heldout_lead = lead if math.isfinite(lead) else None
    out.heldout_start_loss = losses[start_label]
    named = [k for k in losses if k != "tuned"]
    if named:
        out.best_named = min(named, key=lambda k: losses[k])
        out.heldout_best_named_loss = losses[out.best_named]
    out.heldout_loss = losses[best]
    if best == "tuned":
        return
    ts, name, opts = cands[best]
    out.timesteps, out.solver, out.steps = ts.tolist(), name, len(ts) - 1
    out.solver_opts = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in opts.items()}
    if best == start_label:
        out.kept_start = True
    else:
        out.fallback = best


def _references(obj: _Objective, pool: Tensor, ref_opts: dict, chunk: int):
    """``reference_at(idx)`` → the reference answers of pool draws ``idx``, each solved once
    (``ref_opts``, in chunks) and kept for later calls."""
    refs: dict = {}  # pool index → reference answer

    def reference_at(idx: Tensor) -> Tensor:
        new = [i for i in idx.tolist() if i not in refs]
        if new:
            x = pool[torch.tensor(new, device=pool.device)]
            refs.update(zip(new, torch.cat([sample(obj.model, xb, cond=obj.cond, **ref_opts)
                                            for xb in x.split(chunk)])))
        return torch.stack([refs[i] for i in idx.tolist()])
    return reference_at


def _doublings(start: int, N: int) -> list[int]:
    """start, 2·start, 4·start, … up to N (N always last)."""
    sizes = [start]
    while sizes[-1] < N:
        sizes.append(min(2 * sizes[-1], N))
    return sizes


def pool_losses(answers: dict, reference, pool: Tensor, n: int, *, base: str = "tuned",
                hard: float = 0.5, generator: torch.Generator | None = None) -> dict:
    r"""Estimated RMS errors over a pool of N prior draws of several candidates' answers
    (``answers``: name → N answers) from references of only n of the draws
    (``reference(x)`` → the accurate answers for draws ``x``).

    The n draws are :func:`_stratify`'s choice on the disagreement with candidate ``base``,
    :math:`d_i = \max_c \lVert \hat x^{(c)}_i - \hat x^{(base)}_i\rVert^2`: the
    k = round(hard·n) largest enumerated at weight 1/N, the rest a uniform sample of the others.
    Each weighted MSE is an unbiased estimate of the candidate's pool MSE, and when fewer than k
    draws disagree at all, the *differences* between candidates are exact: a draw outside the
    enumerated stratum has the same error under every candidate. So a rare draw that one
    candidate sends to another mode — one in N, absent from almost every plain validation set
    — decides the comparison as it does over the pool. Non-finite answers count as the largest
    disagreement (and an infinite loss)."""
    errors, w = _pool_errors(answers, lambda idx: reference(pool[idx.to(pool.device)]), n,
                             base=base, hard=hard, generator=generator)
    return {k: _rms(e, w) for k, e in errors.items()}


def choose_tuned(model, candidates: dict, x_pool: Tensor, n: int = 512, *,
                 reference_opts: dict | None = None, cond: dict | None = None,
                 generator: torch.Generator | None = None, chunk: int = 1024,
                 progress: bool = False) -> tuple[str, dict]:
    """Choose among several tuned results for one budget — e.g. one ``tune-steps`` file per
    base solver, and a BNS one — on **one common** validation pool: ``candidates`` maps a label
    to a :class:`TunedSchedule`; each is run on the N prior draws ``x_pool`` and
    :func:`pool_losses` estimates its RMS error there from references (``reference_opts``,
    default RK45 at 1e-6) for ``n`` draws, half where they disagree most, half at random.
    Returns (the least-loss label, every label's loss).

    Why not the files' own ``heldout_loss``: each is estimated on other reference draws, and
    the least of several noisy estimates favours the file whose estimate happened to be low
    (docs/benchmarks.md, "The pool line search": one configuration estimated at 0.086–0.140 in
    four files of one cell). Use draws that none of the files was tuned or validated on.
    ``progress``: a bar over the candidates' and the references' chunks of ``chunk`` draws."""
    if not candidates:
        raise ValueError("choose_tuned needs at least one tuned result")
    if not 1 <= n < len(x_pool):
        raise ValueError(f"n must be between 1 and the pool size {len(x_pool)} - 1, got {n}")
    _check_shared_cond(cond or {}, "choose_tuned")
    sde = model.sde
    ref_opts = {**REFERENCE, **(reference_opts or {})}

    def run(res, x, **kw):
        return sample(model, x, solver=res.solver, timesteps=res.tensor(sde), cond=cond,
                      **_tensors(res.solver_opts), **kw)
    from .progress import progress_bar
    with torch.no_grad():
        nfe = {label: run(res, x_pool[:1], return_stats=True)[1]["nfe"]
               for label, res in candidates.items()}
        if len(set(nfe.values())) > 1:
            raise ValueError(f"the tuned results spend different numbers of network calls "
                             f"({nfe}): compare results for one budget")
        chunks = x_pool.split(chunk)
        with progress_bar(total=len(candidates) * len(chunks) + math.ceil(n / chunk),
                          desc="choose among tuned", disable=not progress) as bar:
            def each(xs, fn):
                out = []
                for xb in xs:
                    out.append(fn(xb))
                    bar.update(1)
                return torch.cat(out)
            answers = {label: each(chunks, lambda xb, res=res: run(res, xb))
                       for label, res in candidates.items()}
            losses = pool_losses(answers, lambda x: each(
                x.split(chunk), lambda xb: sample(model, xb, cond=cond, **ref_opts)), x_pool, n,
                base=next(iter(answers)), generator=generator)
    return min(losses, key=losses.get), losses


def _pool_errors(answers: dict, reference_at, n: int, *, base: str = "tuned",
                 hard: float = 0.5, generator: torch.Generator | None = None):
    """(name → per-draw MSE on the n chosen draws, their weights): :func:`pool_losses`;
    ``reference_at(idx)`` → the references of the pool draws ``idx``."""
    first = answers[base]
    d = torch.stack([(a - first).pow(2).flatten(1).sum(1) for a in answers.values()]).amax(0)
    idx, w = _stratify(torch.nan_to_num(d, nan=math.inf).cpu(), n, hard, generator)
    ref = reference_at(idx)
    idx, w = idx.to(first.device), w.to(ref.device)
    return {k: _mse(a[idx], ref) for k, a in answers.items()}, w


def choice_instability(errors: dict, w: Tensor, *, replicates: int = 400,
                       generator: torch.Generator | None = None) -> float:
    r"""The probability that another candidate would have the least loss on a re-drawn pool.

    ``errors``: name → per-draw errors :math:`e_i` on the same validation draws, ``w`` their
    weights (:func:`pool_losses`' stratified draws). Each of ``replicates`` Poisson-bootstrap
    resamplings multiplies every draw's weight by :math:`m_i \sim \mathrm{Poisson}(1)` and
    scores each candidate by :math:`\sum_i m_i w_i e_i / \sum_i m_i w_i`; the result is the
    fraction whose best candidate (ties to ``"tuned"``, then the first) gives other answers
    than the one chosen on the draws themselves. Where a few rare draws decide the choice —
    a candidate that sends one draw in a thousand into another mode — it is large: a larger
    pool is needed."""
    e, wd, tie, chosen = _choice(errors, w)
    m = torch.poisson(torch.ones(replicates, len(wd), dtype=torch.float64), generator=generator)
    picks = [_argmin_first(_weighted(e, m[r] * wd), tie) for r in range(replicates)]
    differs = torch.tensor([not _same(e[i], e[chosen]) for i in range(len(e))])
    return float(differs[torch.stack(picks)].double().mean())


def unseen_lead(errors: dict, w: Tensor, pool: int, count: float = 3.0) -> float:
    r"""The chosen candidate's lead over its runner-up in units of ``count`` unseen draws.

    ``errors``/``w`` as in :func:`choice_instability`, from a pool of ``pool`` draws (a pool
    draw enumerated in the stratified validation set has weight 1/pool). With L the largest
    finite per-draw error any candidate made there — the size of a draw sent to another mode
    where one happened, which the chosen candidate could make unseen even where only a rival
    was seen to (a candidate that blows up on some draw makes the check grow the pool: a cost,
    never another choice) — the result is :math:`(\ell_{2} - \ell_{1}) / (\mathrm{count}\cdot
    L/\mathrm{pool})`: ℓ1 the chosen candidate's weighted MSE, ℓ2 the least of the candidates
    that give other answers. Below 1 the chosen candidate would lose if it had ``count`` such
    draws the pool did not hold — and zero events in N draws only bound their rate below
    ≈ 3/N (the rule of three, 95 %), so a lead smaller than that rests on rare events being
    absent, which a bootstrap of the pool cannot see. ``inf`` when no other candidate exists
    or no error was made."""
    e, wd, _, chosen = _choice(errors, w)
    loss = _weighted(e, wd)
    rivals = [i for i in range(len(e)) if not _same(e[i], e[chosen])]
    if not rivals or count <= 0.0:
        return math.inf
    seen = e[:, wd > 0]
    seen = seen[torch.isfinite(seen)]
    big = float(seen.max()) if seen.numel() else 0.0
    margin = float(loss[rivals].min() - loss[chosen])
    if big <= 0.0 or margin != margin:  # no error at all; nan: both infinite
        return math.inf
    return margin / (count * big / pool)


def _auto_candidate(obj: _Objective, dim: int) -> dict:
    """``{label: (grid, solver, options)}`` of ``solver="auto"`` at the tuned result's NFE
    (``steps`` + the final x̂0 call) — its grid as ``sample()`` builds it, a free end allowed
    whatever ``obj.free_end`` — when it spends one call per step on ``steps`` steps (every
    budget of 4–30 NFE); else empty. With DPM-Solver-v3's statistics among the tuned
    solver's options, ``auto`` as it runs with them (``sample(solver="auto", statistics=…)``)."""
    from .samplers.auto import auto_config, nfe_of, predicts_noise, solver_options
    stats = obj.opts.get("statistics")
    cfg = auto_config(obj.model.sde, obj.steps + 1, dim, predicts_noise(obj.model),
                      statistics=stats is not None)
    if not cfg["denoise"] or nfe_of(cfg) != obj.steps + 1 or cfg["solver"] in MULTI_CALL:
        return {}
    grid = get_timesteps(obj.model.sde, cfg["steps"], cfg["schedule"], allow_free_end=True)
    return {config_label(cfg["solver"], cfg["opts"], cfg["schedule"]):
            (grid, cfg["solver"], solver_options(cfg, stats))}


def _choice(errors: dict, w: Tensor):
    """(errors as a float64 matrix with NaN → inf, weights, tie-break keys, index of the
    least weighted loss — ties to ``"tuned"``, then the first)."""
    names = list(errors)
    e = torch.nan_to_num(torch.stack([errors[k] for k in names]).to(torch.float64),
                         nan=math.inf, posinf=math.inf)
    tie = torch.tensor([k != "tuned" for k in names], dtype=torch.float64)
    wd = w.to(e)
    return e, wd, tie, int(_argmin_first(_weighted(e, wd), tie))


def _same(a: Tensor, b: Tensor) -> bool:
    """Whether two candidates' per-draw errors are the same answers — up to rounding, so that
    one grid reached by two routes (a named schedule the pool search returned as the tuned
    grid, and the same schedule named) is not counted as a rival of itself."""
    return bool(torch.allclose(a, b, rtol=1e-9, atol=1e-300, equal_nan=True))


def _weighted(e: Tensor, w: Tensor) -> Tensor:
    """Weighted mean of each row of ``e`` (an infinite error with weight 0 counts 0)."""
    return torch.where(w > 0, e * w, 0.0).sum(1) / w.sum().clamp_min(1e-300)


def _argmin_first(loss: Tensor, tie: Tensor) -> Tensor:
    """Index of the least ``loss``, ties broken by the least ``tie``, then the first."""
    cand = (loss == loss.min()).nonzero().flatten()
    return cand[tie[cand].argmin()]


def _mse(x: Tensor, ref: Tensor) -> Tensor:
    """Per-draw mean squared error."""
    return (x - ref).pow(2).flatten(1).mean(1)


def _named_schedules(obj: _Objective) -> list[str]:
    from .schedules import FREE_END, list_schedules
    names = set(list_schedules()) - {"edm"}
    return sorted(names if obj.free_end else names - FREE_END)


def _named_grid(obj: _Objective, schedule: str) -> Tensor:
    return get_timesteps(obj.model.sde, obj.steps, schedule, allow_free_end=obj.free_end)


#: solvers with several network calls per step (no named one-call solver has their NFE)
MULTI_CALL = ("heun", "rk4", "dpm_solver_2", "dpm_solver_3", "pndm")


def _tensors(opts: dict) -> dict:
    """JSON-ready solver options back as tensors (a BNS solver's coefficients)."""
    return {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v
            for k, v in opts.items()}


def _weights(w: Tensor | None, x: Tensor, name: str) -> Tensor | None:
    """Check per-draw weights: one per draw of ``x``, non-negative, summing to 1."""
    if w is None:
        return None
    w = torch.as_tensor(w, dtype=torch.float64)
    if w.shape != (len(x),) or not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be {len(x)} finite non-negative weights, one per draw "
                         f"(got shape {tuple(w.shape)})")
    if abs(w.sum().item() - 1) > 1e-6:
        raise ValueError(f"{name} must sum to 1 (got {w.sum().item():.6g})")
    return w.to(x.device)


def _rms(per_draw: Tensor, w: Tensor | None, trim: float = 0.0) -> float:
    """Weighted RMS of per-draw mean squared errors when ``w`` is given (nothing trimmed), else
    :func:`_trimmed_rms`; inf when not finite."""
    if w is None:
        return _trimmed_rms(per_draw, trim)
    err = (w.to(per_draw) * per_draw).sum().sqrt().item()
    return err if math.isfinite(err) else math.inf


def _trimmed_rms(per_draw: Tensor, trim: float = 0.0) -> float:
    """RMS over draws of per-draw mean squared errors, leaving out the worst ``trim`` fraction;
    inf when not finite."""
    e = per_draw.sort().values
    err = e[:len(e) - int(trim * len(e))].mean().sqrt().item()
    return err if math.isfinite(err) else math.inf


def _pattern(rmse, loss, theta, best, evals, max_evals, bar, step0, min_step, **_):
    """Coordinate pattern search: try ±δ on each θ_i, keep improvements, halve δ otherwise."""
    delta = step0
    while delta >= min_step and evals < max_evals:
        improved = False
        for i in range(len(theta)):
            for sign in (1.0, -1.0):
                trial = theta.clone()
                trial[i] += sign * delta
                value = loss(trial)
                evals += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{best:.3g}", delta=f"{delta:.3g}")
                if value < best:
                    best, theta, improved = value, trial, True
                    break
            if evals >= max_evals:
                break
        if not improved:
            delta /= 2
    return theta, best, evals


def _adam(rmse, loss, theta, best, evals, max_evals, bar, lr, **_):
    """Adam on θ through the solver (cosine-decayed learning rate); keeps the best θ seen. A
    non-finite loss (a grid the solver cannot handle) restarts from the best θ at half the rate."""
    best_theta = theta.clone()
    theta = theta.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    n_iter = max(max_evals - evals, 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_iter, 1))
    for _ in range(n_iter):
        value = rmse(theta)
        evals += 1
        v = value.item()
        if not math.isfinite(v):
            with torch.no_grad():
                theta.copy_(best_theta)
            for g in opt.param_groups:
                g["lr"] /= 2
            continue
        if v < best:
            best, best_theta = v, theta.detach().clone()
        (g,) = torch.autograd.grad(value, [theta])
        theta.grad = g
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{best:.3g}")
    # the last step's θ has not been scored yet
    v = loss(theta.detach())
    evals += 1
    if v < best:
        best, best_theta = v, theta.detach().clone()
    return best_theta, best, evals

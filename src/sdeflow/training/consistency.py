r"""Consistency models as training programs (Song et al. 2023, "Consistency Models"; Song &
Dhariwal 2023, "Improved Techniques for Training Consistency Models").

A consistency model f_θ(x, t) (a :class:`~sdeflow.Denoiser` with
``precondition="consistency"``, so f(x, t_min) = x/s(t_min) exactly) maps every point of a
PF-ODE trajectory to its start. Both programs minimise, over adjacent times t_lo < t_hi of a
grid in the noise level σ̃ = σ/s (Karras et al. 2022, eq. 5, from σ̃(t_min) to σ̃(T)),

.. math:: \mathcal L = E\big[\lambda\, d\big(f_\theta(x_{t_{hi}}, t_{hi}),\
          \mathrm{sg}\,f_{\theta^-}(\hat x_{t_{lo}}, t_{lo})\big)\big],\qquad
          x_{t_{hi}} = s(t_{hi})\,x_0 + \sigma(t_{hi})\,z,

with d the squared L2 distance, the pseudo-Huber distance
:math:`\sqrt{\lVert x-y\rVert^2 + c^2} - c` (c = 0.00054√D by default) or LPIPS (images, when
its weights exist). Both passes share one dropout seed.

* **Consistency distillation** (``consistency_distillation``): x̂_{t_lo} is one step of a
  teacher's PF-ODE from x_{t_hi} with any fixed-step ODE solver of ours (Heun by default), on a
  grid of N = 18 times, λ = 1; θ⁻ is a target network, θ⁻ ← μθ⁻ + (1 − μ)θ after each step
  (μ = 0.95). The student starts as the teacher's copy when the architectures match.
* **Improved consistency training** (``consistency_training``, iCT): no teacher,
  x̂_{t_lo} = s(t_lo)x_0 + σ(t_lo)z with the same z; the grid has N(k) = min(s₀2^⌊k/K'⌋, s₁) + 1
  times at step k of K (K' = ⌊K/(log₂⌊s₁/s₀⌋ + 1)⌋, s₀ = 10, s₁ = 1280); the lower index i is
  drawn with p(i) ∝ erf((log σ̃_{i+1} − P_mean)/(√2 P_std)) − erf((log σ̃_i − P_mean)/(√2 P_std))
  (P_mean = −1.1, P_std = 2); λ = 1/(σ̃_{i+1} − σ̃_i); θ⁻ = sg(θ) (μ₀ > 0 restores the target
  network of the original CT with μ(k) = exp(s₀ log μ₀ / N(k))).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data import list_vector_data
from ..denoiser import Denoiser
from ..models import build_model, list_models
from ..samplers import get_solver, list_solvers
from ..samplers.registry import Context
from ..schedules import get_timesteps
from ..sde import SDE, get_sde, list_sdes
from .config import EngineConfig
from .objective import Objective, register_objective
from .teacher import TeacherFields, build_teacher, load_teacher_weights

__all__ = ["ConsistencyDistillationConfig", "ConsistencyTrainingConfig", "ConsistencyDistillation",
           "ConsistencyTraining", "karras_grid", "ict_discretization", "ct_target_decay",
           "lognormal_index_cdf", "pseudo_huber", "DISTANCES"]

DISTANCES = ("l2", "pseudo_huber", "lpips")


# --- schedules and distances: pure functions ----------------------------------------------------
def karras_grid(sde: SDE, n_points: int, rho: float = 7.0) -> tuple[Tensor, Tensor]:
    """(t, σ̃) of ``n_points`` increasing times from t_min to T, uniform in σ̃^{1/ρ} (float64)."""
    ts = get_timesteps(sde, n_points - 1, "karras", rho=rho).flip(0)
    return ts, sde.noise_level(ts)


def ict_discretization(k: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's number of grid times at step k of ``total``: N(k) = min(s₀2^⌊k/K'⌋, s₁) + 1 with
    K' = ⌊K/(log₂⌊s₁/s₀⌋ + 1)⌋ (Song & Dhariwal 2023, eq. 6); K' ≥ 1 for tiny runs."""
    k_prime = max(1, math.floor(total / (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (k // k_prime), s1) + 1


def ct_target_decay(n_points: int, s0: int = 10, mu0: float = 0.9) -> float:
    """The original CT's target EMA decay μ(k) = exp(s₀ log μ₀ / N(k)) (Song et al. 2023, §C)."""
    return math.exp(s0 * math.log(mu0) / n_points)


def lognormal_index_cdf(nu: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """CDF over the lower index i = 0 … N − 2 of iCT's discretised log-normal: the mass of
    N(P_mean, P_std²) over log σ̃ ∈ [log σ̃_i, log σ̃_{i+1}), normalised."""
    e = torch.erf((nu.log() - p_mean) / (math.sqrt(2) * p_std))
    p = e[1:] - e[:-1]
    return (p / p.sum()).cumsum(0)


def pseudo_huber(x: Tensor, y: Tensor, c: float) -> Tensor:
    """Per-sample √(‖x − y‖² + c²) − c (Song & Dhariwal 2023, §3.3)."""
    sq = (x - y).flatten(1).pow(2).sum(1)
    return (sq + c**2).sqrt() - c


class _LPIPS(nn.Module):
    """LPIPS (VGG) on images upsampled to 224×224, as in CD; needs torchmetrics, torchvision
    and their pretrained weights."""

    def __init__(self):
        super().__init__()
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
            self.net = LearnedPerceptualImagePatchSimilarity(net_type="vgg", reduction="none")
        except Exception as e:  # import error, or weights that cannot be downloaded
            raise RuntimeError(
                f"loss='lpips' needs torchmetrics, torchvision and the pretrained VGG/LPIPS "
                f"weights, which are not available here ({type(e).__name__}: {e}); use "
                f"loss='pseudo_huber' (iCT's choice) or 'l2'") from None

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x, y = (nn.functional.interpolate(a.expand(-1, 3, -1, -1), size=224, mode="bilinear")
                for a in (x, y))
        return self.net.to(x.device)(x, y)


class StepClock(nn.Module):
    """The optimiser steps taken, saved with each checkpoint: iCT's N(k) is a function of it, so
    a resumed run continues the curriculum where it stopped."""

    def __init__(self):
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))


# --- configs ------------------------------------------------------------------------------------
@dataclass
class ConsistencyFields:
    """What both programs share: the parameterisation, grid, distance and preview sampler."""

    sigma_data: float = 1.0
    rho: float = 7.0
    loss: str = "pseudo_huber"
    huber_c: float | None = None  # None: 0.00054·√D
    sample_steps: int = 1
    sample_num: int = 64

    def consistency_checks(self) -> list[tuple[bool, str]]:
        return [(self.sigma_data > 0 and self.rho > 0, "sigma_data and rho must be positive"),
                (self.loss in DISTANCES, f"loss {self.loss!r} not in {list(DISTANCES)}"),
                (not (self.loss == "lpips" and self.data in list_vector_data()),
                 f"loss 'lpips' needs image data, not {self.data!r}"),
                (self.huber_c is None or self.huber_c > 0, "huber_c must be positive (or None)"),
                (self.sample_steps > 0 and self.sample_num > 0,
                 "sample_steps and sample_num must be positive")]

    def resolve_model(self, data, fresh: bool = True) -> None:
        self.default_network(fresh)


@dataclass
class ConsistencyDistillationConfig(TeacherFields, ConsistencyFields, EngineConfig):
    """Consistency distillation of ``teacher`` (a score run, or ``"exact"``). ``model="teacher"``
    gives the student the teacher's architecture (an MLP for the exact teacher)."""

    KIND = "consistency_distillation"

    model: str = "teacher"
    loss: str = "l2"
    N: int = 18
    solver: str = "heun"
    mu: float = 0.95
    sigma_data: float | None = None  # None: the teacher run's σ_data (1.0 for "exact")

    def complete(self) -> None:
        TeacherFields.complete(self)
        if self.sigma_data is None and isinstance(self.teacher, str):
            tc = self.run_teacher_config() or {}
            self.sigma_data = float(tc.get("sigma_data", 1.0))

    def checks(self) -> list[tuple[bool, str]]:
        ode = [s for s in list_solvers("ode") if not get_solver(s).adaptive]
        return EngineConfig.checks(self) + self.teacher_checks() + self.consistency_checks() + [
            (self.model == "teacher" or self.model in list_models(),
             f"model {self.model!r} not in {['teacher', *list_models()]}"),
            (self.N >= 2, "N (grid times) must be at least 2"),
            (self.solver in ode, f"solver {self.solver!r} is not a fixed-step ODE solver {ode}"),
            (0 <= self.mu < 1, "mu (target EMA decay) must lie in [0, 1)")]

    def resolved(self, data):
        cfg = copy.deepcopy(self)
        cfg.resolve_teacher(data)
        tc = cfg.teacher_config
        if tc is not None and (tc.get("class_cond") or tc.get("task")):
            raise ValueError(f"teacher {cfg.teacher}: consistency distillation of conditional "
                             "teachers (class_cond, task) is not supported")
        if cfg.model == "teacher":
            cfg.model = "mlp" if tc is None else tc["model"]
            cfg.model_kwargs = {**({} if tc is None else tc["model_kwargs"]), **cfg.model_kwargs}
        return EngineConfig.resolved(cfg, data)


@dataclass
class ConsistencyTrainingConfig(ConsistencyFields, EngineConfig):
    """iCT from scratch. ``curriculum_steps`` is K of N(k) (None: ``steps``)."""

    KIND = "consistency_training"

    sde: str = "edm"
    sde_kwargs: dict = field(default_factory=dict)
    s0: int = 10
    s1: int = 1280
    p_mean: float = -1.1
    p_std: float = 2.0
    curriculum_steps: int | None = None
    mu0: float = 0.0

    def checks(self) -> list[tuple[bool, str]]:
        return EngineConfig.checks(self) + self.consistency_checks() + [
            (self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
            (self.model in list_models(), f"model {self.model!r} not in {list_models()}"),
            (1 <= self.s0 <= self.s1, "need 1 <= s0 <= s1"),
            (self.p_std > 0, "p_std must be positive"),
            (self.curriculum_steps is None or self.curriculum_steps > 0,
             "curriculum_steps must be positive (or None: steps)"),
            (0 <= self.mu0 < 1, "mu0 must lie in [0, 1) (0: iCT's θ⁻ = stop-grad θ)")]


def build_student(cfg) -> Denoiser:
    """The consistency model of a resolved config."""
    return Denoiser(build_model(cfg.model, **cfg.model_kwargs), get_sde(cfg.sde, **cfg.sde_kwargs),
                    precondition="consistency", sigma_data=cfg.sigma_data)


# --- the programs -------------------------------------------------------------------------------
class _Consistency(Objective):
    """The loss, target update, export and preview both programs share."""

    how_to_train = "train one with sdeflow.training.train on a consistency config"

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        self.sde = get_sde(cfg.sde, **cfg.sde_kwargs)
        self.huber_c = cfg.huber_c or 0.00054 * math.sqrt(math.prod(cfg.shape))
        self.lpips = _LPIPS() if cfg.loss == "lpips" else None

    def view(self, name, net: Denoiser, wrap):
        return net.with_net(wrap(net.net), check_finite=False)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """d(x, y) per sample."""
        if self.cfg.loss == "pseudo_huber":
            return pseudo_huber(x, y, self.huber_c)
        if self.cfg.loss == "lpips":
            return self.lpips(x, y)
        return (x - y).flatten(1).pow(2).sum(1)

    def pair(self, online: Denoiser, target: Denoiser, hi: tuple[Tensor, Tensor],
             lo: tuple[Tensor, Tensor], weight: Tensor | None = None) -> Tensor:
        """E[λ d(f_θ(x_hi, t_hi), sg f_θ⁻(x_lo, t_lo))], both passes under one dropout seed."""
        seed = torch.initial_seed()  # the engine's (seed, step, rank) seed of this step
        torch.manual_seed(seed)
        out = online.x0(*hi)
        torch.manual_seed(seed)
        with torch.no_grad():
            ref = target.x0(*lo)
        d = self.distance(out, ref)
        return (d if weight is None else weight.to(d) * d).mean()

    def target_decay(self, step: int) -> float:
        raise NotImplementedError

    def after_step(self, nets, step: int) -> None:
        if "clock" in nets:
            nets["clock"].step.fill_(step)
        if "target" in nets:
            with torch.no_grad():
                torch._foreach_lerp_(list(nets["target"].parameters()),
                                     list(nets["model"].parameters()), 1 - self.target_decay(step))

    @classmethod
    def export(cls, nets, cfg) -> Denoiser:
        return nets["model"]

    def preview(self, model: Denoiser, path: Path, step: int, device) -> Path:
        """One- (or ``sample_steps``-) step samples with a fixed seed."""
        from ..plotting import save_samples
        from ..samplers import sample
        cfg = self.cfg
        x = sample(model, shape=(cfg.sample_num, *cfg.shape), solver="consistency",
                   steps=cfg.sample_steps, seed=cfg.seed, device=device, denoise=False)
        return save_samples(x, path, f"step {step}, {cfg.sample_steps}-step")


@register_objective
class ConsistencyDistillation(_Consistency):
    """Consistency distillation: f_θ(x_{t_{n+1}}) against f_θ⁻ of one teacher ODE step to t_n."""

    Config = ConsistencyDistillationConfig
    how_to_train = "distill one with a ConsistencyDistillationConfig"

    @cached_property
    def ts(self) -> Tensor:
        """The grid t_0 = t_min < … < t_{N−1} = T (float64)."""
        return karras_grid(self.sde, self.cfg.N, self.cfg.rho)[0]

    @classmethod
    def build(cls, cfg: ConsistencyDistillationConfig) -> dict[str, nn.Module]:
        teacher = build_teacher(cfg).requires_grad_(False).eval()
        return {"model": build_student(cfg), "target": build_student(cfg).requires_grad_(False),
                "teacher": teacher}

    def initialize(self, nets) -> None:
        """Teacher weights; the student starts as the teacher when their networks match (CD),
        the target as the student."""
        teacher, student = nets["teacher"], nets["model"]
        load_teacher_weights(self.cfg, teacher)
        if isinstance(teacher.net, nn.Module):
            t_sd, s_sd = teacher.net.state_dict(), student.net.state_dict()
            if t_sd.keys() == s_sd.keys() and all(t_sd[k].shape == s_sd[k].shape for k in t_sd):
                student.net.load_state_dict(t_sd)
        nets["target"].load_state_dict(student.state_dict())

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        x0, _ = self.data.draw(n, generator)
        idx = torch.randint(0, self.cfg.N - 1, (n,), generator=generator)
        return dict(x0=x0, n=idx, z=torch.randn(x0.shape, generator=generator, dtype=x0.dtype))

    @torch.no_grad()
    def teacher_step(self, teacher: Denoiser, x: Tensor, n: Tensor) -> Tensor:
        """One solver step of the teacher's PF-ODE from t_{n+1} to t_n (per sample: one call
        of the solver per distinct n)."""
        out, ts, ctx = torch.empty_like(x), self.ts.to(x), Context()
        solve = get_solver(self.cfg.solver).fn
        for m in n.unique().tolist():
            rows = n == m
            out[rows] = solve(teacher, x[rows], ts[[m + 1, m]], ctx)
        return out

    def loss(self, nets, batch, generator):
        x0, n = batch["x0"], batch["n"]
        ts = self.ts.to(x0)
        t_hi, t_lo = ts[n + 1], ts[n]
        x_hi = self.sde.marginal(x0, t_hi, batch["z"])
        x_lo = self.teacher_step(nets["teacher"], x_hi, n)
        return self.pair(nets["model"], nets["target"], (x_hi, t_hi), (x_lo, t_lo)), {}

    def target_decay(self, step: int) -> float:
        return self.cfg.mu


@register_objective
class ConsistencyTraining(_Consistency):
    """iCT: f_θ(x_0 + σ̃_{i+1} z) against sg f_θ(x_0 + σ̃_i z) on the growing grid N(k)."""

    Config = ConsistencyTrainingConfig
    metrics = ("N",)
    how_to_train = "train one with a ConsistencyTrainingConfig"

    def __init__(self, cfg: ConsistencyTrainingConfig, data):
        super().__init__(cfg, data)
        self._grids: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    @classmethod
    def build(cls, cfg: ConsistencyTrainingConfig) -> dict[str, nn.Module]:
        nets = {"model": build_student(cfg), "clock": StepClock()}
        if cfg.mu0 > 0:
            nets["target"] = build_student(cfg).requires_grad_(False)
        return nets

    def initialize(self, nets) -> None:
        if "target" in nets:
            nets["target"].load_state_dict(nets["model"].state_dict())

    def n_points(self, step: int) -> int:
        cfg = self.cfg
        return ict_discretization(step, cfg.curriculum_steps or cfg.steps, cfg.s0, cfg.s1)

    def grid(self, n_points: int) -> tuple[Tensor, Tensor, Tensor]:
        """(t, σ̃, CDF of the lower index) of the N-point grid (float64, cached)."""
        if n_points not in self._grids:
            ts, nu = karras_grid(self.sde, n_points, self.cfg.rho)
            self._grids[n_points] = ts, nu, lognormal_index_cdf(nu, self.cfg.p_mean, self.cfg.p_std)
        return self._grids[n_points]

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """x0, z and a uniform u that becomes the lower index i by the inverse CDF of the
        grid of the current step (in :meth:`loss`: the grid depends on the step)."""
        x0, _ = self.data.draw(n, generator)
        return dict(x0=x0, z=torch.randn(x0.shape, generator=generator, dtype=x0.dtype),
                    u=torch.rand(n, generator=generator, dtype=torch.float64))

    def loss(self, nets, batch, generator):
        x0, z, u = batch["x0"], batch["z"], batch["u"]
        n_points = self.n_points(int(nets["clock"].step))
        ts, nu, cdf = (a.to(u.device) for a in self.grid(n_points))
        i = torch.searchsorted(cdf, u, right=True).clamp_max(n_points - 2)
        t_lo, t_hi = ts[i].to(x0), ts[i + 1].to(x0)
        lo = (self.sde.marginal(x0, t_lo, z), t_lo)
        hi = (self.sde.marginal(x0, t_hi, z), t_hi)
        weight = 1 / (nu[i + 1] - nu[i])
        loss = self.pair(nets["model"], nets.get("target", nets["model"]), hi, lo, weight)
        return loss, {"N": torch.tensor(float(n_points))}

    def target_decay(self, step: int) -> float:
        return ct_target_decay(self.n_points(step), self.cfg.s0, self.cfg.mu0)

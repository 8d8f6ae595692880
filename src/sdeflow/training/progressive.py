r"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models") as a training program, for any SDE of ours through s(t), σ(t).

A teacher that samples with deterministic DDIM on a grid of 2N steps is distilled into a student
that takes N: for a student step t → s, with u the teacher's time between them, two teacher DDIM
steps t → u → s give z_s, and the student's target is the x̂₀ that makes *one* DDIM step t → s
land there (DDIM: z_s = (σ_s/σ_t) z_t + (s_s − (σ_s/σ_t) s_t) x̂₀, solved for x̂₀):

.. math:: \tilde x = \frac{z_s - (\sigma_s/\sigma_t)\,z_t}{s(s) - (\sigma_s/\sigma_t)\,s(t)},
    \qquad L = \max(\mathrm{SNR}_t, 1)\,\lVert \hat x_0^{student}(z_t, t) - \tilde x\rVert^2,
    \quad \mathrm{SNR} = s^2/\sigma^2 = e^{2\lambda}

("truncated SNR" weighting), with z_t = s(t) x₀ + σ(t) ε on data. Rounds halve the grid
N₀ → N₀/2 → … → ``final_steps``; at the end of each round the student's EMA becomes the next
teacher and the next student starts as its copy. The exported model carries the grid it was
distilled for (``model.timesteps``): ``sdeflow.sample`` uses it with DDIM and refuses others.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..denoiser import PREDICTIONS, Denoiser
from ..models import list_models
from ..samplers.ddim import ddim_step
from ..samplers.registry import Context
from ..schedules import FREE_END, get_timesteps, list_schedules
from ..sde import SDE, bcast, get_sde
from .config import EngineConfig
from .objective import Objective, register_objective
from .teacher import TeacherFields, build_teacher, load_teacher_weights

__all__ = ["ProgressiveConfig", "ProgressiveDistillation", "pd_target", "ddim_x0",
           "truncated_snr", "teacher_grid"]

# the student's architecture fields, taken from a run teacher's config
_STUDENT_FIELDS = ("model", "model_kwargs", "prediction", "precondition", "sigma_data")


@dataclass
class ProgressiveConfig(TeacherFields, EngineConfig):
    """A progressive-distillation run: teacher, student network, grid sizes and round length.

    With ``teacher="exact"`` the student is a fresh ``model`` in ``prediction`` (v by default,
    as the paper recommends); with a run teacher it is the teacher's architecture (these fields
    are copied from it) and starts as its copy. Rounds = log₂(``start_steps``/``final_steps``)
    of ``steps_per_round`` steps each, the first of ``first_round_steps`` if given (a fresh
    student has to learn the denoiser there first; a teacher's copy does not), and ``steps``
    must be their sum. ``schedule`` (default: the SDE's) places the grid; it is resolved to a
    name when the run starts.
    """

    KIND = "progressive_distillation"

    sde: str = "vp"  # VP + v-prediction: the paper's setting, unit-scale network inputs
    prediction: str = "v"
    precondition: str | None = None
    sigma_data: float = 1.0
    start_steps: int = 64
    final_steps: int = 1
    steps_per_round: int = 500
    first_round_steps: int | None = None
    schedule: str | None = None

    @property
    def rounds(self) -> int:
        return round(math.log2(self.start_steps / self.final_steps))

    def round_ends(self) -> list[int]:
        """The step at which each round ends."""
        first = self.first_round_steps or self.steps_per_round
        return [first + k * self.steps_per_round for k in range(self.rounds)]

    def round_at(self, done: int) -> int:
        """The round the step after ``done`` steps trains in (the last one past the end)."""
        return min(bisect.bisect_right(self.round_ends(), done), self.rounds - 1)

    def checks(self) -> list[tuple[bool, str]]:
        return super().checks() + self.teacher_checks() + self.grid_checks() + [
            (self.prediction in PREDICTIONS,
             f"prediction {self.prediction!r} not in {list(PREDICTIONS)}"),
            (self.precondition in (None, "edm"), "precondition must be None or 'edm'"),
            (not (self.precondition == "edm" and self.prediction != "x0"),
             "precondition='edm' needs prediction='x0'"),
            (self.model in list_models(), f"model {self.model!r} not in {list_models()}"),
            (self.schedule is None or self.schedule in list_schedules(),
             f"schedule {self.schedule!r} not in {list_schedules()}"),
            (self.schedule not in FREE_END, f"schedule {self.schedule!r} ends early (before "
             "t_min): the teacher's grid must end at t_min")]

    def grid_checks(self) -> list[tuple[bool, str]]:
        """Grid sizes that halve to ``final_steps``, and ``steps`` = the rounds' steps."""
        n0, nf, spr, first = (self.start_steps, self.final_steps, self.steps_per_round,
                              self.first_round_steps or self.steps_per_round)
        if not all(isinstance(v, int) and v > 0 for v in (n0, nf, spr, first)):
            return [(False, "start_steps, final_steps, steps_per_round and first_round_steps "
                            "must be positive integers")]
        if n0 <= nf or n0 % nf or (n0 // nf) & (n0 // nf - 1):
            return [(False, f"start_steps / final_steps must be a power of two ≥ 2 (the grid "
                            f"halves each round), got {n0} / {nf}")]
        total, r = self.round_ends()[-1], self.rounds
        how = (f"first_round_steps + (rounds − 1) × steps_per_round = {first} + {r - 1} × {spr}"
               if self.first_round_steps else f"rounds × steps_per_round = {r} × {spr}")
        return [(self.steps == total, f"steps ({self.steps}) must equal {how} = {total} ({n0} "
                                      f"→ {nf} steps halves the grid {r} times)")]

    def resolve_model(self, data, fresh: bool = True) -> None:
        """The teacher's config and SDE (a run teacher), the student's architecture (the
        teacher's, or the default network of the data's shape) and the schedule's name."""
        self.resolve_teacher(data)
        if self.teacher == "exact":
            self.default_network(fresh)
        else:
            from .score import TrainConfig
            tc = TrainConfig.from_dict(self.teacher_config)
            if tc.class_cond or tc.task is not None:
                raise ValueError(f"teacher {self.teacher}: distilling a class-conditional or "
                                 "image-to-image model is not supported")
            for k in _STUDENT_FIELDS:
                setattr(self, k, getattr(tc, k))
        self.schedule = self.schedule or get_sde(self.sde, **self.sde_kwargs).default_schedule


def teacher_grid(sde: SDE, cfg: ProgressiveConfig, r: int) -> Tensor:
    """The teacher's grid of round ``r``: 2N_r = N₀/2^r steps of ``cfg.schedule`` (float64).
    Every other time of it, ``[::2]``, is the student's grid of N_r steps (schedules are
    uniform grids in a transformed time, so it is also the N_r-step grid of the schedule)."""
    return get_timesteps(sde, cfg.start_steps >> r, cfg.schedule)


def ddim_x0(sde: SDE, z_t: Tensor, z_s: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """x̃ = (z_s − (σ_s/σ_t) z_t) / (s(s) − (σ_s/σ_t) s(t)): the x̂₀ with which one
    deterministic DDIM step from (z_t, t) lands on z_s at time s."""
    ratio = bcast(sde.sigma(s) / sde.sigma(t), z_t)
    return (z_s - ratio * z_t) / (bcast(sde.s(s), z_t) - ratio * bcast(sde.s(t), z_t))


@torch.no_grad()
def pd_target(teacher: Denoiser, z_t: Tensor, t: Tensor, u: Tensor, s: Tensor) -> Tensor:
    """The student's target x̃ for the step t → s: two teacher DDIM steps t → u → s, written
    as the x̂₀ of one DDIM step t → s (:func:`ddim_x0`). Times have shape (B,)."""
    ctx = Context()
    z_s = ddim_step(teacher, ddim_step(teacher, z_t, t, u, ctx), u, s, ctx)
    return ddim_x0(teacher.sde, z_t, z_s, t, s)


def truncated_snr(sde: SDE, t: Tensor) -> Tensor:
    """max(SNR, 1) with SNR = s(t)²/σ(t)² = e^{2λ(t)}: x̂₀-loss weights that become the
    ε-loss at high SNR and stay 1 (not → 0) at low SNR, where ε-losses give x̂₀ no weight."""
    return torch.exp(2 * sde.log_snr(t)).clamp(min=1.0)


class PDTeacher(nn.Module):
    """The teacher network of the current round, and the steps taken (a buffer: checkpoints
    carry it, so a resumed run and ``sdeflow.load`` know the round)."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.model = model
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def round(self, cfg: ProgressiveConfig, trained: bool = False) -> int:
        """The round the next step trains (or, ``trained``, the round the student's weights
        were last trained in: at a round's end the student is the teacher of the next)."""
        return cfg.round_at(max(int(self.step) - trained, 0))


@register_objective
class ProgressiveDistillation(Objective):
    """The student ``model`` regresses :func:`pd_target` of ``teacher`` on the current round's
    grid; :meth:`after_step` hands the student's EMA (``self.ema``, set by the engine) on to
    the teacher at each round's end."""

    Config = ProgressiveConfig
    trainable = ("model",)
    metrics = ("round",)
    how_to_train = "distil one with sdeflow.training.train(ProgressiveConfig(...), run_dir)"

    def __init__(self, cfg: ProgressiveConfig, data):
        super().__init__(cfg, data)
        self.sde = get_sde(cfg.sde, **cfg.sde_kwargs)
        self.exact = build_teacher(cfg) if cfg.teacher == "exact" else None

    @classmethod
    def build(cls, cfg: ProgressiveConfig) -> dict[str, nn.Module]:
        from .score import build_denoiser  # its fields are ours: same names, same meaning
        # the engine puts only trainable networks in train mode: the teacher's dropout stays off
        return {"model": build_denoiser(cfg),
                "teacher": PDTeacher(build_denoiser(cfg)).requires_grad_(False).eval()}

    def initialize(self, nets) -> None:
        if self.cfg.teacher != "exact":
            load_teacher_weights(self.cfg, nets["teacher"].model)
            nets["model"].load_state_dict(nets["teacher"].model.state_dict())

    def view(self, name, net: Denoiser, wrap):
        return net.with_net(wrap(net.net), check_finite=False)

    def batch(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        x0, _ = self.data.draw(n, generator)
        # the step index is drawn as a uniform number: how many steps it picks from depends
        # on the round, which the loss reads from the teacher
        return dict(x0=x0, eps=torch.randn(x0.shape, generator=generator, dtype=x0.dtype),
                    pick=torch.rand(n, generator=generator, dtype=torch.float64))

    def loss(self, nets, batch, generator):
        x0, teacher = batch["x0"], nets["teacher"]
        r = teacher.round(self.cfg)
        ts = teacher_grid(self.sde, self.cfg, r).to(x0.device)
        n = (len(ts) - 1) // 2  # the student's steps
        i = (batch["pick"] * n).long().clamp(max=n - 1)
        t, u, s = (ts[2 * i + k].to(x0.dtype) for k in range(3))
        z_t = self.sde.marginal(x0, t, batch["eps"])
        target = pd_target(self.exact if self.exact is not None and r == 0 else teacher.model,
                           z_t, t, u, s)
        err = (nets["model"].x0(z_t, t) - target).pow(2).flatten(1).mean(1)
        loss = (truncated_snr(self.sde, t) * err).mean()
        return loss, dict(round=torch.tensor(float(r), device=x0.device))

    @torch.no_grad()
    def after_step(self, nets, step: int) -> None:
        """At a round's end the student's EMA becomes the teacher, and the next student starts
        as its copy (its EMA already equals it)."""
        nets["teacher"].step.fill_(step)
        if step not in self.cfg.round_ends()[:-1]:
            return
        weights = self.ema["model"].state_dict()
        nets["teacher"].model.load_state_dict(weights)
        nets["model"].load_state_dict(weights)

    @classmethod
    def export(cls, nets, cfg: ProgressiveConfig) -> Denoiser:
        """The student, carrying ``timesteps``: the grid of the round its weights were trained
        in (float64)."""
        model, r = nets["model"], nets["teacher"].round(cfg, trained=True)
        model.timesteps = teacher_grid(get_sde(cfg.sde, **cfg.sde_kwargs), cfg, r)[::2].clone()
        return model

    def preview(self, model: Denoiser, path: Path, step: int, device) -> Path:
        """The EMA student's DDIM samples on the grid of the round it is in."""
        from ..plotting import save_samples
        from ..samplers import sample
        r = self.cfg.round_at(step - 1)
        grid = teacher_grid(self.sde, self.cfg, r)[::2]
        x = sample(model, shape=(64 if len(self.cfg.shape) == 3 else 1000, *self.cfg.shape),
                   solver="ddim", timesteps=grid, denoise=False, seed=self.cfg.seed, device=device)
        return save_samples(x, path, f"step {step}: {len(grid) - 1} steps")

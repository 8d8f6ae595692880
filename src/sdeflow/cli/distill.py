"""``sdeflow distill progressive|consistency TEACHER`` and ``sdeflow train --objective ict``:
few-step students of a trained model, and consistency models trained from scratch.

Every field of :class:`~sdeflow.training.progressive.ProgressiveConfig`,
:class:`~sdeflow.training.consistency.ConsistencyDistillationConfig` and
:class:`~sdeflow.training.consistency.ConsistencyTrainingConfig` has a flag (the tables below
give the help of the fields score matching does not have); each run is resumable (--resume) and
writes preview grids with --sample-every.
"""
from __future__ import annotations

import dataclasses

from .common import add_command, latest_checkpoint
from .config_flags import (add_config_flags, add_run_flags, config_from_args, is_vector_data,
                           no_precondition)

__all__ = ["DISTILL_FLAGS", "ICT_FLAGS", "add_distill", "cmd_progressive", "cmd_consistency",
           "ict_config", "add_ict_flags", "score_flags_only", "loss_choices"]

# help of the flags of fields that only the distillation programs have
DISTILL_FLAGS = dict(
    start_steps="the teacher's grid size N₀ of the first round (halved every round)",
    steps_per_round="optimisation steps per halving round",
    first_round_steps="steps of the first round, when it should differ (a fresh student)",
    schedule=dict(show_default=False, help="time grid of the teacher and student steps "
                                           "(default: the SDE's)"),
    N="points of the Karras grid that the teacher's ODE steps join",
    solver="fixed-step ODE solver of the teacher's step",
    mu="decay of the target network's EMA (θ⁻)",
    rho="ρ of the Karras grid",
    huber_c=dict(show_default=False, help="pseudo-Huber c (default 0.00054·√dim)"),
    model=dict(help="the student's network ('teacher': the teacher's architecture; with "
                    "--teacher exact an MLP)"),
    data=dict(show_default=False, help="data set (default: the teacher run's; gmm for "
                                       "--teacher exact)"),
    sigma_data=dict(show_default=False, help="σ_data of the student's preconditioning "
                                             "(default: the teacher run's; 1.0 for --teacher exact)"),
    teacher_config=None)
ICT_FLAGS = dict(
    s0="iCT: grid size N(k) at the start of training", s1="iCT: the largest grid size N(k)",
    p_mean="iCT: mean of the log-normal σ sampling", p_std="iCT: std of the log-normal σ sampling",
    curriculum_steps="iCT: K of the N(k) curriculum (default: --steps)",
    mu0="iCT: target EMA decay (0: θ⁻ = stop-grad θ, as iCT)", rho=DISTILL_FLAGS["rho"],
    huber_c=DISTILL_FLAGS["huber_c"])


def loss_choices() -> list[str]:
    """The distances of the consistency programs."""
    from ..training.consistency import DISTANCES
    return list(DISTANCES)


def add_distill(sub) -> None:
    from ..training.consistency import ConsistencyDistillationConfig
    from ..training.progressive import ProgressiveConfig
    p = add_command(sub, "distill", cmd_distill)
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    pd = add_command(methods, "progressive", cmd_progressive)
    pd.add_argument("teacher", help="run directory of the teacher (a score model), or 'exact' "
                                    "for data with a closed form (gmm, mixture)")
    add_config_flags(pd, ProgressiveConfig, **DISTILL_FLAGS, teacher=None, steps=None,
                     final_steps=dict(flag="--steps", help="sampling steps of the final student"))
    add_run_flags(pd, "runs/progressive")
    cd = add_command(methods, "consistency", cmd_consistency)
    cd.add_argument("teacher", help="run directory of the teacher (a score model), or 'exact'")
    add_config_flags(cd, ConsistencyDistillationConfig, **DISTILL_FLAGS, teacher=None,
                     loss=dict(choices=loss_choices(), help="distance d(f_θ, f_θ⁻)"),
                     sample_steps="consistency sampling steps of the preview grids")
    add_run_flags(cd, "runs/consistency")


def cmd_distill(a) -> int:
    """distil a trained model into a few-step student: progressive or consistency

    METHOD progressive halves the teacher's sampling steps round by round (Salimans & Ho 2022);
    METHOD consistency learns the PF-ODE's trajectory map for one- and few-step sampling (Song
    et al. 2023). The teacher is a run directory of `sdeflow train`, or 'exact' for data with a
    closed form. Run 'sdeflow distill METHOD --help' for each method's flags.
    """
    return 2  # not reached: argparse requires a METHOD, whose own command runs


def _train(cfg, a) -> int:
    from ..training import train
    st = train(cfg.validate(), a.out, resume=a.resume)
    if st.dist.is_main:
        print(f"trained {st.step} steps; checkpoint in {latest_checkpoint(a.out)}")
    return 0


def cmd_progressive(a) -> int:
    """progressive distillation (Salimans & Ho 2022): halve a teacher's steps, round by round

    The student starts as a copy of the teacher and learns to do in one DDIM step what two
    teacher steps do (target x̃ = (z_s − (σ_s/σ_t) z_t)/(s_s − (σ_s/σ_t) s_t), truncated-SNR
    weighting); each round's student becomes the next teacher, from --start-steps down to
    --steps. The distilled model samples at its own grid: `sdeflow sample OUT`.
    """
    from ..training.progressive import ProgressiveConfig
    cfg = config_from_args(ProgressiveConfig, a, steps=lambda c: c.round_ends()[-1])
    return _train(no_precondition(cfg), a)


def cmd_consistency(a) -> int:
    """consistency distillation (Song et al. 2023): a one-/few-step model from a teacher

    Adjacent points of a Karras grid are joined by one ODE step of the teacher; the student
    f_θ(x, σ) = c_skip x + c_out F (f = x at σ_min) is trained to agree with its EMA target at
    the two points. Sample with `sdeflow sample OUT --solver consistency --steps 1` (or 2).
    """
    from ..training.consistency import ConsistencyDistillationConfig
    return _train(config_from_args(ConsistencyDistillationConfig, a), a)


def add_ict_flags(p) -> None:
    """The flags of `sdeflow train --objective ict` that score matching does not have."""
    from ..training.consistency import ConsistencyTrainingConfig
    add_config_flags(p, ConsistencyTrainingConfig, **{
        f.name: None for f in dataclasses.fields(ConsistencyTrainingConfig)
        if f.name not in ICT_FLAGS}, **ICT_FLAGS)


def ict_config(a):
    """The ConsistencyTrainingConfig of `sdeflow train --objective ict`; a score-matching flag
    that iCT does not take is refused by name."""
    from ..training.consistency import ConsistencyTrainingConfig
    _refuse_flags(a, ConsistencyTrainingConfig, "--objective ict")
    return config_from_args(ConsistencyTrainingConfig, a,
                            model=lambda c: "mlp" if is_vector_data(c) else "unet",
                            sigma_data=lambda c: 1.0 if is_vector_data(c) else 0.5).validate()


def score_flags_only(a) -> None:
    """`sdeflow train` without --objective ict: refuse iCT's own flags by name."""
    from ..train import TrainConfig
    _refuse_flags(a, TrainConfig, "score matching (--objective score)")


def _refuse_flags(a, config_cls, what: str) -> None:
    from ..train import TrainConfig
    from ..training.consistency import ConsistencyTrainingConfig
    ours = {f.name for f in dataclasses.fields(config_cls)}
    every = {f.name for cls in (TrainConfig, ConsistencyTrainingConfig)
             for f in dataclasses.fields(cls)}
    other = sorted(n for n in every - ours if hasattr(a, n))
    if other:
        raise ValueError(f"{what} does not take " +
                         ", ".join("--" + n.replace("_", "-") for n in other))

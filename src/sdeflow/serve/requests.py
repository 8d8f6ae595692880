"""What each endpoint accepts: typed request bodies (unknown fields and out-of-range numbers
are a 422 from the framework) and the checks that need the run — solver, schedule, class and
guidance — which answer 400 with the list of choices."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .runs import ApiError, Run

__all__ = ["SampleRequest", "CompareRequest", "InpaintRequest", "ExploreRequest", "check_solver",
           "check_schedule", "check_class", "solver_total", "MAX_STEPS", "MAX_IMAGES"]

#: the most solver steps and images one request may ask for (a local server on a CPU)
MAX_STEPS = 1000
MAX_IMAGES = 64
SEED = Field(0, ge=0, le=2**31 - 1)
STEPS = Field(None, ge=1, le=MAX_STEPS)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRequest(_Body):
    run: str
    solver: str = "auto"  # solver, schedule and final step chosen for the budget ``steps``
    steps: int | None = STEPS
    schedule: str | None = None  # a schedule's name, or "file:<name>" of a tuned schedule
    seed: int = SEED
    n: int = Field(16, ge=1, le=MAX_IMAGES)
    class_label: int | None = Field(None, ge=0)
    guidance: float = Field(0.0, ge=0, le=20)


class CompareRequest(_Body):
    run: str
    solvers: list[str] = Field(["auto"], min_length=1, max_length=4)
    steps: list[Annotated[int, Field(ge=1, le=MAX_STEPS)] | None] = Field(
        [5, 10, 20], min_length=1, max_length=4)
    schedule: str | None = None
    seed: int = SEED
    n: int = Field(8, ge=1, le=16)
    class_label: int | None = Field(None, ge=0)
    guidance: float = Field(0.0, ge=0, le=20)


class InpaintRequest(_Body):
    run: str
    method: Literal["replace", "repaint", "colorize"] = "replace"
    image: int | None = Field(None, ge=0)  # a held-out image's index …
    upload: str | None = None              # … or an uploaded image's id
    mask: list[list[float]] | None = None  # H rows of W values, 1 = known (not for colorize)
    solver: str | None = None
    steps: int | None = STEPS
    seed: int = SEED
    samples: int = Field(4, ge=1, le=8)
    jump_length: int = Field(5, ge=1, le=50)
    resamplings: int = Field(3, ge=1, le=20)


class ExploreRequest(_Body):
    run: str
    t: float | None = None  # the forward process's time (default: the middle in log σ)
    solvers: list[str] = Field(["heun", "euler_maruyama"], min_length=1, max_length=3)
    steps: int | None = STEPS
    seed: int = SEED
    paths: int = Field(64, ge=1, le=256)


def check_solver(run: Run, name: str, steps: int | None, fixed_grid: bool = False,
                 allow_auto: bool = False) -> None:
    """400 unless ``name`` is a solver of this run's model that takes ``steps`` (``"auto"``, the
    budget-driven choice of ``sdeflow.sample``, only where ``allow_auto``: sample and compare)."""
    from ..cld import list_cld_solvers
    from ..samplers import get_solver, list_solvers
    if name == "auto":
        if not allow_auto:
            raise ApiError(400, "solver 'auto' is for the sample and compare panels; pick a "
                                "named solver here")
        return
    cld = run.flag("KIND") == "cld"
    choices = list_cld_solvers() if cld else list_solvers()
    if name not in choices:
        raise ApiError(400, f"unknown solver {name!r}; choices: {', '.join(choices)}")
    if cld:
        return
    if name == "dpm_solver_v3":
        from ..samplers.ems import statistics_path
        if run.exact:
            raise ApiError(400, "dpm_solver_v3 needs a trained model's statistics (`sdeflow "
                                "ems`); the exact mixtures have none: pick another solver")
        if not statistics_path(run.path).is_file():
            raise ApiError(400, f"dpm_solver_v3 needs the model's statistics: run `sdeflow ems "
                                f"{run.path}` (it writes them into the checkpoint folder), or "
                                f"pick another solver")
    if get_solver(name).adaptive and (steps is not None or fixed_grid):
        raise ApiError(400, f"{name} is adaptive: it chooses its own steps" +
                       (" and cannot be used here (pick a fixed-grid solver)" if fixed_grid
                        else "; leave steps empty"))


def check_schedule(run: Run, schedule: str | None, solver: str) -> None:
    """400 unless ``schedule`` is a schedule's name or ``file:<name>`` of a tuned schedule in
    this run's listing (the name is looked up, never joined to a path)."""
    from ..samplers import get_solver, list_solvers
    from ..schedules import list_schedules
    if schedule is None:
        return
    if schedule.startswith("file:"):  # the file names its solver (it replaces the chosen one)
        if schedule[5:] not in run.schedule_files():
            raise ApiError(400, f"no tuned schedule {schedule[5:]!r} in run {run.id!r}; its "
                                f"files: {sorted(run.schedule_files()) or 'none'}")
        return
    if schedule not in list_schedules():
        raise ApiError(400, f"unknown schedule {schedule!r}; choices: "
                            f"{', '.join(list_schedules())}, or file:<tuned schedule>")
    if solver == "auto":
        raise ApiError(400, "solver 'auto' chooses its own schedule: leave the schedule empty "
                            "(or pick a named solver)")
    if solver in list_solvers() and get_solver(solver).adaptive:
        raise ApiError(400, f"{solver} is adaptive: it takes no schedule")


def check_class(run: Run, label: int | None, guidance: float) -> None:
    """400 for a class the model does not have, or guidance it was not trained for."""
    if label is not None:
        if not run.flag("class_cond", False):
            raise ApiError(400, f"run {run.id!r} is not class-conditional: leave class empty")
        if label >= run.flag("num_classes"):
            raise ApiError(400, f"class must lie in [0, {run.flag('num_classes')})")
    if guidance > 0 and not (run.flag("class_cond", False) and run.flag("p_uncond", 0) > 0):
        raise ApiError(400, "classifier-free guidance needs a class-conditional model trained "
                            "with p_uncond > 0; set guidance to 0")


def solver_total(run: Run, solver: str, steps: int | None, schedule: str | None) -> int | None:
    """Steps a fixed-grid run will report (None: not known in advance, e.g. adaptive)."""
    from ..samplers import get_solver, list_solvers
    if schedule and schedule.startswith("file:"):
        return run.schedule_files()[schedule[5:]].steps
    if solver == "auto":
        return None  # the chosen solver's step count depends on the budget
    if solver not in list_solvers():
        return steps
    info = get_solver(solver)
    return None if info.adaptive else (steps or info.default_steps)

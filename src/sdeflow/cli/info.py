"""``sdeflow list`` (the names every registry accepts) and ``sdeflow demo`` (train and sample
the toy and digits models end to end)."""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_command

__all__ = ["add_demo", "cmd_demo", "add_list", "cmd_list"]


def add_demo(sub) -> None:
    p = add_command(sub, "demo", cmd_demo)
    p.add_argument("--part", default="all", choices=["all", "toy", "digits"])
    p.add_argument("--out", default="outputs", help="where pictures and metrics go")
    p.add_argument("--run", default="runs/demo", help="run directory of the toy checkpoint")
    p.add_argument("--digits-run", default=None,
                   help="run directory of the U-Net (default: runs/digits, or runs/digits_cld "
                        "with --digits-sde cld)")
    p.add_argument("--steps", type=int, default=3000, help="toy training steps")
    p.add_argument("--digits-steps", type=int, default=3000, help="U-Net training steps")
    p.add_argument("--digits-sde", default="edm", choices=["edm", "cld"],
                   help="the digits model's process: EDM, or critically-damped Langevin "
                        "diffusion (hybrid score matching, SSCS; its own --digits-run)")
    p.add_argument("--num", type=int, default=4000, help="toy samples per sampler")
    p.add_argument("--digits-num", type=int, default=1437,
                   help="digit samples per sampler (1437 = the train split, the floor's size)")
    p.add_argument("--seed", type=int, default=0)


def cmd_demo(a) -> int:
    """train toy and digits models, plot SDE, PC and ODE samples

    Part 1 (toy): train the MLP on the 8-Gaussian ring, sample it with an SDE (Euler–Maruyama),
    a predictor–corrector and an ODE (Heun) sampler; scatter plots, PF-ODE trajectories,
    metrics. Part 2 (digits): train the default U-Net on the embedded 8×8 digits for a few
    minutes on CPU, sample it with SDE, PC and ODE samplers; image grids and the digits metric
    (FDD vs its noise floor). Everything goes to --out.
    """
    from ..demo import digits_demo, toy_demo
    out = Path(a.out)
    if a.part in ("all", "toy"):
        m = toy_demo(out, Path(a.run), a.steps, a.num, a.seed)
        print(json.dumps(m, indent=2))
        print(f"wrote {out / 'samples.png'}, {out / 'trajectories.png'}, {out / 'metrics.json'}")
    if a.part in ("all", "digits"):
        run = a.digits_run or ("runs/digits_cld" if a.digits_sde == "cld" else "runs/digits")
        digits_demo(out, Path(run), a.digits_steps, a.digits_num, a.seed,
                    sde=a.digits_sde)
        stem = "digits_cld" if a.digits_sde == "cld" else "digits"
        print((out / f"{stem}_metrics.md").read_text())
        print(f"wrote {out / f'{stem}_samples.png'}, {out / f'{stem}_metrics.json'}, "
              f"{out / f'{stem}_metrics.md'}")
    return 0


def add_list(sub) -> None:
    add_command(sub, "list", cmd_list)


def cmd_list(a) -> int:
    """list solvers, schedules, SDEs, losses, data sets

    Print the names every registry accepts: solvers (by kind, with what they are), time-step
    schedules, SDEs, training losses, data sets and networks. Use them with --solver,
    --schedule, --sde, --loss and --data, or in Python as sdeflow.sample(model, solver=...,
    schedule=...).
    """
    from ..data import list_data
    from ..inpainting import MASKS
    from ..losses import list_losses
    from ..models import list_models
    from ..models.classifier import list_classifiers
    from ..samplers import get_solver, list_solvers
    from ..schedules import list_schedules
    from ..sde import list_sdes
    from ..tasks import list_tasks
    for kind in ("ode", "sde"):
        print(f"{kind} solvers:")
        for name in list_solvers(kind):
            print(f"  {name:18s} {get_solver(name).description}")
    print("schedules:", ", ".join(list_schedules()))
    print("SDEs:", ", ".join(list_sdes()))
    print("losses:", ", ".join(list_losses()))
    print("data:", ", ".join(list_data()))
    print("models:", ", ".join(list_models()))
    print("classifiers:", ", ".join(list_classifiers()))
    print("image-to-image tasks:", ", ".join(list_tasks()))
    print("inpainting masks:", ", ".join(MASKS))
    return 0

"""``sdeflow serve``: the local web app over trained runs (see :mod:`sdeflow.serve`)."""
from __future__ import annotations

from .common import add_command

__all__ = ["add_serve", "cmd_serve"]


def add_serve(sub) -> None:
    p = add_command(sub, "serve", cmd_serve)
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run directories, checkpoint folders or folders of runs (default: the "
                        "demo's runs/demo, runs/digits, runs/digits_cld that exist)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (the default serves this machine only; 0.0.0.0 "
                        "exposes the runs to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")


def cmd_serve(a) -> int:
    """a local web page to explore, sample, compare and inpaint with runs

    Start a web app on http://HOST:PORT listing the given runs (or the demo's): Explore shows a
    2-D model or an exact Gaussian mixture (data, forward process at t, score field, PF-ODE and
    reverse-SDE trajectories with NFE and error against the exact ODE solution); Sample draws a
    grid with any solver, steps, schedule (also a tuned schedule file in the run folder), seed,
    class and guidance; Inpaint fills a mask drawn with the mouse (replacement, RePaint) or
    colorizes; Compare puts the same seeds at several solvers or NFE budgets side by side.
    Generations run one at a time per model in a queue, show their progress and can be
    cancelled. Only the listed runs can be read. See docs/serve.md.
    """
    from pathlib import Path

    from ..serve import default_runs, run_server
    from ..serve.runs import find_runs
    paths = a.runs or default_runs()
    missing = [p for p in a.runs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no such run folder: {', '.join(missing)}")
    if a.runs and not find_runs(a.runs):
        raise ValueError(f"no runs in {', '.join(a.runs)} (a run folder has a 'latest' file, "
                         "a checkpoint folder a config.json)")
    if not 1 <= a.port <= 65535:
        raise ValueError(f"--port must lie in [1, 65535], got {a.port}")
    print(f"sdeflow serve: http://{a.host}:{a.port}/ ({len(find_runs(paths))} runs"
          f"{'' if a.runs else ', the demo runs'} + exact mixtures; Ctrl-C stops)")
    run_server(paths, host=a.host, port=a.port, threads=a.threads)
    return 0

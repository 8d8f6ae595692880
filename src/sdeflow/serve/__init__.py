"""``sdeflow serve``: a local web app to look at and use diffusion models — Explore (2-D
models and exact mixtures: data, forward process, score field, trajectories), Sample, Compare
and Inpaint/colorize — over the runs it is given. See docs/serve.md.

:func:`create_app` builds the FastAPI app (routes in :mod:`.app`, jobs in :mod:`.jobs`, the run
registry in :mod:`.runs`); :func:`run_server` serves it with uvicorn."""
from __future__ import annotations

__all__ = ["create_app", "run_server", "default_runs"]


def create_app(paths=(), **kw):
    """The web app over ``paths`` (see :func:`sdeflow.serve.app.create_app`)."""
    from .app import create_app as make
    return make(paths, **kw)


def default_runs() -> list[str]:
    """The demo's run folders that exist (``sdeflow demo`` writes them)."""
    from pathlib import Path

    from .runs import DEFAULT_RUNS
    return [p for p in DEFAULT_RUNS if Path(p).is_dir()]


def run_server(paths=(), host: str = "127.0.0.1", port: int = 8000, threads: int = 2,
               log_level: str = "info") -> None:
    """Serve :func:`create_app` on host:port until interrupted, with ``threads`` torch threads
    (the generations of different models share the machine)."""
    import torch
    import uvicorn
    torch.set_num_threads(max(1, threads))
    uvicorn.run(create_app(paths), host=host, port=port, log_level=log_level)

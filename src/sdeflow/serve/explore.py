"""The Explore panel: a 2-D model (a trained toy run or an exact Gaussian mixture) seen whole —
the data, the forward process x_t = s(t) x_0 + σ(t) ε at a chosen t, the score field
∇log p_t, and PF-ODE / reverse-SDE trajectories from the same noise x_T for chosen solvers,
each with its NFE and its end points' RMS error against the exact PF-ODE solution (a fine
adaptive rk45 solve of the data's exact mixture model, or of the model itself when the data
have no closed form). Drawn server-side with matplotlib's object API (thread-safe, no pyplot)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .generate import jsonable
from .runs import Run

__all__ = ["Explore", "explore_work", "REFERENCE_TOL"]

#: rtol = atol of the reference rk45 solve
REFERENCE_TOL = 1e-7
DATA_POINTS = 1000


@dataclass
class Explore:
    t: float
    solvers: list
    steps: int | None
    seed: int
    paths: int


def _reference(run: Run, model):
    """(model in float64 to solve the exact PF-ODE with, what it is)."""
    mixture = run.mixture()
    if mixture is not None:
        return mixture.denoiser(model.sde), "exact mixture, rk45"
    return model, "this model, rk45 (the data have no closed form)"


def _solve(model, x_T, solver: str, steps, seed: int, job, **opts):
    """(path (n_steps + 1, B, 2), times, stats) of one solve from ``x_T`` (no final x̂0)."""
    from ..samplers import sample
    ts, xs = [model.sde.T], [x_T]

    def record(t, x):
        ts.append(float(torch.as_tensor(t).reshape(-1)[0]))
        xs.append(x.detach().clone())
        if job is not None:
            job.callback()
    dtype = next((p.dtype for p in model.parameters()), x_T.dtype)
    with torch.no_grad():
        x, st = sample(model, x_T.to(dtype), solver=solver, steps=steps, seed=seed,
                       denoise=False, callback=record, return_stats=True, **opts)
    return torch.stack([v.to(torch.float64) for v in xs]), torch.tensor(ts, dtype=torch.float64), st


def _forward(run: Run, sde, t: float, n: int, g):
    """(data draws, their forward-noised copies at t), float64."""
    from ..data import get_data
    data = get_data(run.data, **run.data_kwargs).draw(n, g)[0].to(torch.float64)
    noise = torch.randn(data.shape, generator=g, dtype=torch.float64)
    tt = torch.full((n,), t, dtype=torch.float64)
    return data, sde.marginal(data, tt, noise)


def _score_field(model, t: float, lim: float, n: int = 21):
    """(grid points (n², 2), the model's score ∇log p_t there)."""
    u = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.cartesian_prod(u, u)
    dtype = next((p.dtype for p in model.parameters()), torch.float64)
    with torch.no_grad():
        s = model.score(pts.to(dtype), torch.full((len(pts),), t, dtype=dtype))
    return pts, s.to(torch.float64)


def _rows(run: Run, model, x_T, e: Explore, job) -> tuple[list, dict, dict]:
    """(per-solver stats, per-solver (path, times), reference stats)."""
    from ..metrics import sliced_wasserstein
    from ..samplers import get_solver
    ref_model, ref_name = _reference(run, model)
    ref_path, _, ref_st = _solve(ref_model, x_T, "rk45", None, e.seed, None,
                                 rtol=REFERENCE_TOL, atol=REFERENCE_TOL)
    exact_end = ref_path[-1]
    data = _forward(run, model.sde, model.sde.t_min, len(x_T), torch.Generator()
                    .manual_seed(e.seed + 1))[0]
    from ..samplers.ems import with_default_statistics
    rows, paths = [], {}
    for solver in e.solvers:
        info = get_solver(solver)
        path, ts, st = _solve(model, x_T, solver, None if info.adaptive else e.steps, e.seed, job,
                              **with_default_statistics(solver, {}, run.path))
        end = path[-1]
        err = (end - exact_end).pow(2).sum(1).mean().sqrt().item() if info.kind == "ode" else None
        rows.append(dict(solver=solver, kind=info.kind, steps=st["steps"], nfe=st["nfe"],
                         seconds=st["seconds"], rms_error_vs_exact_ode=err,
                         sliced_wasserstein_to_data=sliced_wasserstein(end, data)))
        paths[solver] = (path, ts)
    ref = dict(reference=ref_name, nfe=ref_st["nfe"], rtol=REFERENCE_TOL)
    return rows, paths, dict(ref, end=exact_end)


def explore_work(run: Run, e: Explore):
    def work(job):
        model = run.model()
        g = torch.Generator().manual_seed(e.seed)
        data, xt = _forward(run, model.sde, e.t, DATA_POINTS, g)
        x_T = model.sde.prior_sample((e.paths, 2), generator=g, dtype=torch.float64)
        rows, paths, ref = _rows(run, model, x_T, e, job)
        lim = float(data.abs().max()) * 1.15
        field = _score_field(model, e.t, max(lim, float(xt.abs().quantile(0.98))))
        png = _figure(run, model.sde, e.t, (data, xt, field), (rows, paths, ref["end"]), lim)
        ref.pop("end")
        return jsonable(dict(t=e.t, solvers=rows, reference=ref, paths=e.paths)), \
            {"explore": png}
    return work


def _scatter(ax, x, title: str, lim: float, **kw) -> None:
    ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, **kw)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def _quiver(ax, xt, field, t: float) -> None:
    """Unit arrows of ∇log p_t, coloured by log |∇log p_t|, over the noised data."""
    pts, s = field
    norm = s.norm(dim=1).clamp_min(1e-12)
    lim = float(pts.abs().max())
    _scatter(ax, xt, f"score field ∇log p_t at t = {t:g}", lim, color="0.75")
    ax.quiver(pts[:, 0], pts[:, 1], s[:, 0] / norm, s[:, 1] / norm, norm.log(), cmap="plasma",
              scale=30, width=0.004, clim=(float(norm.log().min()), float(norm.log().max()) + 1))


def _trajectories(ax, sde, row: dict, path_ts, exact_end, lim: float) -> None:
    """Paths x_t / √(s² + σ²) (so all noise levels fit), their ends and the exact ends."""
    path, ts = path_ts
    scale = (sde.s(ts) ** 2 + sde.sigma(ts) ** 2).sqrt()[:, None, None]
    p = path / scale
    for i in range(min(p.shape[1], 64)):
        ax.plot(p[:, i, 0], p[:, i, 1], color="tab:blue", lw=0.5, alpha=0.35)
    end_scale = float(scale[-1, 0, 0])
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=8, color="tab:red", label="end", zorder=3)
    ax.scatter(exact_end[:, 0] / end_scale, exact_end[:, 1] / end_scale, s=14, marker="x",
               color="black", label="exact PF-ODE end", zorder=4)
    err = row["rms_error_vs_exact_ode"]
    title = f"{row['solver']} ({row['kind'].upper()}), NFE {row['nfe']}" + \
        (f", RMS err {err:.3g}" if err is not None else "")
    _scatter(ax, p[-1], title, lim, color="tab:red")
    ax.legend(loc="lower left", fontsize=6)


def _figure(run: Run, sde, t: float, top, bottom, lim: float) -> bytes:
    """The 2 × 3 panel PNG: data, x_t, score field; one trajectory panel per solver."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    data, xt, field = top
    rows, paths, exact_end = bottom
    fig = Figure(figsize=(12, 8), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    _scatter(axes[0, 0], data, f"data ({run.data})", lim, color="tab:green")
    _scatter(axes[0, 1], xt, f"forward process x_t at t = {t:g}",
             max(lim, float(xt.abs().quantile(0.98))), color="tab:purple")
    _quiver(axes[0, 2], xt, field, t)
    for j in range(3):
        if j < len(rows):
            _trajectories(axes[1, j], sde, rows[j], paths[rows[j]["solver"]], exact_end, lim)
        else:
            axes[1, j].axis("off")
    fig.suptitle(f"{run.name}: trajectories from the same x_T (scaled by 1/√(s² + σ²))",
                 fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

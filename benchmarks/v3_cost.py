"""DPM-Solver-v3 on an accelerator: does it give the CPU's accuracy, and what do its statistics
and its per-grid coefficients cost at image sizes?

* ``agreement``: the 64-D benchmark mixtures (``gmm64-edm``, ``gmm64-vp`` of
  ``benchmarks/solvers.py``, exact denoiser). Statistics are estimated (1024 trajectories, 200
  log-SNRs, seed 1000) on the CPU in float64 and on ``--device`` in float64 and float32. v3
  (order 3 with the corrector, ``ays`` grid) then samples 4096 draws at 6/11/21 NFE with each.
  Error: RMS against a 1024-step RK4 reference in float64, the draws that ended in another
  component than the reference's, and the RMS over the rest. The device rows (float64, then float32) should
  match the CPU rows up to the noise of the statistics and the crossings of a few draws.
* ``unet``: randomly initialised EDM U-Nets at 3×32×32 (DDPM++ size) and 3×64×64, timing only:
  ``estimate_statistics`` on 256 draws × 20 log-SNRs (scaled ×40 to the default 1024 × 200);
  v3 against DPM-Solver++(2M) at 10 steps on a batch of 256 (v3's first call builds its
  updates, on the device; the next call with the same grid reuses them), and
  ``v3_coefficients`` alone on the CPU and the device.
* ``coefficients``: ``v3_coefficients`` for 3×256×256 statistics (200 log-SNRs), on the CPU and
  the device: seconds, and the growth of the process's peak resident memory (bounded by
  computing over chunks of the dimensions).

    python benchmarks/v3_cost.py --device cuda --markdown --out docs/v3_cost_results.jsonl
"""
from __future__ import annotations

import resource
import time

import torch
from common import run_benchmark
from solvers import problems

import sdeflow
from sdeflow.models import UNet
from sdeflow.samplers.dpm_solver_v3 import v3_coefficients
from sdeflow.samplers.ems import ModelStatistics, estimate_statistics

UNETS = {"3x32x32": dict(channels=128, channel_mult=(1, 2, 2), num_res_blocks=2,
                         attn_resolutions=(16,)),
         "3x64x64": dict(channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                         attn_resolutions=(16,))}


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def agreement(emit, device: str, n: int, n_ems: int, points: int):
    for name, gm, sde in problems():
        if name not in ("gmm64-edm", "gmm64-vp"):
            continue
        model = gm.denoiser(sde)
        x_T = sde.prior_sample((n, gm.dim), generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64).to(device)
        ref = model.x0(sdeflow.sample(model, x_T, solver="rk4", steps=1024, denoise=False),
                       sde.t_min)
        ref_mode = gm.responsibilities(ref).argmax(1)
        for dev, dtype in dict.fromkeys((("cpu", torch.float64), (device, torch.float64),
                                         (device, torch.float32))):
            start = time.perf_counter()
            st = estimate_statistics(model, (gm.dim,), n=n_ems, points=points, seed=1000,
                                     dtype=dtype, device=dev)
            _sync(dev)
            ems_s = time.perf_counter() - start
            for nfe in (6, 11, 21):
                start = time.perf_counter()
                x = sdeflow.sample(model, x_T.to(dev, dtype), solver="dpm_solver_v3",
                                   steps=nfe - 1, schedule="ays", statistics=st)
                _sync(dev)
                x = x.to(ref)
                other = gm.responsibilities(x).argmax(1) != ref_mode
                sq = (x - ref).pow(2).mean(1)
                emit(dict(part="agreement", problem=name, device=dev, dtype=str(dtype)[6:],
                          nfe=nfe, rmse=sq.mean().sqrt().item(), other_mode=int(other.sum()),
                          rmse_same_mode=sq[~other].mean().sqrt().item(),
                          ems_seconds=round(ems_s, 2),
                          sample_seconds=round(time.perf_counter() - start, 3)))


def unet(emit, device: str, n_ems: int, points: int, batch: int):
    sde = sdeflow.EDMSDE()
    for label, kw in UNETS.items():
        c, r = 3, int(label.split("x")[-1])
        net = UNet(in_channels=c, resolution=r, **kw).to(device)
        model = sdeflow.Denoiser(net, sde, precondition="edm").eval()
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        st = estimate_statistics(model, (c, r, r), n=n_ems, points=points, batch=batch)
        _sync(device)
        ems_s = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" \
            else None
        x_T = sde.prior_sample((batch, c, r, r), generator=torch.Generator().manual_seed(0))
        x_T = x_T.to(device)
        row = dict(part="unet", shape=label, params_m=round(sum(p.numel() for p in
                                                              net.parameters()) / 1e6, 1),
                   ems_seconds=round(ems_s, 2), ems_draws=n_ems, ems_points=points,
                   ems_seconds_at_default=round(ems_s * (1024 / n_ems) * (200 / points), 1),
                   ems_peak_gib=peak and round(peak, 2), batch=batch)
        ts = sdeflow.schedules.get_timesteps(sde, 10, "ays")
        for where in dict.fromkeys(("cpu", device)):
            start = time.perf_counter()
            v3_coefficients(sde, st, ts, device=where)
            _sync(where)
            row[f"coefficients_seconds_{where}"] = round(time.perf_counter() - start, 3)
        with torch.no_grad():
            sdeflow.sample(model, x_T, solver="dpmpp_2m", steps=10, schedule="ays")  # warm-up
            # v3's first call builds its updates (on the device), the second reuses them
            for label, solver, opts in (("dpmpp_2m", "dpmpp_2m", {}),
                                        ("v3_first_call", "dpm_solver_v3", dict(statistics=st)),
                                        ("v3_second_call", "dpm_solver_v3", dict(statistics=st))):
                _sync(device)
                start = time.perf_counter()
                x = sdeflow.sample(model, x_T, solver=solver, steps=10, schedule="ays", **opts)
                _sync(device)
                row[f"{label}_seconds"] = round(time.perf_counter() - start, 3)
                row[f"{label}_finite"] = bool(torch.isfinite(x).all())
        emit(row)


def coefficients(emit, shape=(3, 256, 256), points: int = 200, device: str = "cpu"):
    sde = sdeflow.EDMSDE()
    lam = sde.log_snr(torch.tensor([sde.T, sde.t_min], dtype=torch.float64))
    grid = torch.linspace(float(lam[0]), float(lam[1]), points, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    l, s, b = (0.1 * torch.randn(points, *shape, generator=g, dtype=torch.float64)
               for _ in range(3))
    st = ModelStatistics(grid, torch.sigmoid(l), s, b)
    for where in dict.fromkeys(("cpu", device)):
        for steps in (5, 10, 20):
            ts = sdeflow.schedules.get_timesteps(sde, steps, "ays")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            v3_coefficients(sde, st, ts, device=where)
            _sync(where)
            emit(dict(part="coefficients", shape="x".join(map(str, shape)), steps=steps,
                      device=where, seconds=round(time.perf_counter() - start, 2),
                      statistics_mib=round(3 * l.numel() * 8 / 2**20),
                      peak_rss_growth_mib=round(
                          (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)))


def body(emit, a):
    emit(dict(meta=True, device=a.device, name=torch.cuda.get_device_name()
              if a.device.startswith("cuda") else "cpu"))
    parts = a.parts.split(",")
    if "agreement" in parts:
        agreement(emit, a.device, a.n, a.n_ems, a.points)
    if "unet" in parts:
        unet(emit, a.device, a.unet_draws, a.unet_points, a.batch)
    if "coefficients" in parts:
        coefficients(emit, tuple(int(v) for v in a.coef_shape.split("x")), device=a.device)


def markdown(rows):
    out = ["| part | case | device | figures |", "|---|---|---|---|"]
    for r in rows:
        case = r.get("problem") or r.get("shape")
        rest = {k: v for k, v in r.items() if k not in ("part", "problem", "shape", "device")}
        out.append(f"| {r['part']} | {case} | {r.get('device', '')} | "
                   + ", ".join(f"{k} {v}" for k, v in rest.items()) + " |")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", default="agreement,unet,coefficients")
    ap.add_argument("--n", type=int, default=4096, help="evaluation draws (agreement)")
    ap.add_argument("--n-ems", type=int, default=1024, help="statistics' trajectories (agreement)")
    ap.add_argument("--points", type=int, default=200, help="statistics' log-SNRs (agreement)")
    ap.add_argument("--unet-draws", type=int, default=256)
    ap.add_argument("--unet-points", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--coef-shape", default="3x256x256", help="statistics' shape (coefficients)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)

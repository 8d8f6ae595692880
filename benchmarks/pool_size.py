"""How large must tuning's validation pool be for its choice to be stable?

On ``--problem`` (default gmm256w-edm, held out from ``benchmarks/solvers.py``), run every
candidate the tuned pipeline compared at ``--nfes`` — the tuned grids it returned (``returned``
of the tuned rows in ``--tuned-jsonl``) and named solver × schedule configurations
(``NAMED_CANDIDATES`` below) — on ``--n`` prior draws (seed 2024) against an RK4 reference of ``--ref-steps`` steps,
then draw ``--reps`` bootstrap pools of each size in ``--sizes`` from those draws and choose the
least-MSE candidate on each, as pool validation does with exact references. Rows: per
candidate its RMS error and crossed draws over all n; per pool size the probability of not
choosing the candidate best over all n (with its binomial standard error), the mean excess RMS
error of the choice, and how often ``tuning.choice_instability`` on that pool exceeds 0.1 (the
rule that grows the pool); per growth rule (the bootstrap alone, or with
``tuning.unseen_lead``), the pipeline's doubling from the first size on bootstrap pools: the
mean pool it used, P(wrong choice), the mean excess and P(a choice > 1.5× the best).
``--cache FILE`` keeps the per-draw errors (the reference and the candidates cost ≈ 40 min on
two CPU cores at n = 32768) and reuses them.
Usage: python benchmarks/pool_size.py [--problem gmm256w-edm] [--nfes 15 20] [--n 32768]
       [--tuned-jsonl docs/solvers_256d_4096_results.jsonl] [--sizes 4096 8192 16384]
       [--reps 400] [--ref-steps 128] [--cache FILE] [--markdown] [--out FILE]
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from common import run_benchmark
from solvers import problems

import sdeflow
from sdeflow.tuning import choice_instability, unseen_lead

#: named candidates per budget: those the pipeline's pools ranked best on gmm256w-edm, `auto`'s
#: configuration and a DPM-Solver++(3M) stand-in for the best anchor
NAMED_CANDIDATES = {15: ["unipc3/ays_trailing", "ipndm/karras_trailing", "ipndm/karras",
              "unipc3/karras_trailing", "ipndm/logsnr_trailing", "dpmpp_3m/karras"],
         20: ["ipndm/logsnr_trailing", "ipndm/vp_uniform", "ipndm/karras_trailing",
              "unipc3/karras_trailing", "ipndm/logsnr", "dpmpp_3m/karras", "unipc3/ays_trailing"]}


def _args(p):
    p.add_argument("--problem", default="gmm256w-edm")
    p.add_argument("--nfes", type=int, nargs="+", default=[15, 20])
    p.add_argument("--n", type=int, default=32768)
    p.add_argument("--tuned-jsonl", default="docs/solvers_256d_4096_results.jsonl")
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--ref-steps", type=int, default=128)
    p.add_argument("--cache")


def candidates(a) -> dict:
    """label → sample() options, for every budget in ``a.nfes``."""
    out = {}
    for r in map(json.loads, open(a.tuned_jsonl)):
        if (r.get("problem") == a.problem and r.get("nfe") in a.nfes and "returned" in r
                and r.get("fallback") is None):  # a tuned grid (a fall-back is named below)
            ret = r["returned"]
            out[f"{r['nfe']}|{r['solver']}"] = dict(
                solver=ret["solver"], timesteps=torch.tensor(ret["timesteps"], dtype=torch.float64),
                **ret["solver_opts"])
    for nfe in a.nfes:
        for label in NAMED_CANDIDATES.get(nfe, []):
            solver, schedule = label.split("/")
            opts = dict(solver="unipc", order=3) if solver == "unipc3" else dict(solver=solver)
            out[f"{nfe}|{label}"] = dict(steps=nfe - 1, schedule=schedule, **opts)
    return out


def per_draw_errors(a) -> dict:
    if a.cache and Path(a.cache).exists():
        return torch.load(a.cache)
    (gm, sde), = [(gm, sde) for name, gm, sde in problems()
                  if name == a.problem]
    model = gm.denoiser(sde)
    x = sde.prior_sample((a.n, gm.dim), generator=torch.Generator().manual_seed(2024),
                         dtype=torch.float64)
    ref = torch.cat([model.x0(sdeflow.sample(model, xb, solver="rk4", steps=a.ref_steps,
                                             denoise=False), sde.t_min) for xb in x.split(4096)])
    out = dict(ref_mode=gm.responsibilities(ref).argmax(1))
    for key, opts in candidates(a).items():
        ans = torch.cat([sdeflow.sample(model, xb, **opts) for xb in x.split(4096)])
        out[key] = dict(sq=(ans - ref).pow(2).mean(1), mode=gm.responsibilities(ans).argmax(1))
    if a.cache:
        torch.save(out, a.cache)
    return out


def body(emit, a):
    d = per_draw_errors(a)
    ref_mode = d.pop("ref_mode")
    g = torch.Generator().manual_seed(0)
    for nfe in a.nfes:
        keys = [k for k in d if k.startswith(f"{nfe}|")]
        sq = torch.stack([d[k]["sq"] for k in keys])
        truth = sq.mean(1).sqrt()
        best = int(truth.argmin())
        for k, t in zip(keys, truth):
            crossed = int((d[k]["mode"] != ref_mode).sum())
            emit(dict(problem=a.problem, nfe=nfe, candidate=k.split("|")[1], n=sq.shape[1],
                      rmse=t.item(), other_mode=crossed, best=k == keys[best]))
        for size in a.sizes:
            wrong, excess, grow = 0, 0.0, 0
            w = torch.full((size,), 1.0 / size, dtype=torch.float64)
            for _ in range(a.reps):
                idx = torch.randint(0, sq.shape[1], (size,), generator=g)
                c = int(sq[:, idx].mean(1).argmin())
                wrong += c != best
                excess += (truth[c] / truth[best] - 1).item()
                grow += choice_instability({k: sq[i, idx] for i, k in enumerate(keys)}, w,
                                           replicates=100, generator=g) > 0.1
            p = wrong / a.reps
            emit(dict(problem=a.problem, nfe=nfe, pool=size, reps=a.reps, p_wrong=p,
                      p_wrong_se=(p * (1 - p) / a.reps) ** 0.5, mean_excess=excess / a.reps,
                      p_grow=grow / a.reps))
        for rule, unseen in (("bootstrap", 0.0), ("bootstrap+unseen", 3.0)):
            emit(policy(a, nfe, keys, sq, truth, best, rule, unseen, g))


def policy(a, nfe, keys, sq, truth, best, rule, unseen, g) -> dict:
    """The pipeline's growth rule on bootstrap pools: prefixes ``a.sizes`` (the pipeline
    doubles them) of a pool of the largest size, grown while the choice is unstable
    (instability > 0.1, from 100 resamplings where the pipeline takes 400) or — with
    ``unseen`` — while :func:`~sdeflow.tuning.unseen_lead` is below 1; the choice (least MSE
    over all draws with references, as the pipeline's stratified estimate of it) at the size
    where it stops."""
    wrong, excess, used, bad = 0, 0.0, 0, 0
    for _ in range(a.reps):
        idx = torch.randint(0, sq.shape[1], (max(a.sizes),), generator=g)
        for size in a.sizes:
            errs = {k: sq[i, idx[:size]] for i, k in enumerate(keys)}
            w = torch.full((size,), 1.0 / size, dtype=torch.float64)
            stable = choice_instability(errs, w, replicates=100, generator=g) <= 0.1
            if stable and (not unseen or unseen_lead(errs, w, size, count=unseen) >= 1.0):
                break
        c = int(sq[:, idx[:size]].mean(1).argmin())
        wrong += c != best
        excess += (truth[c] / truth[best] - 1).item()
        bad += bool(truth[c] > 1.5 * truth[best])
        used += size
    p = wrong / a.reps
    return dict(problem=a.problem, nfe=nfe, rule=rule, sizes=a.sizes, reps=a.reps, p_wrong=p,
                p_wrong_se=(p * (1 - p) / a.reps) ** 0.5, mean_excess=excess / a.reps,
                mean_pool=used / a.reps, p_over_1_5x=bad / a.reps)


def markdown(rows) -> str:
    lines = ["| NFE | pool | P(wrong choice) | mean excess RMS | P(instability > 0.1: grow) |",
             "|---:|---:|---|---:|---:|"]
    for r in rows:
        if "pool" in r:
            lines.append(f"| {r['nfe']} | {r['pool']} | {r['p_wrong']:.2f} ± {r['p_wrong_se']:.2f} "
                         f"| {100 * r['mean_excess']:.0f} % | {r['p_grow']:.2f} |")
    lines += ["", "| NFE | growth rule | mean pool used | P(wrong choice) | mean excess RMS "
              "| P(> 1.5× the best) |", "|---:|---|---:|---|---:|---:|"]
    for r in rows:
        if "rule" in r:
            lines.append(f"| {r['nfe']} | {r['rule']} | {r['mean_pool']:.0f} | {r['p_wrong']:.2f}"
                         f" ± {r['p_wrong_se']:.2f} | {100 * r['mean_excess']:.0f} % "
                         f"| {r['p_over_1_5x']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, _args)

"""Is "our error / the best anchor's" resolved by the draws? Paired bootstrap intervals for the
rows of a ``benchmarks/solvers.py --errors-dir DIR`` run.

For each errors file (one problem) and each budget: the tested rows (``--ours``, default the
``solver="auto"`` row) against the best of the anchors' rows at that budget (diffusers and
k-diffusion), the ratio of RMS errors with its 90 % interval from a Poisson bootstrap over the
draws, the same weights for every row, the best anchor chosen again in each replicate
(:func:`sdeflow.metrics.rmse_ratio`), the fraction of replicates at or below ``--below``
(default 0.7, the goal of issue 20), and the draws each side sent to another component.
A cell decided by one to three such draws in each row has an interval that spans 0.7 and 1.

Usage: python benchmarks/ratio_intervals.py DIR/gmm160-vp-n65536-seed0.safetensors ...
       [--ours 'sdeflow|auto'] [--nfes 15 20] [--below 0.7] [--replicates 2000] [--markdown]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import interval, run_benchmark

from sdeflow.metrics import rmse_ratio

ANCHORS = ("diffusers|", "k-diffusion|")


def intervals(emit, path, ours=("sdeflow|auto",), nfes=None, below=0.7, replicates=2000):
    """One row per tested label and budget of the errors file ``path``."""
    from safetensors.torch import load_file
    got = load_file(path)
    problem = Path(path).name.rsplit("-n", 1)[0]
    rows = {k: (got[k].double(), got[k + "|other"]) for k in got if not k.endswith("|other")
            and torch.isfinite(got[k]).all()}  # a diverged row is no competitor

    def calls(key):  # "impl|solver|nfe", "+" appended when a label repeats at one budget
        return int(key.rsplit("|", 1)[1].rstrip("+"))
    for nfe in nfes or sorted({calls(k) for k in rows}):
        # anchors within the budget (k-diffusion's Heun spends an odd count), as solvers.py's
        # table counts them; the tested rows at the budget itself
        anchors = [k for k in rows if k.startswith(ANCHORS) and calls(k) <= nfe]
        tested = [k for k in rows if k.rsplit("|", 1)[0] in ours and calls(k) == nfe]
        if not anchors or not tested:
            continue
        comp = torch.stack([rows[k][0] for k in anchors])
        for key in tested:
            ci = rmse_ratio(rows[key][0], comp, below=below, replicates=replicates)
            best = anchors[ci.best]
            emit(dict(problem=problem, solver=key.split("|")[1], nfe=nfe, n=comp.shape[1],
                      n_anchors=len(anchors),
                      ratio=ci.ratio, low=ci.low, high=ci.high, p_below=ci.p_below,
                      below=below, other_mode=int(rows[key][1].sum()), best_anchor=best,
                      anchor_other_mode=int(rows[best][1].sum())))


def markdown(rows):
    out = ["| problem | solver | NFE | draws | ratio [90 % interval] | P(≤ goal) | crossed: "
           "ours; anchor's | best anchor |", "|---|---|---:|---:|---|---:|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['solver']} | {r['nfe']} | {r['n']} | "
                   f"{interval(r['ratio'], r['low'], r['high'])} | {r['p_below']:.2f} | "
                   f"{r['other_mode']}; {r['anchor_other_mode']} | "
                   f"{r['best_anchor'].rsplit('|', 1)[0].replace('|', ' ')} |")
    return "\n".join(out)


def main():
    def add(ap):
        ap.add_argument("files", nargs="*", help="errors files of benchmarks/solvers.py "
                                                 "--errors-dir")
        ap.add_argument("--ours", default="sdeflow|auto",
                        help="comma-separated 'impl|solver' labels to test (default: auto)")
        ap.add_argument("--nfes", type=int, nargs="+", help="budgets (default: every one)")
        ap.add_argument("--below", type=float, default=0.7, help="the goal ratio")
        ap.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")

    def body(emit, a):
        if not a.files:
            sys.exit("give at least one errors file (benchmarks/solvers.py --errors-dir DIR)")
        for path in a.files:
            intervals(emit, path, tuple(a.ours.split(",")), a.nfes, a.below, a.replicates)
    run_benchmark(__doc__, body, markdown, add)


if __name__ == "__main__":
    main()

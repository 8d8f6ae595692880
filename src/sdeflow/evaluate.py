"""Evaluate a trained model: draw samples with any solver and score them against its data.

* 2-D toy data: sliced Wasserstein and MMD² to fresh data draws, with the data-vs-data floor.
* digits: the offline digits metric (FDD with its train-vs-test floor, classifier confidence,
  class balance; accuracy for class-conditional models) — :mod:`sdeflow.metrics.digits`.
* colour digits: FDD of the digits' ink and the colour FD, with their floors —
  :mod:`sdeflow.metrics.color_digits`.
* any image data, when Inception weights are supplied: FID and KID against the training data
  (:mod:`sdeflow.metrics.inception`).

``sdeflow evaluate`` writes the result as JSON next to a sample grid.
"""
from __future__ import annotations

import math
import time

import torch

from .progress import progress_bar
from .samplers import sample

__all__ = ["draw_samples", "evaluate_samples"]


@torch.no_grad()
def draw_samples(model, cfg, n: int, *, batch: int = 500, seed: int = 0, labels=None,
                 device=None, progress: bool = False, cond: dict | None = None,
                 **sampling) -> tuple[torch.Tensor, dict]:
    """n samples (CPU) in batches, with the NFE each sample cost and the total seconds;
    ``labels`` (n,) are passed as ``class_labels`` to class-conditional models, and ``cond``
    holds further per-sample conditions (e.g. ``tokens`` (n, L) of text models)."""
    device = device or next(model.parameters()).device
    xs, nfe, t0 = [], 0, time.perf_counter()
    batches = progress_bar(range(0, n, batch), desc=f"sampling ({sampling.get('solver', 'heun')})",
                           unit="batch", leave=False, disable=not progress)
    for i, start in enumerate(batches):
        m = min(batch, n - start)
        c = {k: v[start:start + m].to(device) for k, v in (cond or {}).items()}
        if labels is not None:
            c["class_labels"] = labels[start:start + m].to(device)
        x, st = sample(model, shape=(m, *cfg.shape), seed=seed + i, device=device, cond=c,
                       return_stats=True, **sampling)
        xs.append(x.float().cpu())
        nfe = st["nfe"]
    return torch.cat(xs), dict(nfe=nfe, seconds=round(time.perf_counter() - t0, 3))


def _color_digits_scores(x, cfg, labels) -> dict:
    """FDD on the ink and colour FD against the test split, the floor against the first
    images of the train split (:mod:`sdeflow.metrics.color_digits`)."""
    from .data import get_data
    from .metrics.color_digits import color_digits_metrics
    kw = {k: v for k, v in cfg.data_kwargs.items() if k != "split"}
    test = get_data(cfg.data, **kw, split="test").x
    train = get_data(cfg.data, **kw, split="train").x[:len(test)]
    m = color_digits_metrics(x, test, train, labels=labels)
    return {("fdd_floor_train_vs_test" if k == "fdd_floor" else k): v for k, v in m.items()}


def evaluate_samples(x: torch.Tensor, cfg, *, labels=None, inception_weights=None,
                     seed: int = 0) -> dict:
    """Scores of samples ``x`` of a model trained with config ``cfg`` (see module docstring)."""
    from .data import get_data, list_vector_data
    out = {}
    if cfg.data in list_vector_data():
        from .metrics import mmd2, sliced_wasserstein
        data = get_data(cfg.data, **cfg.data_kwargs)
        g = torch.Generator().manual_seed(seed + 1)
        ref, ref2 = data.draw(len(x), g)[0], data.draw(len(x), g)[0]
        out.update(sliced_wasserstein=sliced_wasserstein(x, ref), mmd2=mmd2(x, ref),
                   floor_sliced_wasserstein=sliced_wasserstein(ref2, ref),
                   floor_mmd2=mmd2(ref2, ref))
        return out
    x = x.clamp(-1, 1)
    if cfg.data == "digits":
        from .metrics.digits import digits_metrics
        out.update(digits_metrics(x, labels))
    if cfg.data in ("color_digits", "captioned_digits"):
        out.update(_color_digits_scores(x, cfg, labels))
    if inception_weights:
        from .metrics.inception import fid_kid
        data = get_data(cfg.data, **cfg.data_kwargs)
        out.update(fid_kid(data.x, x, weights_path=inception_weights))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in out.items()}

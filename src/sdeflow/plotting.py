"""Pictures people would rather look at than read: scatter panels and PF-ODE trajectories."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    plt = _plt()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def scatter_panels(panels: dict, path, title: str | None = None, lim: float | None = None) -> Path:
    """One square scatter plot per (name → (N, 2) array) side by side, same axes; saved as PNG."""
    plt = _plt()
    arrays = {k: np.asarray(v, dtype=float) for k, v in panels.items()}
    if lim is None:
        lim = 1.05 * max(np.quantile(np.abs(a), 0.995) for a in arrays.values())
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.2 * len(arrays), 3.4), squeeze=False)
    for ax, (name, a) in zip(axes[0], arrays.items()):
        ax.scatter(a[:, 0], a[:, 1], s=1.5, alpha=0.5, lw=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def trajectories(ts, xs, path, scale=None, n_paths: int = 200,
                 title: str = "PF-ODE trajectories") -> Path:
    """Plot paths x(t) of 2-D samples: left, coordinate 1 (divided by ``scale(t)``, e.g.
    √(s²+σ²), so that every time is on one axis) against t; right, the paths in the plane."""
    plt = _plt()
    ts = np.asarray(ts, dtype=float)
    xs = np.asarray(xs, dtype=float)[:, :n_paths]  # (steps+1, N, 2)
    sc = np.ones_like(ts) if scale is None else np.asarray(scale, dtype=float)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
    for i in range(xs.shape[1]):
        a1.plot(ts, xs[:, i, 0] / sc, lw=0.5, alpha=0.5)
        a2.plot(xs[:, i, 0], xs[:, i, 1], lw=0.4, alpha=0.4, color="gray")
    a2.scatter(xs[-1, :, 0], xs[-1, :, 1], s=4, color="k", zorder=3, label="x(t_min)")
    a1.set_xscale("log")
    a1.invert_xaxis()
    a1.set_xlabel("t (log scale, integration runs right)")
    a1.set_ylabel("x₁(t)" if scale is None else "x₁(t) / √(s(t)² + σ(t)²)")
    lim = 1.1 * np.abs(xs[-1]).max()
    a2.set_xlim(-lim, lim)
    a2.set_ylim(-lim, lim)
    a2.set_aspect("equal")
    a2.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def interpolation_path(data, path, linear, out, title: str = "PF-ODE latent interpolation") -> Path:
    """Data (grey), the decoded slerp path between two encodings (coloured by position) and the
    straight line between the same endpoints in data space (dashed), for 2-D data."""
    plt = _plt()
    data, path, linear = (np.asarray(a, dtype=float) for a in (data, path, linear))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(data[:, 0], data[:, 1], s=1, color="0.75", lw=0, label="data")
    ax.plot(linear[:, 0], linear[:, 1], "--", color="0.3", lw=1, label="straight line in x")
    ax.plot(path[:, 0], path[:, 1], "-", color="C1", lw=1)
    sc = ax.scatter(path[:, 0], path[:, 1], c=np.linspace(0, 1, len(path)), cmap="viridis", s=25,
                    zorder=3, label="decode(slerp(encode(a), encode(b)))")
    fig.colorbar(sc, ax=ax, fraction=0.046, label="interpolation weight")
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, out)


def image_grid(images, nrow: int | None = None, pad: int = 1, min_size: int = 32) -> np.ndarray:
    """Tile images (N, C, H, W) in [−1, 1] into one uint8 array (rows·H, cols·W, C), each image
    enlarged by an integer factor (nearest) to at least ``min_size`` pixels so 8×8 digits are
    visible."""
    x = np.asarray(images.detach().float().cpu() if hasattr(images, "detach") else images,
                   dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {x.shape}")
    n, c, h, w = x.shape
    k = max(1, -(-min_size // max(h, w)))
    x = np.clip((x + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8).repeat(k, 2).repeat(k, 3)
    h, w = h * k, w * k
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    rows = -(-n // nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h,
             pad + q * (w + pad):pad + q * (w + pad) + w] = x[i].transpose(1, 2, 0)
    return grid


def save_image_grid(images, path, nrow: int | None = None, **kw) -> Path:
    """Save :func:`image_grid` of ``images`` as a PNG."""
    from PIL import Image

    grid = image_grid(images, nrow, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def labelled_grids(panels: dict, path, nrow: int | None = None, title: str | None = None) -> Path:
    """Several image grids side by side, each titled (e.g. one per sampler or NFE)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], panels.items()):
        g = image_grid(imgs, nrow)
        ax.imshow(g[..., 0] if g.shape[-1] == 1 else g, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def save_samples(x, path, title: str, reference: dict | None = None, max_images: int = 100) -> Path:
    """Samples as people look at them: images (N, C, H, W) → a grid of the first
    ``max_images`` (clamped to [−1, 1]); points (N, 2) → a scatter plot titled ``title``, after
    the ``reference`` panels (e.g. ``{"data": ...}``) when given."""
    if x.ndim == 4:
        n = min(len(x), max_images)
        return save_image_grid(x[:n].clamp(-1, 1), path, nrow=int(np.ceil(np.sqrt(n))))
    return scatter_panels({**(reference or {}), title: x.cpu()}, path)

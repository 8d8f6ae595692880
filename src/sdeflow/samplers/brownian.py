r"""Brownian paths for stochastic Runge–Kutta methods: the increment ΔW and the iterated integral
ΔZ of every step, drawn jointly and exactly, and a Brownian bridge that refines a path while
keeping them.

Over a step of length h > 0 (elapsed time, h = |t_{n+1} − t_n| on a grid in either direction),
with B_s = W_{t_n+s} − W_{t_n},

.. math:: \Delta W = B_h,\qquad \Delta Z = \int_0^h B_s\,ds = I_{(1,0)},

jointly Gaussian with Var ΔW = h, Cov(ΔW, ΔZ) = h²/2, Var ΔZ = h³/3, i.e.
:math:`\Delta Z \mid \Delta W \sim \mathcal N(\Delta W\,h/2,\ h^3/12)` per component
(Kloeden & Platen 1992, §10.4). The part of ΔZ independent of ΔW is U = ΔZ − hΔW/2
(h times the space-time Lévy area), Var U = h³/12.

**Bridge** (:func:`bridge`). Split the step at θh into pieces of lengths h₁ = θh, h₂ = (1−θ)h
with independent pairs (W₁, Z₁), (W₂, Z₂) of the law above, U_i = Z_i − h_iW_i/2. Then

.. math:: \Delta W = W_1 + W_2,\qquad \Delta Z = Z_1 + Z_2 + h_2W_1

(the second piece integrates B − B_{h₁}, so B_{h₁} = W₁ comes back over h₂). With the bridge
deviation V = (1−θ)W₁ − θW₂, so that W₁ = θΔW + V, one finds Cov(V, ΔW) = 0,
Var V = θ(1−θ)h and

.. math:: \Delta U = \Delta Z - \tfrac h2\Delta W = \tfrac h2 V + U_1 + U_2 .

So ΔW is independent of (V, U₁, U₂), and conditioning on the coarse pair (ΔW, ΔZ) is
conditioning three independent Gaussians — variances p h, θ³h³/12, (1−θ)³h³/12 with
p = θ(1−θ) — on one linear combination ΔU of variance h³/12 (p h·h²/4 + (1 − 3p)h³/12).
Gaussian conditioning, first V, then U₁ given S = U₁ + U₂ = ΔU − hV/2:

.. math::
    V \mid \Delta U \sim \mathcal N\Big(\frac{6p}{h}\,\Delta U,\ p\,h\,(1-3p)\Big),\qquad
    U_1 \mid S \sim \mathcal N\Big(\frac{\theta^3}{1-3p}\,S,\
    \frac{h^3}{12}\,\frac{\theta^3(1-\theta)^3}{1-3p}\Big),

(θ³ + (1−θ)³ = 1 − 3p), and W₁ = θΔW + V, W₂ = ΔW − W₁, U₂ = S − U₁, Z_i = h_iW_i/2 + U_i.
The pieces sum back to (ΔW, ΔZ) exactly (to round-off). Halving (θ = ½):
V | ΔU ~ N(3ΔU/(2h), h/16) — Foster's midpoint law W_{h/2} = ΔW/2 + 3H/2 + N(0, h/16) with
H = ΔU/h — and U₁ | S ~ N(S/2, h³/192).

:class:`BrownianPath` holds a path on a grid and refines it (every interval halved), so a
solver can be run at h, h/2, h/4, … on the *same* path (strong-order tests).
:class:`BrownianMemory` reveals a path lazily per sample for adaptive solvers: an interval
already (partly) drawn is bridged, one beyond is fresh, so a rejected step's noise is kept and
accept/reject decisions cannot bias the path (Rackauckas & Nie 2017, "Adaptive methods for
stochastic differential equations via natural embeddings and rejection sampling with memory":
the information their RSwM3 keeps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["brownian_increment", "bridge", "join", "BrownianPath", "BrownianMemory", "Reveal"]


def brownian_increment(h: Tensor, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """(ΔW, ΔZ) over a step of length h ≥ 0 from two independent standard normals."""
    dW = h.sqrt() * z1
    return dW, 0.5 * h * dW + (h**3 / 12).sqrt() * z2


def bridge(dW: Tensor, dZ: Tensor, h: Tensor, theta, z1: Tensor, z2: Tensor):
    """Split (ΔW, ΔZ) over a step of length h at θh, 0 ≤ θ ≤ 1 (module docstring); returns
    (W₁, Z₁, W₂, Z₂), exactly distributed given the coarse pair, from two standard normals."""
    theta = torch.as_tensor(theta, dtype=dW.dtype, device=dW.device)
    p = theta * (1 - theta)
    q = 1 - 3 * p  # θ³ + (1−θ)³ ≥ 1/4
    dU = dZ - 0.5 * h * dW
    V = 6 * p * dU / h.clamp_min(torch.finfo(dW.dtype).tiny) + (p * h * q).sqrt() * z1
    S = dU - 0.5 * h * V
    U1 = theta**3 / q * S + (h**3 / 12 * p**3 / q).sqrt() * z2
    h1 = theta * h
    W1 = theta * dW + V
    W2 = dW - W1
    return W1, 0.5 * h1 * W1 + U1, W2, 0.5 * (h - h1) * W2 + (S - U1)


def join(W1: Tensor, Z1: Tensor, W2: Tensor, Z2: Tensor, h2: Tensor) -> tuple[Tensor, Tensor]:
    """(ΔW, ΔZ) over two consecutive pieces, the second of length h₂."""
    return W1 + W2, Z1 + Z2 + h2 * W1


def _rows(c: Tensor, like: Tensor) -> Tensor:
    """Per-row (R,) values — step lengths, masks — shaped to broadcast against (R, *shape)
    (:func:`~sdeflow.sde.bcast` would cast a mask to ``like``'s dtype)."""
    return c.reshape(-1, *([1] * (like.ndim - 1)))


class BrownianPath:
    """(ΔW, ΔZ) on every interval of a grid ``ts`` (increasing or decreasing, shape (n+1,)):
    ``dW`` and ``dZ`` of shape (n, *shape). :meth:`draw` draws one, :meth:`refine` halves every
    interval by the bridge, :meth:`coarsen` joins pairs of intervals — both keep the path."""

    def __init__(self, ts: Tensor, dW: Tensor, dZ: Tensor):
        d = ts[1:] - ts[:-1]
        if ts.ndim != 1 or len(ts) < 2 or not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError("ts must be a strictly monotone 1-D grid of at least two times")
        if dW.shape[0] != len(ts) - 1 or dZ.shape != dW.shape:
            raise ValueError(f"dW and dZ must have shape ({len(ts) - 1}, ...) alike, got "
                             f"{tuple(dW.shape)} and {tuple(dZ.shape)}")
        self.ts, self.dW, self.dZ = ts, dW, dZ

    @classmethod
    def draw(cls, ts: Tensor, shape, generator: torch.Generator | None = None) -> "BrownianPath":
        """A path on ``ts`` for states of ``shape`` (dtype and device of ``ts``)."""
        z = torch.randn((2, len(ts) - 1, *shape), generator=generator, dtype=ts.dtype,
                        device=ts.device)
        return cls(ts, *brownian_increment(_rows((ts[1:] - ts[:-1]).abs(), z[0]), z[0], z[1]))

    @property
    def h(self) -> Tensor:
        """Step lengths |t_{n+1} − t_n|, shape (n,)."""
        return (self.ts[1:] - self.ts[:-1]).abs()

    def __len__(self) -> int:
        return len(self.ts) - 1

    def __iter__(self):
        """(ΔW_n, ΔZ_n) step by step."""
        return zip(self.dW, self.dZ)

    def values(self) -> Tensor:
        """W at the grid times relative to W(ts[0]), shape (n+1, *shape)."""
        return torch.cat([torch.zeros_like(self.dW[:1]), self.dW.cumsum(0)])

    def refine(self, generator: torch.Generator | None = None) -> "BrownianPath":
        """The same path on the grid with every interval halved (2n intervals)."""
        z = torch.randn((2, *self.dW.shape), generator=generator, dtype=self.dW.dtype,
                        device=self.dW.device)
        pieces = bridge(self.dW, self.dZ, _rows(self.h, self.dW), 0.5, z[0], z[1])
        W = torch.stack(pieces[0::2], 1).flatten(0, 1)
        Z = torch.stack(pieces[1::2], 1).flatten(0, 1)
        mid = 0.5 * (self.ts[:-1] + self.ts[1:])
        ts = torch.stack([self.ts[:-1], mid], 1).flatten()
        return BrownianPath(torch.cat([ts, self.ts[-1:]]), W, Z)

    def coarsen(self) -> "BrownianPath":
        """The same path on every other grid time (n must be even)."""
        if len(self) % 2:
            raise ValueError(f"coarsen needs an even number of intervals, got {len(self)}")
        h2 = _rows(self.h[1::2], self.dW)
        W, Z = join(self.dW[0::2], self.dZ[0::2], self.dW[1::2], self.dZ[1::2], h2)
        return BrownianPath(self.ts[0::2], W, Z)


@dataclass
class Reveal:
    """An interval revealed for some rows: its (ΔW, ΔZ) and the rows' stored segments with the
    interval's end inserted (``k``: the index of the segment ending there)."""

    rows: Tensor
    dW: Tensor
    dZ: Tensor
    ends: Tensor
    W: Tensor
    Z: Tensor
    k: Tensor


class BrownianMemory:
    """A Brownian path per sample, revealed lazily for an adaptive solver.

    Positions are elapsed times u (u = ±t, increasing along the integration). For each sample
    the path is known from its current position up to the last revealed time, as consecutive
    segments with their (ΔW, ΔZ) (``ends`` ascending, +inf padding). :meth:`reveal` answers an
    interval [u₀, u₁] starting at the current position: the segments inside it, the one
    containing u₁ bridged at u₁ (:func:`bridge`), fresh increments beyond the last revealed
    time. :meth:`keep` then either moves the rows past u₁ (accepted step; ``W`` accumulates
    W(u) − W(start)) or keeps the refined segments (rejected step: a shorter retry reuses them).
    ``randn(like)`` draws the standard normals (e.g. ``Context.randn_like``).
    """

    def __init__(self, like: Tensor, randn: Callable[[Tensor], Tensor]):
        B, shape = like.shape[0], like.shape[1:]
        self.ends = torch.full((B, 1), math.inf, dtype=like.dtype, device=like.device)
        self.dW = like.new_zeros((B, 1, *shape))
        self.dZ = like.new_zeros((B, 1, *shape))
        self.W = torch.zeros_like(like)
        self.randn = randn

    def reveal(self, rows: Tensor, u0: Tensor, u1: Tensor) -> Reveal:
        """(ΔW, ΔZ) over [u0, u1] for ``rows`` (u0: their current positions), as a
        :class:`Reveal` for :meth:`keep`."""
        E = torch.cat([self.ends[rows], torch.full_like(u1[:, None], math.inf)], 1)
        pad = self.dW.new_zeros((len(rows), 1, *self.dW.shape[2:]))
        W, Z = torch.cat([self.dW[rows], pad], 1), torch.cat([self.dZ[rows], pad], 1)
        k = (E < u1[:, None]).sum(1)  # the segment containing u1 (the padding if beyond)
        starts = torch.cat([u0[:, None], E[:, :-1]], 1)
        s_k, e_k = starts.gather(1, k[:, None])[:, 0], E.gather(1, k[:, None])[:, 0]
        fresh = torch.isinf(e_k)
        L = torch.where(fresh, u1 - s_k, e_k - s_k)
        z1, z2 = self.randn(W[:, 0]), self.randn(W[:, 0])
        Wk, Zk = _column(W, k), _column(Z, k)
        fW, fZ = brownian_increment(_rows(L, z1), z1, z2)
        fr = _rows(fresh, z1)
        Wk, Zk = torch.where(fr, fW, Wk), torch.where(fr, fZ, Zk)
        theta = ((u1 - s_k) / L.clamp_min(torch.finfo(L.dtype).tiny)).clamp(0.0, 1.0)
        theta = torch.where(fresh, 1.0, theta)  # a fresh segment is not split
        W1, Z1, W2, Z2 = bridge(Wk, Zk, _rows(L, z1), _rows(theta, z1), z1, z2)
        ends = _insert(E, k, u1, e_k)
        W, Z = _insert(W, k, W1, W2), _insert(Z, k, Z1, Z2)
        dW, dZ = _prefix(ends, W, Z, u0, k)
        return Reveal(rows, dW, dZ, ends, W, Z, k)

    def keep(self, rev: Reveal, ok: Tensor) -> None:
        """Commit a :class:`Reveal`: rows with ``ok`` move past its end, the others keep the
        refined segments."""
        ends, W, Z = (_drop(a, rev.k + 1, ok, fill) for a, fill in
                      ((rev.ends, math.inf), (rev.W, 0.0), (rev.Z, 0.0)))
        self.W[rev.rows[ok]] += rev.dW[ok]
        width = max(ends.shape[1], self.ends.shape[1])
        self.ends = _widen(self.ends, width, math.inf)
        self.dW, self.dZ = _widen(self.dW, width, 0.0), _widen(self.dZ, width, 0.0)
        self.ends[rev.rows], self.dW[rev.rows], self.dZ[rev.rows] = (
            _widen(ends, width, math.inf), _widen(W, width, 0.0), _widen(Z, width, 0.0))
        used = max(1, int(torch.isfinite(self.ends).sum(1).max()))
        self.ends, self.dW, self.dZ = self.ends[:, :used], self.dW[:, :used], self.dZ[:, :used]


def _column(a: Tensor, k: Tensor) -> Tensor:
    """a[r, k[r]] for every row r of a (R, D, *shape)."""
    return a[torch.arange(len(k), device=a.device), k]


def _insert(a: Tensor, k: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """Replace column k[r] of each row by the two columns (first, second): (R, D) → (R, D+1)."""
    j = torch.arange(a.shape[1] + 1, device=a.device)[None]
    src = torch.where(j <= k[:, None], j, j - 1).clamp_max(a.shape[1] - 1)
    idx = src.reshape(*src.shape, *([1] * (a.ndim - 2))).expand(-1, -1, *a.shape[2:])
    out = a.gather(1, idx)
    r = torch.arange(len(k), device=a.device)
    out[r, k], out[r, k + 1] = first, second
    return out


def _drop(a: Tensor, n: Tensor, ok: Tensor, fill: float) -> Tensor:
    """Rows with ``ok`` lose their first n[r] columns (shifted left, ``fill`` appended)."""
    j = torch.arange(a.shape[1], device=a.device)[None]
    src = torch.where(ok[:, None], j + n[:, None], j)
    idx = src.clamp_max(a.shape[1] - 1)
    idx = idx.reshape(*idx.shape, *([1] * (a.ndim - 2))).expand(-1, -1, *a.shape[2:])
    out = a.gather(1, idx)
    gone = (src >= a.shape[1]).reshape(*src.shape, *([1] * (a.ndim - 2)))
    return torch.where(gone, torch.full_like(out, fill), out)


def _widen(a: Tensor, width: int, fill: float) -> Tensor:
    extra = width - a.shape[1]
    if extra <= 0:
        return a
    return torch.cat([a, torch.full((a.shape[0], extra, *a.shape[2:]), fill, dtype=a.dtype,
                                    device=a.device)], 1)


def _prefix(ends: Tensor, W: Tensor, Z: Tensor, u0: Tensor, k: Tensor):
    """(ΔW, ΔZ) over segments 0..k[r] of each row, joined in order."""
    lengths = ends - torch.cat([u0[:, None], ends[:, :-1]], 1)
    accW, accZ = torch.zeros_like(W[:, 0]), torch.zeros_like(Z[:, 0])
    for j in range(int(k.max()) + 1):
        m = _rows(j <= k, accW)
        L = _rows(torch.where(j <= k, lengths[:, j], 0.0), accW)
        nW, nZ = join(accW, accZ, W[:, j], Z[:, j], L)
        accW, accZ = torch.where(m, nW, accW), torch.where(m, nZ, accZ)
    return accW, accZ

r"""Empirical model statistics (EMS) of DPM-Solver-v3 (Zheng, Lu, Bao & Zhu 2023,
"DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model Statistics", §3).

With λ = log(s/σ) and the model's data prediction x̂0(x, λ), three per-dimension functions of λ
make the PF-ODE easier to integrate (:mod:`sdeflow.samplers.dpm_solver_v3`):

* :math:`l_\lambda = \arg\min_l E_{p_\lambda}\|\nabla_x(\hat x_0(x,\lambda) - l\odot x)\|_F^2
  = E_{p_\lambda}[\operatorname{diag}\nabla_x\hat x_0]` — the linear part of the model, so that
  :math:`f_\theta = \hat x_0 - l_\lambda\odot x` depends little on x;
* :math:`s_\lambda, b_\lambda = \arg\min E_{p_\lambda}\|f_\theta^{(1)} - s\odot f_\theta - b\|^2`
  (per dimension, a least-squares line): the part of the total derivative
  :math:`f_\theta^{(1)} = \frac{d}{d\lambda}f_\theta(x_\lambda,\lambda)` along the ODE that is
  linear in f, so that the rest varies slowly in λ.

They are estimated once per model from its own PF-ODE trajectories (no data needed): ``n``
draws of the prior are carried from T to t_min by DPM-Solver++(2M) on ``points`` log-SNRs
equally spaced over the SDE's range; at each point the diagonal of ∇ₓx̂0 is estimated by
Hutchinson's estimator with Rademacher probes v, :math:`E[v\odot(\nabla_x\hat x_0)^\top v]`
(one backward pass; exact for a diagonal Jacobian), and :math:`f^{(1)}` by central differences
of f along the trajectories. The least-squares slope is ridge-regularised by 10⁻⁴ of
E‖f‖²/D, so a dimension where f does not vary (a Gaussian's) gets s ≈ 0 and b = E f⁽¹⁾.
"""
from __future__ import annotations

import copy
import json
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..sde import bcast

__all__ = ["ModelStatistics", "estimate_statistics", "weights_fingerprint", "same_weights",
           "tensor_versions", "statistics_path", "with_default_statistics", "STATISTICS_FILE",
           "describe_condition", "condition_mismatch", "auto_statistics"]

_RIDGE = 1e-4


@dataclass
class ModelStatistics:
    """l, s, b (shape (K, *sample shape)) of a model at the increasing log-SNRs ``lam`` (K,);
    linear in λ between them. Kept on the CPU. What they were estimated from, which the solver
    checks (None: unknown): ``sde``, the SDE's config (another SDE is refused); ``model``, the
    :func:`weights_fingerprint` of the network (other weights get a warning); ``condition``,
    the conditioning (class, prompt, guidance) in words."""

    lam: Tensor
    l: Tensor
    s: Tensor
    b: Tensor
    sde: dict | None = None
    model: list | None = None
    condition: str | None = None

    def __post_init__(self):
        for name in ("lam", "l", "s", "b"):
            setattr(self, name, getattr(self, name).detach().cpu())
        lam = self.lam
        if lam.dim() != 1 or len(lam) < 2 or not bool((lam[1:] > lam[:-1]).all()):
            raise ValueError("model statistics: lam must be an increasing 1-D grid of at least "
                             "2 log-SNRs")
        for name in ("l", "s", "b"):
            v = getattr(self, name)
            if v.shape[:1] != lam.shape or v.shape != self.l.shape:
                raise ValueError(f"model statistics: {name} has shape {tuple(v.shape)}, expected "
                                 f"({len(lam)}, *sample shape) like l {tuple(self.l.shape)}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"model statistics: {name} has non-finite values")

    def to(self, device) -> "ModelStatistics":
        """A copy with the tensors on ``device``, to compute with there (the dataclass itself
        keeps them on the CPU)."""
        return self._with(*(getattr(self, k).to(device) for k in ("l", "s", "b")),
                          lam=self.lam.to(device))

    def dims(self, start: int, stop: int) -> "ModelStatistics":
        """The statistics of the flattened dimensions ``start:stop`` (shape (stop − start,))."""
        k = len(self.lam)
        return self._with(*(getattr(self, n).reshape(k, -1)[:, start:stop].contiguous()
                            for n in ("l", "s", "b")))

    def _with(self, l: Tensor, s: Tensor, b: Tensor, lam: Tensor | None = None):
        """A copy with other tensors, not validated or moved (they come from this one)."""
        out = copy.copy(self)
        out.l, out.s, out.b = l, s, b
        if lam is not None:
            out.lam = lam
        return out

    @property
    def shape(self) -> tuple:
        """The sample shape (without batch) the statistics are for."""
        return tuple(self.l.shape[1:])

    def at(self, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(l, s, b) at the log-SNRs ``lam`` (any shape (M,)), linearly interpolated; shape
        (M, *sample shape). Outside the grid by more than 1e-6 of its range is an error."""
        lo, hi = self.lam[0], self.lam[-1]
        tol = 1e-6 * float(hi - lo)
        if bool((lam < lo - tol).any() or (lam > hi + tol).any()):
            raise ValueError(f"log-SNR {float(lam.min()):.4g}…{float(lam.max()):.4g} outside the "
                             f"statistics' range {float(lo):.4g}…{float(hi):.4g}: estimate them "
                             "for this SDE's full range")
        grid = self.lam.to(lam)
        lam = lam.clamp(grid[0], grid[-1])
        k = torch.searchsorted(grid.detach(), lam.detach().contiguous()).clamp(1, len(grid) - 1)
        w = (lam - grid[k - 1]) / (grid[k] - grid[k - 1])
        out = []
        for v in (self.l, self.s, self.b):
            v = v.to(lam)
            wb = bcast(w, v[k])
            out.append((1 - wb) * v[k - 1] + wb * v[k])
        return tuple(out)

    def save(self, path) -> Path:
        """Write a safetensors file atomically."""
        from safetensors.torch import save_file

        from ..checkpoint import write_atomic
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: json.dumps(getattr(self, k)) for k in ("sde", "model", "condition")}
        tensors = {k: getattr(self, k).detach().contiguous().cpu() for k in ("lam", "l", "s", "b")}
        return write_atomic(path, lambda tmp: save_file(
            tensors, tmp, metadata={"format": "sdeflow-ems", **meta}))

    @classmethod
    def load(cls, path) -> "ModelStatistics":
        """Read a file written by :meth:`save`; a damaged or foreign file is a CheckpointError
        naming it."""
        from ..checkpoint import CheckpointError
        tensors, about = _read(path, tensors=True)
        try:
            return cls(**tensors, **about)
        except ValueError as e:
            raise CheckpointError(path, str(e)) from None

    @staticmethod
    def read_about(path) -> dict:
        """The ``sde``, ``model`` and ``condition`` a file records, without reading its
        tensors (errors as :meth:`load`)."""
        return _read(path, tensors=False)[1]


def _read(path, tensors: bool) -> tuple[dict, dict]:
    """(tensors — empty unless asked —, the recorded sde/model/condition) of a statistics file;
    a damaged or foreign file is a CheckpointError naming it."""
    from safetensors import SafetensorError, safe_open

    from ..checkpoint import CheckpointError, check_safetensors
    path = Path(path)
    check_safetensors(path)
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != "sdeflow-ems":
                raise CheckpointError(path, "not model statistics of `sdeflow ems` (no "
                                            "'sdeflow-ems' format tag)")
            data = {k: fh.get_tensor(k) for k in ("lam", "l", "s", "b")} if tensors else {}
        about = {k: json.loads(meta.get(k, "null")) for k in ("sde", "model", "condition")}
    except (SafetensorError, OSError, RuntimeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"corrupted ({str(e).splitlines()[0]})") from None
    return data, about


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: the statistics' file in a checkpoint folder, where ``sdeflow ems`` writes them by default and
#: where sampling with ``dpm_solver_v3`` looks when no statistics are given
STATISTICS_FILE = "ems.safetensors"


def statistics_path(checkpoint) -> Path:
    """Where the statistics of ``checkpoint`` (a run directory, a checkpoint folder or a saved
    diffusers folder) live by default: in the checkpoint folder itself (a run directory's
    ``latest`` one), so they go with the weights they were estimated from."""
    from ..checkpoint import checkpoint_folder
    return checkpoint_folder(checkpoint) / STATISTICS_FILE


def with_default_statistics(solver: str, opts: dict, checkpoint) -> dict:
    """``opts`` with DPM-Solver-v3's ``statistics`` set to the file :func:`statistics_path`
    of ``checkpoint`` when ``solver`` is ``dpm_solver_v3``, none are given and that file
    exists (else ``opts`` as they are: the solver then says what it needs)."""
    if solver != "dpm_solver_v3" or opts.get("statistics") is not None:
        return opts
    path = statistics_path(checkpoint)
    return {**opts, "statistics": str(path.resolve())} if path.is_file() else opts


def auto_statistics(checkpoint, condition: str | None = None) -> dict:
    """``{"statistics": path}`` for ``solver="auto"``: the statistics file of ``checkpoint``
    (:func:`statistics_path`) when it exists and was estimated under ``condition``
    (:func:`describe_condition`; None: unconditional sampling), else ``{}`` — ``auto`` then
    keeps its rule without statistics rather than run DPM-Solver-v3 on another condition's."""
    path = statistics_path(checkpoint)
    if not path.is_file() or ModelStatistics.read_about(path)["condition"] != condition:
        return {}
    return {"statistics": str(path.resolve())}


def describe_condition(class_label=None, prompt=None, guidance=None, classifier=None) -> str | None:
    """The conditioning of a sampling run in words, as :class:`ModelStatistics` records it
    (None: unconditional), e.g. ``"class=3 guidance=2.0"``."""
    parts = [f"{k}={v}" for k, v in (("class", class_label), ("prompt", prompt),
                                       ("guidance", guidance), ("classifier", classifier))
             if v is not None]
    return " ".join(parts) or None


def condition_mismatch(solver: str, opts: dict, condition: str | None) -> str | None:
    """What to tell the user when ``dpm_solver_v3``'s statistics file (``opts["statistics"]``)
    was estimated under another conditioning than ``condition`` (:func:`describe_condition` of
    the run); None when they agree or for another solver. ``opts["statistics"]`` may be a
    :class:`ModelStatistics` too; only a file's metadata is read."""
    stats = opts.get("statistics")
    if solver != "dpm_solver_v3" or not isinstance(stats, (str, os.PathLike, ModelStatistics)):
        return None  # none, or something the solver itself will refuse with its own message
    if isinstance(stats, ModelStatistics):
        was, name = stats.condition, "the statistics"
    else:
        was, name = ModelStatistics.read_about(stats)["condition"], f"the statistics in {stats}"
    if was == condition:
        return None
    return (f"{name} were estimated for {was or 'unconditional sampling'}, this run is "
            f"{condition or 'unconditional'}: DPM-Solver-v3 loses accuracy; run `sdeflow ems` "
            f"with the same --class/--prompt/--guidance (and --out)")


def weights_fingerprint(model) -> list | None:
    """[number of weights, Σw, Σw², Σ|w|] over the parameters and floating buffers of
    ``model`` (float64 sums, one device sync): the same weights on any device, or cast to
    float32, float16 or bfloat16, agree to within :func:`same_weights`' 1e-4; another
    checkpoint's differ by more; None for a model without parameters. Remembered per model
    until a weight changes (the sampler asks on every call)."""
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    tensors = [*params(), *(b for b in getattr(model, "buffers", lambda: [])()
                            if b.is_floating_point())]
    if not tensors:
        return None
    versions = tensor_versions(tensors)
    try:
        known = _FINGERPRINTS.get(model) if versions is not None else None
    except TypeError:  # not weak-referenceable or not hashable: computed each time
        known = versions = None
    if known is not None and known[0] == versions:
        return known[1]
    with torch.no_grad():
        sums = torch.stack([torch.stack([w.double().sum(), w.double().square().sum(),
                                         w.double().abs().sum()]).to(tensors[0].device)
                            for w in tensors]).sum(0).cpu()
    out = [float(sum(w.numel() for w in tensors)), *map(float, sums)]
    if versions is not None:
        _FINGERPRINTS[model] = (versions, out)
    return out


def tensor_versions(tensors) -> tuple | None:
    """(address, version counter) of each tensor — what changes when one is written in place or
    replaced — or None when one has no version counter (made under ``torch.inference_mode``):
    then nothing derived from them may be remembered."""
    if any(t.is_inference() for t in tensors):
        return None
    return tuple((t.data_ptr(), t._version) for t in tensors)


def same_weights(a: list | None, b: list | None) -> bool:
    """Whether two :func:`weights_fingerprint` s are of the same weights (unknown: yes)."""
    if a is None or b is None:
        return True
    scale = max(abs(a[-1]), abs(b[-1]), 1e-30)  # Σ|w|: Σw may cancel to near 0
    return len(a) == len(b) and all(abs(x - y) <= 1e-4 * max(abs(x), abs(y), scale)
                                    for x, y in zip(a, b))


def _x0_and_hutchinson(model, x: Tensor, t: Tensor, probes: Tensor, cond: dict, batch: int):
    """x̂0(x, t) and v ⊙ (∇ₓx̂0)ᵀv for the probes v, in chunks of ``batch`` draws."""
    m_out, d_out = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].detach().requires_grad_(True)
        cb = {k: (v[i:i + batch] if torch.is_tensor(v) and v.shape[:1] == x.shape[:1] else v)
              for k, v in cond.items()}
        v = probes[i:i + batch]
        with torch.enable_grad():
            m = model.x0(xb, t[i:i + batch], **cb)
            if not m.requires_grad:
                raise ValueError("estimating model statistics needs ∇ₓx̂0: the model's output "
                                 "does not depend differentiably on x")
            (jtv,) = torch.autograd.grad(m, xb, grad_outputs=v)
        m_out.append(m.detach())
        d_out.append(v * jtv)
    return torch.cat(m_out), torch.cat(d_out)


def _regress(f_lo: Tensor, f_mid: Tensor, f_hi: Tensor, dlam: Tensor):
    """(s, b) per dimension: the ridge least-squares line of f⁽¹⁾ = (f_hi − f_lo)/dlam on
    f_mid over the draws (module docstring)."""
    f1 = (f_hi - f_lo) / dlam
    mf, mf1 = f_mid.mean(0), f1.mean(0)
    cov = ((f_mid - mf) * (f1 - mf1)).mean(0)
    var = ((f_mid - mf) ** 2).mean(0)
    s = cov / (var + _RIDGE * (f_mid ** 2).mean() + torch.finfo(f_mid.dtype).eps)
    return s, mf1 - s * mf


def _along_trajectories(model, x: Tensor, ts: Tensor, probes: Tensor, cond: dict, batch: int):
    """(l, f) at each time of ``ts`` along the PF-ODE trajectories from ``x``, carried by
    DPM-Solver++(2M) with the same network calls."""
    sde = model.sde
    lam = sde.log_snr(ts)
    ones = torch.ones(len(x), dtype=x.dtype, device=x.device)
    m_prev = h_prev = None
    for k in range(len(ts)):
        m, d = _x0_and_hutchinson(model, x, ts[k] * ones, probes, cond, batch)
        l_k = d.mean(0)
        yield l_k, m - l_k * x
        if k + 1 < len(ts):
            h = lam[k + 1] - lam[k]
            d_m = m if m_prev is None else m + 0.5 * h / h_prev * (m - m_prev)
            x = (sde.sigma(ts[k + 1]) / sde.sigma(ts[k]) * x
                 - sde.s(ts[k + 1]) * torch.expm1(-h) * d_m)
            m_prev, h_prev = m, h


def estimate_statistics(model, shape, *, n: int = 1024, points: int = 200, batch: int = 256,
                        cond: dict | None = None, seed: int = 0, progress: bool = False,
                        dtype=None, device=None, condition: str | None = None) -> ModelStatistics:
    r"""EMS of ``model`` (a :class:`~sdeflow.Denoiser`) for samples of ``shape`` (no batch
    dimension), from ``n`` of its own PF-ODE trajectories on ``points`` log-SNRs equally spaced
    over [λ(T), λ(t_min)] (module docstring). ``batch`` bounds the draws per network call;
    ``seed`` fixes the prior draws and probes; ``dtype``/``device`` default to those of the
    model's parameters; ``cond`` is passed to the model (its tensors with a batch dimension of
    ``n`` are split with the draws) and ``condition`` records it in words. Costs ``points``
    network calls with a backward pass per draw."""
    if n < 2 or points < 3 or batch < 1:
        raise ValueError(f"need n >= 2 draws, points >= 3 and batch >= 1 (got n={n}, "
                         f"points={points}, batch={batch})")
    sde = model.sde
    param = next(iter(getattr(model, "parameters", lambda: [])()), None)
    dtype = dtype or (param.dtype if param is not None else torch.get_default_dtype())
    device = device or (param.device if param is not None else None)
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    x = sde.prior_sample((n, *shape), generator=gen, dtype=dtype, device=device)
    # one Rademacher probe per draw for its whole trajectory: the estimator's noise is then
    # smooth in λ (independent probes per point make l, and so f, rough in λ, which costs the
    # solver accuracy: 2.3x the error at 80 NFE on the 64-D benchmark mixture)
    probes = torch.randint(0, 2, x.shape, generator=gen, device=device).to(dtype) * 2 - 1
    lam_end = sde.log_snr(torch.tensor([sde.T, sde.t_min], dtype=torch.float64))
    lam = torch.linspace(float(lam_end[0]), float(lam_end[1]), points, dtype=torch.float64)
    ts = sde.t_from_log_snr(lam).to(dtype=dtype, device=device)
    ts[0], ts[-1] = sde.T, sde.t_min  # exact ends despite the inverse's round-off
    lam = sde.log_snr(ts)
    from ..progress import progress_bar
    ls, fs, sb = [], [], []  # fs: the last three points' f
    steps = _along_trajectories(model, x, ts, probes, cond or {}, batch)
    for k, (l_k, f) in enumerate(progress_bar(steps, total=points, desc="model statistics",
                                              disable=not progress)):
        ls.append(l_k)
        fs = [*fs, f][-3:]
        if k == 1:  # one-sided difference at the first point
            sb.append(_regress(fs[0], fs[0], fs[1], lam[1] - lam[0]))
        elif k > 1:
            sb.append(_regress(fs[0], fs[1], fs[2], lam[k] - lam[k - 2]))
    sb.append(_regress(fs[-2], fs[-1], fs[-1], lam[-1] - lam[-2]))
    return ModelStatistics(lam.detach().cpu().to(torch.float64), torch.stack(ls).cpu(),
                           torch.stack([v[0] for v in sb]).cpu(),
                           torch.stack([v[1] for v in sb]).cpu(), sde=sde.config(),
                           model=weights_fingerprint(model), condition=condition)

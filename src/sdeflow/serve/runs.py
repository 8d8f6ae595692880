"""The runs a server may read. Each is addressed by the id the listing gives it, never by a
path from the client: the registry maps ids to the run folders named on the command line (and
the exact 2-D mixtures), and a tuned schedule file is picked by its name in the run's own
listing of files, so nothing outside the listed folders can be opened."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..oracle import GaussianMixture

__all__ = ["Run", "RunRegistry", "ApiError", "find_runs", "DEFAULT_RUNS", "EXACT_MIXTURES",
           "is_run_dir"]

#: the demo's run folders (``sdeflow demo``), listed when the server is given no runs
DEFAULT_RUNS = ("runs/demo", "runs/digits", "runs/digits_cld")
#: the exact 2-D mixtures Explore offers beside trained runs: id → (name, data set, kwargs)
EXACT_MIXTURES = {"exact-gmm": ("8-Gaussian ring (exact mixture)", "gmm", {}),
                  "exact-mixture": ("random 2-D mixture of 4 (exact)", "mixture",
                                    dict(dim=2, k=4, seed=0, scale=1.5))}
#: the SDE under which an exact mixture is diffused (the toy runs' default)
EXACT_SDE = "edm"
#: how deep below a run folder tuned schedule files are looked for
SCHEDULE_DEPTH = 2


class ApiError(Exception):
    """A request the server refuses: an HTTP status (4xx) and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_run_dir(path: Path) -> bool:
    """A run directory (with a ``latest`` file) or a checkpoint folder (with ``config.json``)."""
    return (path / "latest").is_file() or (path / "config.json").is_file()


def find_runs(paths) -> list[Path]:
    """The run folders among ``paths``: each path itself when it is a run, else the runs
    directly inside it (``sdeflow serve runs/``); missing paths are skipped."""
    found = []
    for p in map(Path, paths):
        if is_run_dir(p):
            found.append(p)
        elif p.is_dir():
            found += [c for c in sorted(p.iterdir()) if c.is_dir() and is_run_dir(c)]
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "run"


@dataclass
class Run:
    """One listed model: a trained run (``path`` and its config) or an exact mixture."""

    id: str
    name: str
    path: Path | None = None
    config: object = None
    data: str | None = None
    data_kwargs: dict = field(default_factory=dict)
    _model: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def shape(self) -> tuple:
        return tuple(self.config.shape) if self.config is not None else (2,)

    @property
    def kind(self) -> str:
        """``toy`` (2-D points: Explore), ``image`` (C, H, W: Sample, Compare, Inpaint) or
        ``other`` (listed, not served)."""
        if len(self.shape) == 1:
            return "toy" if self.shape[0] == 2 else "other"
        return "image" if len(self.shape) == 3 else "other"

    @property
    def exact(self) -> bool:
        return self.path is None

    def flag(self, name: str, default=None):
        """A config field (``class_cond``, ``p_uncond``, ``num_classes``, ``task`` …)."""
        return getattr(self.config, name, default)

    def mixture(self) -> GaussianMixture | None:
        """The data's exact Gaussian mixture, when it has one (Explore's ground truth)."""
        from ..data import get_data
        if self.data is None:
            return None
        try:
            return getattr(get_data(self.data, **self.data_kwargs), "mixture", None)
        except (ValueError, OSError, TypeError):
            return None

    def model(self):
        """The EMA model (loaded on first use; an exact mixture's denoiser in float64)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):
        from ..loading import load
        from ..sde import get_sde
        if self.exact:
            return self.mixture().denoiser(get_sde(EXACT_SDE))
        model, _ = load(self.path, ema=True, kind=("denoiser", "cld"))
        return model

    def schedule_files(self) -> dict:
        """Tuned schedules (JSON from ``sdeflow tune-steps``) inside the run folder, by their
        path relative to it; a file that does not parse as one, or whose real path leaves the
        folder (a symbolic link), is not listed."""
        from ..tuning import TunedSchedule
        if self.exact:
            return {}
        root = Path(self.path).resolve()
        out = {}
        for depth in range(SCHEDULE_DEPTH + 1):
            for f in sorted(root.glob("/".join(["*"] * depth + ["*.json"]))):
                real = f.resolve()
                if f.name == "config.json" or root not in real.parents or not real.is_file():
                    continue
                try:
                    out[f.relative_to(root).as_posix()] = TunedSchedule.load(real)
                except (ValueError, TypeError, OSError):
                    continue
        return out

    def time_range(self) -> tuple:
        """(SDE name, t_min, T) from the config (None, None for a process without one)."""
        from ..sde import get_sde
        name = str(self.flag("sde", EXACT_SDE))
        try:
            sde = get_sde(name, **dict(self.flag("sde_kwargs", {}) or {}))
        except (ValueError, TypeError):
            return name, None, None
        return name, sde.t_min, sde.T

    def info(self) -> dict:
        """What the page needs to offer the right controls for this run."""
        sde, t_min, T = self.time_range()
        return dict(id=self.id, name=self.name, kind=self.kind, exact=self.exact,
                    path=None if self.exact else str(self.path), shape=list(self.shape),
                    data=self.data, sde=sde, t_min=t_min, T=T,
                    model_kind=self.flag("KIND", "exact"),
                    class_cond=bool(self.flag("class_cond", False)),
                    num_classes=int(self.flag("num_classes", 0) or 0),
                    p_uncond=float(self.flag("p_uncond", 0.0) or 0.0),
                    task=self.flag("task"), has_mixture=self.exact or self.mixture() is not None,
                    schedule_files=sorted(self.schedule_files()))


class RunRegistry:
    """The listed runs by id: the trained runs found in ``paths`` (configs read, weights
    loaded on first use) and, with ``exact``, the exact 2-D mixtures. Runs whose config cannot
    be read are kept out of the listing and reported in ``skipped``."""

    def __init__(self, paths=(), exact: bool = True):
        self.runs: dict[str, Run] = {}
        self.skipped: list[dict] = []
        for p in find_runs(paths):
            self._add_trained(p)
        if exact:
            for rid, (name, data, kw) in EXACT_MIXTURES.items():
                self.runs[rid] = Run(id=rid, name=name, data=data, data_kwargs=dict(kw))

    def _add_trained(self, path: Path) -> None:
        from ..checkpoint import read_config, resolve_checkpoint
        from ..loading import read_config_of
        try:
            ck = resolve_checkpoint(path)
            cfg = read_config_of(dict(path=ck, config=read_config(ck)))
        except (ValueError, OSError, TypeError) as e:
            self.skipped.append(dict(path=str(path), error=str(e)))
            return
        rid, i = _slug(path.name), 2
        while rid in self.runs or rid in EXACT_MIXTURES:
            rid, i = f"{_slug(path.name)}-{i}", i + 1
        self.runs[rid] = Run(id=rid, name=path.name, path=path, config=cfg,
                             data=getattr(cfg, "data", None),
                             data_kwargs=dict(getattr(cfg, "data_kwargs", {}) or {}))

    def get(self, run_id: str, kind: str | None = None) -> Run:
        """The run with this id (404 if none is listed; 400 if it is not a ``kind`` model)."""
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, f"unknown run {run_id!r}; listed runs: {sorted(self.runs)}")
        if kind is not None and run.kind != kind:
            what = {"toy": "a 2-D toy model (Explore)", "image": "an image model (Sample, "
                    "Compare, Inpaint)"}[kind]
            raise ApiError(400, f"run {run_id!r} is not {what}: its data have shape "
                                f"{list(run.shape)}")
        return run

    def listing(self) -> dict:
        return dict(runs=[r.info() for r in self.runs.values()], skipped=self.skipped)

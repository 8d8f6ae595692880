"""The teacher of a distillation program: a trained score model of ours, or the exact model of
data with a closed form (``teacher="exact"``: a Gaussian mixture's denoiser, the ground truth
the distillation tests measure against).

A distillation config stores the teacher's own config (``teacher_config``) when the run
starts, so its checkpoints rebuild teacher and student without the teacher's run directory; the
teacher's weights are read from that directory once, at the start of a fresh run, and saved in
every checkpoint after that.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..denoiser import Denoiser
from ..sde import get_sde, list_sdes

__all__ = ["TeacherFields", "build_teacher", "load_teacher_weights"]


@dataclass
class TeacherFields:
    """Config fields of a program with a teacher (mixed into its config dataclass)."""

    teacher: str = "exact"
    teacher_config: dict | None = None
    sde: str = "edm"  # the exact teacher's SDE (a run's teacher brings its own)
    sde_kwargs: dict = field(default_factory=dict)
    data: str | None = None  # None: the teacher run's data (and data_kwargs); "gmm" for "exact"

    def complete(self) -> None:
        """``data=None``: the data (and, unless given, data arguments) the teacher run was
        trained on, read from its checkpoint — ``gmm`` for the exact teacher. A ``teacher``
        that is no string is left to :meth:`type_checks` to name."""
        if self.data is not None or not isinstance(self.teacher, str):
            return
        tc = self.run_teacher_config()
        if tc is None:
            self.data = "gmm"
            return
        self.data = tc.get("data")
        if not self.data_kwargs:
            self.data_kwargs = dict(tc.get("data_kwargs") or {})

    def run_teacher_config(self) -> dict | None:
        """The teacher run's config (read from its checkpoint once, then kept in
        ``teacher_config``); None for the exact teacher."""
        if self.teacher == "exact" or not self.teacher:
            return None
        if self.teacher_config is None:
            from ..checkpoint import read_config, resolve_checkpoint
            self.teacher_config = read_config(resolve_checkpoint(self.teacher))
        return self.teacher_config

    def teacher_checks(self) -> list[tuple[bool, str]]:
        return [(self.sde in list_sdes(), f"sde {self.sde!r} not in {list_sdes()}"),
                (bool(self.teacher), "teacher must be 'exact' or a run directory")]

    def resolve_teacher(self, data) -> None:
        """Fill in ``teacher_config`` (and the SDE) from the teacher's checkpoint (in place)."""
        if self.teacher == "exact":
            if getattr(data, "mixture", None) is None:
                raise ValueError(f"teacher='exact' needs data with a closed form ('gmm', "
                                 f"'mixture'), not {self.data!r}")
            return
        tc = self.run_teacher_config()
        if tc.get("kind", "score") != "score":
            raise ValueError(f"teacher {self.teacher}: a {tc.get('kind')} checkpoint, not a "
                             "score model")
        if list(tc.get("shape") or []) != list(data.shape):
            raise ValueError(f"teacher {self.teacher} was trained on shape {tc.get('shape')}, "
                             f"the data {self.data!r} has {list(data.shape)}")
        self.sde, self.sde_kwargs = tc["sde"], dict(tc.get("sde_kwargs", {}))


def build_teacher(cfg) -> Denoiser:
    """The teacher's architecture (weights: :func:`load_teacher_weights`, or a checkpoint)."""
    if cfg.teacher == "exact":
        from ..data import get_data
        mixture = get_data(cfg.data, **cfg.data_kwargs).mixture
        return mixture.denoiser(get_sde(cfg.sde, **cfg.sde_kwargs))
    from .score import TrainConfig, build_denoiser
    return build_denoiser(TrainConfig.from_dict(cfg.teacher_config))


def load_teacher_weights(cfg, teacher: Denoiser) -> None:
    """Copy the trained (EMA) weights of the teacher run into ``teacher``."""
    if cfg.teacher == "exact":
        return
    from ..loading import load
    trained, _ = load(cfg.teacher, kind="score")
    teacher.load_state_dict(trained.state_dict())

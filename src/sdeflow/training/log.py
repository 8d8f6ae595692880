"""A run's log: ``loss.csv`` always, TensorBoard when installed and asked for."""
from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["RunLog"]


def _kept_rows(path: Path, step: int, header: list[str]) -> list[list[str]]:
    """The rows up to ``step`` of an earlier log, in the columns of ``header`` (a log written
    by an older version may have other columns; what it lacks stays empty)."""
    with open(path, newline="") as fh:
        old = list(csv.DictReader(fh))
    return [[r.get(k) or "" for k in header] for r in old
            if r.get("step") and int(r["step"]) <= step]


class RunLog:
    """Rows ``step, loss, lr, img_per_s, <metrics…>``. Opened at ``step`` > 0 (a resume), it
    drops what a killed run logged after its last checkpoint, so the log reads as if the run
    had never been interrupted."""

    def __init__(self, run_dir: Path, step: int, tensorboard: bool, metrics=()):
        path = Path(run_dir) / "loss.csv"
        header = ["step", "loss", "lr", "img_per_s", *metrics]
        rows = _kept_rows(path, step, header) if step > 0 and path.exists() else []
        self.fh = open(path, "w", newline="")
        self.csv = csv.writer(self.fh)
        self.csv.writerow(header)
        self.csv.writerows(rows)
        self.fh.flush()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=step + 1)
            except ImportError:
                print("sdeflow: tensorboard is not installed; logging to loss.csv only")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """``values``: loss, lr, img_per_s and the program's metrics, in the header's order."""
        self.csv.writerow([step, *(f"{v:.1f}" if k == "img_per_s" else f"{v:.6g}"
                                   for k, v in values.items())])
        self.fh.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)

    def image(self, step: int, path: Path) -> None:
        if self.tb is not None:
            import numpy as np
            from PIL import Image
            a = np.asarray(Image.open(path).convert("RGB"))
            self.tb.add_image("samples", a, step, dataformats="HWC")

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()

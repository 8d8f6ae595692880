"""What every benchmark script shares: JSON-lines output and re-rendering earlier runs."""
from __future__ import annotations

import argparse
import json
import platform

import torch


def run_benchmark(doc: str, body, markdown, extra_args=None) -> None:
    """Parse the common options, then ``body(emit, args)``; ``emit(row)`` prints a JSON line
    (and appends it to ``--out``); ``--markdown`` prints ``markdown(rows)`` at the end and
    ``--from-jsonl FILE`` only re-renders an earlier run."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="also write the JSON lines to this file")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table at the end")
    ap.add_argument("--from-jsonl", help="only re-render the markdown of an earlier run")
    if extra_args:
        extra_args(ap)
    a = ap.parse_args()
    if a.from_jsonl:
        with open(a.from_jsonl) as fh:
            print(markdown([r for r in map(json.loads, fh) if not r.get("meta")]))
        return
    rows = []
    fh = open(a.out, "w") if a.out else None

    def emit(row):
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if fh:
            fh.write(line + "\n")
            fh.flush()  # a run killed at its time limit keeps the rows it finished
    emit(dict(meta=True, machine=platform.machine(), threads=torch.get_num_threads(),
              torch=torch.__version__))
    try:
        body(emit, a)
    finally:
        if fh:
            fh.close()
    if a.markdown:
        print(markdown([r for r in rows if not r.get("meta")]))


def interval(value: float, low: float, high: float) -> str:
    """``0.71 [0.62, 0.80]``: a ratio and its interval, as the markdown tables print them."""
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def config_label(st: dict) -> str:
    """``solver(options)/schedule`` of a ``sample(..., return_stats=True)`` run — with
    ``solver="auto"``, the configuration it chose, options included (e.g. iPNDM's order) —
    named as the tuned pipeline names its candidates."""
    from sdeflow.tuning import config_label as label
    return label(st["solver"], st.get("options", {}), st["schedule"])


class PerDrawErrors:
    """Keeps, for every row a benchmark emits, the per-draw squared errors behind its RMS and
    which draws ended in another mixture component, so that ratios between rows can be given
    paired bootstrap intervals afterwards (``benchmarks/ratio_intervals.py``,
    :func:`sdeflow.metrics.rmse_ratio`). The benchmark's error function calls :meth:`note`
    for the output it scores; the row emitted next through :meth:`wrap`'s ``emit`` takes
    those errors (a row with no fresh note takes none). :meth:`save` writes them to one
    safetensors file (keys ``impl|solver|nfe`` and ``…|other``), atomically."""

    def __init__(self, path, **metadata):
        self.path, self.rows, self.last = path, {}, None
        self.metadata = {k: str(v) for k, v in metadata.items()}  # e.g. the reference used

    def note(self, sq, other) -> None:
        self.last = (sq.detach().to("cpu", torch.float32), other.detach().to("cpu", torch.uint8))

    def wrap(self, emit):
        def emit_keeping(row):
            if "rmse" in row and self.last is not None:
                key = f'{row.get("impl", "sdeflow")}|{row.get("solver")}|{row.get("nfe")}'
                while key in self.rows:  # the same label twice at one budget: keep both
                    key += "+"
                self.rows[key] = self.last
            self.last = None
            emit(row)
        return emit_keeping

    def save(self) -> None:
        from pathlib import Path

        from safetensors.torch import save_file
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for key, (sq, other) in self.rows.items():
            tensors[key], tensors[key + "|other"] = sq.contiguous(), other.contiguous()
        tmp = path.with_suffix(".tmp")
        save_file(tensors, tmp, metadata=self.metadata)
        tmp.replace(path)

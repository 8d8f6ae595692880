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


def config_label(st: dict) -> str:
    """``solver(options)/schedule`` of a ``sample(..., return_stats=True)`` run — with
    ``solver="auto"``, the configuration it chose, options included (e.g. iPNDM's order) —
    named as the tuned pipeline names its candidates."""
    from sdeflow.tuning import config_label as label
    return label(st["solver"], st.get("options", {}), st["schedule"])

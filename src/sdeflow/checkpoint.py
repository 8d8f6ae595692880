"""Checkpoints that are written atomically and load without executing code.

A run directory holds ``ckpt-<step>/`` folders and a ``latest`` file naming the newest one.
Each folder has ``config.json`` (the typed training config), ``model.safetensors`` and
``ema.safetensors`` (weights), and ``state.pt`` (optimizer, step and RNG states: tensors and
plain containers only, read back with ``torch.load(weights_only=True)``). A folder is built
under a temporary name and renamed into place, and ``latest`` is replaced atomically, so a run
killed at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "resolve_checkpoint", "read_checkpoint", "write_text_atomic"]


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _contiguous(sd: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(run_dir, step: int, config: dict, model_sd: dict, ema_sd: dict,
                    state: dict, keep: int = 2) -> Path:
    """Write ``run_dir/ckpt-<step>`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".tmp-ckpt-"))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(_contiguous(model_sd), str(tmp / "model.safetensors"))
        save_file(_contiguous(ema_sd), str(tmp / "ema.safetensors"))
        torch.save(state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(run_dir / "latest", final.name)
    old = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir())[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder from itself or from a run directory (via its ``latest`` file)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    latest = path / "latest"
    if latest.is_file():
        ck = path / latest.read_text().strip()
        if (ck / "config.json").is_file():
            return ck
    raise FileNotFoundError(f"no checkpoint at {path} (expected config.json or a 'latest' file)")


def read_checkpoint(path, with_state: bool = True) -> dict:
    """Load config, weights and (optionally) trainer state; nothing in the files is executed."""
    ck = resolve_checkpoint(path)
    out = dict(path=ck, config=json.loads((ck / "config.json").read_text()),
               model=load_file(str(ck / "model.safetensors")),
               ema=load_file(str(ck / "ema.safetensors")))
    if with_state:
        out["state"] = torch.load(ck / "state.pt", weights_only=True, map_location="cpu")
    return out

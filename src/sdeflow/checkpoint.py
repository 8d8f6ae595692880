"""Checkpoints that are written atomically and load without executing code.

A run directory holds ``ckpt-<step>/`` folders and a ``latest`` file naming the newest one.
Each folder has ``config.json`` (the typed training config), one ``<name>.safetensors`` per
network the training program holds (a score model: ``model`` and its EMA ``ema``; a
distillation run adds its teacher, and so on), and ``state.pt`` (optimizer, step and RNG
states: tensors and plain containers only, read back with ``torch.load(weights_only=True)``).
A folder is built under a temporary name and renamed into place, and ``latest`` is replaced
atomically, so a run killed at any moment leaves the previous checkpoint intact.

Reading never trusts a file: every missing, truncated, corrupted or foreign file raises one
:class:`CheckpointError` whose message starts with the file's path and says what is wrong.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["CheckpointError", "save_checkpoint", "resolve_checkpoint", "checkpoint_folder",
           "read_checkpoint", "read_config", "read_weights", "read_state", "load_weights",
           "write_atomic", "write_text_atomic", "check_safetensors"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or not what the caller expected. The message
    starts with the path of the file at fault."""

    def __init__(self, path, what: str):
        super().__init__(f"{path}: {what}")
        self.path = Path(path)


def write_atomic(path: Path, write) -> Path:
    """Create ``path`` whole or not at all: ``write(tmp)`` writes a temporary file beside it,
    which then replaces ``path`` (removed if ``write`` fails)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def _contiguous(sd: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(run_dir, step: int, config: dict, weights: dict[str, dict], state: dict,
                    keep: int = 2) -> Path:
    """Write ``run_dir/ckpt-<step>`` atomically (``weights`` maps a file stem to a state dict),
    point ``latest`` at it and keep the newest ``keep`` checkpoints."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".tmp-ckpt-"))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        for name, sd in weights.items():
            save_file(_contiguous(sd), str(tmp / f"{name}.safetensors"))
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
    if not path.exists():
        raise CheckpointError(path, "no such file or directory, so no checkpoint (give a run "
                                    "directory or a ckpt-<step> folder)")
    if not path.is_dir():
        raise CheckpointError(path, "not a directory (give a run directory or a ckpt-<step> "
                                    "folder, not a file inside it)")
    if (path / "config.json").exists():
        return path
    latest = path / "latest"
    if not latest.is_file():
        raise CheckpointError(path, "no checkpoint here (expected config.json or a 'latest' "
                                    "file naming a ckpt-<step> folder)")
    name = latest.read_text().strip()
    ck = path / name
    if not name or "/" in name or name in (".", "..") or not ck.is_dir():
        raise CheckpointError(latest, f"names {name!r}, which is not a checkpoint folder of "
                                      f"{path}")
    return ck


def checkpoint_folder(path) -> Path:
    """The folder where files that belong to ``path``'s weights live (DPM-Solver-v3's
    statistics, installed tuned schedules): its checkpoint folder (a run directory's ``latest``
    one), or for a path that holds no checkpoint of ours (a saved diffusers folder) the folder
    itself, or a file's folder."""
    try:
        return resolve_checkpoint(path)
    except CheckpointError:
        path = Path(path)
        return path if path.is_dir() else path.parent


def read_config(ck: Path) -> dict:
    """``config.json`` of a checkpoint folder as a dict."""
    f = Path(ck) / "config.json"
    if not f.is_file():
        raise CheckpointError(f, "missing")
    try:
        cfg = json.loads(f.read_text())
    except UnicodeDecodeError:
        raise CheckpointError(f, "not a text file") from None
    except json.JSONDecodeError as e:
        what = e.msg.removesuffix(" at")  # json says "Invalid control character at"
        raise CheckpointError(f, f"not valid JSON ({what} at line {e.lineno} column "
                                 f"{e.colno})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f, f"expected a JSON object, found {type(cfg).__name__}")
    return cfg


def check_safetensors(f: Path) -> None:
    """Header sanity before safetensors reads the file, so damage gets a precise message."""
    if not f.is_file():
        raise CheckpointError(f, "missing")
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f, f"truncated or empty ({size} bytes; not a safetensors file)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f, f"truncated or not a safetensors file (header says {n} "
                                     f"header bytes, file has {size})")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f, "corrupted (its header is not valid JSON); not a "
                                     "safetensors file?") from None
    if not isinstance(header, dict):
        raise CheckpointError(f, "corrupted (its header is not a JSON object)")
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f, "corrupted (its header lists no valid data offsets)") from None
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise CheckpointError(f, f"truncated (header says {need} bytes, file has {size})")


def read_weights(ck: Path, name: str) -> dict[str, torch.Tensor]:
    """``<name>.safetensors`` of a checkpoint folder as a state dict (CPU tensors)."""
    f = Path(ck) / f"{name}.safetensors"
    check_safetensors(f)
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f, f"corrupted ({str(e).splitlines()[0]})") from None


def read_state(ck: Path) -> dict:
    """``state.pt`` (optimizer, step, RNG), unpickling tensors and plain containers only."""
    f = Path(ck) / "state.pt"
    if not f.is_file():
        raise CheckpointError(f, "missing (needed to resume training)")
    try:
        state = torch.load(f, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f, f"corrupted or not a trainer state "
                                 f"({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f, "not a trainer state (expected a dict with a 'step')")
    return state


def read_checkpoint(path, with_state: bool = True, weights=None) -> dict:
    """Config, weights and (optionally) trainer state of a checkpoint folder or run directory.

    ``weights``: the file stems to read (default: every ``*.safetensors`` in the folder); the
    result maps each to its state dict under ``result[name]``. Nothing is executed."""
    ck = resolve_checkpoint(path)
    out = dict(path=ck, config=read_config(ck))
    names = sorted(p.stem for p in ck.glob("*.safetensors")) if weights is None else weights
    for name in names:
        out[name] = read_weights(ck, name)
    if with_state:
        out["state"] = read_state(ck)
    return out


def load_weights(module: nn.Module, sd: dict, file) -> None:
    """``module.load_state_dict(sd)``, or a CheckpointError naming ``file`` that lists the
    missing, unexpected and wrongly shaped parameters (weights of another config)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = [f"{label} {items[:3]}{' …' if len(items) > 3 else ''}" for label, items in
                 (("missing", missing), ("unexpected", extra), ("shape (file vs config)", shapes))
                 if items]
        raise CheckpointError(file, "weights do not match the network its config.json "
                                    "describes: " + "; ".join(parts))
    module.load_state_dict(sd)

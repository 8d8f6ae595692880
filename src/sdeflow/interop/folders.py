"""One loader for a saved diffusers folder: it reads the saved class names and picks
:func:`.from_diffusers`, :func:`.from_score_sde`, :func:`.from_stable_diffusion` or
:func:`.from_dit`."""
from __future__ import annotations

from pathlib import Path

from ..denoiser import Denoiser
from .dit import DIT_CLASSES, from_dit
from .hf_diffusers import folder_class, from_diffusers, scheduler_config
from .score_sde import from_score_sde
from .stable_diffusion import from_stable_diffusion

__all__ = ["load_diffusers", "is_diffusers_folder", "SUPPORTED"]

SUPPORTED = {
    "UNet2DModel + a DDPM-family scheduler": "from_diffusers",
    "UNet2DModel + ScoreSdeVeScheduler/ScoreSdeVpScheduler": "from_score_sde",
    "UNet2DConditionModel + AutoencoderKL (Stable-Diffusion layout)": "from_stable_diffusion",
    "DiTTransformer2DModel/Transformer2DModel (+ AutoencoderKL)": "from_dit",
}


def _network_class(folder: Path) -> str | None:
    for sub in ("unet", "transformer", None):
        if sub is None or (folder / sub).is_dir():
            found = folder_class(folder, sub)
            if found is not None:
                return found
    return None


def is_diffusers_folder(path) -> bool:
    """Whether ``path`` is a saved diffusers pipeline or model (a ``model_index.json``, or a
    ``config.json`` naming a diffusers class) rather than an sdeflow run."""
    p = Path(path)
    return p.is_dir() and ((p / "model_index.json").is_file() or _network_class(p) is not None)


def load_diffusers(folder, **kw) -> Denoiser:
    """The Denoiser of a saved diffusers folder (``**kw``: the chosen loader's options, e.g.
    ``sample_size``, ``device``, ``dtype``). A folder of any other class is a ValueError that
    lists what is supported."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory (a saved diffusers pipeline or model)")
    cls = _network_class(folder)
    if cls == "UNet2DConditionModel":
        return from_stable_diffusion(folder, **kw)
    if cls in DIT_CLASSES:
        return from_dit(folder, **kw)
    if cls == "UNet2DModel":
        kind = str(scheduler_config(folder, None).get("_class_name", ""))
        loader = from_score_sde if kind.startswith("ScoreSde") else from_diffusers
        return loader(folder, **kw)
    found = f"a {cls}" if cls else "no diffusers model (no unet/, transformer/ or config.json)"
    raise ValueError(f"{folder}: holds {found}; supported: " +
                     "; ".join(f"{k} ({v})" for k, v in SUPPORTED.items()))

"""Import anchors that are awkward to install whole.

k-diffusion's package ``__init__`` pulls in torchvision, CLIP, wandb and more; its sampling
module needs only torchdiffeq, torchsde, scipy and one helper of its ``utils``. Install it with
``pip install --no-deps k-diffusion torchsde`` and load just that module here.
"""
from __future__ import annotations

import importlib.util
import sys
import types


def k_diffusion_sampling():
    """k_diffusion.sampling without importing the rest of the package, or None."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [root]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        """Append singleton dimensions until x has target_dims dimensions."""
        return x[(...,) + (None,) * (target_dims - x.ndim)]
    utils.append_dims = append_dims
    pkg.utils = utils
    saved = {k: sys.modules.get(k) for k in ("k_diffusion", "k_diffusion.utils")}
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    try:
        sub = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{root}/sampling.py")
        mod = importlib.util.module_from_spec(sub)
        sub.loader.exec_module(mod)
    except ImportError:
        return None
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod

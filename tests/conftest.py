import pytest
import torch

import sdeflow
from sdeflow.oracle import GaussianMixture

# One representative of every SDE, with a schedule each is usually sampled with.
SDES = {
    "ve": (lambda: sdeflow.VESDE(sigma_min=0.01, sigma_max=20.0), "uniform"),
    "vp": (lambda: sdeflow.VPSDE(), "uniform"),
    "vp_cosine": (lambda: sdeflow.VPSDE(schedule="cosine"), "uniform"),
    "subvp": (lambda: sdeflow.SubVPSDE(), "uniform"),
    "edm": (lambda: sdeflow.EDMSDE(), "karras"),
}


@pytest.fixture(params=sorted(SDES))
def sde_case(request):
    make, schedule = SDES[request.param]
    return request.param, make(), schedule


@pytest.fixture(scope="session")
def mixture2d():
    """A 3-component anisotropic 2-D mixture with unequal weights."""
    return GaussianMixture.random(2, k=3, seed=1)


@pytest.fixture(scope="session")
def ring():
    return GaussianMixture.ring(k=8, radius=2.0, std=0.25)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# A U-Net small enough to train a few steps in a test (8 channels, two levels, attention at 4×4).
TINY_UNET = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], head_dim=8)
TINY_DIT = dict(patch_size=2, hidden=32, depth=2, heads=2)


def train_interrupted(make_cfg, tmp_path, split: int):
    """(a run trained straight to make_cfg().steps, one stopped at ``split`` and resumed):
    the exact-resume check every training program shares."""
    from sdeflow.training import train
    full = train(make_cfg(), tmp_path / "a", progress=False)
    cfg = make_cfg()
    cfg.steps = split
    train(cfg, tmp_path / "b", progress=False)
    return full, train(make_cfg(), tmp_path / "b", resume=True, progress=False)

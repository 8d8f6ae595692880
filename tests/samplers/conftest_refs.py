"""Reference PF-ODE solutions shared by the ODE tests."""
import torch

from ..conftest import SDES, gen


def build_references(mixture):
    refs = {}
    for name in ("vp", "ve", "subvp", "edm"):
        make, schedule = SDES[name]
        sde = make()
        model = mixture.denoiser(sde)
        x_T = sde.prior_sample((32, 2), generator=gen(0), dtype=torch.float64)
        import sdeflow
        ref = sdeflow.sample(model, x_T, solver="rk4", steps=4096, schedule=schedule, denoise=False)
        refs[name] = (model, x_T, schedule, ref)
    return refs

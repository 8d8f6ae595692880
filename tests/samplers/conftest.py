"""Reference PF-ODE solutions shared by the sampler tests (computed once per session)."""
import pytest
import torch

import sdeflow

from ..conftest import SDES, gen


@pytest.fixture(scope="session")
def references(mixture2d):
    """name → (model, x_T, schedule, x(t_min) by RK4 with 4096 steps); RK4 at 4096 steps agrees
    with RK45 at rtol = atol = 1e-11 to ~1e-11, and with SciPy's DOP853 to 6e-11
    (test_ode.py::test_reference_agrees_with_scipy)."""
    refs = {}
    for name in ("vp", "ve", "subvp", "edm"):
        make, schedule = SDES[name]
        sde = make()
        model = mixture2d.denoiser(sde)
        x_T = sde.prior_sample((32, 2), generator=gen(0), dtype=torch.float64)
        ref = sdeflow.sample(model, x_T, solver="rk4", steps=4096, schedule=schedule, denoise=False)
        refs[name] = (model, x_T, schedule, ref)
    return refs

import pytest
import torch

import sdeflow
from sdeflow.schedules import get_timesteps, list_schedules


@pytest.mark.parametrize("schedule", ["uniform", "karras", "logsnr", "quadratic"])
def test_schedules_decrease_with_exact_endpoints(sde_case, schedule):
    _, sde, _ = sde_case
    ts = get_timesteps(sde, 17, schedule)
    assert ts.shape == (18,) and ts.dtype == torch.float64
    assert ts[0] == sde.T and ts[-1] == sde.t_min
    assert (ts[1:] < ts[:-1]).all()


def test_schedules_follow_their_definitions():
    sde = sdeflow.VPSDE()
    lam = sde.log_snr(get_timesteps(sde, 10, "logsnr"))
    torch.testing.assert_close(lam.diff(), lam.diff()[:1].expand(10), rtol=1e-9, atol=1e-12)
    edm = sdeflow.EDMSDE()
    ts = get_timesteps(edm, 18, "karras")
    # Karras et al. eq. 5 with σ_max = 80, σ_min = 0.002, ρ = 7
    i = torch.arange(19, dtype=torch.float64)
    ref = (80 ** (1 / 7) + i / 18 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(ts, ref)
    q = get_timesteps(edm, 4, "quadratic", t_start=1.0, t_end=0.1)
    torch.testing.assert_close(q, 0.1 + 0.9 * torch.tensor([1, 0.5625, 0.25, 0.0625, 0.0], dtype=torch.float64))


def test_registry_and_errors():
    assert {"uniform", "karras", "edm", "logsnr", "quadratic"} <= set(list_schedules())
    sde = sdeflow.EDMSDE()
    with pytest.raises(ValueError, match="choices"):
        get_timesteps(sde, 10, "cosine-ish")
    with pytest.raises(ValueError, match="positive integer"):
        get_timesteps(sde, 0)
    with pytest.raises(ValueError, match=r"\[t_min, T\]"):
        get_timesteps(sde, 10, t_start=200.0)
    with pytest.raises(ValueError, match="t_start > t_end"):
        get_timesteps(sde, 10, t_start=1.0, t_end=2.0)


def test_free_end_schedules_need_the_final_denoising():
    """vp_trailing ends before t_end: refused unless the caller finishes with x̂0 (sample() with
    denoise=True on a fixed grid); likelihood/encode keep the default and refuse it."""
    from sdeflow.likelihood import encode, log_likelihood
    from sdeflow.oracle import GaussianMixture
    sde = sdeflow.EDMSDE()
    with pytest.raises(ValueError, match="'vp_trailing' ends early.*final denoising"):
        get_timesteps(sde, 4, "vp_trailing")
    assert get_timesteps(sde, 4, "vp_trailing", allow_free_end=True)[-1] > sde.t_min
    model = GaussianMixture.ring().denoiser(sde)
    x = sde.prior_sample((3, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert sdeflow.sample(model, x, solver="ddim", steps=3, schedule="vp_trailing").shape == x.shape
    for call in (lambda: sdeflow.sample(model, x, solver="ddim", steps=3, schedule="vp_trailing",
                                        denoise=False),
                 lambda: encode(model, x, solver="euler", steps=3, schedule="vp_trailing"),
                 lambda: log_likelihood(model, x, solver="euler", steps=3, schedule="vp_trailing")):
        with pytest.raises(ValueError, match="ends early"):
            call()
    with pytest.raises(ValueError, match="adaptive.*schedule"):
        sdeflow.sample(model, x, solver="rk45", schedule="vp_trailing")

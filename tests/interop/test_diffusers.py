"""A diffusers UNet2DModel (tiny, random, saved to a temp dir) loads as a Denoiser on the VP
SDE: it is the original network at every trained timestep, and sdeflow's DDIM on the matching
times reproduces diffusers' own DDIMScheduler loop."""
import pytest
import torch

import sdeflow

diffusers = pytest.importorskip("diffusers")
from sdeflow.interop import from_diffusers  # noqa: E402

from ..conftest import gen  # noqa: E402


def _unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    _unet().save_pretrained(d / "unet")
    diffusers.DDPMScheduler().save_pretrained(d / "scheduler")
    return d


def _lam(a):
    return 0.5 * (a.log() - torch.log1p(-a))


def test_matches_the_network_at_trained_timesteps(pipeline_dir):
    model = from_diffusers(pipeline_dir).double()
    unet = diffusers.UNet2DModel.from_pretrained(pipeline_dir / "unet").double()
    a = diffusers.DDPMScheduler().alphas_cumprod.double()
    sde = model.sde
    assert sde.log_snr(torch.tensor(sde.T, dtype=torch.float64)) == pytest.approx(_lam(a)[-1].item(), abs=1e-9)
    assert sde.log_snr(torch.tensor(sde.t_min, dtype=torch.float64)) == pytest.approx(_lam(a)[0].item(), abs=1e-9)
    x = torch.randn(3, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    with torch.no_grad():
        for n in (0, 17, 500, 999):
            t = sde.t_from_log_snr(_lam(a)[n]).expand(3)
            assert torch.allclose(model.net.timestep(t), torch.full((3,), float(n), dtype=torch.float64))
            torch.testing.assert_close(model.eps(x, t), unet(x, n).sample, rtol=1e-10, atol=1e-10)


def test_ddim_reproduces_diffusers_ddim(pipeline_dir):
    model = from_diffusers(pipeline_dir)
    unet = diffusers.UNet2DModel.from_pretrained(pipeline_dir / "unet")
    sched = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
    sched.set_timesteps(10)
    x = torch.randn(4, 1, 8, 8, generator=gen(1))
    with torch.no_grad():
        y = x.clone()
        for n in sched.timesteps:
            y = sched.step(unet(y, n).sample, n, y).prev_sample
        ts = model.sde.t_from_log_snr(_lam(sched.alphas_cumprod.double())[sched.timesteps])
        z, st = sdeflow.sample(model, x, solver="ddim", timesteps=ts, return_stats=True)
    assert st["nfe"] == 10  # 9 steps + the final denoise, like diffusers' 10 calls
    torch.testing.assert_close(z, y, rtol=1e-4, atol=1e-4 * y.abs().max().item())


@pytest.mark.parametrize("ptype,ours", [("v_prediction", "v"), ("sample", "x0")])
def test_prediction_types_and_cosine_schedule(ptype, ours):
    sched = diffusers.DDPMScheduler(prediction_type=ptype, beta_schedule="squaredcos_cap_v2")
    model = from_diffusers(_unet(), sched)
    assert model.prediction == ours and model.sde.schedule == "cosine"
    with torch.no_grad():
        x = sdeflow.sample(model, shape=(2, 1, 8, 8), solver="dpmpp_2m", steps=5, seed=0)
    assert torch.isfinite(x).all()


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError):
        from_diffusers(_unet(), dict(prediction_type="flow"))

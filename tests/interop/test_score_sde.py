"""A tiny random score_sde VE model (UNet2DModel with NCSN++ skip blocks and Fourier time
embedding + ScoreSdeVeScheduler) saved as a ScoreSdeVePipeline loads as a Denoiser on our VESDE
with its σ_min/σ_max: the network's output is the score at σ(t), and our PC sampler reproduces
diffusers' ScoreSdeVePipeline loop draw for draw."""
import numpy as np
import pytest
import torch

import sdeflow

diffusers = pytest.importorskip("diffusers")
from sdeflow.interop import from_score_sde, load_diffusers  # noqa: E402
from sdeflow.samplers.pc import langevin  # noqa: E402
from sdeflow.samplers.registry import Context  # noqa: E402
from sdeflow.sde import VESDE, VPSDE, SubVPSDE  # noqa: E402

from ..conftest import gen  # noqa: E402
from . import tiny  # noqa: E402

SIGMA_MIN, SIGMA_MAX, SNR, N = 0.01, 50.0, 0.15, 10
SHAPE = (2, 3, 8, 8)


@pytest.fixture(scope="module")
def ve_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ncsnpp")
    sched = diffusers.ScoreSdeVeScheduler(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, snr=SNR)
    diffusers.ScoreSdeVePipeline(unet=tiny.ve_unet(), scheduler=sched).save_pretrained(d)
    return d


def test_is_the_network_as_a_score_on_our_vesde(ve_dir):
    model = load_diffusers(ve_dir).double()
    unet = diffusers.UNet2DModel.from_pretrained(ve_dir / "unet").double()
    sde = model.sde
    assert isinstance(sde, VESDE) and (sde.sigma_min, sde.sigma_max) == (SIGMA_MIN, SIGMA_MAX)
    assert model.prediction == "score" and sde.t_min == 1e-5
    x = torch.randn(*SHAPE, generator=gen(0), dtype=torch.float64)
    with torch.no_grad():
        for t in (1.0, 0.5, 1e-5):
            sig = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t
            want = unet(x, torch.full((2,), sig, dtype=torch.float64)).sample
            torch.testing.assert_close(model.score(x, t), want, rtol=1e-10, atol=1e-10)


def _diffusers_loop(unet, sched, x, g):
    """ScoreSdeVePipeline.__call__ without its final clamp: per step, correct_steps Langevin
    corrector steps at σ_i, then the reverse-diffusion predictor; returns the last step's mean,
    and the states after each predictor step."""
    sched.set_timesteps(N)
    sched.set_sigmas(N)
    states = []
    for i, t in enumerate(sched.timesteps):
        sig = sched.sigmas[i] * torch.ones(x.shape[0])
        for _ in range(sched.config.correct_steps):
            x = sched.step_correct(unet(x, sig).sample, x, generator=g).prev_sample
        out = sched.step_pred(unet(x, sig).sample, t, x, generator=g)
        x, mean = out.prev_sample, out.prev_sample_mean
        states.append(x)
    return mean, states


def _ours(model, ts, x, g):
    """Our PC sampler (reverse-diffusion predictor, Langevin corrector, same snr) on diffusers'
    N times: its N − 1 intervals are diffusers' first N − 1 iterations; diffusers' last
    iteration (a corrector step at σ_min, then the mean of a step to σ = 0) is our corrector
    step followed by Tweedie's x̂0 = x + σ_min²∇log p (the final denoising)."""
    states = []
    x = sdeflow.sample(model, x, solver="pc", timesteps=ts, snr=SNR, denoise=False, generator=g,
                       callback=lambda t, y: states.append(y))
    t_last = ts[-1].to(x.dtype).expand(x.shape[0])
    x = langevin(model, x, t_last, t_last, Context(generator=g), snr=SNR)
    return model.x0(x, t_last), states


@pytest.mark.parametrize("sigma_max", [SIGMA_MAX, 1.1 * SIGMA_MAX])
def test_pc_sampler_reproduces_the_score_sde_ve_pipeline(ve_dir, sigma_max):
    """Both draw x_T = σ_max·z and then every corrector and predictor noise from one generator
    seeded alike, in the same order; compared: the state after each of the N − 1 shared steps
    and the final output, to float32 round-off (2e-5 of the largest value; measured 4e-6).
    Power: a model loaded with a 10 % wrong σ_max is off by ~8e-2."""
    pipe = diffusers.ScoreSdeVePipeline.from_pretrained(ve_dir)
    model = from_score_sde(ve_dir if sigma_max == SIGMA_MAX else pipe.unet,
                           dict(sigma_min=SIGMA_MIN, sigma_max=sigma_max, snr=SNR))
    with torch.no_grad():
        g = gen(0)
        want, ref = _diffusers_loop(pipe.unet, pipe.scheduler, torch.randn(SHAPE, generator=g) *
                                    SIGMA_MAX, g)
        g = gen(0)
        got, ours = _ours(model, pipe.scheduler.timesteps.double(),
                          torch.randn(SHAPE, generator=g) * SIGMA_MAX, g)
        # the loop above is the pipeline's: its output is the clamped, channels-last mean
        img = pipe(batch_size=2, num_inference_steps=N, generator=gen(0), output_type="np").images
    np.testing.assert_allclose(img, want.clamp(0, 1).permute(0, 2, 3, 1).numpy(), atol=1e-6)
    errs = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours + [got], ref[:-1] + [want])]
    assert len(errs) == N
    assert (max(errs) < 2e-5) == (sigma_max == SIGMA_MAX), errs


def test_vp_variant_and_refusals(tmp_path):
    sched = dict(_class_name="ScoreSdeVpScheduler", beta_min=0.1, beta_max=20.0)
    model = from_score_sde(tiny.ve_unet(), sched)
    assert isinstance(model.sde, VPSDE) and model.prediction == "eps"
    assert model.net.label(torch.tensor([0.5])).item() == pytest.approx(999 * 0.5)
    unet = tiny.ve_unet()
    sub = from_score_sde(unet, dict(sde="subvp", beta_min=0.1, beta_max=20.0))
    assert type(sub.sde) is SubVPSDE and sub.prediction == "eps"
    x, t = torch.randn(2, 3, 8, 8, generator=gen(0)), torch.tensor([0.3, 0.7])
    with torch.no_grad():  # the score is −ε̂/σ(t) of the sub-VP marginal, ε̂ = unet(x, 999t)
        eps = unet(x, 999 * t).sample
        torch.testing.assert_close(sub.score(x, t), -eps / sub.sde.sigma(t).view(-1, 1, 1, 1),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'vp' or 'subvp'"):
        from_score_sde(tiny.ve_unet(), dict(sde="ve-ish", beta_min=0.1))
    with pytest.raises(ValueError, match="from_diffusers"):
        from_score_sde(tiny.ve_unet(), diffusers.DDPMScheduler())
    with pytest.raises(ValueError, match="from_score_sde"):
        sdeflow.interop.from_diffusers(tiny.ve_unet(), diffusers.ScoreSdeVeScheduler())
    model = from_score_sde(tiny.ve_unet(), diffusers.ScoreSdeVeScheduler())
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        sdeflow.sample(model, shape=(1, 3, 16, 16), solver="euler", steps=2)

"""A tiny random Stable-Diffusion-layout pipeline (UNet2DConditionModel + AutoencoderKL +
scaled-linear PNDM schedule) saved with save_pretrained loads as a latent Denoiser: the network
at its trained timesteps, diffusers' DPM-Solver++(2M) and DDIM loops reproduced by ours on the
same timesteps from the same latent noise, CFG with a (1, L, D) null embedding, and the VAE
as the latent model's autoencoder."""
import copy

import pytest
import torch

import sdeflow

diffusers = pytest.importorskip("diffusers")
from sdeflow.guidance import ClassifierFreeGuidance  # noqa: E402
from sdeflow.interop import discrete_times, from_stable_diffusion, load_diffusers  # noqa: E402
from sdeflow.latent import LatentDenoiser  # noqa: E402

from ..conftest import gen  # noqa: E402
from . import tiny  # noqa: E402

L, D = 5, 8  # text length and cross-attention width of the tiny U-Net


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return tiny.save_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def parts(sd_dir):
    unet = diffusers.UNet2DConditionModel.from_pretrained(sd_dir / "unet")
    vae = diffusers.AutoencoderKL.from_pretrained(sd_dir / "vae")
    return unet, vae


def _emb(n, seed=3):
    return torch.randn(n, L, D, generator=gen(seed))


def _diffusers_loop(unet, sched, x, emb, steps):
    """diffusers' denoising loop (as StableDiffusionPipeline, without CFG, on latents)."""
    sched.set_timesteps(steps)
    with torch.no_grad():
        for n in sched.timesteps:
            x = sched.step(unet(x, n, encoder_hidden_states=emb).sample, n, x).prev_sample
    return x


def _close(z, y, rtol):
    return (z - y).abs().max().item() <= rtol * y.abs().max().item()


def test_loads_as_a_latent_model_equal_to_the_network(sd_dir, parts):
    model = from_stable_diffusion(sd_dir, dtype=torch.float64)
    unet, vae = (copy.deepcopy(m).double() for m in parts)
    assert isinstance(model, LatentDenoiser) and model.scale == vae.config.scaling_factor
    assert model.image_shape == (3, 16, 16) and model.latent_shape == (4, 8, 8)
    a = tiny.sd_scheduler().alphas_cumprod.double()
    lam = 0.5 * (a.log() - torch.log1p(-a))
    assert model.sde.log_snr(torch.tensor(model.sde.T, dtype=torch.float64)).item() == \
        pytest.approx(lam[-1].item(), abs=1e-9)
    x, e = torch.randn(2, 4, 8, 8, generator=gen(0), dtype=torch.float64), _emb(2).double()
    with torch.no_grad():
        for n in (0, 1, 321, 999):
            t = discrete_times(model, torch.tensor([n, n]))
            want = unet(x, n, encoder_hidden_states=e).sample
            torch.testing.assert_close(model.eps(x, t, encoder_hidden_states=e), want,
                                       rtol=1e-10, atol=1e-10)
        img = torch.rand(2, 3, 16, 16, generator=gen(1), dtype=torch.float64) * 2 - 1
        z = vae.encode(img).latent_dist.mean * vae.config.scaling_factor
        torch.testing.assert_close(model.encode(img), z)
        torch.testing.assert_close(model.decode(z), vae.decode(z / vae.config.scaling_factor).sample)


@pytest.mark.parametrize("shift", [0, 3])
def test_dpmpp_2m_reproduces_diffusers_dpm_solver(sd_dir, parts, shift):
    """Same timesteps, same initial latents: diffusers' DPMSolverMultistepScheduler (2M,
    DPM-Solver++, final step to σ = 0 of first order) is our dpmpp_2m on the times of its
    timesteps, second order up to the last interval (lower_order_final=False) and our final
    x̂0 — to 1e-4. Power: timesteps shifted by ``shift`` levels are not."""
    unet, _ = parts
    model = from_stable_diffusion(sd_dir)
    sched = diffusers.DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", solver_order=2,
        algorithm_type="dpmsolver++", final_sigmas_type="zero", lower_order_final=True)
    x, e = torch.randn(3, 4, 8, 8, generator=gen(2)), _emb(3)
    y = _diffusers_loop(unet, sched, x, e, 10)
    ts = discrete_times(model, (sched.timesteps - shift).clamp(min=0))
    with torch.no_grad():
        z, st = sdeflow.sample(model, x, solver="dpmpp_2m", timesteps=ts, lower_order_final=False,
                               cond={"encoder_hidden_states": e}, decode=False, return_stats=True)
    assert st["nfe"] == 10
    assert _close(z, y, 1e-4) == (shift == 0), (z - y).abs().max().item()


@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_ddim_reproduces_diffusers_ddim(sd_dir, parts, alpha_to_one):
    """DDIMScheduler with SD's leading spacing (steps_offset=1): with set_alpha_to_one its last
    step lands on x̂0 (our final denoise); without, on level 0 (one more DDIM step to t(0))."""
    unet, _ = parts
    model = from_stable_diffusion(sd_dir)
    sched = tiny.sd_scheduler(set_alpha_to_one=alpha_to_one, steps_offset=1, clip_sample=False)
    x, e = torch.randn(3, 4, 8, 8, generator=gen(4)), _emb(3)
    y = _diffusers_loop(unet, sched, x, e, 8)
    steps = sched.timesteps if alpha_to_one else torch.cat([sched.timesteps, torch.tensor([0])])
    with torch.no_grad():
        z = sdeflow.sample(model, x, solver="ddim", timesteps=discrete_times(model, steps),
                           denoise=alpha_to_one, cond={"encoder_hidden_states": e}, decode=False)
    assert _close(z, y, 1e-4), (z - y).abs().max().item()


def test_cfg_with_a_single_null_embedding_is_diffusers_guidance(sd_dir, parts):
    """ClassifierFreeGuidance(model, g − 1, uncond={"encoder_hidden_states": null (1, L, D)})
    expands the null embedding to the batch and gives diffusers' ε_u + g(ε_c − ε_u)."""
    unet, _ = parts
    model = from_stable_diffusion(sd_dir)
    g, null = 7.5, _emb(1, seed=5)
    guided = ClassifierFreeGuidance(model, g - 1, uncond={"encoder_hidden_states": null})
    x, e = torch.randn(3, 4, 8, 8, generator=gen(6)), _emb(3)
    t = discrete_times(model, torch.tensor([500] * 3))
    with torch.no_grad():
        ec = unet(x, 500, encoder_hidden_states=e).sample
        eu = unet(x, 500, encoder_hidden_states=null.expand(3, L, D)).sample
        torch.testing.assert_close(guided.eps(x, t, encoder_hidden_states=e), eu + g * (ec - eu),
                                   rtol=1e-4, atol=1e-5)
        img = sdeflow.sample(guided, shape=(3, 3, 16, 16), solver="dpmpp_2m", steps=3, seed=0,
                             cond={"encoder_hidden_states": e})
    assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()


def test_wrong_shapes_and_classes_are_refused_by_name(sd_dir, tmp_path):
    model = load_diffusers(sd_dir)
    e = _emb(1)
    with pytest.raises(ValueError, match="16, 16"):  # LatentDenoiser names its image shape
        sdeflow.sample(model, shape=(1, 3, 32, 32), steps=2, cond={"encoder_hidden_states": e})
    big = from_stable_diffusion(sd_dir, sample_size=16)
    assert big.image_shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"in_channels and sample_size"):
        big.eps(torch.zeros(1, 4, 8, 8), big.sde.T, encoder_hidden_states=e)
    tiny.vae().save_pretrained(tmp_path / "unet")  # an AutoencoderKL where the U-Net should be
    with pytest.raises(ValueError, match="AutoencoderKL.*supported"):
        load_diffusers(tmp_path)

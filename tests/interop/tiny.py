"""Tiny randomly initialised diffusers models (seeded), small enough for CPU tests."""
import torch

import diffusers

SMALL = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


def ve_unet(channels: int = 3, size: int = 8):
    """A score_sde-style UNet2DModel: NCSN++ skip blocks, Fourier time embedding (so its
    output is divided by the σ it is given, as the converted score_sde models do)."""
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, time_embedding_type="fourier",
        down_block_types=("SkipDownBlock2D",) * 2, up_block_types=("SkipUpBlock2D",) * 2, **SMALL)


def cond_unet(latent_channels: int = 4, size: int = 8, cross_dim: int = 8):
    """A Stable-Diffusion-layout UNet2DConditionModel with cross-attention of width ``cross_dim``."""
    torch.manual_seed(1)
    return diffusers.UNet2DConditionModel(
        sample_size=size, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_dim,
        attention_head_dim=2, **SMALL)


def vae(latent_channels: int = 4, image_size: int = 16):
    """An AutoencoderKL downsampling by 2 (two blocks)."""
    torch.manual_seed(2)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
        latent_channels=latent_channels, norm_num_groups=4, sample_size=image_size)


def sd_scheduler(**kw):
    """SD 1.x's schedule: scaled-linear betas 0.00085 … 0.012 over 1000 steps."""
    return diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", **kw)


def save_sd(folder, **unet_kw):
    """A tiny SD-layout pipeline folder: unet/, vae/, scheduler/ (PNDM, as SD 1.x ships)."""
    cond_unet(**unet_kw).save_pretrained(folder / "unet")
    vae().save_pretrained(folder / "vae")
    diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                            skip_prk_steps=True).save_pretrained(folder / "scheduler")
    return folder


def dit(size: int = 8, classes: int = 10):
    """A class-conditional DiT with learned sigma (out_channels = 2 × in_channels)."""
    torch.manual_seed(3)
    return diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=2,
        sample_size=size, patch_size=2, num_embeds_ada_norm=classes, norm_num_groups=4)

"""``sdeflow train-autoencoder``: every field of
:class:`~sdeflow.training.autoencoder.AutoencoderConfig` gets its flag from
:mod:`.config_flags` (the table below gives the help of the fields only it has)."""
from __future__ import annotations

from .common import add_command, latest_checkpoint
from .config_flags import add_config_flags, add_run_flags, config_from_args

__all__ = ["autoencoder_flags", "autoencoder_config", "add_train_autoencoder",
           "cmd_train_autoencoder"]


def autoencoder_flags() -> dict:
    """Help of the flags of the fields only an autoencoder run has."""
    from ..autoencoders import FACTORS, list_autoencoders
    return dict(
        autoencoder=dict(choices=list_autoencoders(),
                         help="ae: plain conv autoencoder (L1/L2); vae: conv VAE (−ELBO, β); kl: "
                              "LDM's KL-regularised autoencoder (L1 + 1e-6·KL); linear: "
                              "linear-Gaussian VAE on flattened data (closed forms)"),
        autoencoder_kwargs="network and loss arguments as JSON, e.g. '{\"channels\": 32, "
                           "\"channel_mult\": [1, 2, 4], \"kl_weight\": 1e-6, \"recon\": "
                           "\"l2\"}' (vae: likelihood gaussian|laplace|bernoulli|discretized, "
                           "beta, sigma_x, learn_sigma_x, bits)",
        downsample=dict(choices=list(FACTORS), show_default=False,
                        help="spatial down-sampling factor f: latents are (c, H/f, W/f) "
                             "(default: 4; 1 for linear)"),
        latent_channels="latent channels c (linear: the latent dimension)",
        sample_num="held-out images of the preview grid and of heldout.csv's PSNR/SSIM",
        model=None, model_kwargs=None)


def autoencoder_config(a):
    """The validated AutoencoderConfig of ``sdeflow train-autoencoder``'s arguments."""
    from ..training.autoencoder import AutoencoderConfig
    return config_from_args(AutoencoderConfig, a).validate()


def add_train_autoencoder(sub) -> None:
    from ..training.autoencoder import AutoencoderConfig
    p = add_command(sub, "train-autoencoder", cmd_train_autoencoder)
    add_config_flags(p, AutoencoderConfig, **autoencoder_flags())
    add_run_flags(p, "runs/autoencoder")


def cmd_train_autoencoder(a) -> int:
    """train an autoencoder (the latent space of latent diffusion)

    Train a plain, variational or LDM KL-regularised convolutional autoencoder on image data
    (or a linear-Gaussian VAE on vectors) and save resumable checkpoints to --out. Latents are
    (--latent-channels, H/f, W/f) with f = --downsample. With --sample-every N, held-out images
    over their reconstructions are saved to OUT/samples and their PSNR/SSIM to
    OUT/heldout.csv. Use the run for latent diffusion with `sdeflow train --latent OUT`; in
    Python, sdeflow.load(OUT, kind="autoencoder").
    """
    from ..training import train
    st = train(autoencoder_config(a), a.out, resume=a.resume)
    if st.dist.is_main:
        print(f"trained {st.step} steps; checkpoint in {latest_checkpoint(a.out)}")
    return 0

"""Autoencoders (plain, VAE, LDM's KL-regularised, linear-Gaussian) and the ELBO/IWAE maths:
the latent space of latent diffusion, trained with ``sdeflow train-autoencoder``
(:mod:`sdeflow.training.autoencoder`) and loaded with ``sdeflow.load(run, kind="autoencoder")``."""
from .elbo import bits_per_dim, elbo, gaussian_kl, iwae
from .models import (FACTORS, LIKELIHOODS, Autoencoder, ConvAutoencoder, ConvVAE, KLAutoencoder,
                     LinearVAE)
from .registry import AUTOENCODERS, build_autoencoder, list_autoencoders

__all__ = ["Autoencoder", "ConvAutoencoder", "ConvVAE", "KLAutoencoder", "LinearVAE",
           "build_autoencoder", "list_autoencoders", "AUTOENCODERS", "FACTORS", "LIKELIHOODS",
           "elbo", "iwae", "gaussian_kl", "bits_per_dim"]

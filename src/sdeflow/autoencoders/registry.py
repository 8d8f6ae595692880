"""Pick an autoencoder by name: ``build_autoencoder("kl", downsample=4, latent_channels=4)``."""
from __future__ import annotations

from .models import Autoencoder, ConvAutoencoder, ConvVAE, KLAutoencoder, LinearVAE

__all__ = ["AUTOENCODERS", "build_autoencoder", "list_autoencoders"]

#: name → class: "ae" plain conv autoencoder, "vae" conv VAE, "kl" LDM's KL-regularised
#: autoencoder, "linear" the linear-Gaussian VAE (closed forms; vectors or flattened images)
AUTOENCODERS: dict[str, type[Autoencoder]] = {
    "ae": ConvAutoencoder, "vae": ConvVAE, "kl": KLAutoencoder, "linear": LinearVAE}


def list_autoencoders() -> list[str]:
    return sorted(AUTOENCODERS)


def build_autoencoder(name: str, **kwargs) -> Autoencoder:
    """The autoencoder ``name`` built with ``kwargs`` (each argument checked, an unknown one
    refused with the list of those accepted)."""
    if name not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder {name!r}; choices: {list_autoencoders()}")
    return AUTOENCODERS[name](**kwargs)

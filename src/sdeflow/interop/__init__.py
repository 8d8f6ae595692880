"""Use other libraries' pretrained models with sdeflow's samplers and likelihoods."""
from .hf_diffusers import DiscreteVPNet, from_diffusers

__all__ = ["from_diffusers", "DiscreteVPNet"]

"""Use other libraries' pretrained models with sdeflow's samplers, guidance and likelihoods
(docs/interop.md): generic discrete-time wrappers for any callable, and loaders for saved
diffusers folders (DDPM-style UNets, score_sde VE/VP, Stable-Diffusion layout, DiT)."""
from .discrete import (DiscreteVPNet, discrete_times, fit_vp_sde, from_discrete, from_discrete_eps,
                       from_discrete_v, from_discrete_x0)
from .dit import from_dit
from .folders import is_diffusers_folder, load_diffusers
from .hf_diffusers import from_diffusers
from .score_sde import from_score_sde
from .stable_diffusion import DiffusersVAE, encode_prompts, from_stable_diffusion

__all__ = ["from_discrete", "from_discrete_eps", "from_discrete_v", "from_discrete_x0",
           "discrete_times", "fit_vp_sde", "DiscreteVPNet", "from_diffusers", "from_score_sde",
           "from_stable_diffusion", "from_dit", "load_diffusers", "is_diffusers_folder",
           "DiffusersVAE", "encode_prompts"]

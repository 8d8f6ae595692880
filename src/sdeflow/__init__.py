"""sdeflow: continuous-time score-based diffusion models (SDEs, one Denoiser, every sampler)."""
from .checkpoint import CheckpointError
from .denoiser import Denoiser
from .loading import load
from .likelihood import bits_per_dim, decode, encode, interpolate, log_likelihood
from .samplers import list_solvers, sample
from .schedules import get_timesteps, list_schedules
from .sde import EDMSDE, SDE, SubVPSDE, VESDE, VPSDE, get_sde, list_sdes

__version__ = "0.1.0"

__all__ = ["Denoiser", "sample", "list_solvers", "list_schedules", "get_timesteps", "SDE",
           "VESDE", "VPSDE", "SubVPSDE", "EDMSDE", "get_sde", "list_sdes", "log_likelihood",
           "bits_per_dim", "encode", "decode", "interpolate", "load", "CheckpointError"]

"""Critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis 2022): the (x, v) process and
its closed-form kernel (:mod:`.process`), the score model (:mod:`.model`), exact scores of
Gaussian mixtures (:mod:`.oracle`), SSCS and the other samplers (:mod:`.sampling`), hybrid score
matching (:mod:`.losses`) and the likelihood bound (:mod:`.likelihood`)."""
from .process import CLD, join_state, split_state
from .model import CLDModel
from .oracle import mixture_log_prob, mixture_model, mixture_score
from .sampling import CLD_SOLVERS, list_cld_solvers, sample_cld

__all__ = ["CLD", "CLDModel", "join_state", "split_state", "mixture_log_prob", "mixture_model",
           "mixture_score", "sample_cld", "list_cld_solvers", "CLD_SOLVERS"]

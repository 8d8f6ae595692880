"""Samplers: every solver registers itself here by importing its module."""
from . import adams, adaptive_sde, bespoke, consistency, ddim, dpm_solver_v3, edm, exponential, pc, pndm, rk, sa_solver, stochastic_rk  # noqa: F401  (registration side effects)
from .api import sample
from .registry import get_solver, list_solvers, register_solver

__all__ = ["sample", "list_solvers", "get_solver", "register_solver"]

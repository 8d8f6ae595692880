"""Data sets: 2-D toy distributions (embedded, no network)."""
from .toy import TOY_MIXTURE, list_toy, toy_sample

__all__ = ["toy_sample", "list_toy", "TOY_MIXTURE"]

"""Randomness of the public entry points: one rule for turning ``seed``/``generator`` into a
``torch.Generator``."""
from __future__ import annotations

import torch

__all__ = ["make_generator"]


def make_generator(seed: int | None, generator: torch.Generator | None,
                   device=None) -> torch.Generator | None:
    """The generator to draw with: ``generator`` as given, or a new one on ``device`` seeded with
    ``seed``, or None (torch's global RNG) when neither is given. Both is an error: which one
    would win is not obvious to the caller."""
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is None:
        return generator
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))

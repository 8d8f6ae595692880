"""Inpainting and colorization with an unconditional score model: replacement (score_sde's PC
inpainting, with any fixed-grid sampler), RePaint, and colorization in a decoupled colour basis."""
from .colorization import COLOR_BASIS, colorize, grey
from .masks import MASKS, load_mask, make_mask
from .observation import Observation
from .repaint import REPAINT_STEPS, repaint, repaint_schedule
from .replacement import inpaint

__all__ = ["Observation", "inpaint", "repaint", "repaint_schedule", "REPAINT_STEPS", "colorize",
           "grey", "COLOR_BASIS", "MASKS", "make_mask", "load_mask"]

"""Data: 2-D toy distributions and image data sets (the 8×8 digits embedded), picked by name."""
from .images import ImageData, digits
from .registry import SPLIT_DATA, get_data, list_data, list_vector_data
from .toy import TOY_MIXTURE, list_toy, toy_sample

__all__ = ["toy_sample", "list_toy", "TOY_MIXTURE", "get_data", "list_data", "list_vector_data", "ImageData", "digits", "SPLIT_DATA"]

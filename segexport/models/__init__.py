"""Registry, shared shell and one file per architecture."""

from segexport.models.registry import ModelEntry, build_model, get_entry, list_models
from segexport.models.shell import SegmentationModel, check_input_size

__all__ = [
    "ModelEntry",
    "SegmentationModel",
    "build_model",
    "check_input_size",
    "get_entry",
    "list_models",
]

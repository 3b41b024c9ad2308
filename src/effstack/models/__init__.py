"""Models: specs, loading, counting."""

from .loader import LoadedModel, count_macs, load_model, torchvision_names
from .spec import InputSpec, ModelSpec

__all__ = ["InputSpec", "LoadedModel", "ModelSpec", "count_macs", "load_model", "torchvision_names"]

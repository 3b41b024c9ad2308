"""Models: specs, loading, counting."""

from .loader import LoadedModel, count_macs, from_module, load_model, recalibrate_batchnorm, torchvision_names
from .spec import InputSpec, ModelSpec

__all__ = ["InputSpec", "LoadedModel", "ModelSpec", "count_macs", "from_module", "load_model", "recalibrate_batchnorm",
           "torchvision_names"]

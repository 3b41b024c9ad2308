"""Compress: make a model cheaper to run, and check that it still gives the same answers.

One verb per capability with a frozen config: :func:`quantize` with :class:`QuantizeConfig`,
:func:`distill` with :class:`DistillConfig`, :func:`prune` with :class:`PruneConfig`, :func:`ternarize`
with :class:`TernaryConfig`.
"""

from .distill import DistillConfig, distill
from .prune import PruneConfig, PruneResult, prune
from .quantize import QuantizeConfig, QuantizeResult, quantize
from .ternary import TernaryConfig, TernaryResult, ternarize

__all__ = ["DistillConfig", "PruneConfig", "PruneResult", "QuantizeConfig", "QuantizeResult", "TernaryConfig",
           "TernaryResult", "distill", "prune", "quantize", "ternarize"]

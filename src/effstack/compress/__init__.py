"""Compress: make a model cheaper to run, and check that it still gives the same answers.

One verb per capability with a frozen config: :func:`quantize` with :class:`QuantizeConfig`.
"""

from .quantize import QuantizeConfig, QuantizeResult, quantize

__all__ = ["QuantizeConfig", "QuantizeResult", "quantize"]

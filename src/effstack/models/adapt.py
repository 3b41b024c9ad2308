"""Give a model another model's input: resize (and re-normalise) inside the module.

A student distilled from a teacher must take the teacher's inputs (the same evaluation set, the same
deployment preprocessing), but it may run at its own, smaller resolution: EfficientNet-Lite0 at 224 (or
192) inside a pipeline that feeds EfficientNet-Lite2's 260 x 260 crops. :class:`InputAdapter` resizes
bilinearly to the student's side and maps the teacher's normalisation onto the student's; both export
to ONNX (``Resize`` plus one multiply-add), so engines run the adapted model as one graph.

>>> import torch                                            # doctest: +SKIP
>>> from effstack.testing import tiny_cnn                    # doctest: +SKIP
>>> InputAdapter(tiny_cnn(size=16), (16, 16))(torch.zeros(2, 3, 32, 32)).shape   # doctest: +SKIP
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

__all__ = ["InputAdapter", "adapt_input"]


class InputAdapter(nn.Module):
    """``inner`` behind a bilinear resize to ``size`` (H, W) and an optional per-channel affine map
    ``x * scale + shift`` from the outer normalisation to the inner one."""

    def __init__(self, inner: nn.Module, size: tuple[int, int], scale: Any = None, shift: Any = None):
        super().__init__()
        self.inner = inner
        self.size = (int(size[0]), int(size[1]))
        self.renormalise = scale is not None
        if self.renormalise:
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if self.renormalise:
            x = x * self.scale + self.shift
        return self.inner(x)


def adapt_input(module: nn.Module, inner: Any, outer: Any, size: tuple[int, int] | None = None) -> nn.Module:
    """``module`` (which expects InputSpec ``inner``) made to take InputSpec ``outer``.

    Args:
        module: the model, expecting ``inner`` inputs.
        inner: its own :class:`~effstack.models.InputSpec` (its side and mean/std).
        outer: the InputSpec it must take instead (a teacher's).
        size: the side to run at (default: ``inner``'s own H, W).

    Returns the module itself when nothing differs.

    Raises:
        ConfigError: the inputs are not images with the same channel count.
    """
    if len(inner.shape) != 3 or len(outer.shape) != 3 or inner.shape[0] != outer.shape[0]:
        raise ConfigError(f"an input adapter joins image models with the same channels, got {inner.shape} "
                          f"and {outer.shape}; give the student the teacher's kind of input")
    size = tuple(size or inner.shape[1:])
    c = inner.shape[0]
    m_in, s_in = inner.mean or (0.0,) * c, inner.std or (1.0,) * c
    m_out, s_out = outer.mean or (0.0,) * c, outer.std or (1.0,) * c
    # outer-normalised x -> raw pixel v = x * s_out + m_out -> inner-normalised (v - m_in) / s_in
    scale = [so / si for so, si in zip(s_out, s_in)]
    shift = [(mo - mi) / si for mo, mi, si in zip(m_out, m_in, s_in)]
    same_norm = all(abs(a - 1) < 1e-7 for a in scale) and all(abs(b) < 1e-7 for b in shift)
    if size == tuple(outer.shape[1:]) and same_norm:
        return module
    return InputAdapter(module, size, None if same_norm else scale, None if same_norm else shift)

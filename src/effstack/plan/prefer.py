"""On a CPU whose AMX tiles are usable, prefer the configuration whose kernels actually run on them.

Which engine runs AMX is read back from what it compiled, not guessed from its name: OpenVINO's runtime
model names each layer's kernel (``brgconv_avx512_amx_I8``), and :func:`effstack.engines.base.kernel_isa`
turns those names into ``"amx"``. Engines that cannot say (ONNX Runtime, PyTorch) read ``""`` and are never
preferred, only measured.

Measurements still decide; the preference is a margin. A configuration on AMX kernels ranks as if it
scored :data:`AMX_MARGIN` (3 %) better, so it wins over one that measured up to that much faster without
AMX: one short measurement on a shared 2-core machine moves by about as much, and on an AMX Xeon OpenVINO's
AMX INT8 ran ResNet-50 at 255-286 images/s where ONNX Runtime's INT8 (no AMX path) ran 84-114, so a near tie
between the two is noise around a large real difference. Where AMX is not usable the ranking is the plain
score.

>>> items = [("ort", 100.0, ""), ("ov", 98.0, "amx")]
>>> pick(items, lambda t: t[1], lambda t: t[2], amx=True)[0][0]
'ov'
>>> pick(items, lambda t: t[1], lambda t: t[2], amx=False)[0][0]
'ort'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["AMX_MARGIN", "amx_active", "rank", "pick", "default_precisions"]

T = TypeVar("T")
AMX_MARGIN = 0.03


def amx_active(amx: bool | None = None) -> bool:
    """``amx`` when given, else whether AMX tiles are usable here (:func:`effstack.hardware.amx_usable`)."""
    if amx is not None:
        return amx
    from .. import hardware  # through the module, so that tests that force the CPU are seen

    return hardware.amx_usable()


def rank(score: float, kernel_isa: str, amx: bool) -> float:
    """``score`` (higher is better; may be negative, e.g. minus p99) raised by :data:`AMX_MARGIN` of its
    size when ``amx`` is usable and the kernels ran on it (``kernel_isa == "amx"``)."""
    if amx and kernel_isa == "amx" and math.isfinite(score):
        return score + abs(score) * AMX_MARGIN
    return score


def pick(items: Sequence[T], score: Callable[[T], float], kernel_isa: Callable[[T], str],
         amx: bool | None = None) -> tuple[T | None, T | None]:
    """``(chosen, passed_over)``: the best of ``items`` by :func:`rank`, and the item with the best plain
    ``score`` when the AMX preference chose another one (else None). ``amx`` None asks the hardware, and
    only when some item ran AMX kernels.

    Example:
        >>> pick([1.0, 2.0], float, lambda x: "", amx=True)
        (2.0, None)
    """
    if not items:
        return None, None
    top = max(items, key=score)
    if amx is None:
        amx = any(kernel_isa(i) == "amx" for i in items) and amx_active()
    chosen = max(items, key=lambda i: rank(score(i), kernel_isa(i), amx))
    return chosen, (None if chosen is top else top)


def default_precisions(amx: bool | None = None) -> list[str]:
    """The precisions a plan searches by default: fp32 and int8, plus bf16 where AMX-BF16 tiles are usable
    (bf16 then runs on the tiles; elsewhere it is emulated or a smaller win, and can still be asked for)."""
    if amx is None:
        from .. import hardware

        amx = hardware.amx_usable("bf16")
    return ["fp32", "bf16", "int8"] if amx else ["fp32", "int8"]

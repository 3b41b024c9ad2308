"""Exact rewrites of an ONNX float graph before it is quantized.

``fold_pads(model)``: a zero ``Pad`` that feeds only convolutions becomes those convolutions' own ``pads``.
TF-style ``SAME`` padding (EfficientNet-Lite, MobileNet ports) exports as an explicit asymmetric ``Pad`` in
front of each strided convolution. In the float graph OpenVINO folds it into the convolution itself, but
once a quantizer has put a QuantizeLinear/DequantizeLinear pair between the two it can no longer: on
EfficientNet-Lite0 the QDQ build then ran 4 separate u8 ``Pad`` layers and 6 reorders, at 208 images/s
against NNCF's 241 on the same OpenVINO (batch 8, AVX-512 VNNI Xeon, 2026-12-03). ONNX ``Conv`` takes
asymmetric pads (``[top, left, bottom, right]``), so the fold is exact: the output does not change.

>>> fold_pads(model_proto)   # doctest: +SKIP
4
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fold_pads"]


def fold_pads(model: Any) -> int:
    """Fold every foldable zero ``Pad`` of ``model`` (an ``onnx.ModelProto``, changed in place) into the
    ``Conv`` nodes it feeds; return how many were folded.

    Foldable: constant mode, a zero (or absent) fill value, pads given as an initializer that pad only the
    spatial axes and by non-negative amounts, an output that is no graph output and feeds only ``Conv``
    nodes with explicit pads (no ``auto_pad``) of the same spatial rank.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = []
    for node in graph.node:
        if node.op_type != "Pad" or node.output[0] in outputs:
            continue
        spatial = _spatial_pads(node, inits, numpy_helper)
        convs = consumers.get(node.output[0], [])
        if spatial is None or not convs or not all(_takes_pads(c, len(spatial) // 2, node.output[0]) for c in convs):
            continue
        for conv in convs:
            attrs = {a.name: a for a in conv.attribute}
            old = list(helper.get_attribute_value(attrs["pads"])) if "pads" in attrs else [0] * len(spatial)
            new = [a + b for a, b in zip(old, spatial)]
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend(kept + [helper.make_attribute("pads", new)])
            conv.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for n in graph.node for name in n.input}
    for name in {i for n in folded for i in n.input[1:] if i}:
        if name not in used and name in inits:
            graph.initializer.remove(inits[name])
    return len(folded)


def _spatial_pads(node: Any, inits: dict[str, Any], numpy_helper: Any) -> list[int] | None:
    """The Pad's amounts as Conv ``pads`` (begins of the spatial axes, then their ends), or None if not foldable."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("mode", b"constant") not in (b"constant", "constant"):
        return None
    if len(node.input) < 2 or node.input[1] not in inits or (len(node.input) > 3 and node.input[3]):
        return None  # pads computed at run time, or an axes input (opset 18+): leave it
    if len(node.input) > 2 and node.input[2]:
        fill = inits.get(node.input[2])
        if fill is None or np.any(numpy_helper.to_array(fill) != 0):
            return None
    pads = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64).ravel().tolist()
    rank = len(pads) // 2
    if rank < 3 or any(p < 0 for p in pads) or any(pads[i] or pads[rank + i] for i in (0, 1)):
        return None  # negative pads crop; batch or channel padding is no convolution's padding
    return pads[2:rank] + pads[rank + 2:]


def _takes_pads(conv: Any, spatial_rank: int, name: str) -> bool:
    from onnx import helper

    if conv.op_type != "Conv" or conv.input[0] != name or any(i == name for i in conv.input[1:]):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    auto = attrs.get("auto_pad", b"NOTSET")
    if auto not in (b"NOTSET", "NOTSET"):
        return False
    return len(attrs.get("pads", [0] * 2 * spatial_rank)) == 2 * spatial_rank

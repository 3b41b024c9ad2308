"""Export: torch -> ONNX (numerically checked against PyTorch) -> OpenVINO IR, cached by content.

Neither onnx nor openvino is imported until an export runs.

>>> from effstack.export import export_onnx
"""

from .onnx import export_onnx
from .openvino import export_openvino

__all__ = ["export_onnx", "export_openvino"]

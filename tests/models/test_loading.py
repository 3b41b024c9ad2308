"""load_model over every source kind, and the one-line errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effstack.errors import ArtifactError, ConfigError, InputError, UnknownModelError
from effstack.models import InputSpec, ModelSpec, load_model
from effstack.testing import tiny_cnn


def _eager(module, x):
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def test_torchvision_name_random_weights_and_inferred_input():
    m = load_model(ModelSpec("resnet18", num_classes=7))
    assert m.input.shape == (3, 224, 224) and m.input.mean is not None
    assert m.macs and 1.5e9 < m.macs < 2.0e9  # ResNet-18: 1.82 GMAC at 224x224
    assert m.params and m.kind == "torch"


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownModelError, match="Did you mean: resnet50") as info:
        load_model("resnet5O")
    assert "\n" not in str(info.value)


def test_state_dict_weights_are_loaded(tmp_path):
    src = tiny_cnn(seed=3)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    m = load_model(ModelSpec("effstack.testing:tiny_cnn", weights=str(path)))
    x = m.input.example(2)
    np.testing.assert_allclose(_eager(m.module, x), _eager(src, x), rtol=1e-6, atol=1e-6)
    # same weights -> same fingerprint; other weights -> another one
    assert m.fingerprint == load_model(ModelSpec("effstack.testing:tiny_cnn", weights=str(path))).fingerprint
    assert m.fingerprint != load_model("effstack.testing:tiny_cnn").fingerprint


def test_torchvision_weights_file(tmp_path):
    import torchvision

    ref = torchvision.models.get_model("resnet18", weights=None, num_classes=5)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    m = load_model(ModelSpec("resnet18", weights=str(path), num_classes=5))
    x = m.input.example(1)
    ref.eval()
    np.testing.assert_allclose(_eager(m.module, x), _eager(ref, x), rtol=1e-5, atol=1e-5)


def test_torchscript_file(tmp_path):
    src = tiny_cnn()
    path = tmp_path / "model.ts"
    torch.jit.trace(src, torch.zeros(1, 3, 32, 32)).save(str(path))
    m = load_model(ModelSpec(str(path), input=InputSpec(shape=(3, 32, 32))))
    x = m.input.example(2)
    np.testing.assert_allclose(_eager(m.module, x), _eager(src, x), rtol=1e-5, atol=1e-6)


def test_checkpoint_with_arch(tmp_path):
    import torchvision

    ref = torchvision.models.get_model("resnet18", weights=None, num_classes=3).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"arch": "resnet18", "state_dict": ref.state_dict()}, path)
    m = load_model(ModelSpec(str(path), num_classes=3))
    x = m.input.example(1)
    np.testing.assert_allclose(_eager(m.module, x), _eager(ref, x), rtol=1e-5, atol=1e-5)


def test_state_dict_checkpoint_without_arch_says_what_to_do(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(tiny_cnn().state_dict(), path)
    with pytest.raises(ArtifactError, match="pass arch="):
        load_model(str(path))


def test_unreadable_weights_file_is_one_line(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"definitely not a pickle")
    with pytest.raises(ArtifactError, match="cannot read") as info:
        load_model(ModelSpec("effstack.testing:tiny_cnn", weights=str(path)))
    assert "\n" not in str(info.value)


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(tiny_cnn(width=8).state_dict(), path)
    with pytest.raises(ArtifactError, match="do not fit the architecture"):
        load_model(ModelSpec("effstack.testing:tiny_cnn", weights=str(path)))


def test_missing_file():
    with pytest.raises(UnknownModelError, match="does not exist"):
        load_model("no/such/model.pt")


def test_wrong_input_shape_for_model():
    with pytest.raises(InputError, match="rejects input of shape"):
        load_model("effstack.testing:tiny_mlp", input=InputSpec(shape=(3, 8, 8), layout="NCHW"))


def test_input_spec_validation():
    with pytest.raises(ConfigError):
        InputSpec(shape=(3, 0, 4))
    with pytest.raises(ConfigError):
        InputSpec(shape=(3, 4, 4), dtype="float99")
    spec = InputSpec(shape=(3, 4, 4), mean=[0.5, 0.5, 0.5], std=(1, 1, 1))
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec.from_dict(ModelSpec("resnet50", input=spec).to_dict()).input == spec


def test_pickled_module_needs_trust(tmp_path):
    src = tiny_cnn()
    path = tmp_path / "whole.pt"
    torch.save(src, path)
    spec = ModelSpec(str(path), input=InputSpec(shape=(3, 32, 32)))
    with pytest.raises(ArtifactError, match="--trust-pickle") as info:
        load_model(spec)
    assert "\n" not in str(info.value)
    m = load_model(ModelSpec(str(path), input=InputSpec(shape=(3, 32, 32)), options={"trust_pickle": True}))
    x = m.input.example(2)
    np.testing.assert_allclose(_eager(m.module, x), _eager(src, x), rtol=1e-6, atol=1e-6)

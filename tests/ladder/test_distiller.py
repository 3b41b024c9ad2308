"""The ladder's distillation hook: which recipe a student gets, and that a pretrained one keeps its statistics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from effstack.ladder.pipeline import LadderData, _has_trained_weights, _variant, make_distiller  # noqa: E402
from effstack.models import InputSpec, from_module  # noqa: E402


def _net(width: int, seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 4))


@pytest.mark.parametrize("source, trained", [("efficientnet_lite0", True), ("resnet18", False),
                                             ("student.pt", True), ("model.onnx", True), ("tiny_cnn", False)])
def test_which_students_count_as_trained(source, trained):
    assert _has_trained_weights(source) == trained


@pytest.mark.parametrize("fine_tune", [True, False])
def test_fine_tuned_student_keeps_its_batchnorm_statistics(fine_tune):
    spec = InputSpec((3, 12, 12))
    teacher = from_module(_net(16, 0), spec, "teacher")
    student_module = _net(8, 1)
    bn = student_module[1]
    bn.running_mean.fill_(0.5)  # "trained" statistics a few noisy batches must not overwrite
    before = bn.running_mean.clone()
    student = from_module(student_module, spec, "student")
    x = np.random.default_rng(0).standard_normal((64, 3, 12, 12)).astype(np.float32)
    shrunk = make_distiller(LadderData((x[:16], None), train=(x, None)), student, epochs=1,
                            fine_tune=fine_tune)(_variant(teacher, "teacher"))
    assert shrunk.variant is not None, shrunk.reason
    d = shrunk.details
    assert d["recipe"] == ("fine-tune" if fine_tune else "scratch")
    assert (d["temperature"], d.get("hard"), d["lr"]) == ((1.0, 1.0, 3e-4) if fine_tune else (4.0, None, 2e-3))
    assert torch.equal(bn.running_mean, before) == fine_tune

"""Logit distillation: learns from a teacher with or without labels; mismatches fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from effstack.compress import DistillConfig, distill  # noqa: E402
from effstack.compress.distill import teacher_labels  # noqa: E402
from effstack.errors import ConfigError, InputError  # noqa: E402
from effstack.train import TrainConfig, evaluate  # noqa: E402


def _data(n=160, seed=0):
    centers = np.random.default_rng(7).standard_normal((3, 6)) * 3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.standard_normal((n, 6))).astype(np.float32), y.astype(np.int64)


def _mlp(hidden, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3))


@pytest.fixture(scope="module")
def teacher():
    from effstack.train import fit

    t = _mlp(32, 0)
    fit(t, _data(), TrainConfig(epochs=6, lr=1e-2, progress=False))
    return t


def _cfg(**kw):
    return DistillConfig(**{"temperature": 2.0, "train": TrainConfig(epochs=4, lr=1e-2, progress=False), **kw})


def test_distill_without_labels_matches_teacher(teacher):
    x, _ = _data(seed=1)
    student = _mlp(8, 1)
    r = distill(teacher, student, x, _cfg(alpha=0.5), val=_data(64, seed=2))
    xv, _ = _data(64, seed=2)
    assert r.val_top1 > 90
    agree = (teacher_labels(teacher, xv) == teacher_labels(student, xv)).mean()
    assert agree > 0.9
    assert all(not p.requires_grad for p in teacher.parameters())


def test_distill_with_labels_and_augmentation_consistency(teacher):
    seen = []
    orig = teacher.forward

    class Spy(torch.nn.Module):  # records what the teacher sees; the student must see the same batches
        def __init__(self):
            super().__init__()
            self.inner = teacher

        def forward(self, x):
            seen.append(x.clone())
            return orig(x)

    student = _mlp(8, 1)
    student_inputs = []
    student.register_forward_pre_hook(lambda m, a: student_inputs.append(a[0].clone()))
    distill(Spy(), student, _data(), _cfg(train=TrainConfig(epochs=1, lr=1e-2, augment="shift", progress=False)))
    # first call of each: the shape check; after that, one teacher call per student training step
    pairs = list(zip(student_inputs[1:], seen[1:]))
    assert pairs and all(torch.equal(a, b) for a, b in pairs)
    assert evaluate(student, _data(64, seed=2)) > 50


def test_without_augmentation_the_teacher_sees_each_sample_once(teacher):
    calls = []
    teacher.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    try:
        x, y = _data()
        r = distill(teacher, _mlp(8, 1), (x, y), _cfg(hard=1.0, train=TrainConfig(epochs=3, lr=1e-2, progress=False)))
    finally:
        teacher._forward_pre_hooks.clear()
    assert sum(calls) == 2 + len(x)  # the shape check, then one pass before the first epoch; none per step
    assert len(r.history) == 3 and evaluate(r.model, _data(64, seed=2)) > 80


@pytest.mark.parametrize("labelled", [True, False])
def test_cached_loss_equals_the_per_batch_loss(teacher, labelled):
    from effstack.compress.distill import _cached_loss, _with_teacher_outputs, distillation_loss

    x, y = _data(40)
    (_, packed), classes = _with_teacher_outputs(teacher, (x, y if labelled else None))
    assert classes == 3 and packed.shape == (40, 4)
    logits = torch.randn(40, 3)
    alpha = 0.7 if labelled else 1.0
    cached = _cached_loss(classes, 2.0, alpha, 0.5, 0.1, labelled)(logits, torch.from_numpy(packed), None)
    live = distillation_loss(teacher, 2.0, alpha, 0.1, hard=0.5)(logits, torch.from_numpy(y) if labelled else None,
                                                                 torch.from_numpy(x))
    assert torch.allclose(cached, live, atol=1e-5)
    assert not torch.allclose(live, distillation_loss(teacher, 2.0, alpha, 0.1)(
        logits, torch.from_numpy(y) if labelled else None, torch.from_numpy(x)))  # the hard term counts


def test_distill_config_validation_and_round_trip():
    cfg = _cfg(alpha=0.7)
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="temperature must be a positive number"):
        DistillConfig(temperature=0)
    with pytest.raises(ConfigError, match="alpha must be in"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="hard must be a non-negative"):
        DistillConfig(hard=-1)
    with pytest.raises(ConfigError, match="unknown distill setting"):
        DistillConfig.from_dict({"temp": 3})


def test_distill_bad_inputs(teacher):
    x, y = _data()
    wrong = torch.nn.Sequential(torch.nn.Linear(6, 5))
    with pytest.raises(InputError, match="same shape"):
        distill(teacher, wrong, (x, y), _cfg())
    with pytest.raises(InputError, match="rejects the data's shape"):
        distill(teacher, _mlp(8, 0), np.zeros((4, 9), np.float32), _cfg())
    with pytest.raises(ConfigError, match="same module"):
        distill(teacher, teacher, (x, y), _cfg())
    with pytest.raises(ConfigError, match="student must be a PyTorch"):
        distill(teacher, "student.onnx", (x, y), _cfg())

"""Structural pruning: channels really leave the model (and its ONNX export); targets and errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from effstack.compress import PruneConfig, prune  # noqa: E402
from effstack.compress.prune import as_loaded, mac_counter  # noqa: E402
from effstack.errors import ConfigError, InputError, MissingDependencyError  # noqa: E402
from effstack.testing import tiny_cnn, tiny_resnet  # noqa: E402
from effstack.train import TrainConfig  # noqa: E402


def _data(n=32, size=16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, size, size)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


@pytest.mark.parametrize("factory", [tiny_cnn, tiny_resnet])
def test_prune_halves_macs_and_keeps_classes(factory):
    model = factory(width=8, size=8)
    x, y = _data(16, size=8)
    before = [p.clone() for p in model.parameters()]
    r = prune(model, x[:1], PruneConfig(0.5, steps=2, finetune=TrainConfig(epochs=1, progress=False)), (x, y), val=(x, y))
    assert r.macs_after <= 0.5 * r.macs_before and r.macs_after > 0.3 * r.macs_before
    assert r.params_after < r.params_before
    assert [row["round"] for row in r.rounds] == [1, 2] and r.rounds[-1]["val_top1"] is not None
    assert r.model(torch.from_numpy(x[:2])).shape == (2, 10)  # the classifier keeps its 10 outputs
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the input is untouched
    assert mac_counter(r.model, torch.from_numpy(x[:1]))() == (r.macs_after, r.params_after)
    assert "round" in r.table() and r.to_dict()["flops_ratio"] <= 0.5


def test_pruned_export_is_really_smaller(tmp_path):
    from effstack.export import export_onnx

    model = tiny_cnn(width=16, size=16)
    r = prune(model, None, PruneConfig(0.5, steps=1, finetune=None, round_to=4), None)
    convs = [m for m in r.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 4 == 0 for c in convs) and convs[0].out_channels < 16
    full = export_onnx(as_loaded(model, model.input_spec, "full"), cache_dir=tmp_path)
    small = export_onnx(as_loaded(r.model, model.input_spec, "pruned"), cache_dir=tmp_path)
    assert small.stat().st_size < 0.6 * full.stat().st_size


def test_ignore_keeps_named_layer():
    model = tiny_cnn(width=8, size=16)
    for p in model.parameters():  # as load_model leaves it: frozen
        p.requires_grad_(False)
    r = prune(model, None, PruneConfig(0.6, steps=1, finetune=None, ignore=("0",)))
    assert r.model[0].out_channels == 8


def test_prune_errors():
    model = tiny_cnn(width=8, size=16)
    x, y = _data()
    with pytest.raises(ConfigError, match="target_flops_ratio must be in \\(0, 1\\)"):
        PruneConfig(target_flops_ratio=1.5)
    with pytest.raises(ConfigError, match="importance must be one of"):
        PruneConfig(importance="random")
    with pytest.raises(ConfigError, match="needs training data"):
        prune(model, x[:1], PruneConfig(), None)
    with pytest.raises(ConfigError, match="not a module of the model"):
        prune(model, x[:1], PruneConfig(finetune=None, ignore=("classifier",)))
    with pytest.raises(InputError, match="rejects example_input"):
        prune(model, np.zeros((1, 5, 16, 16), np.float32), PruneConfig(finetune=None))
    with pytest.raises(InputError, match="needs an example input"):
        prune(torch.nn.Sequential(torch.nn.Linear(4, 2)), None, PruneConfig(finetune=None))
    cfg = PruneConfig(ignore=["0"])
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg


def test_missing_torch_pruning_names_the_extra(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "torch_pruning":
            raise ImportError("no torch_pruning")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"effstack\[shrink\]"):
        prune(tiny_cnn(width=4, size=8), None, PruneConfig(finetune=None))


def test_distillation_fine_tuning_needs_no_labels_and_pulls_the_copy_back_to_the_teacher():
    from effstack.train import fit

    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 3, 8, 8)).astype(np.float32)
    y = (x[:, :, :4].mean(axis=(2, 3)) @ rng.standard_normal((3, 4))).argmax(1).astype(np.int64)
    model = tiny_cnn(width=8, size=8, num_classes=4)
    fit(model, (x, y), TrainConfig(epochs=15, lr=1e-2, progress=False))  # a teacher with decisions to keep
    for p in model.parameters():
        p.requires_grad_(False)
    raw = prune(model, x[:1], PruneConfig(0.5, steps=1, finetune=None))
    tuned = prune(model, x[:1], PruneConfig(0.5, steps=1, finetune=TrainConfig(epochs=8, lr=1e-2, progress=False)),
                  x, teacher=model)  # inputs only: the teacher labels them

    def agreement(m):
        with torch.no_grad():
            return float((m(torch.from_numpy(x)).argmax(1) == model(torch.from_numpy(x)).argmax(1)).float().mean())

    assert tuned.macs_after == raw.macs_after  # the same channels go; only the fine-tuning differs
    assert agreement(raw.model) < 0.8 and agreement(tuned.model) > 0.9
    with pytest.raises(ConfigError, match="needs training data"):
        prune(model, x[:1], PruneConfig(0.5, finetune=TrainConfig(epochs=1, progress=False)), None, teacher=model)

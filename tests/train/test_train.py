"""The shared training loop: learning, determinism, resume from checkpoint, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from effstack.errors import ArtifactError, ConfigError, InputError  # noqa: E402
from effstack.train import TrainConfig, evaluate, fit  # noqa: E402
from effstack.train.loop import lr_factor, resolve_amp  # noqa: E402


def _blobs(n: int = 192, seed: int = 0):
    """Four separable Gaussian blobs in 8 dimensions: (x float32 (n, 8), y int64 (n,))."""
    centers = np.random.default_rng(1234).standard_normal((4, 8)) * 3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    return (centers[y] + rng.standard_normal((n, 8))).astype(np.float32), y.astype(np.int64)


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 4))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "batch_size": 32, "lr": 1e-2, "progress": False, **kw})


def test_fit_learns_and_reports_history():
    data = _blobs()
    r = fit(_net(), data, _cfg(warmup_epochs=1, label_smoothing=0.1), val=_blobs(64, seed=1))
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4]
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.val_top1 is not None and r.val_top1 > 90
    assert r.amp == resolve_amp("auto")  # bf16 where the CPU has it natively: both ways in tests/unit/test_cpu_paths.py
    assert not r.model.training
    assert r.to_dict()["config"]["epochs"] == 4


def test_fit_is_deterministic_by_seed():
    a, b = _net(), _net()
    fit(a, _blobs(), _cfg(seed=3))
    fit(b, _blobs(), _cfg(seed=3))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_norm_keeps_batchnorm_statistics(freeze):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    bn = net[1]
    before = bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach().clone()
    fit(net, _blobs(), _cfg(epochs=2, freeze_norm=freeze))
    stats_kept = torch.equal(before[0], bn.running_mean) and torch.equal(before[1], bn.running_var)
    assert stats_kept == freeze
    assert not torch.equal(before[2], bn.weight)  # the affine scale learns either way


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    data = _blobs()
    ref = _net()
    fit(ref, data, _cfg(optimizer="sgd", lr=0.05, augment="none"))

    calls = {"n": 0}

    def crashing_loss(logits, y, x):
        calls["n"] += 1
        if calls["n"] == 2 * 6 + 3:  # mid third epoch (6 steps per epoch)
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, y)

    cfg = _cfg(optimizer="sgd", lr=0.05, checkpoint_dir=str(tmp_path), resume=True)
    with pytest.raises(KeyboardInterrupt):
        fit(_net(), data, cfg, loss_fn=crashing_loss)
    assert (tmp_path / "last.pt").is_file()
    resumed = _net(seed=99)  # different start weights: the checkpoint must replace them
    r = fit(resumed, data, cfg)
    assert r.start_epoch == 2 and [h["epoch"] for h in r.history] == [1, 2, 3, 4]
    for pa, pb in zip(ref.parameters(), resumed.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    again = fit(_net(), data, cfg)  # everything done: nothing more to train
    assert again.start_epoch == 4 and len(again.history) == 4


def test_resume_rejects_other_settings_and_other_models(tmp_path):
    data = _blobs()
    fit(_net(), data, _cfg(epochs=1, checkpoint_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="written with lr=0.01"):
        fit(_net(), data, _cfg(lr=0.1, checkpoint_dir=str(tmp_path), resume=True))
    other = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    with pytest.raises(ArtifactError, match="does not fit this model"):
        fit(other, data, _cfg(checkpoint_dir=str(tmp_path), resume=True))
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="cannot read checkpoint"):
        fit(_net(), data, _cfg(checkpoint_dir=str(tmp_path), resume=True))


@pytest.mark.parametrize("kw, message", [
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"lr": 0}, "lr must be positive"),
    ({"optimizer": "adam"}, "optimizer must be one of adamw, sgd"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"amp": "fp16"}, "amp must be one of auto, bf16, off"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"warmup_epochs": 11}, "warmup_epochs must be at most epochs"),
    ({"resume": True}, "resume needs a checkpoint_dir"),
])
def test_config_rejects_bad_values(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw)


def test_config_round_trips():
    cfg = TrainConfig(epochs=3, optimizer="sgd", checkpoint_dir="x", resume=True)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown train setting 'epoch'"):
        TrainConfig.from_dict({"epoch": 3})


def test_bad_data_gives_clear_errors():
    x, y = _blobs()
    with pytest.raises(InputError, match="one label per sample"):
        fit(_net(), (x, y[:-1]), _cfg())
    with pytest.raises(InputError, match="has no labels"):
        fit(_net(), x, _cfg())
    with pytest.raises(InputError, match="label 7 is outside the model's 4 classes"):
        fit(_net(), (x, np.where(y == 0, 7, y)), _cfg())
    with pytest.raises(InputError, match="integer class indices"):
        fit(_net(), (x, y.astype(np.float32)), _cfg())
    with pytest.raises(InputError, match="NaN"):
        fit(_net(), (np.full_like(x, np.nan), y), _cfg())
    with pytest.raises(InputError, match="must be an \\(x, y\\) pair"):
        fit(_net(), [x], _cfg())
    with pytest.raises(ConfigError, match="must be a PyTorch nn.Module"):
        fit("not a model", (x, y), _cfg())
    with pytest.raises(ConfigError, match="lower lr"):
        fit(_net(), (x, y), _cfg(), loss_fn=lambda logits, y, x: logits.sum() * float("nan"))


def test_dataset_input_and_augment():
    from torch.utils.data import TensorDataset

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((40, 1, 8, 8)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 40))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    r = fit(net, TensorDataset(x, y), _cfg(epochs=2, augment="flip-shift"), val=TensorDataset(x, y))
    assert len(r.history) == 2 and 0 <= r.val_top1 <= 100
    assert evaluate(net, (x.numpy(), y.numpy())) == r.val_top1


def test_lr_schedule():
    assert lr_factor(0, 10, 0, "constant") == 1.0
    assert lr_factor(0, 10, 0, "cosine") == 1.0
    assert lr_factor(5, 10, 0, "cosine") == pytest.approx(0.5)
